"""Facts as data: a command's real output in, the parsed fact out (deploy/facts.py).

Samples are the outputs quoted in ../shared/reference/nvidia-platform.md (§4 nv_tegra_release, §5
nvidia-smi and nvcc, §4 nvpmodel) and, for Docker, a client's real `docker info` JSON
(tests/unit/samples/). Each fact also meets empty and malformed output: it then says "nothing found"
instead of raising, because the layers report what they found.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from cnctl.catalog import catalog
from deploy.facts import (
    AptHolds,
    DockerImage,
    DockerRuntimes,
    DpkgVersions,
    HostPython,
    InterfaceAddress,
    KernelModules,
    NvccRelease,
    NvidiaGpus,
    NvpmodelMode,
    OsIdentity,
    TegraRelease,
    UnitsActive,
    VenvPackages,
)
from deploy.rules import checks

SAMPLES = Path(__file__).parent / "samples"

TEGRA_36_4_3 = """\
# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025
# KERNEL_VARIANT: oot
TARGET_USERSPACE_LIB_DIR=nvidia
TARGET_USERSPACE_LIB_DIR_PATH=usr/lib/aarch64-linux-gnu/nvidia
""".splitlines()


def test_tegra_release_parses_the_four_line_file() -> None:
    fact = TegraRelease().process(TEGRA_36_4_3)
    assert fact == {
        "line": TEGRA_36_4_3[0], "l4t": "36.4.3", "gcid": "38968081", "board": "generic", "eabi": "aarch64",
        "date": "Wed Jan  8 01:49:37 UTC 2025", "kernel_variant": "oot",
    }


@pytest.mark.parametrize("rel", catalog().platforms.jetson.releases, ids=lambda r: r.l4t)
def test_tegra_release_of_every_matrix_row_gives_its_l4t(rel: Any) -> None:
    """The file the matrix says a flashed device has parses back to that row's L4T and GCID."""
    fact = TegraRelease().process(rel.nv_tegra_release().splitlines())
    assert fact is not None
    assert (fact["l4t"], fact["gcid"], fact["date"]) == (rel.l4t, rel.gcid, rel.build_date)


@pytest.mark.parametrize(
    ("lines", "l4t"),
    [
        (["# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, DATE: Mon May  6 17:34:21 UTC 2024"], "36.3.0"),
        # JetPack 5 (r35) still parses: refusing it is the platform layer's job, with the release named
        (["# R35 (release), REVISION: 5.0, GCID: 35550185, BOARD: t186ref, EABI: aarch64, DATE: Tue Feb 20 04:46:31 UTC 2024"], "35.5.0"),
        (["garbage"], None),
        (["# R36 (release) REVISION 4.3"], None),
    ],
)
def test_tegra_release_first_lines(lines: list[str], l4t: str | None) -> None:
    fact = TegraRelease().process(lines)
    assert fact is not None and fact["l4t"] == l4t and fact["line"] == lines[0]


@pytest.mark.parametrize("lines", [[], [""], ["   "]])
def test_tegra_release_absent_is_none(lines: list[str]) -> None:
    assert TegraRelease().process(lines) is None


UBUNTU_2204 = """\
PRETTY_NAME="Ubuntu 22.04.4 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
VERSION="22.04.4 LTS (Jammy Jellyfish)"
VERSION_CODENAME=jammy
ID=ubuntu
ID_LIKE=debian
UBUNTU_CODENAME=jammy
""".splitlines()

