"""The verify layer: a machine-readable health report on every host, refreshed by a timer, and a deploy that
fails a host which is not healthy at its end.

1. The layer's script (cnhost/health_report.py, stdlib only, one copy for both engines) shipped beside the
   inference layer's model_serve.py, and its settings (/etc/circularnet/health-report.json: the role
   defaults and the host's variables, templates/verify/health-report.json.j2);
2. the deploy record (/var/lib/circularnet/deploy.json, templates/verify/deploy.json.j2): stack, model
   version and action, runtime, image. No timestamp in it, so a deploy that changes none of these rewrites
   nothing: its mtime is when the deployed state last changed;
3. circularnet-health.service (hardened, writes only /var/lib/circularnet) and its timer
   (templates/systemd/circularnet-health.*.j2), enabled and started; systemd reloaded and the timer
   restarted only when a unit changed;
4. last, the report run read-only, as a fact (it changes nothing, so a converged host counts no change):
   an unhealthy host fails with the report's problems, each naming what is wrong and the fix.

Names, paths and thresholds are roles/verify/defaults/main.yml; a host's own verify_* values (its inventory,
or pyinfra's `--data`) override them, as inventory variables do for the role.

roles/verify is the same layer for Ansible: same script, settings, files and verdict.
"""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra import host, state
from pyinfra.api import FactBase, deploy, operation
from pyinfra.operations import systemd

from deploy.rules import scripts
from deploy.rules.verify import check_command, record, report_of, settings, verdict
from deploy.steps import after_change, directory, fail, host_settings, programs_shipped, template, wishes


class HealthReport(FactBase):
    """The verify layer's report, computed now and written nowhere (health_report.py --read-only)."""

    def command(self, helper: str, config: str) -> str:
        return check_command(helper, config)

    def process(self, output: list[str]) -> dict[str, Any]:
        return report_of(output)


@operation(is_idempotent=True)
def healthy(helper: str, config: str):
    """Ensure the host is healthy once every layer has run: fails it with the report's problems, changes nothing."""
    if not state.is_executing:
        return  # a dry run: the layers before have not run
    problem = verdict(host.get_fact(HealthReport, helper=helper, config=config), host.name)
    if problem:
        yield fail(problem)


@deploy("Verify")
def verify() -> None:
    """The health report's script, settings, deploy record and timer; the host fails when it is unhealthy."""
    wants, data = wishes(), host_settings("verify")
    helper, config = data["verify_helper"], data["verify_settings"]
    directory("Verify: settings directory", config.rsplit("/", 1)[0])
    directory("Verify: state directory", data["verify_report"].rsplit("/", 1)[0])
    programs_shipped("Verify", scripts.program_home(helper))
    template("Verify: the report's settings", "verify/health-report.json.j2", config,
             health_settings=settings(wants, data))
    template("Verify: the deploy record", "verify/deploy.json.j2", data["verify_deploy_record"],
             deploy_record=record(wants))
    unit_vars = {"health_helper": helper, "health_programs": scripts.program_home(helper), "health_config": config, "state_dir": data["verify_report"].rsplit("/", 1)[0],
                 "triton_unit": data["verify_triton_unit"], "bind_address": wants["cn_inference_bind_address"],
                 "report_interval": data["verify_interval"], "report_timeout": data["verify_timeout"],
                 "metrics_textfile": data["verify_metrics_textfile"],
                 "metrics_dir": data["verify_metrics_textfile"].rsplit("/", 1)[0]}
    unit = data["verify_unit"]
    service = template("Verify: the report's service unit", "systemd/circularnet-health.service.j2",
                       f"/etc/systemd/system/{unit}.service", **unit_vars)
    timer = template("Verify: the report's timer unit", "systemd/circularnet-health.timer.j2",
                     f"/etc/systemd/system/{unit}.timer", **unit_vars)
    after_change(name="Verify: systemd reloaded and the timer restarted (a unit changed)", changed=[service, timer],
                 commands=["systemctl daemon-reload", shlex.join(["systemctl", "restart", f"{unit}.timer"])])
    systemd.service(name="Verify: the report's timer enabled and started", service=f"{unit}.timer",
                    running=True, enabled=True)
    healthy(name="Verify: the host is healthy (the report, read-only)", helper=helper, config=config)
