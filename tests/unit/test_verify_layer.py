"""The verify layer in both engines (deploy/verify.py, roles/verify): the same templates rendered to the same
bytes, units systemd accepts silently and a service hardened to an exposure of at most 3.0, role inputs
stopped by argument_specs naming them, the read-only check as data, and the wiring into both entry points."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cnctl.config import load_stack
from cnctl.hostvars import host_vars
from deploy.rules import verify as verify_rules
from deploy.steps import role_data
from tests.unit import collection_tree
from tests.unit.render_parity import by_ansible, by_pyinfra, render
from tests.unit.test_layers_roles import assert_bad_inputs_named

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TEMPLATES = REPO / "templates"
ROLE = REPO / "roles" / "verify"
MAX_EXPOSURE = 3.0


def _wants(group: str = "servers") -> dict[str, Any]:
    cfg = load_stack("local")
    entry = cfg.fleets.servers[0] if group == "servers" else cfg.fleets.edge[0]
    return host_vars(cfg, group, entry)  # type: ignore[arg-type]


def _unit_vars(bind_address: str = "127.0.0.1") -> dict[str, Any]:
    data = role_data("verify")
    return {"health_helper": data["verify_helper"], "health_programs": "/usr/local/lib/circularnet",
            "health_config": data["verify_settings"],
            "state_dir": "/var/lib/circularnet", "triton_unit": data["verify_triton_unit"], "bind_address": bind_address,
            "report_interval": data["verify_interval"], "report_timeout": data["verify_timeout"],
            "metrics_textfile": data["verify_metrics_textfile"], "metrics_dir": "/var/lib/prometheus/node-exporter"}


# (template, variables): every template of the layer, with the values a real host gives
RENDERINGS: list[tuple[str, dict[str, Any]]] = [
    ("systemd/circularnet-health.service.j2", _unit_vars()),
    ("systemd/circularnet-health.service.j2", _unit_vars("10.20.0.5")),
    ("systemd/circularnet-health.timer.j2", _unit_vars()),
    ("verify/deploy.json.j2", {"deploy_record": {"host": "gpu-server-1", "stack": "local", "runtime": "container",
                                                 "image": "registry.site:5000/tritonserver:24.08-py3",
                                                 "model": {"name": "circularnet", "version": 2, "action": "pinned"}}}),
    ("verify/deploy.json.j2", {"deploy_record": {"host": "belt-1", "stack": "prod", "runtime": "native", "image": None,
                                                 "model": {"name": "circularnet", "version": 1, "action": "previous"}}}),
    ("verify/health-report.json.j2", {"health_settings": {
        "report": "/var/lib/circularnet/health.json", "platform_record": "/var/lib/circularnet/platform.json",
        "deploy_record": "/var/lib/circularnet/deploy.json", "model_serve": "/usr/local/lib/circularnet/model_serve.py",
        "repository": "/opt/circularnet/models", "model_name": "circularnet", "bind_address": "127.0.0.1",
        "bind_interface": "ens4", "http_port": 8000, "triton_unit": "circularnet-triton.service", "min_free_percent": 10, "min_free_mib": 1024,
        "timeout": 10, "pipeline_settings": "/etc/circularnet/pipeline.json", "pipeline_stale_seconds": 900}}),
]


def test_pyinfra_and_ansible_render_the_layers_templates_to_the_same_bytes(tmp_path: Path) -> None:
    rendered = by_pyinfra(RENDERINGS)
    assert rendered == by_ansible(RENDERINGS, tmp_path)
    for text, (src, _) in zip(rendered, RENDERINGS, strict=True):
        if src.endswith(".json.j2"):
            json.loads(text)


def test_the_records_and_settings_are_json_with_what_the_builders_give() -> None:
    wants, data = _wants(), role_data("verify")
    record = json.loads(render("verify/deploy.json.j2", deploy_record=verify_rules.record(wants)))
    assert record == {"host": wants["cn_host"], "stack": "local", "runtime": wants["cn_inference_runtime"],
                      "image": wants["cn_triton_image"] if wants["cn_inference_runtime"] == "container" else None,
                      "model": {"name": "circularnet", "version": wants["cn_model_version"], "action": "pinned"}}
    assert not re.search(r"\d{4}-\d\d-\d\d|\d{10}", json.dumps(record))  # no time: a second deploy rewrites nothing
    settings = json.loads(render("verify/health-report.json.j2", health_settings=verify_rules.settings(wants, data)))
    from cnhost.health_report import DEFAULTS
    assert set(settings) == set(DEFAULTS)
    assert settings["http_port"] == wants["cn_inference_http_port"]
    assert settings["bind_interface"] == (wants["cn_inference_bind_interface"] or "")  # looked up on the host


def test_both_engines_render_the_same_templates() -> None:
    by_pyinfra = set(re.findall(r'"([a-z]+/[a-z.-]+\.j2)"', (REPO / "deploy" / "verify.py").read_text()))
    tasks = (ROLE / "tasks" / "main.yml").read_text()
    by_ansible = set(re.findall(r'_templates_dir \}\}/([a-z]+/[a-z.-]+\.j2)"', tasks))
    by_ansible |= {f"systemd/circularnet-health.{kind}.j2" for kind in ("service", "timer")
                   if "/systemd/circularnet-health.{{ item }}.j2" in tasks}
    assert by_pyinfra == by_ansible == {src for src, _ in RENDERINGS}


# --- the units: systemd-analyze on this machine ---------------------------------------------------------------


def _units(tmp_path: Path, **overrides: Any) -> tuple[Path, Path]:
    """The rendered service and timer in tmp_path (the service's ExecStart names a python3 that exists here)."""
    variables = {**_unit_vars(), **overrides}
    service = tmp_path / "circularnet-health.service"
    service.write_text(render("systemd/circularnet-health.service.j2", **variables))
    timer = tmp_path / "circularnet-health.timer"
    timer.write_text(render("systemd/circularnet-health.timer.j2", **variables))
    return service, timer


def _verify(*units: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True, check=False,
                          timeout=60)


def _exposure(unit: Path) -> float:
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)], capture_output=True, text=True,
                            check=False, timeout=60)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    return float(found.group(1))


