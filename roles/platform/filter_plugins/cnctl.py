"""Filters that give the roles the pyinfra deploys' own facts and verdicts: one copy of each, in deploy/.

deploy/probe.py runs deploy/facts.py's commands in one round trip and parses their output with the same
`process()`; deploy/checks.py holds the verdicts (platform refusal, pins, driver, nvcc, Docker); the layers'
pure builders (apt sources, pins, the nvidia-ctk command) come from their pyinfra modules. The
repository root goes on sys.path so the roles work from a checkout with cnctl's venv, as the playbook does.
Loaded with the platform role, which every play of playbooks/site.yml applies first.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from deploy import checks, container, inference, jetson, model, probe, scripts  # after the path is set


class FilterModule:
    """cnctl_* filters: see deploy/probe.py and deploy/checks.py."""

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
            "cnctl_inference_unit_vars": inference.unit_variables,
            "cnctl_inference_options": inference.options,
            "cnctl_inference_endpoint_path": inference.endpoint_path,
            "cnctl_serve_command": scripts.serve_command,
            "cnctl_pip_install_command": inference.pip_install_command,
            "cnctl_missing_wheels": checks.missing_wheels,
        }
