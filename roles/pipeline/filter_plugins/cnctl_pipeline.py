"""Filters that give the pipeline role the pyinfra deploy's own builders (deploy/pipeline.py) and verdict
(deploy/checks.py `pipeline_problem`): settings, unit variables, wheels, paths, so both engines write the same
bytes. The repository root goes on sys.path so the role works from a checkout with cnctl's venv."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from deploy import checks, pipeline  # after the path is set
from deploy.steps import role_data


def _prefixed(variables: Any, prefix: str) -> dict[str, Any]:
    """The host's variables named `<prefix>*` (hostvars[inventory_hostname]), as plain data."""
    return {key: variables[key] for key in list(variables.keys()) if key.startswith(prefix)}


def wishes(variables: Any) -> dict[str, Any]:
    """The host's cn_* variables: what deploy/steps.py `wishes` gives the pyinfra deploy."""
    return _prefixed(variables, "cn_")


def role_names(role: str) -> list[str]:
    """The names of a role's settings (its defaults, without the Ansible-only paths): what deploy/pipeline.py
    `role_settings` reads. The role looks their values up (`q('ansible.builtin.vars', *names)`), so a host's
    own value wins, as Ansible's precedence gives it."""
    return [name for name in role_data(role) if not name.endswith("_scripts_src")]


def role_settings(names: list[str], values: list[Any]) -> dict[str, Any]:
    """{name: value} of role_names() and the values Ansible resolved for them."""
    return dict(zip(names, values, strict=True))


class FilterModule:
    """cnctl_pipeline_* filters: see deploy/pipeline.py."""

    def filters(self):
        return {
            "cnctl_pipeline_wishes": wishes,
            "cnctl_role_names": role_names,
            "cnctl_pipeline_role_settings": role_settings,
            "cnctl_pipeline_problem": checks.pipeline_problem,
            "cnctl_pipeline_credentials_found": pipeline.credentials_found,
            "cnctl_pipeline_settings": pipeline.settings,
            "cnctl_pipeline_unit_vars": pipeline.unit_variables,
            "cnctl_pipeline_wheels": pipeline.wheels,
            "cnctl_pipeline_prebuilt": pipeline.prebuilt,
            "cnctl_pipeline_sources": pipeline.sources,
            "cnctl_pipeline_install_command": pipeline.install_command,
            "cnctl_pipeline_apt_packages": pipeline.apt_packages,
            "cnctl_pipeline_units": pipeline.units,
            "cnctl_pipeline_client_dir": pipeline.client_dir,
            "cnctl_pipeline_client_archive": pipeline.client_archive,
            "cnctl_pipeline_replay_archive": pipeline.replay_archive,
            "cnctl_pipeline_unpack_command": pipeline.unpack_command,
        }
