"""The filters whose builders still live in the pyinfra layer modules (deploy/<layer>.py): they
need cnctl's checkout importable (the Ansible engine's case), found through the installed cnctl package. Where
cnctl is not installed they are absent, and a role that uses them stops with "No filter named": the builders move
into deploy/rules/ (plugins/module_utils/rules/) one layer at a time, as the model layer's have (issue 25)."""

from __future__ import annotations

import sys
from typing import Any


def _layers() -> dict[str, Any]:
    try:
        from cnctl.paths import REPO_ROOT
    except ImportError:
        return {}
    if str(REPO_ROOT) not in sys.path:
        sys.path.append(str(REPO_ROOT))
    from deploy import container, inference, jetson, pipeline, pull, verify
    from deploy.steps import role_data

    def prefixed(variables: Any, prefix: str) -> dict[str, Any]:
        """The host's variables named `<prefix>*` (hostvars[inventory_hostname]), as plain data."""
        return {key: variables[key] for key in list(variables.keys()) if key.startswith(prefix)}

    def wishes(variables: Any) -> dict[str, Any]:
        """The host's cn_* variables: what deploy/steps.py `wishes` gives the pyinfra deploy."""
        return prefixed(variables, "cn_")

    def role_names(role: str) -> list[str]:
        """The names of a role's settings (its defaults, without the Ansible-only paths): what the layer's
        `role_settings` reads. The role looks their values up, so a host's own value wins in both engines."""
        return [name for name in role_data(role) if not name.endswith("_src")]

    def role_settings(names: list[str], values: list[Any]) -> dict[str, Any]:
        """{name: value} of role_names() and the values Ansible resolved for them."""
        return dict(zip(names, values, strict=True))

    def role_default(name: str, role: str) -> Any:
        """Another role's default (roles/<role>/defaults/main.yml)."""
        return role_data(role)[name]

    return {
        "cnctl_jetson_sources": jetson.sources,
        "cnctl_jetson_pins": jetson.pins,
        "cnctl_power_mode_problem": jetson.power_mode_problem,
        "cnctl_container_pins": container.pins,
        "cnctl_ctk_configure_command": container.configure_command,
        "cnctl_inference_unit_vars": inference.unit_variables,
        "cnctl_inference_options": inference.options,
        "cnctl_inference_endpoint_path": inference.endpoint_path,
        "cnctl_pip_install_command": inference.pip_install_command,
        "cnctl_pipeline_wishes": wishes,
        "cnctl_role_names": role_names,
        "cnctl_pipeline_role_settings": role_settings,
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
        "cnctl_verify_record": verify.record,
        "cnctl_verify_settings": verify.settings,
        "cnctl_verify_check_command": verify.check_command,
        "cnctl_verify_report": verify.report_of,
        "cnctl_verify_verdict": verify.verdict,
    }


class FilterModule:
    """cnctl_* filters built by the pyinfra layer modules: see deploy/<layer>.py."""

    def filters(self):
        return _layers()
