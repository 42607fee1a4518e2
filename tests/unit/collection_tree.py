"""The collection circularnet.fleet as the tests run it: the tree cnctl/collection.py assembles (the same one the
Ansible engine runs), once per session, and the environment an ansible-playbook of the tests finds it with."""

from __future__ import annotations

import importlib
import os
import sys
from functools import cache
from pathlib import Path
from typing import Any

from cnctl import collection

BIN = Path(sys.executable).parent


@cache
def collections_path() -> Path:
    """The assembled collections path (cached by the hash of its inputs, as the engine finds it)."""
    return collection.assemble()


def tree() -> Path:
    """The collection's own directory: roles/, templates/, plugins/, the host programs."""
    return collection.tree(collections_path())


def ansible_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a test's ansible-playbook: the venv first on PATH, Ansible's files under tmp_path, the
    assembled collection on its collections path."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "ANSIBLE_HOME": str(tmp_path / "home"), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
            "ANSIBLE_REMOTE_TMP": str(tmp_path / "remote"), "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_COLLECTIONS_PATH": str(collections_path()), **extra}


def role(name: str) -> str:
    """A role's FQCN."""
    return f"{collection.FQCN}.{name}"


def filters() -> dict[str, Any]:
    """The collection's filters by name, imported from the assembled tree (its plugins/filter/*.py)."""
    path = str(collections_path())
    if path not in sys.path:
        sys.path.append(path)
    found: dict[str, Any] = {}
    for plugin in sorted((tree() / "plugins" / "filter").glob("*.py")):
        module = importlib.import_module(f"ansible_collections.{collection.NAMESPACE}.{collection.NAME}.plugins.filter."
                                         f"{plugin.stem}")
        found.update(module.FilterModule().filters())
    return found


def same_function(given: Any, function: Any) -> bool:
    """Whether a filter is `function` as the collection carries it: its module's copy under module_utils/rules/."""
    return (given.__qualname__ == function.__qualname__
            and given.__module__.rsplit(".", 1)[-1] == function.__module__.rsplit(".", 1)[-1]
            and ".plugins.module_utils.rules." in given.__module__ and function.__module__.startswith("deploy.rules."))