DEBIAN_12 = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
""".splitlines()


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (UBUNTU_2204, {"id": "ubuntu", "version": "22.04", "codename": "jammy"}),
        (DEBIAN_12, {"id": "debian", "version": "12", "codename": "bookworm"}),
        (["ID=ubuntu", "VERSION_ID='24.04'", "UBUNTU_CODENAME=noble"], {"id": "ubuntu", "version": "24.04", "codename": "noble"}),
        (["ID=debian"], {"id": "debian", "version": None, "codename": None}),  # testing/sid: no version
        ([], None),
        (["not a key value line"], None),
    ],
)
def test_os_identity(lines: list[str], expected: dict[str, Any] | None) -> None:
    assert OsIdentity().process(lines) == expected


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["NVIDIA L4, 550.90.07, 23034, 00000000:00:03.0"],
         [{"name": "NVIDIA L4", "driver_version": "550.90.07", "memory_mib": 23034, "pci_bus_id": "00000000:00:03.0"}]),
        (["Tesla T4, 550.90.07, 15360, 00000000:00:04.0", "Tesla T4, 550.90.07, 15360, 00000000:00:05.0"],
         [{"name": "Tesla T4", "driver_version": "550.90.07", "memory_mib": 15360, "pci_bus_id": f"00000000:00:0{i}.0"}
          for i in (4, 5)]),
        # Jetson: unified memory, no PCI bus
        (["Orin (nvgpu), 540.4.0, [N/A], [N/A]"],
         [{"name": "Orin (nvgpu)", "driver_version": "540.4.0", "memory_mib": None, "pci_bus_id": None}]),
        ([("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest "
           "NVIDIA driver is installed and running.")], []),
        (["No devices were found"], []),
        (["name, driver_version, memory.total [MiB], pci.bus_id"], []),  # a header, were noheader forgotten
        ([], []),
    ],
)
def test_nvidia_gpus(lines: list[str], expected: list[dict[str, Any]]) -> None:
    assert NvidiaGpus().process(lines) == expected
    assert NvidiaGpus.default() == []


NVCC_12_4 = """\
nvcc: NVIDIA (R) Cuda compiler driver
Copyright (c) 2005-2024 NVIDIA Corporation
Built on Thu_Mar_28_02:18:24_PDT_2024
Cuda compilation tools, release 12.4, V12.4.131
Build cuda_12.4.r12.4/compiler.34097967_0
""".splitlines()

NVCC_JETSON = """\
nvcc: NVIDIA (R) Cuda compiler driver
Copyright (c) 2005-2024 NVIDIA Corporation
Built on Wed_Aug_14_10:14:07_PDT_2024
Cuda compilation tools, release 12.6, V12.6.68
Build cuda_12.6.r12.6/compiler.34714021_0
""".splitlines()


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (NVCC_12_4, {"release": "12.4", "version": "12.4.131"}),
        (NVCC_JETSON, {"release": "12.6", "version": "12.6.68"}),
        (["bash: nvcc: command not found"], None),
        (["Cuda compilation tools, release twelve"], None),
        ([], None),
    ],
)
def test_nvcc_release(lines: list[str], expected: dict[str, str] | None) -> None:
    assert NvccRelease().process(lines) == expected


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["nvidia-driver-550", "cuda-drivers-550", "linux-image-generic", ""], ["cuda-drivers-550", "linux-image-generic", "nvidia-driver-550"]),
        (["nvidia-container-toolkit", "nvidia-container-toolkit"], ["nvidia-container-toolkit"]),
        (["W: some warning text"], []),
        ([], []),
    ],
)
def test_apt_holds(lines: list[str], expected: list[str]) -> None:
    assert AptHolds().process(lines) == expected


def test_dpkg_versions_counts_only_installed_packages() -> None:
    lines = [
        "nvidia-l4t-core 36.4.3-20250107174145 ii ",
        "nvidia-jetpack 6.2+b77 hi ",  # held and installed
        "cuda-toolkit-12-4 12.4.1-1 rc ",  # removed, config files left
        "docker-ce  un ",  # known, never installed: no version
        "dpkg-query: no packages found matching nvidia-container-toolkit",
    ]
    assert DpkgVersions().process(lines) == {"nvidia-l4t-core": "36.4.3-20250107174145", "nvidia-jetpack": "6.2+b77"}
    assert DpkgVersions().process([]) == {}


def test_dpkg_versions_command_quotes_every_name() -> None:
    command = DpkgVersions().command(["docker-ce", "evil; rm -rf /"])
    assert "'evil; rm -rf /'" in command and "${db:Status-Abbrev}" in command


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["NV Power Mode: MAXN", "0"], {"name": "MAXN", "id": 0}),
        (["NV Power Mode: MODE_30W", "2"], {"name": "MODE_30W", "id": 2}),
        (["NVPM WARN: fan mode is not set!", "NV Power Mode: 15W", "0"], {"name": "15W", "id": 0}),
        (["NV Power Mode: MAXN_SUPER", "2"], {"name": "MAXN_SUPER", "id": 2}),
        (["NV Power Mode: MAXN"], None),  # id line missing
        (["NV Power Mode: MAXN", "zero"], None),
        (["NVPM ERROR: failed to read PARAM"], None),
        ([], None),
    ],
)
def test_nvpmodel_mode(lines: list[str], expected: dict[str, Any] | None) -> None:
    assert NvpmodelMode().process(lines) == expected


def _docker_info(**changes: Any) -> str:
    """The real JSON of a Docker 28 client, with the server fields a running daemon fills in."""
    info = json.loads((SAMPLES / "docker-info-daemon-down.json").read_text())
    info = copy.deepcopy(info) | changes
    return json.dumps(info)


def test_docker_runtimes_of_a_running_engine() -> None:
    runtimes = {"io.containerd.runc.v2": {"path": "runc"}, "nvidia": {"path": "nvidia-container-runtime", "args": []},
                "runc": {"path": "runc"}}
    fact = DockerRuntimes().process([_docker_info(ServerVersion="27.5.1", Runtimes=runtimes, DefaultRuntime="nvidia")])
    assert fact == {"running": True, "server_version": "27.5.1", "runtimes": ["io.containerd.runc.v2", "nvidia", "runc"],
                    "default_runtime": "nvidia", "errors": []}


def test_docker_runtimes_with_the_daemon_down() -> None:
    """Recorded: the client prints its JSON with an empty server part, and the reason on stderr (2>&1)."""
    lines = (SAMPLES / "docker-info-daemon-down.json").read_text().splitlines()
    lines.append("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?")
    fact = DockerRuntimes().process(lines)
    assert fact is not None and fact["running"] is False and fact["runtimes"] == [] and fact["default_runtime"] is None
    assert fact["errors"] == [lines[-1]]


def test_docker_runtimes_server_errors_of_older_clients() -> None:
    fact = DockerRuntimes().process([_docker_info(ServerErrors=["error during connect: permission denied"])])
    assert fact is not None and fact["running"] is False and fact["errors"] == ["error during connect: permission denied"]


@pytest.mark.parametrize("lines", [[], ["stand-in: no engine"], ["{not json"], ["[1, 2]"]])
def test_docker_runtimes_without_json_is_none(lines: list[str]) -> None:
    assert DockerRuntimes().process(lines) is None


def test_loaded_kernel_modules_show_nouveau() -> None:
    """pyinfra's own KernelModules fact, fed /proc/modules lines: the nvidia layer asks it for nouveau."""
    fact = KernelModules()
    fact._kernel = "Linux"  # what its command() learns from the Kernel fact first
    modules = fact.process([
        "nouveau 2703360 0 - Live 0x0000000000000000",
        "drm_ttm_helper 16384 1 nouveau, Live 0x0000000000000000",
        "nvidia_uvm 1437696 0 - Live 0x0000000000000000 (POE)",
    ])
    assert "nouveau" in modules and "nvidia_uvm" in modules and modules["drm_ttm_helper"]["depends"] == ["nouveau"]


