"""The Ansible side as a collection (`circularnet.fleet`): assembled from the repository's one copy of each part.

The repository keeps recipes, never built copies: roles/ (tasks, defaults, argument specs), templates/, the host
programs the roles ship, the pyinfra-free rules the filters call (deploy/rules/), and collection/ (galaxy.yml,
meta/runtime.yml, the filter plugins, the collection's README). `assemble()` copies them into
`<root>/ansible_collections/circularnet/fleet/`, a tree named by the hash of its inputs in the user's cache, so
the same inputs give the same tree, a run whose inputs did not change does not rebuild, and two checkouts never
share a half-written tree. In the tree the roles find everything beside them: `role_path/../../templates`,
`role_path/../../deploy/<program>`, the pull agent's files at their repository paths, the filters in
plugins/filter/ (importing plugins/module_utils/rules/, never pyinfra or this repository).

The Ansible engine (cnctl/engines/ansible.py) runs this tree, a user installs the tarball `build()` makes
(`ansible-galaxy collection build`), and ansible.cfg points a checkout's ansible-playbook at the tree `cnctl
collection build` last assembled (`~/.cache/cnctl/collections`): one path for users and tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

import yaml

import cnctl
from cnctl.bundle import contents
from cnctl.errors import UsageProblem
from cnctl.paths import REPO_ROOT

RECIPE = REPO_ROOT / "collection"
# The collection's name: its recipe's galaxy.yml (deploy/rules/__init__.py prefixes the filter names with it).
_GALAXY = yaml.safe_load((RECIPE / "galaxy.yml").read_text(encoding="utf-8"))
NAMESPACE: str = _GALAXY["namespace"]
NAME: str = _GALAXY["name"]
FQCN = f"{NAMESPACE}.{NAME}"
# The host programs the roles ship (defaults/main.yml: the package directory of `<role>_helper_src`,
# `pipeline_scripts_src`): the whole package cnhost/, at the same relative path.
HOST_PROGRAMS: tuple[tuple[str, str | None], ...] = (("cnhost", "*.py"),)
# The pyinfra-free rules the filters call: both the pyinfra layers and the collection import them.
RULES = "deploy/rules"
# What goes into the collection, at its repository path unless moved below: (directory or file, glob).
ENTRIES: tuple[tuple[str, str | None], ...] = (
    ("roles", "*/defaults/*.yml"),
    ("roles", "*/handlers/*.yml"),
    ("roles", "*/meta/*.yml"),
    ("roles", "*/tasks/*.yml"),
    ("roles", "*/vars/*.yml"),
    ("roles", "*/README.md"),
    ("templates", "**/*"),
    ("monitoring", "rules/*.yml"),  # the site's alert rules (roles/monitoring monitoring_rules_src)
    *HOST_PROGRAMS,
    *contents.AGENT_ENTRIES,  # the pull role installs the agent from the collection (pull_agent_src)
    (RULES, "*.py"),
    ("LICENSE", None),
)
# The recipe's files go to the collection root; the rules and what they import go under plugins/module_utils/, where
# the filters import them (the host programs whose option lists and endpoint builder the rules use also stay where
# the roles ship them from).
RECIPE_PREFIX = "collection/"
MODULE_UTILS = "plugins/module_utils/"
# The package the rules import the host programs from, and its place in the collection: the copies' imports of it
# become relative (`from cnhost import x` -> `from ..cnhost import x` in rules/, `from . import x` among the programs).
HOST_PACKAGE = "cnhost"
PROGRAMS_UTILS = f"{MODULE_UTILS}cnhost/"
ALSO: tuple[tuple[str, str], ...] = (
    ("cnctl/catalog/platforms.yaml", f"{MODULE_UTILS}rules/platforms.yaml"),  # deploy/rules/matrix.py reads it
    ("cnctl/unitescape.py", f"{MODULE_UTILS}unitescape.py"),
    *((f"{HOST_PACKAGE}/{name}.py", f"{PROGRAMS_UTILS}{name}.py")
      for name in ("__init__", "model_serve", "model_sync", "triton_endpoint")),
)


def module_utils_text(target: str, text: str) -> str:
    """A module's text as the collection carries it: its imports of the host programs' package made relative."""
    if target.startswith(PROGRAMS_UTILS):
        return text.replace(f"from {HOST_PACKAGE} import ", "from . import ")
    if target.startswith(f"{MODULE_UTILS}rules/"):
        return text.replace(f"from {HOST_PACKAGE} import ", "from ..cnhost import ")
    return text


def version() -> str:
    """The collection's version: the package's, so a tarball names the cnctl it came from."""
    return cnctl.version()


def destination(relative: str) -> str:
    """Where a repository file lands in the collection: the recipe at the root, the rules as module_utils."""
    if relative.startswith(RECIPE_PREFIX):
        return relative[len(RECIPE_PREFIX):]
    if relative.startswith(f"{RULES}/"):
        return f"{MODULE_UTILS}rules/{relative[len(RULES) + 1:]}"
    return relative


def layout(root: Path = REPO_ROOT) -> list[tuple[str, str]]:
    """(collection path, repository path) of every file of the collection, sorted: cnctl/bundle/contents.py's
    walk and refusals over ENTRIES, the recipe, and ALSO."""
    recipe = [p.relative_to(root).as_posix() for p in sorted((root / RECIPE_PREFIX).rglob("*"))
              if p.is_file() and "__pycache__" not in p.parts]
    files = {(destination(relative), relative) for relative in [*contents.files(root, ENTRIES), *recipe]}
    return sorted(files | {(target, relative) for relative, target in ALSO})


def digest(files: Iterable[tuple[str, str]], root: Path = REPO_ROOT) -> str:
    """The hash of the inputs: each file's place, path and bytes, the version, and this assembler itself (a cnctl
    that assembles differently never reuses a tree an older one left in the cache)."""
    h = hashlib.sha256(version().encode() + hashlib.sha256(Path(__file__).read_bytes()).digest())
    for target, relative in files:
        h.update(f"\0{target}\0{relative}\0".encode() + hashlib.sha256((root / relative).read_bytes()).digest())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    """The user's cache for assembled collections (`$XDG_CACHE_HOME/cnctl/collections`, default ~/.cache)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "cnctl", "collections")


