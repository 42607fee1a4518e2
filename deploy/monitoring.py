"""The monitoring layer: every host's metrics for Prometheus, on the address Triton binds only.

1. node-exporter's systemd drop-in (templates/systemd/prometheus-node-exporter.conf.j2): the listen address
   (the address Triton binds, the stack's `monitoring.nodeExporterPort`), the textfile collector's directory, and
   hardening over the package's unit. Written BEFORE the package is installed: the package's postinst reloads
   systemd and starts the exporter, which then listens on that address from its first start, never on all;
2. Debian's (Ubuntu's) prometheus-node-exporter, without its recommended collectors; restarted when the
   drop-in changed, enabled and running;
3. the textfile collector's directory, where the verify layer's health report writes its metrics and
4. the GPU collector (cnhost/gpu_metrics.py, shipped with the other host programs) writes the GPU's: a hardened
   service (templates/systemd/circularnet-gpu-metrics.service.j2) that runs nvidia-smi (servers, cloud VMs) or
   tegrastats (Jetsons) in their own loops; restarted when its unit changed, enabled and running.

Triton's own metrics (its metrics port, bound to the same address) are the inference layer's. A host whose
named bind interface has no address is refused before anything changes. Names, paths and settings are
roles/monitoring/defaults/main.yml; roles/monitoring is the same layer for Ansible.
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, systemd

from deploy.facts import InterfaceAddress
from deploy.rules import checks, scripts
from deploy.rules.monitoring import exporter_vars, gpu_unit_vars
from deploy.steps import (
    after_change,
    directory,
    host_settings,
    index_refreshed,
    programs_shipped,
    refused,
    template,
    wishes,
)


@deploy("Monitoring")
def monitoring() -> None:
    """node-exporter on Triton's address with its textfile directory, and the GPU collector; refused when the
    host cannot bind that address."""
    wants, data = wishes(), host_settings("monitoring")
    interface = wants.get("cn_inference_bind_interface")
    found = {"address": host.get_fact(InterfaceAddress, interface=interface) if interface else None}
    problem = checks.bind_interface_problem(found, wants)
    if problem:
        refused(name="Monitoring: the host can bind the exporter's address", message=problem)
        return
    exporter, dropin = data["monitoring_exporter_unit"], data["monitoring_exporter_dropin"]
    directory("Monitoring: node-exporter's drop-in directory", dropin.rsplit("/", 1)[0])
    configured = template("Monitoring: node-exporter's address, textfile directory and hardening (before it starts)",
                          "systemd/prometheus-node-exporter.conf.j2", dropin,
                          **exporter_vars(wants, data, checks.inference_address(found, wants)))
    packages = list(data["monitoring_packages"])
    index_refreshed(name="Monitoring: package index fresh for its packages", changed=[], packages=packages,
                    timeout=data["monitoring_apt_update_timeout"])
    apt.packages(name="Monitoring: prometheus-node-exporter", packages=packages, no_recommends=True)
    after_change(name="Monitoring: systemd reloaded and node-exporter restarted (its drop-in changed)",
                 changed=[configured], commands=["systemctl daemon-reload", shlex.join(["systemctl", "restart", exporter])])
    systemd.service(name="Monitoring: node-exporter enabled and running", service=exporter, running=True, enabled=True)

    directory("Monitoring: the textfile collector's directory", data["monitoring_textfile_dir"])
    programs_shipped("Monitoring", scripts.program_home(data["monitoring_gpu_helper"]))
    unit = data["monitoring_gpu_unit"]
    collector = template("Monitoring: the GPU collector's unit", "systemd/circularnet-gpu-metrics.service.j2",
                         f"/etc/systemd/system/{unit}.service", **gpu_unit_vars(wants, data))
    after_change(name="Monitoring: systemd reloaded and the GPU collector restarted (its unit changed)",
                 changed=[collector], commands=["systemctl daemon-reload", shlex.join(["systemctl", "restart", f"{unit}.service"])])
    systemd.service(name="Monitoring: the GPU collector enabled and running", service=f"{unit}.service", running=True,
                    enabled=True)
