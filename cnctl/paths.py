"""Where cnctl's files are: the one place that resolves them (code, templates, stacks and tests read it).

The tree the CLI runs is the layout of the repository: deploy.py, deploy/, hosts/, templates/, roles/,
playbooks/, policy/. Three places hold it, and REPO_ROOT is whichever this cnctl came with:
- a checkout (an editable install, or a bundle unpacked on a host): the directory above the cnctl package;
- an installed wheel: cnctl/_tree/ inside the package, where the build copies it (setup.py,
  pyproject.toml's [tool.cnctl.wheel]), so nothing of an installed cnctl reads a checkout it happens to run in.

A user's stacks are not part of the tree: `stacks_dirs` says where a stack named by name is looked for.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# A wheel is installed unpacked, and pyinfra and Ansible need real directories: the package's own path is the answer.
PACKAGE_DIR = Path(__file__).resolve().parent
INSTALLED_TREE = PACKAGE_DIR / "_tree"  # setup.py's TREE_DIR
INSTALLED = INSTALLED_TREE.is_dir()
REPO_ROOT = INSTALLED_TREE if INSTALLED else PACKAGE_DIR.parent
HOSTS_DIR = REPO_ROOT / "hosts"
TEMPLATES_DIR = REPO_ROOT / "templates"
# The checkout's own stacks (the sandbox's `local`, the examples); an installed cnctl has none.
STACKS_DIR = PACKAGE_DIR.parent / "stacks"
STACKS_DIR_ENV = "CNCTL_STACKS_DIR"


def stacks_dirs(environ: Mapping[str, str] = os.environ, cwd: Path | None = None) -> tuple[Path, ...]:
    """Where `Pulumi.<name>.yaml` is looked for, first found wins: CNCTL_STACKS_DIR alone when it is set; else,
    as Pulumi does, the working directory's `stacks/` (a Pulumi.yaml's stackConfigDir, as in this repository)
    and the working directory itself, then (from a checkout) the checkout's stacks/."""
    named = environ.get(STACKS_DIR_ENV)
    if named:
        return (Path(named).expanduser(),)
    here = Path.cwd() if cwd is None else cwd
    found = [here / "stacks", here]
    if not INSTALLED:
        found.append(STACKS_DIR)
    unique: list[Path] = []
    for path in found:
        if all(path.resolve() != seen.resolve() for seen in unique):
            unique.append(path)
    return tuple(unique)