def galaxy(text: str) -> str:
    """collection/galaxy.yml with the package's version set."""
    data = yaml.safe_load(text)
    data["version"] = version()
    return yaml.safe_dump(data, sort_keys=False, width=120)


def assemble(cache: Path | None = None) -> Path:
    """The collections path (a directory holding ansible_collections/circularnet/fleet) for this tree's inputs,
    assembled when it is not in the cache yet; written to a temporary sibling and renamed into place."""
    files = layout()
    base = cache or cache_root()
    path = base / digest(files)
    if (path / "ansible_collections" / NAMESPACE / NAME / "galaxy.yml").is_file():
        return path
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".assembling-", dir=base))
    work.chmod(0o755)  # mkdtemp makes it private; the tree is as readable as the checkout it comes from
    home = tree(work)
    for target, relative in files:
        (home / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO_ROOT / relative, home / target)
        shutil.copymode(REPO_ROOT / relative, home / target)
        if target.startswith(MODULE_UTILS) and target.endswith(".py"):
            (home / target).write_text(module_utils_text(target, (home / target).read_text(encoding="utf-8")),
                                       encoding="utf-8")
    (home / "galaxy.yml").write_text(galaxy((home / "galaxy.yml").read_text(encoding="utf-8")), encoding="utf-8")
    # the pull agent's file list (cnctl.bundle.contents, the one list) as data for the pull role's filter
    (home / MODULE_UTILS / "rules" / "agent_files.json").write_text(
        json.dumps(contents.files(REPO_ROOT, contents.AGENT_ENTRIES), indent=1) + "\n", encoding="utf-8")
    try:
        work.rename(path)
    except OSError:  # another run assembled the same inputs first: theirs is the same tree
        shutil.rmtree(work)
    return path


def current(path: Path, cache: Path | None = None) -> Path:
    """Point `<cache>/ansible_collections` (ansible.cfg's collections path) at the assembled tree `path`."""
    link = (cache or cache_root()) / "ansible_collections"
    temporary = link.with_name(".ansible_collections.new")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(path.name + "/ansible_collections")
    temporary.replace(link)
    return link


def tree(path: Path) -> Path:
    """The collection's own directory in an assembled collections path."""
    return path / "ansible_collections" / NAMESPACE / NAME


def tarball_name() -> str:
    return f"{NAMESPACE}-{NAME}-{version()}.tar.gz"


def build(output: Path, cache: Path | None = None) -> Path:
    """`ansible-galaxy collection build` of the assembled tree into `output`: the tarball a user installs."""
    path = assemble(cache)
    current(path, cache)
    output.mkdir(parents=True, exist_ok=True)
    galaxy_bin = Path(sys.executable).parent / "ansible-galaxy"
    result = subprocess.run([str(galaxy_bin if galaxy_bin.exists() else "ansible-galaxy"), "collection", "build",
                             "--force", "--output-path", str(output), str(tree(path))],
                            check=False, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise UsageProblem(f"ansible-galaxy collection build failed: {(result.stderr or result.stdout).strip()}")
    return output / tarball_name()
