"""The filters the roles decide with: the pyinfra layers' own facts, verdicts and builders, one copy of each in
plugins/module_utils/rules/ (deploy/rules/ in cnctl's repository), which imports neither pyinfra nor cnctl.

Every role reaches them by FQCN (`circularnet.fleet.cnctl_*`), so a role needs no other role to find them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ansible_collections.circularnet.fleet.plugins.module_utils.rules import (
    checks,
    container,
    inference,
    jetson,
    model,
    monitoring,
    pipeline,
    probe,
    pull,
    roles,
    scripts,
    verify,
)

# plugins/filter/ -> plugins -> the collection: its roles' defaults are the settings the layers read.
ROLES = Path(__file__).resolve().parents[2] / "roles"


def role_names(role: str) -> list[str]:
    """The names of a role's settings (its defaults and vars, without the Ansible-only paths): what the pyinfra
    layer reads. The role looks their values up (`q('ansible.builtin.vars', *names)`), so a host's own value wins."""
    return roles.setting_names(roles.role_data(ROLES, role))


def role_default(name: str, role: str) -> Any:
    """Another role's default: the pipeline's credentials path, where the pipeline role's variables are not in scope."""
    return roles.role_data(ROLES, role)[name]


class FilterModule:
    """cnctl_* filters: see plugins/module_utils/rules/."""

    def filters(self):
        return {
            "cnctl_wishes": roles.wishes,
            "cnctl_role_names": role_names,
            "cnctl_role_settings": roles.settings,
            "cnctl_role_default": role_default,
            "cnctl_probe_script": probe.script,
            "cnctl_probe_parse": probe.parse,
            "cnctl_platform_refusal": checks.platform_refusal,
            "cnctl_pins_for": checks.pins_for,
            "cnctl_unpinned": checks.unpinned,
            "cnctl_installed_matching": checks.installed_matching,
            "cnctl_driver_problem": checks.driver_problem,
            "cnctl_nvcc_problem": checks.nvcc_problem,
            "cnctl_docker_problem": checks.docker_problem,
            "cnctl_jetson_sources": jetson.sources,
            "cnctl_jetson_pins": jetson.pins,
            "cnctl_power_mode_problem": jetson.power_mode_problem,
            "cnctl_container_pins": container.pins,
            "cnctl_ctk_configure_command": container.configure_command,
            "cnctl_model_problem": checks.model_problem,
            "cnctl_model_options": model.options,
            "cnctl_model_command": scripts.model_command,
            "cnctl_inference_problem": checks.inference_problem,
            "cnctl_inference_address": checks.inference_address,
            "cnctl_bind_interface_problem": checks.bind_interface_problem,
            "cnctl_inference_unit_vars": inference.unit_variables,
            "cnctl_inference_options": inference.options,
            "cnctl_program_home": scripts.program_home,
            "cnctl_serve_command": scripts.serve_command,
            "cnctl_pip_install_command": inference.pip_install_command,
            "cnctl_missing_wheels": checks.missing_wheels,
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
            "cnctl_pull_problem": pull.problem,
            "cnctl_pull_wheels": pull.wheels,
            "cnctl_pull_agent_files": pull.listed,
            "cnctl_pull_agent_dirs": pull.agent_dirs,
            "cnctl_pull_extras": pull.extras_under,
            "cnctl_pull_config": pull.agent_config,
            "cnctl_pull_unit_vars": pull.unit_variables,
            "cnctl_pull_installed_paths": pull.installed_paths,
            "cnctl_pull_present_command": pull.present_command,
            "cnctl_pull_present": pull.present,
            "cnctl_monitoring_exporter_vars": monitoring.exporter_vars,
            "cnctl_monitoring_gpu_unit_vars": monitoring.gpu_unit_vars,
            "cnctl_monitoring_secrets": monitoring.controller_secrets,
            "cnctl_monitoring_site_problem": monitoring.site_problem,
            "cnctl_monitoring_listen_address": monitoring.listen_address,
            "cnctl_monitoring_site_config": monitoring.site_config,
            "cnctl_monitoring_agent_config": monitoring.agent_config,
            "cnctl_monitoring_alertmanager_config": monitoring.alertmanager_config,
            "cnctl_monitoring_web_config": monitoring.web_config,
            "cnctl_monitoring_webhook_token_path": monitoring.webhook_token_path,
            "cnctl_monitoring_textfile_access": monitoring.textfile_access,
            "cnctl_monitoring_results_unit_vars": monitoring.results_unit_vars,
            "cnctl_verify_record": verify.record,
            "cnctl_verify_settings": verify.settings,
            "cnctl_verify_check_command": verify.check_command,
            "cnctl_verify_report": verify.report_of,
            "cnctl_verify_verdict": verify.verdict,
        }
