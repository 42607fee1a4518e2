"""The monitoring layer in both engines (deploy/monitoring.py, roles/monitoring): the same templates rendered to
the same bytes, node-exporter listening on Triton's address only (its drop-in, merged over Debian's own unit,
verified and hardened as systemd reads it), the GPU collector's unit hardened with no network, role inputs
stopped by argument_specs naming them, the builders as data, and the roles' filters the deploy's functions."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cnctl.config import load_stack
from cnctl.hostvars import host_vars
from deploy.rules import monitoring as monitoring_rules
from deploy.steps import role_data
from tests.unit import collection_tree
from tests.unit.render_parity import by_ansible, by_pyinfra, render
from tests.unit.test_layers_roles import assert_bad_inputs_named

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "monitoring"
MAX_EXPOSURE = 3.0
# Debian bookworm's prometheus-node-exporter 1.5.0-1+b6, /lib/systemd/system/prometheus-node-exporter.service, as
# the package ships it: the unit the layer's drop-in is merged over (systemd reads the drop-in after it).
PACKAGE_UNIT = """[Unit]
Description=Prometheus exporter for machine metrics
Documentation=https://github.com/prometheus/node_exporter

[Service]
Restart=on-failure
User=prometheus
EnvironmentFile=/etc/default/prometheus-node-exporter
ExecStart=/usr/bin/prometheus-node-exporter $ARGS
ExecReload=/bin/kill -HUP $MAINPID
TimeoutStopSec=20s
SendSIGKILL=no

