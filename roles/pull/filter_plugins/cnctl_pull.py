"""Filters that give the pull role the pyinfra deploy's own builders and verdict (deploy/pull.py): the agent's
settings, unit variables, wheels, the agent's file list (cnctl.bundle.contents, the one list), what to prune,
so both engines write the same bytes. The repository root goes on sys.path so the role works from a checkout
with cnctl's venv."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from deploy import pull  # after the path is set
from deploy.steps import role_data


def wishes(variables: Any) -> dict[str, Any]:
    """The host's cn_* variables (hostvars[inventory_hostname]): what deploy/steps.py `wishes` gives pyinfra."""
    return {key: variables[key] for key in list(variables.keys()) if key.startswith("cn_")}


def role_names(role: str) -> list[str]:
    """The names of a role's settings (its defaults, without the Ansible-only paths): what deploy/pull.py
    `role_settings` reads. The role looks their values up, so a host's own value wins in both engines."""
    return [name for name in role_data(role) if not name.endswith("_src")]


def role_settings(names: list[str], values: list[Any]) -> dict[str, Any]:
    """{name: value} of role_names() and the values Ansible resolved for them."""
    return dict(zip(names, values, strict=True))


def role_default(name: str, role: str) -> Any:
    """Another role's default (roles/<role>/defaults/main.yml): the pipeline's credentials path, where the
    pipeline role's own variables are not in scope."""
    return role_data(role)[name]


class FilterModule:
    """cnctl_pull_* filters: see deploy/pull.py."""

    def filters(self):
        return {
            "cnctl_pull_wishes": wishes,
            "cnctl_pull_role_names": role_names,
            "cnctl_pull_role_settings": role_settings,
            "cnctl_pull_role_default": role_default,
            "cnctl_pull_problem": pull.problem,
            "cnctl_pull_wheels": pull.wheels,
            "cnctl_pull_agent_files": pull.agent_files,
            "cnctl_pull_agent_dirs": pull.agent_dirs,
            "cnctl_pull_extras": pull.extras_under,
            "cnctl_pull_config": pull.agent_config,
            "cnctl_pull_unit_vars": pull.unit_variables,
            "cnctl_pull_installed_paths": pull.installed_paths,
            "cnctl_pull_present_command": pull.present_command,
            "cnctl_pull_present": pull.present,
        }