def test_the_service_and_timer_verify_silently(tmp_path: Path) -> None:
    """systemd-analyze only warns (rc 0) about unknown keys or bad values: any output at all is a failure."""
    result = _verify(*_units(tmp_path))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    service = tmp_path / "circularnet-health.service"
    service.write_text(service.read_text().replace("ProtectSystem=strict", "ProtectSystems=strict"))
    assert "ProtectSystems" in _verify(service).stderr  # the check above would see a typo


@pytest.mark.parametrize("bind_address", ["127.0.0.1", "10.20.0.5"])
def test_the_service_is_hardened_to_an_exposure_of_at_most_3(tmp_path: Path, bind_address: str) -> None:
    service, _ = _units(tmp_path, bind_address=bind_address)
    assert _exposure(service) <= MAX_EXPOSURE
    text = service.read_text()
    # writes its state, and its metrics where node-exporter's collector is installed, only
    assert "ReadWritePaths=/var/lib/circularnet -/var/lib/prometheus/node-exporter\n" in text
    assert "ProtectSystem=strict\n" in text
    assert " --metrics /var/lib/prometheus/node-exporter/circularnet.prom\n" in text
    assert ("IPAddressAllow=localhost 10.20.0.5\n" in text) == (bind_address == "10.20.0.5")
    assert "SuccessExitStatus=1\n" in text  # unhealthy is a finding, not a failed unit
    bare = tmp_path / "bare" / "circularnet-health.service"
    bare.parent.mkdir()
    bare.write_text("".join(line for line in text.splitlines(keepends=True)
                            if not line.startswith(("Protect", "Private", "Restrict", "CapabilityBoundingSet",
                                                    "SystemCall", "IPAddress", "Device", "NoNewPrivileges"))))
    assert _exposure(bare) > MAX_EXPOSURE  # the measure above would see the hardening go