[Install]
WantedBy=multi-user.target
"""


def _wants(group: str = "servers") -> dict[str, Any]:
    cfg = load_stack("local")
    entry = cfg.fleets.servers[0] if group == "servers" else cfg.fleets.edge[0]
    return host_vars(cfg, group, entry)  # type: ignore[arg-type]


def _exporter(address: str = "127.0.0.1", **overrides: Any) -> dict[str, Any]:
    return {**monitoring_rules.exporter_vars(_wants(), role_data("monitoring"), address), **overrides}


def _gpu(group: str = "servers") -> dict[str, Any]:
    return monitoring_rules.gpu_unit_vars(_wants(group), role_data("monitoring"))


# (template, variables): every template of the layer, with the values a real host gives
RENDERINGS: list[tuple[str, dict[str, Any]]] = [
    ("systemd/prometheus-node-exporter.conf.j2", _exporter()),
    ("systemd/prometheus-node-exporter.conf.j2", _exporter("10.20.0.5")),
    ("systemd/prometheus-node-exporter.conf.j2", _exporter("fe80::1%eth0")),
    ("systemd/circularnet-gpu-metrics.service.j2", _gpu("servers")),
    ("systemd/circularnet-gpu-metrics.service.j2", _gpu("edge")),
]


def test_pyinfra_and_ansible_render_the_layers_templates_to_the_same_bytes(tmp_path: Path) -> None:
    assert by_pyinfra(RENDERINGS) == by_ansible(RENDERINGS, tmp_path)




# --- the builders, as data ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("address", "port", "listen"), [
    ("127.0.0.1", 9100, "127.0.0.1:9100"),
    ("10.20.0.5", 9200, "10.20.0.5:9200"),
    ("::1", 9100, "[::1]:9100"),
    ("fe80::1%eth0", 9100, "[fe80::1%eth0]:9100"),
    ("0.0.0.0", 9100, "0.0.0.0:9100"),  # only where the stack binds Triton to every address too
])
def test_node_exporter_listens_on_the_address_triton_binds(address: str, port: int, listen: str) -> None:
    assert monitoring_rules.listen_address(address, port) == listen


def test_each_platform_has_its_gpu_tool_and_an_unknown_one_is_refused() -> None:
    assert (_gpu("servers")["gpu_tool"], _gpu("edge")["gpu_tool"]) == ("nvidia-smi", "tegrastats")
    with pytest.raises(ValueError, match="neither jetson nor server"):
        monitoring_rules.gpu_tool("x86")


def test_the_exporter_and_the_collector_write_and_read_one_textfile_directory() -> None:
    data = role_data("monitoring")
    gpu = _gpu()
    assert gpu["textfile_dir"] == _exporter()["textfile_dir"] == data["monitoring_textfile_dir"]
    assert gpu["gpu_textfile"] == f"{data['monitoring_textfile_dir']}/gpu.prom"
    # the verify layer's health report writes its metrics into the same directory
    assert role_data("verify")["verify_metrics_textfile"].rsplit("/", 1)[0] == data["monitoring_textfile_dir"]
    assert _exporter()["listen"] == f"127.0.0.1:{_wants()['cn_monitoring_exporter_port']}"


# --- the units: systemd-analyze on this machine ---------------------------------------------------------------


def _exporter_unit(tmp_path: Path, address: str = "127.0.0.1") -> Path:
    """Debian's unit with the layer's drop-in merged after it, as systemd reads them (the binary: one that exists
    here, for `verify`)."""
    unit = tmp_path / "prometheus-node-exporter.service"
    dropin = render("systemd/prometheus-node-exporter.conf.j2", **_exporter(address, exporter_binary="/bin/true"))
    unit.write_text(PACKAGE_UNIT.replace("EnvironmentFile=", "EnvironmentFile=-") + dropin)
    return unit


def _gpu_unit(tmp_path: Path, group: str = "servers") -> Path:
    unit = tmp_path / "circularnet-gpu-metrics.service"
    unit.write_text(render("systemd/circularnet-gpu-metrics.service.j2", **_gpu(group)))
    return unit


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False, timeout=60)


def _exposure(unit: Path) -> float:
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)], capture_output=True,
                            text=True, check=False, timeout=60)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    return float(found.group(1))


def _bare(unit: Path) -> Path:
    """`unit` without its hardening: what the exposure bound must see go."""
    bare = unit.parent / "bare" / unit.name
    bare.parent.mkdir(exist_ok=True)
    bare.write_text("".join(line for line in unit.read_text().splitlines(keepends=True)
                            if not line.startswith(("Protect", "Private", "Restrict", "CapabilityBoundingSet", "SystemCall",
                                                    "IPAddress", "Device", "NoNewPrivileges", "MemoryDeny"))))
    return bare


def test_node_exporter_with_its_drop_in_verifies_silently_and_listens_where_the_stack_says(tmp_path: Path) -> None:
    unit = _exporter_unit(tmp_path, "fe80::1%eth0")
    result = _verify(unit)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    text = unit.read_text()
    # the package's ExecStart (and its ARGS) reset; the one that runs names the address and the textfile directory
    assert "\nExecStart=\nExecStart=/bin/true --web.listen-address=[fe80::1%%eth0]:9100 --no-collector.systemd " in text
    assert "--collector.textfile.directory=/var/lib/prometheus/node-exporter\n" in text


def test_a_hostile_textfile_directory_stays_one_argument(tmp_path: Path) -> None:
    unit = tmp_path / "prometheus-node-exporter.service"
    hostile = "/var/lib/x; /bin/sh -c 'id'$HOME%n"
    dropin = render("systemd/prometheus-node-exporter.conf.j2", **_exporter(exporter_binary="/bin/true",
                                                                            textfile_dir=hostile))
    unit.write_text(PACKAGE_UNIT + dropin)
    shown = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False, timeout=60)
    assert "--collector.textfile.directory=/var/lib/x\\x3b\\s/bin/sh\\s-c\\s\\'id\\'$$HOME%%n\n" in dropin, dropin
    assert shown.returncode == 0, shown.stderr


@pytest.mark.parametrize("address", ["127.0.0.1", "10.20.0.5"])
def test_node_exporter_is_hardened_to_an_exposure_of_at_most_3(tmp_path: Path, address: str) -> None:
    unit = _exporter_unit(tmp_path, address)
    assert _exposure(unit) <= MAX_EXPOSURE
    assert _exposure(_bare(unit)) > MAX_EXPOSURE  # the measure above would see the hardening go


@pytest.mark.parametrize("group", ["servers", "edge"])
def test_the_gpu_collector_verifies_silently_has_no_network_and_writes_only_the_textfile_directory(
        tmp_path: Path, group: str) -> None:
    unit = _gpu_unit(tmp_path, group)
    result = _verify(unit)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    text = unit.read_text()
    tool = "nvidia-smi" if group == "servers" else "tegrastats"
    assert (f"ExecStart=/usr/bin/python3 -m cnhost.gpu_metrics --tool {tool} "
            "--textfile /var/lib/prometheus/node-exporter/gpu.prom --interval 15\n") in text
    assert "ReadWritePaths=/var/lib/prometheus/node-exporter\n" in text and "PrivateNetwork=yes\n" in text
    assert "Restart=always\n" in text  # a tool that dies is started again
    assert _exposure(unit) <= MAX_EXPOSURE
    assert _exposure(_bare(unit)) > MAX_EXPOSURE


# --- the role's inputs, and the filters ----------------------------------------------------------------------------


def test_a_bad_role_variable_is_stopped_by_argument_specs_naming_it(tmp_path: Path) -> None:
    bad = [("cn_platform", "x86"), ("cn_monitoring_exporter_port", "metrics"), ("monitoring_gpu_interval", "often"),
           ("monitoring_packages", {"name": "prometheus-node-exporter"}), ("cn_inference_bind_address", None)]
    good, other = _wants(), _wants("edge")
    assert_bad_inputs_named("monitoring", tmp_path, good, other, bad)


def test_the_roles_host_variables_are_the_ones_cnctl_hostvars_gives() -> None:
    options = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    declared = {name for name in options if name.startswith("cn_")}
    for group in ("servers", "edge"):
        assert declared <= set(_wants(group)), (group, sorted(declared - set(_wants(group))))


def test_the_roles_filters_are_the_deploys_functions() -> None:
    filters = collection_tree.filters()
    for name, function in (("cnctl_monitoring_exporter_vars", monitoring_rules.exporter_vars),
                           ("cnctl_monitoring_gpu_unit_vars", monitoring_rules.gpu_unit_vars)):
        assert collection_tree.same_function(filters[name], function), name