# --- the inference layer's facts ----------------------------------------------------------------------------

# `pip list --format=json` of the native runtime's venv (pip 23, Debian 12), as one line
PIP_LIST = ('[{"name": "numpy", "version": "1.26.4"}, {"name": "nvidia_pytriton", "version": "0.7.0"}, '
            '{"name": "pip", "version": "23.0.1"}, {"name": "setuptools", "version": "66.1.1"}]')
WHEELS = [{"name": "nvidia-pytriton", "version": "0.7.0", "sha256": ["a" * 64]},
          {"name": "numpy", "version": "1.26.4", "sha256": ["b" * 64]}]


@pytest.mark.parametrize(("output", "expected"), [
    ([PIP_LIST], {"numpy": "1.26.4", "nvidia-pytriton": "0.7.0", "pip": "23.0.1", "setuptools": "66.1.1"}),
    ([], {}),  # no venv yet
    (["not json"], {}),
    (['{"name": "numpy"}'], {}),
])
def test_venv_packages_normalizes_names(output: list[str], expected: dict[str, str]) -> None:
    assert VenvPackages().process(output) == expected


@pytest.mark.parametrize(("installed", "missing"), [
    ({"numpy": "1.26.4", "nvidia-pytriton": "0.7.0"}, []),
    ({"numpy": "1.26.4", "nvidia-pytriton": "0.6.1"}, ["nvidia-pytriton==0.7.0"]),
    ({}, ["nvidia-pytriton==0.7.0", "numpy==1.26.4"]),
])
def test_missing_wheels_are_those_not_at_their_pinned_version(installed: dict[str, str], missing: list[str]) -> None:
    assert checks.missing_wheels(installed, WHEELS) == missing


@pytest.mark.parametrize(("output", "expected"), [
    (["3.11"], "3.11"), (["3.10\n"], "3.10"), ([], None), (["python3: not found"], None)])
def test_host_python_is_major_dot_minor(output: list[str], expected: str | None) -> None:
    assert HostPython().process(output) == expected


@pytest.mark.parametrize(("output", "expected"), [
    (["2: ens4    inet 10.20.0.7/32 metric 100 brd 10.20.0.7 scope global dynamic ens4\\       valid_lft 3512sec"],
     "10.20.0.7"),
    ([], None), (['Device "ens9" does not exist.'], None)])
def test_interface_address_is_the_first_ipv4(output: list[str], expected: str | None) -> None:
    assert InterfaceAddress().process(output) == expected


@pytest.mark.parametrize(("output", "expected"), [
    (["sha256:" + "c" * 64], "sha256:" + "c" * 64), ([], None),
    (["Error: No such image: 172.31.254.2:5001/nvidia/tritonserver:24.03-py3"], None)])
def test_docker_image_is_its_id_or_none(output: list[str], expected: str | None) -> None:
    assert DockerImage().process(output) == expected


# --- the pipeline layer's facts -----------------------------------------------------------------------------

@pytest.mark.parametrize(("output", "expected"), [
    # `systemctl is-active` per unit (systemd 252): a running service, a waiting timer, one never installed
    (["circularnet-upload.service active", "circularnet-pipeline.timer active", "circularnet-capture.service inactive"],
     {"circularnet-upload.service": True, "circularnet-pipeline.timer": True, "circularnet-capture.service": False}),
    (["circularnet-upload.service failed", "circularnet-capture.service activating"],
     {"circularnet-upload.service": False, "circularnet-capture.service": False}),
    (["circularnet-upload.service "], {"circularnet-upload.service": False}),  # no systemd answer at all
    ([], {}),
])
def test_units_active_reads_each_unit_state(output: list[str], expected: dict[str, bool]) -> None:
    assert UnitsActive().process(output) == expected