def test_the_timer_refreshes_the_report_every_interval_and_soon_after_it_starts(tmp_path: Path) -> None:
    _, timer = _units(tmp_path, report_interval="2min")
    text = timer.read_text()
    assert "OnUnitActiveSec=2min\n" in text and "OnActiveSec=30s\n" in text and "WantedBy=timers.target" in text


# --- the role's inputs, and the check as data --------------------------------------------------------------------


def test_a_bad_role_variable_is_stopped_by_argument_specs_naming_it(tmp_path: Path) -> None:
    bad = [("cn_inference_runtime", "podman"), ("cn_inference_http_port", "http"), ("cn_model_action", "latest"),
           ("verify_min_free_percent", "ten"), ("cn_host", None)]
    assert_bad_inputs_named("verify", tmp_path, _wants(), _wants("edge"), bad)


def test_the_roles_host_variables_are_the_ones_cnctl_hostvars_gives() -> None:
    options = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    declared = {name for name in options if name.startswith("cn_")}
    for group in ("servers", "edge"):
        assert declared <= set(_wants(group)), (group, sorted(declared - set(_wants(group))))


def test_the_check_command_reports_a_missing_script_instead_of_failing(tmp_path: Path) -> None:
    missing = tmp_path / "cnhost" / "health_report.py"
    result = subprocess.run(["sh", "-c", verify_rules.check_command(str(missing), "/nonexistent")], capture_output=True,
                            text=True, check=False, timeout=30)
    assert result.returncode == 0
    report = verify_rules.report_of(result.stdout.splitlines())
    assert verify_rules.verdict(report, "h") == f"h: unhealthy: {missing} is not on the host yet: run the deploy"


def test_an_unhealthy_report_fails_the_host_with_every_problem_and_a_healthy_one_with_none() -> None:
    lines = ["some warning", json.dumps({"healthy": False, "problems": ["Triton not answering", "disk full"]})]
    assert verify_rules.verdict(verify_rules.report_of(lines), "gpu-server-1") == \
        "gpu-server-1: unhealthy: Triton not answering; disk full"
    assert verify_rules.verdict(verify_rules.report_of([json.dumps({"healthy": True, "problems": []})]), "h") == ""
    garbled = verify_rules.report_of(["Traceback (most recent call last):", "ImportError: x"])
    assert not garbled["healthy"] and "printed no report" in garbled["problems"][0]


def test_the_roles_filters_are_the_deploys_functions() -> None:
    filters = collection_tree.filters()
    for name, function in (("cnctl_verify_record", verify_rules.record), ("cnctl_verify_settings", verify_rules.settings),
                           ("cnctl_verify_check_command", verify_rules.check_command)):
        assert collection_tree.same_function(filters[name], function), name


# --- wiring -------------------------------------------------------------------------------------------------


def test_verify_is_the_last_configuring_layer_of_both_engines() -> None:
    """Only the pull layer follows it: it installs or removes the agent, once the host is configured and healthy."""
    from deploy import LAYERS  # cnctl/layers.py: deploy.py applies them in its order (test_deploy_layers)

    assert LAYERS[-2:] == ("verify", "pull"), LAYERS
    for play in yaml.safe_load((REPO / "playbooks" / "site.yml").read_text()):
        roles = [(r["role"] if isinstance(r, dict) else r).rsplit(".", 1)[-1] for r in play["roles"]]  # by FQCN
        assert roles[-2:] == ["verify", "pull"], (play["name"], roles)
        verify_role = play["roles"][-2]
        assert isinstance(verify_role, dict) and "verify" in verify_role.get("tags", []), verify_role
