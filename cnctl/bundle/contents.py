"""What goes into a bundle: the one list. Paths are relative to the repository root and keep their place in
the bundle, so an unpacked bundle is a tree in which `deploy.py` runs as it does here (cnctl/paths.py finds
templates/ and stacks/ beside the cnctl package).

Why each entry:
- `deploy.py`, `deploy/*.py`: the host layers, pyinfra's entry point and its packaged deploys.
- `templates/`: every file the layers render (one copy for both engines).
- `roles/*/defaults/main.yml`, `roles/*/vars/main.yml`: the layers' settings (paths, users, probes), which
  pyinfra reads from the roles as Ansible does (deploy/steps.py role_data); the roles' tasks do not travel.
- `cnctl/catalog/*.yaml` and `cnctl/catalog/__init__.py`: the platform matrix and model catalog (data).
- The cnctl modules the host side imports, transitively: the stack is read through the same schema
  (cnctl/config), each host's cn_* variables come from cnctl/hostvars.py, pull mode's inventory (hosts/pull.py)
  from cnctl/inventory.py (with cnctl/fleet.py), and the layer list from cnctl/layers.py (data). Nothing of the
  sandbox, the engines or the CLI: a production bundle never stands on test infrastructure.
  tests/unit/test_bundle_archive.py walks the imports of deploy.py, deploy/*.py and hosts/pull.py and fails
  when this list misses one, and fails when a cnctl/sandbox file is in a built bundle.
- The stack file itself, as `stacks/Pulumi.<env>.yaml` (added by archive.build, not listed here).

Never in a bundle: `__pycache__`, `*.pyc`, anything outside these entries (keys, credentials, tests, the roles' tasks).
"""

from __future__ import annotations

from pathlib import Path

from cnctl.errors import UsageProblem

# What the pull layer installs on a pull-mode host as its agent (/opt/circularnet/pull/agent): the agent, what
# it imports (the schema its config's signers are checked with, the archive checks) and the uploader, whose
# store client it reads the bucket with. Part of ENTRIES by construction, copied from the tree the deploy runs in:
# the repository on a push, the verified bundle on a pull, so each bundle installs the agent that checks the next.
AGENT_ENTRIES: tuple[tuple[str, str | None], ...] = (
    ("cnctl/__init__.py", None),
    ("cnctl/errors.py", None),
    ("cnctl/paths.py", None),
    ("cnctl/catalog/__init__.py", None),
    ("cnctl/catalog", "*.yaml"),
    ("cnctl/config", "*.py"),
    ("cnctl/bundle", "*.py"),
    ("cnctl/store.py", None),
    ("cnhost/__init__.py", None),
    ("cnhost/uploader.py", None),
)
# (directory or file, glob): a file is listed with glob None; directories are walked with their glob.
ENTRIES: tuple[tuple[str, str | None], ...] = (
    ("deploy.py", None),
    ("deploy", "*.py"),
    ("deploy/rules", "*.py"),  # the layers' pure rules (both engines: the collection carries them as module_utils)
    ("cnhost", "*.py"),  # the host programs (the layers' facts and builders import them)
    ("templates", "**/*"),
    ("monitoring", "rules/*.yml"),  # the site's alert rules (the monitoring layer copies them)
    # the layers' settings, one copy for both engines (deploy/steps.py role_data): the roles' tasks stay home
    ("roles", "*/defaults/main.yml"),
    ("roles", "*/vars/main.yml"),
    ("cnctl/hostvars.py", None),
    ("cnctl/inventory.py", None),
    ("cnctl/fleet.py", None),
    ("cnctl/layers.py", None),
    ("cnctl/ansible_yaml.py", None),  # cnctl/inventory.py writes the Ansible inventory with it
    ("cnctl/unitescape.py", None),  # the unit filters deploy/steps.py renders templates/systemd with
    # pull mode's own: the agent the pull layer installs from the tree it runs in (with the catalog, the schema
    # and the errors every entry above reads), and @local's inventory
    *AGENT_ENTRIES,
    ("hosts/pull.py", None),
)
SKIPPED_PARTS = ("__pycache__",)
SKIPPED_SUFFIXES = (".pyc", ".pyo")


def files(root: Path, entries: tuple[tuple[str, str | None], ...] = ENTRIES) -> list[str]:
    """Every path `entries` name under `root`, sorted, POSIX-style. A missing entry or a symlink is refused:
    a bundle holds regular files only, and a tree without them is not the one the list was written for."""
    found: set[str] = set()
    for entry, pattern in entries:
        path = root / entry
        if pattern is None:
            candidates = [path]
        elif path.is_dir():
            candidates = sorted(path.glob(pattern))
        else:
            raise UsageProblem(f"{entry}/ is missing from {root}: the bundle needs it (cnctl/bundle/contents.py)")
        for candidate in candidates:
            relative = candidate.relative_to(root)
            if candidate.is_dir() and not candidate.is_symlink():
                continue
            if any(part in SKIPPED_PARTS for part in relative.parts) or candidate.suffix in SKIPPED_SUFFIXES:
                continue
            if candidate.is_symlink():
                raise UsageProblem(f"{relative.as_posix()} is a symlink: a bundle holds regular files only; "
                                   "replace it with the file")
            if not candidate.is_file():
                raise UsageProblem(f"{relative.as_posix()} is missing from {root}: the bundle needs it "
                                   "(cnctl/bundle/contents.py)")
            found.add(relative.as_posix())
    return sorted(found)
