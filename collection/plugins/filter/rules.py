"""The filters that give the roles the pyinfra layers' own verdicts and builders: one copy of each, in
plugins/module_utils/rules/ (deploy/rules/ in cnctl's repository), which imports neither pyinfra nor cnctl."""

from __future__ import annotations

from ansible_collections.circularnet.fleet.plugins.module_utils.rules import checks, model, probe, scripts


class FilterModule:
    """cnctl_* filters: see plugins/module_utils/rules/."""

    def filters(self):
        return {
            "cnctl_probe_script": probe.script,
            "cnctl_probe_parse": probe.parse,
            "cnctl_platform_refusal": checks.platform_refusal,
            "cnctl_pins_for": checks.pins_for,
            "cnctl_unpinned": checks.unpinned,
            "cnctl_installed_matching": checks.installed_matching,
            "cnctl_driver_problem": checks.driver_problem,
            "cnctl_nvcc_problem": checks.nvcc_problem,
            "cnctl_docker_problem": checks.docker_problem,
            "cnctl_model_problem": checks.model_problem,
            "cnctl_inference_problem": checks.inference_problem,
            "cnctl_inference_address": checks.inference_address,
            "cnctl_missing_wheels": checks.missing_wheels,
            "cnctl_pipeline_problem": checks.pipeline_problem,
            "cnctl_model_options": model.options,
            "cnctl_model_command": scripts.model_command,
            "cnctl_serve_command": scripts.serve_command,
        }
