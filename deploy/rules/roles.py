"""The roles' settings as data: roles/<role>/defaults/main.yml and vars/main.yml, one copy for both engines.

pyinfra reads them from the repository's roles/ (deploy/steps.py `role_data`); the collection's filters from
its own roles/ (cnctl_role_names, cnctl_role_default), so a role's host can override them the Ansible way.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


def role_data(roles: Path, role: str) -> dict[str, Any]:
    """<roles>/<role>/defaults/main.yml and vars/main.yml (its constants, e.g. the probes it reads), without
    the Ansible-only template directory (pyinfra knows its templates)."""
    data: dict[str, Any] = {}
    for part in ("defaults", "vars"):
        path = roles / role / part / "main.yml"
        if path.is_file():
            data.update(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    return {key: value for key, value in data.items() if not key.endswith("_templates_dir")}


def setting_names(data: Mapping[str, Any]) -> list[str]:
    """The names of a role's settings: its data without the Ansible-only source paths (`*_src`), which pyinfra
    does not need (it ships from the tree it runs in)."""
    return [name for name in data if not name.endswith("_src")]


def wishes(variables: Any) -> dict[str, Any]:
    """The host's cn_* variables (hostvars[inventory_hostname] in a role), as plain data: what the stack wants."""
    return {key: variables[key] for key in list(variables.keys()) if key.startswith("cn_")}


def settings(names: list[str], values: list[Any]) -> dict[str, Any]:
    """{name: value} of setting_names() and the values Ansible resolved for them (a host's own value wins)."""
    return dict(zip(names, values, strict=True))
