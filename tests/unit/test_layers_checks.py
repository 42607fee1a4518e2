"""The host layers' verdicts as data: real command output in, through deploy/facts.py's parsers (the same for
both engines: deploy/rules/probe.py), and the wishes of real stacks (cnctl.hostvars) -> ok, or the refusal text.

The facts are built from the outputs the tools print (shared/reference/nvidia-platform.md), not written as
parsed dicts, so a change to a parser that would blind a verdict fails here.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from cnctl.catalog import catalog
from cnctl.config import load_stack
from cnctl.config.schema import OsName
from cnctl.hostvars import host_vars
from deploy.facts import DockerRuntimes, DpkgVersions, NvccRelease, NvidiaGpus, OsIdentity, SecureBoot, TegraRelease
from deploy.jetson import power_mode_problem
from deploy.nvidia import reboot_needed
from deploy.rules import checks, probe

UBUNTU_2204 = ['PRETTY_NAME="Ubuntu 22.04.5 LTS"', 'NAME="Ubuntu"', 'VERSION_ID="22.04"', "VERSION_CODENAME=jammy",
               "ID=ubuntu", "ID_LIKE=debian", "UBUNTU_CODENAME=jammy"]
UBUNTU_2404 = ['NAME="Ubuntu"', 'VERSION_ID="24.04"', "VERSION_CODENAME=noble", "ID=ubuntu"]
DEBIAN_12 = ['PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"', 'VERSION_ID="12"', "VERSION_CODENAME=bookworm", "ID=debian"]
ROCKY_9 = ['NAME="Rocky Linux"', 'VERSION_ID="9.4"', 'ID="rocky"']
TEGRA_3630 = catalog().platforms.jetson.release("6.0").nv_tegra_release().splitlines()
TEGRA_3643 = catalog().platforms.jetson.release("6.2").nv_tegra_release().splitlines()


def _wishes(group: str, *, substitution: bool = False, engine: str = "docker-ce") -> dict[str, Any]:
    """The cn_* variables of the local stack's first edge device or server, with or without the sandbox's
    declared Jetson OS substitution, and with the container engine given."""
    cfg = load_stack("local")
    assert cfg.sandbox is not None
    jetson_os = OsName(id="debian", version="12", codename="bookworm") if substitution else None
    cfg = cfg.model_copy(update={"sandbox": cfg.sandbox.model_copy(update={"jetson_os": jetson_os})})
    cfg = cfg.model_copy(update={"container": cfg.container.model_copy(update={"engine": engine})})
    if group == "edge":
        return host_vars(cfg, "edge", cfg.fleets.edge[0])
    return host_vars(cfg, "servers", cfg.fleets.servers[0])


def _found(os: list[str] | None, arch: str, tegra: list[str] | None = None, l4t_core: str | None = None) -> dict[str, Any]:
    core = [f"nvidia-l4t-core {l4t_core} ii "] if l4t_core else []
    return {
        "os": OsIdentity().process(os or []),
        "dpkg_arch": arch,
        "tegra": TegraRelease().process(tegra or []),
        "l4t_core": DpkgVersions().process(core),
    }


# --- platform: (found, wishes) -> "" or the refusal -------------------------------------------------------

JETSON_60 = ("edge", True)  # belt-1-orin of the local stack: JetPack 6.0, substitution declared
GOOD = [
    ("server on Ubuntu 22.04", _found(UBUNTU_2204, "amd64"), ("servers", False)),
    ("server on Ubuntu 24.04", _found(UBUNTU_2404, "amd64"), ("servers", False)),
    ("server on Debian 12", _found(DEBIAN_12, "amd64"), ("servers", False)),
    ("Jetson JP 6.0 on L4T's Ubuntu", _found(UBUNTU_2204, "arm64", TEGRA_3630, "36.3.0-20240506102626"), JETSON_60),
    ("Jetson on the declared sandbox OS", _found(DEBIAN_12, "arm64", TEGRA_3630, "36.3.0-20240506102626"), JETSON_60),
    ("Jetson without nvidia-l4t-core installed", _found(UBUNTU_2204, "arm64", TEGRA_3630), JETSON_60),
]
BAD = [
    ("Jetson on another L4T", _found(UBUNTU_2204, "arm64", TEGRA_3643), JETSON_60,
     ["belt-1-orin: platform refused", "runs L4T 36.4.3 (JetPack 6.2)", "wants JetPack 6.0 (L4T 36.3.0)",
      "36.4.0 (JetPack 6.1)", "re-flash", "Nothing was changed on this host."]),
    ("Jetson on Debian without the substitution", _found(DEBIAN_12, "arm64", TEGRA_3630), ("edge", False),
     ["runs debian 12 (bookworm)", "supports ubuntu 22.04 (jammy) on a jetson"]),
    ("not a Jetson at all", _found(UBUNTU_2204, "arm64"), JETSON_60, ["has no /etc/nv_tegra_release"]),
    ("Jetson on amd64", _found(UBUNTU_2204, "amd64", TEGRA_3630), JETSON_60, ["is amd64; a jetson must be arm64"]),
    ("nvidia-l4t-core of another release", _found(UBUNTU_2204, "arm64", TEGRA_3630, "36.4.3-20250107174145"), JETSON_60,
     ["nvidia-l4t-core 36.4.3-20250107174145, not of the L4T 36.3.0"]),
    ("unparsable nv_tegra_release", _found(UBUNTU_2204, "arm64", ["garbage"]), JETSON_60, ["does not parse ('garbage')"]),
    ("server on Rocky", _found(ROCKY_9, "amd64"), ("servers", False),
     ["runs rocky 9.4", "supports ubuntu 22.04 (jammy), ubuntu 24.04 (noble), debian 12 (bookworm) on a server"]),
    ("server without os-release", _found(None, "amd64"), ("servers", False), ["an unknown OS"]),
    ("server that is a Jetson", _found(UBUNTU_2204, "amd64", TEGRA_3630), ("servers", False),
     ["is a Jetson (/etc/nv_tegra_release: L4T 36.3.0) but its fleet lists it as a server"]),
    ("server on arm64", _found(UBUNTU_2204, "arm64"), ("servers", False), ["is arm64; a server must be amd64"]),
]


@pytest.mark.parametrize(("found", "where"), [(f, w) for _, f, w in GOOD], ids=[n for n, _, _ in GOOD])
def test_a_supported_host_is_accepted(found: dict[str, Any], where: tuple[str, bool]) -> None:
    assert checks.platform_refusal(found, _wishes(where[0], substitution=where[1])) == ""


@pytest.mark.parametrize(("found", "where", "says"), [(f, w, s) for _, f, w, s in BAD], ids=[n for n, *_ in BAD])
def test_an_unsupported_or_mismatched_host_is_refused_in_one_line_naming_it(
        found: dict[str, Any], where: tuple[str, bool], says: list[str]) -> None:
    refusal = checks.platform_refusal(found, _wishes(where[0], substitution=where[1]))
    assert "\n" not in refusal and refusal.endswith("Nothing was changed on this host.")
    assert refusal.startswith(("belt-1-orin: platform refused: it ", "gpu-server-1: platform refused: it "))
    for part in says:
        assert part in refusal


def test_the_declared_substitution_is_named_as_such_in_a_refusal() -> None:
    refusal = checks.platform_refusal(_found(ROCKY_9, "arm64", TEGRA_3630), _wishes("edge", substitution=True))
    assert "debian 12 (bookworm) (declared substitution: sandbox.jetsonOs)" in refusal


def test_docker_io_needs_pins_for_the_hosts_release() -> None:
    wishes = _wishes("servers", engine="docker.io")
    assert checks.platform_refusal(_found(DEBIAN_12, "amd64"), wishes) == ""
    refusal = checks.platform_refusal(_found(UBUNTU_2404, "amd64"), wishes)
    assert "runs noble, for which the platform matrix pins no docker.io packages (pinned for: bookworm, jammy)" in refusal
    assert checks.platform_refusal(_found(UBUNTU_2404, "amd64"), _wishes("servers", engine="docker-ce")) == ""


# --- packages ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dpkg", "wrong"), [
    (["docker.io 20.10.24+dfsg1-1+deb12u1+b6 ii ", "containerd 1.6.20~ds1-1+deb12u3 ii "], []),
    (["docker.io 24.0.7-0ubuntu2~22.04.1 ii ", "containerd 1.6.20~ds1-1+deb12u3 ii "],
     ["docker.io 24.0.7-0ubuntu2~22.04.1 (pinned: 20.10.24+dfsg1-*)"]),
    (["docker.io 20.10.24+dfsg1-1 rc "], ["docker.io not installed (pinned: 20.10.24+dfsg1-*)",
                                         "containerd not installed (pinned: 1.6.20~ds1-*)"]),
])
def test_packages_must_be_installed_at_their_pins(dpkg: list[str], wrong: list[str]) -> None:
    pins = [{"packages": ["docker.io"], "version": "20.10.24+dfsg1-*"}, {"packages": ["containerd"], "version": "1.6.20~ds1-*"}]
    assert checks.unpinned(DpkgVersions().process(dpkg), pins) == wrong


def test_kernel_packages_to_hold_are_the_installed_ones_matching() -> None:
    installed = DpkgVersions().process(["linux-image-6.8.0-45-generic 6.8.0-45.45 ii ", "linux-image-generic 6.8.0.45 ii ",
                                        "linux-firmware 20240318 ii ", "linux-headers-6.8.0-45 6.8.0-45.45 rc "])
    assert checks.installed_matching(installed, ["linux-image-*", "linux-headers-*"]) == [
        "linux-image-6.8.0-45-generic", "linux-image-generic"]


# --- nvidia ----------------------------------------------------------------------------------------------------

L4_ROW = ["NVIDIA L4, 550.90.07, 23034, 00000000:00:03.0"]
SMI_FAILED = [("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the "
               "latest NVIDIA driver is installed and running.")]


@pytest.mark.parametrize(("smi", "cloud", "problem"), [
    (L4_ROW, False, ""),
    (L4_ROW + ["NVIDIA L4, 550.90.07, 23034, 00000000:00:04.0"], False, ""),
    (["NVIDIA L4, 570.172.08, 23034, 00000000:00:03.0"], False, "nvidia-smi reports driver 570.172.08, the stack pins 550.90.07"),
    (SMI_FAILED, False, "nvidia-smi lists no GPU (driver not loaded, or no GPU)"),
    (["Tesla T4, 550.54.15, 15360, 00000000:00:04.0"], True, ""),
    (["Tesla T4, 535.183.01, 15360, 00000000:00:04.0"], True, "nvidia-smi reports driver 535.183.01, the image family's branch is 550"),
])
def test_the_driver_must_answer_at_the_pinned_version(smi: list[str], cloud: bool, problem: str) -> None:
    wishes = {"cn_driver_branch": "550", "cn_driver_version": None if cloud else "550.90.07"}
    assert checks.driver_problem(NvidiaGpus().process(smi), wishes) == problem


@pytest.mark.parametrize(("efivar", "on"), [
    (["  6   0   0   0   1"], True),   # `od -An -t u1` of the SecureBoot variable: 4 attribute bytes, then the value
    (["  6   0   0   0   0"], False),
    ([], None),                       # no EFI variables: BIOS boot, or a container
])
def test_secure_boot_is_read_from_its_efi_variable(efivar: list[str], on: bool | None) -> None:
    assert SecureBoot().process(efivar) is on


def test_a_driver_that_does_not_load_under_secure_boot_says_why() -> None:
    wishes = {"cn_driver_branch": "550", "cn_driver_version": "550.90.07"}
    problem = checks.driver_problem(NvidiaGpus().process(SMI_FAILED), wishes, secure_boot=True)
    assert problem.startswith("nvidia-smi lists no GPU") and "Secure Boot is on" in problem and "MOK" in problem
    assert "Secure Boot" not in checks.driver_problem(NvidiaGpus().process(SMI_FAILED), wishes, secure_boot=None)


NVCC_124 = ["nvcc: NVIDIA (R) Cuda compiler driver", "Built on Thu_Mar_28_02:18:24_PDT_2024",
            "Cuda compilation tools, release 12.4, V12.4.131", "Build cuda_12.4.r12.4/compiler.34097967_0"]


@pytest.mark.parametrize(("nvcc", "wishes", "problem"), [
    (NVCC_124, {"cn_nvcc_version": "12.4.131", "cn_cuda": "12.4"}, ""),
    (NVCC_124, {"cn_nvcc_version": "12.8.93", "cn_cuda": "12.8"}, "nvcc is 12.4.131, the stack pins 12.8.93"),
    (NVCC_124, {"cn_nvcc_version": None, "cn_cuda": "12.4"}, ""),
    (NVCC_124, {"cn_nvcc_version": None, "cn_cuda": "12.8"}, "nvcc is CUDA 12.4, the image family brings 12.8"),
    ([], {"cn_nvcc_version": "12.4.131", "cn_cuda": "12.4"}, "nvcc is missing (CUDA 12.4 wanted)"),
])
def test_nvcc_must_be_the_pinned_toolkits(nvcc: list[str], wishes: dict[str, Any], problem: str) -> None:
    assert checks.nvcc_problem(NvccRelease().process(nvcc), wishes) == problem


@pytest.mark.parametrize(("first", "pending", "smi", "modules", "needed"), [
    (True, False, SMI_FAILED, [], True),         # fresh install, module not loaded yet
    (True, False, L4_ROW, ["nouveau"], True),    # nouveau still holds the GPU
    (True, False, L4_ROW, ["nvidia"], False),    # the driver loaded without a reboot
    (False, True, SMI_FAILED, [], True),         # a pending reboot that did not happen yet
    (False, True, L4_ROW, [], False),            # rebooted since: the marker is cleared
    (False, False, SMI_FAILED, [], False),       # not a first install: a broken driver is an error, not a reboot
])
def test_a_reboot_is_due_only_after_a_first_install_that_does_not_answer(
        first: bool, pending: bool, smi: list[str], modules: list[str], needed: bool) -> None:
    assert reboot_needed(first, pending, NvidiaGpus().process(smi), modules) is needed


# --- jetson ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("nvpmodel", "mode", "problem"), [
    (["NV Power Mode: MAXN", "0"], 0, ""),
    (["NV Power Mode: MODE_30W", "2"], 0, "nvpmodel reports MODE_30W (id 2), the fleet entry wants mode 0"),
    (["NV Power Mode: MODE_30W", "2"], None, ""),
    ([], 0, "nvpmodel reports no answer from nvpmodel -q, the fleet entry wants mode 0"),
])
def test_the_power_mode_must_be_the_fleet_entrys(nvpmodel: list[str], mode: int | None, problem: str) -> None:
    from deploy.facts import NvpmodelMode

    assert power_mode_problem(NvpmodelMode().process(nvpmodel), mode) == problem


# --- container ----------------------------------------------------------------------------------------------------


def _docker(default: str, runtimes: list[str], errors: list[str] | None = None) -> list[str]:
    import json

    info = {"ServerVersion": "" if errors else "20.10.24+dfsg1", "DefaultRuntime": default,
            "Runtimes": {name: {"path": name} for name in runtimes}, "ServerErrors": errors}
    return [json.dumps(info)]


@pytest.mark.parametrize(("info", "platform", "problem"), [
    (_docker("runc", ["io.containerd.runc.v2", "nvidia", "runc"]), "server", ""),
    (_docker("nvidia", ["nvidia", "runc"]), "jetson", ""),
    (_docker("runc", ["nvidia", "runc"]), "jetson", "docker's default runtime is runc, not nvidia (Jetson containers need it)"),
    (_docker("runc", ["io.containerd.runc.v2", "runc"]), "server", "docker info lists runtimes io.containerd.runc.v2, runc, without nvidia"),
    (_docker("runc", [], ["Cannot connect to the Docker daemon at unix:///var/run/docker.sock."]), "server",
     "the Docker engine is not running: Cannot connect to the Docker daemon at unix:///var/run/docker.sock."),
    ([], "server", "docker info gave no answer (docker missing?)"),
])
def test_docker_must_run_with_the_nvidia_runtime(info: list[str], platform: str, problem: str) -> None:
    assert checks.docker_problem(DockerRuntimes().process(info), {"cn_platform": platform}) == problem


# --- the roles read the same facts: deploy/rules/probe.py's one round trip gives the pyinfra values -----------------


def test_one_probe_round_trip_parses_to_what_each_fact_gives_alone(tmp_path: Path) -> None:
    """Run the probe script in a shell with stand-in tools printing the real formats, then compare each
    section with the fact's own process() of that tool's output; a missing tool gives the fact's default."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tools = {"nvidia-smi": "\n".join(L4_ROW), "nvpmodel": "NV Power Mode: MAXN\n0", "dpkg-query": "dpkg 1.21.22 ii "}
    for name, output in tools.items():
        (bin_dir / name).write_text(f"#!/bin/sh\nprintf '%s\\n' '{output}'\n")
        (bin_dir / name).chmod(0o755)
    probes: dict[str, list[Any]] = {"gpus": ["NvidiaGpus"], "mode": ["NvpmodelMode"], "installed": ["DpkgVersions", {"packages": ["dpkg"]}],
              "docker": ["DockerRuntimes"], "modules": ["LoadedModules"]}
    out = subprocess.run(["/bin/sh", "-c", probe.script(probes)], capture_output=True, text=True, check=True,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin"}).stdout
    values = probe.parse(out.splitlines(), probes)
    assert values["gpus"] == NvidiaGpus().process(L4_ROW) and values["gpus"][0]["driver_version"] == "550.90.07"
    assert values["mode"] == {"name": "MAXN", "id": 0}
    assert values["installed"] == {"dpkg": "1.21.22"}
    assert values["docker"] == DockerRuntimes().default()  # no docker on PATH: absent, not an error
    assert isinstance(values["modules"], list)


def test_an_unknown_fact_in_a_probe_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown fact 'NvidiaSmi'"):
        probe.script({"x": ["NvidiaSmi"]})


def test_docker_io_pins_name_os_releases_the_matrix_supports() -> None:
    """A docker.io pin for a release no platform runs would never apply; a pin must be an apt version glob."""
    platforms = catalog().platforms
    codenames = {os.codename for os in platforms.servers.os} | {platforms.jetson.os.codename}
    docker_io = platforms.container.docker_io
    assert set(docker_io.releases) <= codenames
    assert set(docker_io.verified) == set(docker_io.releases)
    for pins in docker_io.releases.values():
        assert set(pins) == set(docker_io.packages)


@pytest.mark.parametrize(("mirrors", "problem"), [
    ({"siteApt": "http://10.0.0.2:8080/apt/", "siteAptKey": "http://10.0.0.2:8080/apt/key.asc"}, None),
    ({}, None),
    ({"siteApt": "http://10.0.0.2:8080/apt/"}, "mirrors.siteAptKey"),
    ({"siteAptKey": "http://10.0.0.2:8080/apt/key.asc"}, "mirrors.siteApt"),
])
def test_a_site_repository_comes_with_its_key(mirrors: dict[str, str], problem: str | None) -> None:
    from cnctl.config.checks import site_apt_has_key
    from cnctl.config.schema import Mirrors

    cfg = load_stack("local").model_copy(update={"mirrors": Mirrors.model_validate(mirrors)})
    assert [p.path for p in site_apt_has_key(cfg, catalog())] == ([problem] if problem else [])
