"""The host layers' templates: both engines render the same ones (the parity of their bytes is proven once,
for every template, by tests/unit/test_engines.py RENDERINGS), and what they render is what the tools on a
host accept: apt applies the pins, systemd-analyze finds nothing to say about the unit, daemon.json is JSON.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.unit.render_parity import render
from tests.unit.test_engines import RENDERINGS

REPO = Path(__file__).resolve().parents[2]
LAYERS = ("platform", "nvidia", "jetson", "container", "model", "inference")


def _pyinfra_templates() -> set[str]:
    """Templates the pyinfra deploys render: deploy/steps.py `template(name, "<src>", ...)` and its helpers."""
    text = "\n".join((REPO / "deploy" / f"{name}.py").read_text() for name in (*LAYERS, "steps"))
    return set(re.findall(r'"([a-z]+/[a-z.-]+\.j2)"', text))


def _ansible_templates() -> set[str]:
    """Templates the roles render: `src: "{{ <role>_templates_dir }}/<src>"`."""
    found: set[str] = set()
    for layer in LAYERS:
        for tasks in (REPO / "roles" / layer / "tasks").glob("*.yml"):
            found |= set(re.findall(r'_templates_dir \}\}/([a-z]+/[a-z.-]+\.j2)"', tasks.read_text()))
    return found


def test_both_engines_render_the_same_templates_and_every_one_is_proven_byte_identical() -> None:
    by_pyinfra, by_ansible = _pyinfra_templates(), _ansible_templates()
    assert by_pyinfra == by_ansible
    assert by_pyinfra >= {"apt/source.list.j2", "apt/preferences.j2", "docker/daemon.json.j2",
                          "modprobe/blacklist-nouveau.conf.j2", "systemd/jetson-clocks.service.j2", "platform/facts.json.j2"}
    assert by_pyinfra <= {src for src, _ in RENDERINGS}, "a layer template is missing from test_engines.RENDERINGS"


def _pinned(pins: Path) -> set[str]:
    """The packages `apt-cache policy` lists as pinned when it reads only `pins` as its preferences."""
    parts = pins.parent / "preferences.d"
    parts.mkdir(exist_ok=True)
    result = subprocess.run(["apt-cache", "-o", f"Dir::Etc::Preferences={pins}", "-o", f"Dir::Etc::PreferencesParts={parts}",
                             "policy"], capture_output=True, text=True, check=True, timeout=60)
    assert result.stderr == ""
    listed = result.stdout.partition("Pinned packages:")[2].splitlines()
    return {line.split()[0] for line in listed if "with priority 1001" in line}


def _installed_version(package: str) -> str:
    return subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=True).stdout


def test_apt_applies_every_pin_of_the_rendered_preferences(tmp_path: Path) -> None:
    """Pins on packages this machine has installed (dpkg and apt), a glob and an exact version, as the
    layers write them: apt must list both as pinned (stanzas run together would lose one)."""
    dpkg = _installed_version("dpkg")
    pins = tmp_path / "cnctl.pref"
    pins.write_text(render("apt/preferences.j2", description="test", pins=[
        {"packages": ["dpkg"], "version": dpkg.rsplit(".", 1)[0] + "*"},
        {"packages": ["apt"], "version": _installed_version("apt")}]))
    assert _pinned(pins) == {"dpkg", "apt"}


def test_pins_run_together_lose_one_so_the_test_above_can_fail(tmp_path: Path) -> None:
    pins = tmp_path / "bad.pref"
    pins.write_text(f"Package: dpkg\nPin: version {_installed_version('dpkg')}\nPin-Priority: 1001\n"
                    f"Package: apt\nPin: version {_installed_version('apt')}\nPin-Priority: 1001\n")
    assert _pinned(pins) != {"dpkg", "apt"}


@pytest.mark.parametrize("mirrors", [[], ["https://mirror.plant.local", "http://10.0.0.5:5000"]])
def test_docker_settings_are_json_with_rotation_data_root_and_mirrors(mirrors: list[str]) -> None:
    settings = json.loads(render("docker/daemon.json.j2", data_root="/srv/docker", log_max_size="50m", log_max_files=5,
                                  registry_mirrors=mirrors))
    expected = {"data-root": "/srv/docker", "log-driver": "json-file", "log-opts": {"max-file": "5", "max-size": "50m"}}
    assert settings == ({**expected, "registry-mirrors": mirrors} if mirrors else expected)


def test_the_jetson_clocks_unit_verifies_silently(tmp_path: Path) -> None:
    """systemd-analyze only warns (rc 0) about unknown keys or bad values: any output at all is a failure."""
    tool = tmp_path / "jetson_clocks"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    unit = tmp_path / "cnctl-jetson-clocks.service"
    unit.write_text(render("systemd/jetson-clocks.service.j2", jetson_clocks=str(tool)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False,
                            timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    text = unit.read_text()
    assert "ProtectKernelTunables" not in text, "jetson_clocks writes clock limits through /sys"
    broken = tmp_path / "broken.service"
    broken.write_text(text.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    warned = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True, check=False,
                            timeout=60)
    assert "NoNewPrivilege" in warned.stderr  # the check above would see a typo


def test_the_nouveau_blacklist_blocks_the_module_and_its_modesetting() -> None:
    lines = [line for line in render("modprobe/blacklist-nouveau.conf.j2").splitlines() if not line.startswith("#")]
    assert lines == ["blacklist nouveau", "options nouveau modeset=0"]


def _triton_unit(tmp_path: Path, runtime: str) -> tuple[Path, list[Path]]:
    """The Triton unit of `runtime` rendered with stand-in executables under tmp_path, and the units it needs."""
    from tests.unit.test_engines import TRITON_UNIT

    docker, server = tmp_path / "docker", tmp_path / "tritonserver"
    (server / "bin").mkdir(parents=True)
    for exe in (docker, server / "bin" / "tritonserver"):
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    unit = tmp_path / "circularnet-triton.service"
    unit.write_text(render("systemd/circularnet-triton.service.j2",
                            **{**TRITON_UNIT, "runtime": runtime, "docker": str(docker), "triton_server": str(server)}))
    needed = tmp_path / "docker.service"  # Requires= of the container unit
    needed.write_text(f"[Service]\nExecStart={docker}\n")
    return unit, [needed] if runtime == "container" else []


@pytest.mark.parametrize("runtime", ["container", "native"])
def test_the_triton_unit_verifies_silently_binds_one_address_and_loads_only_explicitly(tmp_path: Path, runtime: str) -> None:
    unit, needed = _triton_unit(tmp_path, runtime)
    result = subprocess.run(["systemd-analyze", "verify", *map(str, needed), str(unit)], capture_output=True, text=True,
                            check=False, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    start = next(line for line in unit.read_text().splitlines() if line.startswith("ExecStart="))
    assert "--model-control-mode=explicit" in start and "--load-model" not in start
    assert re.findall(r"--(http|grpc|metrics)-address=(\S+)", start) == [(k, "127.0.0.1") for k in ("http", "grpc", "metrics")]
    assert "Restart=on-failure" in unit.read_text()
    if runtime == "container":
        assert "/models:ro " in start and "--network host" in start and "--runtime nvidia" in start
