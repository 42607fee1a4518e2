"""The GPU collector (cnhost/gpu_metrics.py) as data: what nvidia-smi and tegrastats print in, samples out; samples
in, the text format out (read by `promtool check metrics`); any text as a GPU name stays one label value. Then the
program itself, run against fake tools on PATH: one sample, a loop, a tool that dies, hangs or prints garbage,
SIGTERM, a missing directory."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnhost import gpu_metrics
from cnhost.gpu_metrics import (
    QUERY,
    nvidia_smi_exposition,
    parse_nvidia_smi,
    parse_nvidia_smi_row,
    parse_tegrastats,
    samples,
    tegrastats_exposition,
)
from tests.unit.test_metrics import _unescape
from tests.unit.test_metrics import samples as series

REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20
TAKEN = 1796676059.25


def on(core: int, load: int, mhz: int) -> dict[str, Any]:
    return {"core": core, "online": True, "load": load, "mhz": mhz}


def off(core: int) -> dict[str, Any]:
    return {"core": core, "online": False}


def mw(current: int, average: int) -> dict[str, float]:
    """A rail as tegrastats prints it (milliwatts), in watts."""
    return {"current": current / 1000, "average": average / 1000}


# --- tegrastats: real lines ---------------------------------------------------------------------------------------
# Each as published, with where it comes from; newest JetPack first.

# L4T R36.4.3 (JetPack 6.2), Orin Nano Engineering Reference Developer Kit Super, `tegrastats` as a user (no EMC, no
# GR3D frequency: only root's tegrastats prints them). From a Jetson course's lab transcript (`sjsujetson@...$`).
R36_ORIN_NANO_USER = (
    "07-14-2025 10:29:36 RAM 2147/7620MB (lfb 2x4MB) SWAP 1476/3810MB (cached 1MB) CPU [0%@729,0%@729,0%@729,0%@729,"
    "0%@729,0%@729] GR3D_FREQ 0% cpu@47.687C soc2@46.718C soc0@47.468C gpu@48.625C tj@48.625C soc1@48.25C "
    "VDD_IN 4556mW/4556mW VDD_CPU_GPU_CV 483mW/483mW VDD_SOC 1451mW/1451mW")
# JetPack 6, an Orin Nano as root (`sudo -S timeout 4 tegrastats --interval 1000`): EMC_FREQ, `GR3D_FREQ 0%@[305]`,
# the engines `off`. From a hardware audit's console transcript, there wrapped at 100 columns (joined here) and cut
# after VDD_CPU_GPU_CV.
R36_ORIN_NANO_ROOT = (
    "09-12-2026 02:14:33 RAM 1484/3602MB (lfb 21x4MB) SWAP 436/14089MB (cached 7MB) CPU [3%@729,2%@729,1%@729,0%@729,"
    "1%@729,1%@729] EMC_FREQ 0%@2133 GR3D_FREQ 0%@[305] NVDEC off NVJPG off NVJPG1 off VIC off OFA off APE 200 "
    "cpu@56.281C soc2@55.843C soc0@54.093C gpu@55.843C tj@56.281C soc1@56.187C VDD_IN 4428mW/4428mW "
    "VDD_CPU_GPU_CV 562mW/562mW")
# JetPack 6.2, an Orin NX 16 GB as a user: the CV clusters' zones in lower case too. Quoted as captured on the
# project's box in a telemetry parser's tests (a regression for upper-case zone names).
R36_ORIN_NX = (
    "07-16-2026 13:03:45 RAM 1224/15656MB (lfb 8x4MB) SWAP 0/7828MB (cached 0MB) CPU [1%@729,0%@729,0%@729,0%@729,"
    "0%@729,0%@729,0%@729,0%@729] GR3D_FREQ 0% cv0@41.156C cpu@45.843C soc2@39.593C soc0@42.562C cv1@42.156C "
    "gpu@43.406C tj@45.843C soc1@40.25C cv2@38.593C VDD_IN 4304mW/4304mW VDD_CPU_GPU_CV 573mW/573mW "
    "VDD_SOC 1218mW/1218mW")
# JetPack 5, AGX Orin 64 GB as root: zones in upper case, -256C for zones with no reading (the idle, rail-gated GPU
# and CV clusters), two GPCs `@[0,0]`, the AGX's own rails and two unconnected INA3221 channels `NC`.
# GDWR/jetson_exporter issue 14.
R35_AGX_ORIN = (
    "04-11-2025 10:36:27 RAM 4321/62801MB (lfb 1759x4MB) SWAP 19/31400MB (cached 0MB) CPU [0%@729,0%@729,0%@729,"
    "0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729] EMC_FREQ 0%@2133 GR3D_FREQ 0%@[0,0] VIC_FREQ 729 "
    "APE 174 CV0@-256C CPU@44.562C Tboard@32C SOC2@40.093C Tdiode@33C SOC0@41.093C CV1@-256C GPU@-256C tj@44.343C "
    "SOC1@41.25C CV2@-256C VDD_GPU_SOC 2340mW/2340mW VDD_CPU_CV 390mW/390mW VIN_SYS_5V0 4025mW/4025mW NC 0mW/0mW "
    "VDDQ_VDD2_1V8AO 301mW/301mW NC 0mW/0mW")
# JetPack 5, an Orin NX 8 GB as root: `GR3D_FREQ 0%@305` without brackets, a second GPC as GR3D2_FREQ, two cores
# `off`. Quoted in a web dashboard's tegrastats parser (JavaScript).
R35_ORIN_NX = (
    "01-24-2024 09:17:09 RAM 3503/7337MB (lfb 7x1MB) SWAP 430/3668MB (cached 1MB) CPU [11%@729,13%@729,9%@729,"
    "18%@729,off,off] EMC_FREQ 0%@2133 GR3D_FREQ 0%@305 GR3D2_FREQ 0%@0 VIC_FREQ 115 APE 174 CV0@42.718C CPU@44.093C "
    "SOC2@42.625C SOC0@43.281C CV1@42.25C GPU@41.343C tj@46.968C SOC1@46.968C CV2@42.875C VDD_IN 4915mW/4915mW "
    "VDD_CPU_GPU_CV 449mW/449mW VDD_SOC 1431mW/1431mW")
# JetPack 4, AGX Xavier 32 GB as a user (`timeout 3s tegrastats`): no date, four cores `off`, no rails. From a
# deployment log's command transcript.
R32_AGX_XAVIER = (
    "RAM 3149/31920MB (lfb 5889x4MB) SWAP 0/15960MB (cached 0MB) CPU [57%@2188,56%@2188,57%@2188,63%@2188,off,off,"
    "off,off] EMC_FREQ 0% GR3D_FREQ 39% AO@35C GPU@35C Tdiode@37.75C PMIC@50C AUX@34.5C CPU@37.5C thermal@35.55C "
    "Tboard@35C")
# JetPack 4 (2019), a TX2: no SWAP, rails without units (milliwatts). FindHao/tx-utils issue 3.
R32_TX2 = (
    "RAM 2020/7852MB (lfb 1164x4MB) CPU [9%@345,21%@345,25%@345,3%@345,1%@345,1%@345] EMC_FREQ 0% GR3D_FREQ 0% "
    "PLL@42.5C MCPU@42.5C PMIC@100C Tboard@40C GPU@41C BCPU@42.5C thermal@41.9C Tdiode@41.25C VDD_SYS_GPU 153/158 "
    "VDD_SYS_SOC 536/547 VDD_4V0_WIFI 633/527 VDD_IN 3140/3208 VDD_SYS_CPU 536/590 VDD_SYS_DDR 557/601")
# JetPack 4, a Jetson Nano: IRAM (not a rail), `GR3D_FREQ 0%@76`, engines as bare frequencies, POM_ rails.
# rbonghi/jetson_stats tests/tegrastats (its second example line).
R32_NANO = (
    "RAM 1180/3965MB (lfb 1x2MB) SWAP 149/1024MB (cached 7MB) IRAM 0/252kB(lfb 252kB) CPU [30%@1036,33%@1036,"
    "28%@1036,26%@1036] EMC_FREQ 10%@1600 GR3D_FREQ 0%@76 NVENC 716 NVDEC 716 APE 25 PLL@57C CPU@60.5C PMIC@100C "
    "GPU@59C AO@65C thermal@59.75C POM_5V_IN 4520/4680 POM_5V_GPU 0/0 POM_5V_CPU 1078/1205")
# L4T 28.1, a TX1 as root: `cpu [..]@MHz` (one frequency for all cores, lower case), `EMC`, `GR3D` without _FREQ.
# hordiales/jetson-tx1-dev SCRIPTS.md.
R28_TX1 = ("RAM 3607/3983MB (lfb 47x4MB) SWAP 873/8192MB (cached 281MB) cpu [17%,11%,65%,0%]@1734 EMC 1%@1600 APE 25 "
           "GR3D 39%@76")

TEGRASTATS: dict[str, tuple[str, dict[str, Any]]] = {
    "r36 Orin Nano, user": (R36_ORIN_NANO_USER, {
        "ram": {"used": 2147 * MIB, "total": 7620 * MIB},
        "swap": {"used": 1476 * MIB, "total": 3810 * MIB, "cached": 1 * MIB},
        "cpus": [on(n, 0, 729) for n in range(6)],
        "gpu": {"load": 0},
        "temperatures": {"cpu": 47.687, "soc2": 46.718, "soc0": 47.468, "gpu": 48.625, "tj": 48.625, "soc1": 48.25},
        "power": {"VDD_IN": mw(4556, 4556), "VDD_CPU_GPU_CV": mw(483, 483), "VDD_SOC": mw(1451, 1451)}}),
    "r36 Orin Nano, root": (R36_ORIN_NANO_ROOT, {
        "ram": {"used": 1484 * MIB, "total": 3602 * MIB},
        "swap": {"used": 436 * MIB, "total": 14089 * MIB, "cached": 7 * MIB},
        "cpus": [on(0, 3, 729), on(1, 2, 729), on(2, 1, 729), on(3, 0, 729), on(4, 1, 729), on(5, 1, 729)],
        "gpu": {"load": 0, "mhz": [305]},
        "emc": {"load": 0, "mhz": 2133},
        "temperatures": {"cpu": 56.281, "soc2": 55.843, "soc0": 54.093, "gpu": 55.843, "tj": 56.281, "soc1": 56.187},
        "power": {"VDD_IN": mw(4428, 4428), "VDD_CPU_GPU_CV": mw(562, 562)}}),
    "r36 Orin NX": (R36_ORIN_NX, {
        "ram": {"used": 1224 * MIB, "total": 15656 * MIB},
        "swap": {"used": 0, "total": 7828 * MIB, "cached": 0},
        "cpus": [on(0, 1, 729)] + [on(n, 0, 729) for n in range(1, 8)],
        "gpu": {"load": 0},
        "temperatures": {"cv0": 41.156, "cpu": 45.843, "soc2": 39.593, "soc0": 42.562, "cv1": 42.156, "gpu": 43.406,
                         "tj": 45.843, "soc1": 40.25, "cv2": 38.593},
        "power": {"VDD_IN": mw(4304, 4304), "VDD_CPU_GPU_CV": mw(573, 573), "VDD_SOC": mw(1218, 1218)}}),
    "r35 AGX Orin, root": (R35_AGX_ORIN, {
        "ram": {"used": 4321 * MIB, "total": 62801 * MIB},
        "swap": {"used": 19 * MIB, "total": 31400 * MIB, "cached": 0},
        "cpus": [on(n, 0, 729) for n in range(12)],
        "gpu": {"load": 0, "mhz": [0, 0]},
        "emc": {"load": 0, "mhz": 2133},
        "temperatures": {"CPU": 44.562, "Tboard": 32.0, "SOC2": 40.093, "Tdiode": 33.0, "SOC0": 41.093, "tj": 44.343,
                         "SOC1": 41.25},
        "power": {"VDD_GPU_SOC": mw(2340, 2340), "VDD_CPU_CV": mw(390, 390), "VIN_SYS_5V0": mw(4025, 4025),
                  "VDDQ_VDD2_1V8AO": mw(301, 301)}}),
    "r35 Orin NX, root": (R35_ORIN_NX, {
        "ram": {"used": 3503 * MIB, "total": 7337 * MIB},
        "swap": {"used": 430 * MIB, "total": 3668 * MIB, "cached": 1 * MIB},
        "cpus": [on(0, 11, 729), on(1, 13, 729), on(2, 9, 729), on(3, 18, 729), off(4), off(5)],
        "gpu": {"load": 0, "mhz": [305]},
        "emc": {"load": 0, "mhz": 2133},
        "temperatures": {"CV0": 42.718, "CPU": 44.093, "SOC2": 42.625, "SOC0": 43.281, "CV1": 42.25, "GPU": 41.343,
                         "tj": 46.968, "SOC1": 46.968, "CV2": 42.875},
        "power": {"VDD_IN": mw(4915, 4915), "VDD_CPU_GPU_CV": mw(449, 449), "VDD_SOC": mw(1431, 1431)}}),
    "r32 AGX Xavier, user": (R32_AGX_XAVIER, {
        "ram": {"used": 3149 * MIB, "total": 31920 * MIB},
        "swap": {"used": 0, "total": 15960 * MIB, "cached": 0},
        "cpus": [on(0, 57, 2188), on(1, 56, 2188), on(2, 57, 2188), on(3, 63, 2188), off(4), off(5), off(6), off(7)],
        "gpu": {"load": 39},
        "emc": {"load": 0},
        "temperatures": {"AO": 35.0, "GPU": 35.0, "Tdiode": 37.75, "PMIC": 50.0, "AUX": 34.5, "CPU": 37.5,
                         "thermal": 35.55, "Tboard": 35.0}}),
    "r32 TX2": (R32_TX2, {
        "ram": {"used": 2020 * MIB, "total": 7852 * MIB},
        "cpus": [on(0, 9, 345), on(1, 21, 345), on(2, 25, 345), on(3, 3, 345), on(4, 1, 345), on(5, 1, 345)],
        "gpu": {"load": 0},
        "emc": {"load": 0},
        "temperatures": {"PLL": 42.5, "MCPU": 42.5, "PMIC": 100.0, "Tboard": 40.0, "GPU": 41.0, "BCPU": 42.5,
                         "thermal": 41.9, "Tdiode": 41.25},
        "power": {"VDD_SYS_GPU": mw(153, 158), "VDD_SYS_SOC": mw(536, 547), "VDD_4V0_WIFI": mw(633, 527),
                  "VDD_IN": mw(3140, 3208), "VDD_SYS_CPU": mw(536, 590), "VDD_SYS_DDR": mw(557, 601)}}),
    "r32 Nano": (R32_NANO, {
        "ram": {"used": 1180 * MIB, "total": 3965 * MIB},
        "swap": {"used": 149 * MIB, "total": 1024 * MIB, "cached": 7 * MIB},
        "cpus": [on(0, 30, 1036), on(1, 33, 1036), on(2, 28, 1036), on(3, 26, 1036)],
        "gpu": {"load": 0, "mhz": [76]},
        "emc": {"load": 10, "mhz": 1600},
        "temperatures": {"PLL": 57.0, "CPU": 60.5, "PMIC": 100.0, "GPU": 59.0, "AO": 65.0, "thermal": 59.75},
        "power": {"POM_5V_IN": mw(4520, 4680), "POM_5V_GPU": mw(0, 0), "POM_5V_CPU": mw(1078, 1205)}}),
    "r28 TX1": (R28_TX1, {
        "ram": {"used": 3607 * MIB, "total": 3983 * MIB},
        "swap": {"used": 873 * MIB, "total": 8192 * MIB, "cached": 281 * MIB},
        "cpus": [on(0, 17, 1734), on(1, 11, 1734), on(2, 65, 1734), on(3, 0, 1734)],
        "gpu": {"load": 39, "mhz": [76]},
        "emc": {"load": 1, "mhz": 1600}}),
}


@pytest.mark.parametrize("name", list(TEGRASTATS))
def test_a_real_tegrastats_line_is_its_sample(name: str) -> None:
    line, expected = TEGRASTATS[name]
    assert parse_tegrastats(line) == expected


@pytest.mark.parametrize("line", [
    "", "garbage", "tegrastats: unknown option", "CPU [0%@729,0%@729] GR3D_FREQ 0% cpu@47.5C VDD_IN 4424mW/4424mW",
    "RAM lots/7620MB", "RAM 2147 / 7620MB",
])
def test_a_line_without_tegrastats_memory_is_not_a_sample(line: str) -> None:
    with pytest.raises(ValueError, match="not a tegrastats line"):
        parse_tegrastats(line)


def test_an_unknown_cpu_entry_is_left_out_and_its_neighbours_keep_their_numbers() -> None:
    sample = parse_tegrastats("RAM 1/2MB CPU [5%@729,??,off,7%]@1000")
    assert sample["cpus"] == [on(0, 5, 729), off(2), on(3, 7, 1000)]
    assert set(sample) == {"ram", "cpus"}  # nothing else printed, nothing else made up


# --- nvidia-smi ----------------------------------------------------------------------------------------------------
# Rows for QUERY, shaped like the real tool's (`, ` between values, no units, `[N/A]` for a field the GPU lacks);
# the L4's UUID and memory are a real L4's (shared/reference/nvidia-platform.md §5), the other values made up.
L4 = "0, GPU-3a23c669-1f69-c64e-cf85-44e9b07e7a2a, NVIDIA L4, 3, 1, 34, 471, 22563, 16.25"
L4_EXPECTED = {"index": 0, "uuid": "GPU-3a23c669-1f69-c64e-cf85-44e9b07e7a2a", "name": "NVIDIA L4",
               "utilization.gpu": 3, "utilization.memory": 1, "temperature.gpu": 34, "memory.used": 471,
               "memory.free": 22563, "power.draw": 16.25}
# A GB10 (DGX Spark) prints its memory as [N/A] (unified memory; a benchmark report's `NVIDIA GB10, 0 %, [N/A],
# [N/A]`), other GPUs [Not Supported] or [Unknown Error] for one field or another.
GB10 = "1, GPU-0d5b4e4a-2f0c-4b7e-9a51-1c2d3e4f5a6b, NVIDIA GB10, 0, [N/A], 41, [N/A], [N/A], [Not Supported]"
GB10_EXPECTED = {"index": 1, "uuid": "GPU-0d5b4e4a-2f0c-4b7e-9a51-1c2d3e4f5a6b", "name": "NVIDIA GB10",
                 "utilization.gpu": 0, "temperature.gpu": 41}


def test_nvidia_smi_rows_are_one_dict_per_gpu_and_what_a_gpu_lacks_is_left_out() -> None:
    assert parse_nvidia_smi([L4, "", GB10]) == [L4_EXPECTED, GB10_EXPECTED]
    assert parse_nvidia_smi_row("0, GPU-x, Tesla T4, [Unknown Error], 0, 35, 0, 15095, [GPU requires reset]") == {
        "index": 0, "uuid": "GPU-x", "name": "Tesla T4", "utilization.memory": 0, "temperature.gpu": 35,
        "memory.used": 0, "memory.free": 15095}


def test_a_real_loop_of_other_fields_parses_with_those_fields() -> None:
    """`nvidia-smi --loop=1 --query-gpu=temperature.gpu,utilization.gpu,utilization.memory
    --format=csv,noheader,nounits`, as polybar/polybar-scripts issue 42 shows it (one GPU, a row a second)."""
    fields = ("temperature.gpu", "utilization.gpu", "utilization.memory")
    rows = parse_nvidia_smi(["41, 6, 13", "41, 6, 13", "41, 5, 13", "41, 12, 15"], fields)
    assert rows[3] == {"temperature.gpu": 41, "utilization.gpu": 12, "utilization.memory": 15} and len(rows) == 4


def test_a_gpu_name_with_a_comma_keeps_its_cells() -> None:
    row = parse_nvidia_smi_row("0, GPU-x, ACME GPU, Rev. 2, 5, 0, 40, 1, 100, 20.5")
    assert row["name"] == "ACME GPU, Rev. 2" and row["power.draw"] == 20.5


@pytest.mark.parametrize("line", [
    # what the real tool prints instead of rows when a GPU is lost (NVIDIA's wording)
    "Unable to determine the device handle for GPU0000:01:00.0: GPU has fallen off the bus.",
    "No devices were found",
    "0, GPU-x, NVIDIA L4, 3, 1, 34",  # a truncated row
    "0, GPU-x, NVIDIA L4, three, 1, 34, 471, 22563, 16.25",  # not a number
    "0, GPU-x, NVIDIA L4, 3, 1, 34, 471, 22563, inf",
    "[N/A], GPU-x, NVIDIA L4, 3, 1, 34, 471, 22563, 16.25",  # no index
    "-1, GPU-x, NVIDIA L4, 3, 1, 34, 471, 22563, 16.25",
])
def test_a_line_that_is_not_a_row_is_refused(line: str) -> None:
    with pytest.raises(ValueError):
        parse_nvidia_smi_row(line)


def test_a_loops_rows_are_grouped_into_samples_by_gpu_index() -> None:
    """`--loop` prints a row per GPU each interval and nothing between the iterations: index 0 again (any index
    already seen) starts the next sample; a GPU missing from one iteration does not merge two."""
    t4 = "1, GPU-y, Tesla T4, 0, 0, 30, 0, 15095, 9.87"
    rows = parse_nvidia_smi([L4, t4, L4, t4, L4, L4, t4])
    assert [[row["index"] for row in sample] for sample in samples(rows)] == [[0, 1], [0, 1], [0], [0, 1]]
    assert samples([]) == []


# --- exposition ----------------------------------------------------------------------------------------------------

DCGM_L4 = 'gpu="0",UUID="GPU-3a23c669-1f69-c64e-cf85-44e9b07e7a2a",device="nvidia0",modelName="NVIDIA L4"'
DCGM_GB10 = 'gpu="1",UUID="GPU-0d5b4e4a-2f0c-4b7e-9a51-1c2d3e4f5a6b",device="nvidia1",modelName="NVIDIA GB10"'


def test_nvidia_smi_exposition_uses_dcgms_names_and_labels_and_leaves_out_what_a_gpu_lacks() -> None:
    found = series(nvidia_smi_exposition([L4_EXPECTED, GB10_EXPECTED], TAKEN))
    assert {key: value for key, value in found.items() if key.startswith("DCGM_")} == {
        f"DCGM_FI_DEV_GPU_UTIL{{{DCGM_L4}}}": "3", f"DCGM_FI_DEV_GPU_UTIL{{{DCGM_GB10}}}": "0",
        f"DCGM_FI_DEV_MEM_COPY_UTIL{{{DCGM_L4}}}": "1",
        f"DCGM_FI_DEV_GPU_TEMP{{{DCGM_L4}}}": "34", f"DCGM_FI_DEV_GPU_TEMP{{{DCGM_GB10}}}": "41",
        f"DCGM_FI_DEV_FB_USED{{{DCGM_L4}}}": "471", f"DCGM_FI_DEV_FB_FREE{{{DCGM_L4}}}": "22563",
        f"DCGM_FI_DEV_POWER_USAGE{{{DCGM_L4}}}": "16.25",
    }
    assert found["cnctl_gpu_collector_timestamp_seconds"] == repr(TAKEN)
    assert found['cnctl_gpu_collector_info{tool="nvidia-smi"}'] == "1"


def test_tegrastats_exposition_makes_the_gpu_dcgms_gpu_0_and_the_rest_cnctl_tegra() -> None:
    found = series(tegrastats_exposition(parse_tegrastats(R36_ORIN_NANO_ROOT), TAKEN, "NVIDIA Jetson Orin Nano"))
    dcgm = 'gpu="0",device="gr3d",modelName="NVIDIA Jetson Orin Nano"'
    assert found[f"DCGM_FI_DEV_GPU_UTIL{{{dcgm}}}"] == "0" and found[f"DCGM_FI_DEV_GPU_TEMP{{{dcgm}}}"] == "55.843"
    assert found['cnctl_tegra_gpu_frequency_hertz{gpc="0"}'] == "305000000"
    assert (found["cnctl_tegra_ram_used_bytes"], found["cnctl_tegra_ram_total_bytes"]) == (
        str(1484 * MIB), str(3602 * MIB))
    assert (found["cnctl_tegra_swap_used_bytes"], found["cnctl_tegra_swap_cached_bytes"]) == (
        str(436 * MIB), str(7 * MIB))
    assert found['cnctl_tegra_cpu_utilization_percent{core="0"}'] == "3"
    assert found['cnctl_tegra_cpu_frequency_hertz{core="5"}'] == "729000000"
    assert found['cnctl_tegra_cpu_online{core="5"}'] == "1"
    assert (found["cnctl_tegra_emc_utilization_percent"], found["cnctl_tegra_emc_frequency_hertz"]) == (
        "0", "2133000000")
    assert found['cnctl_tegra_temperature_celsius{zone="tj"}'] == "56.281"
    assert found['cnctl_tegra_power_watts{rail="VDD_IN"}'] == "4.428"
    assert found['cnctl_tegra_power_average_watts{rail="VDD_CPU_GPU_CV"}'] == "0.562"
    assert found['cnctl_gpu_collector_info{tool="tegrastats"}'] == "1"
    assert found["cnctl_gpu_collector_timestamp_seconds"] == repr(TAKEN)


def test_what_tegrastats_does_not_print_is_left_out_never_a_zero() -> None:
    text = tegrastats_exposition(parse_tegrastats(R35_AGX_ORIN), TAKEN)
    assert "DCGM_FI_DEV_GPU_TEMP" not in text  # GPU@-256C: no reading
    assert 'zone="CV0"' not in text and 'rail="NC"' not in text
    assert series(text)['DCGM_FI_DEV_GPU_UTIL{gpu="0",device="gr3d",modelName="Jetson"}'] == "0"
    found = series(tegrastats_exposition(parse_tegrastats(R36_ORIN_NANO_USER), TAKEN))
    assert not [key for key in found if "emc" in key or "gpu_frequency" in key]  # a user's tegrastats: none
    xavier = series(tegrastats_exposition(parse_tegrastats(R32_AGX_XAVIER), TAKEN))
    assert xavier['cnctl_tegra_cpu_online{core="4"}'] == "0"
    assert 'cnctl_tegra_cpu_utilization_percent{core="4"}' not in xavier
    assert not [key for key in xavier if key.startswith("cnctl_tegra_power")]
    assert series(tegrastats_exposition(parse_tegrastats(R32_TX2), TAKEN))[
        'DCGM_FI_DEV_GPU_TEMP{gpu="0",device="gr3d",modelName="Jetson"}'] == "41.0"  # GPU@ in upper case


def test_the_jetson_model_comes_from_the_device_tree(tmp_path: Path) -> None:
    (tmp_path / "model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\0")
    assert gpu_metrics.jetson_model(str(tmp_path / "model")) == "NVIDIA Jetson AGX Orin Developer Kit"
    assert gpu_metrics.jetson_model(str(tmp_path / "missing")) == "Jetson"
    (tmp_path / "empty").write_bytes(b"\0")
    assert gpu_metrics.jetson_model(str(tmp_path / "empty")) == "Jetson"


def promtool_check(text: str) -> list[str]:
    """`promtool check metrics` on the text: its complaints, save the one the DCGM names bring (their labels UUID
    and modelName are DCGM exporter's, camelCase, kept so that its dashboards work). A parse error is never one."""
    if shutil.which("promtool") is None:  # a system package of the one list: missing is a failure, never a skip
        pytest.fail("promtool is missing: `sudo python3 cnctl/sandbox/prereqs.py ensure` installs it", pytrace=False)
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60,
                             check=False)
    assert checked.returncode in (0, 3), checked.stdout + checked.stderr  # 1: not the text format at all
    return [line for line in (checked.stdout + checked.stderr).splitlines() if not re.fullmatch(
        r"DCGM_FI_DEV_\w+ label names should be written in 'snake_case' not 'camelCase'", line)]


def expositions() -> Iterator[tuple[str, str]]:
    for name, (line, _) in TEGRASTATS.items():
        yield name, tegrastats_exposition(parse_tegrastats(line), TAKEN, 'Jetson "AGX"\\ Orin\n')
    yield "nvidia-smi", nvidia_smi_exposition([L4_EXPECTED, GB10_EXPECTED], TAKEN)


@pytest.mark.parametrize(("name", "text"), list(expositions()))
def test_promtool_reads_every_exposition_and_no_series_is_written_twice(name: str, text: str) -> None:
    assert promtool_check(text) == []
    lines = [line.rsplit(" ", 1)[0] for line in text.split("\n") if line and not line.startswith("#")]
    assert len(lines) == len(set(lines))


def test_promtools_check_fails_a_text_it_cannot_parse() -> None:
    """The check above can fail: a label value with a raw line feed is not the text format."""
    with pytest.raises(AssertionError):
        promtool_check('DCGM_FI_DEV_GPU_TEMP{gpu="0",modelName="a\nb"} 40\n')


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text(), st.text())
def test_any_text_as_a_gpu_name_or_uuid_stays_one_label_value(name: str, uuid: str, model: str) -> None:
    """Whatever nvidia-smi prints as a GPU's name or UUID (or the device tree as a Jetson's model), the text has the
    same lines and names as with plain values, and the value reads back whole (the format's escapes undone)."""
    gpu = {**L4_EXPECTED, "name": name, "uuid": uuid}
    hostile, benign = nvidia_smi_exposition([gpu], TAKEN), nvidia_smi_exposition([L4_EXPECTED], TAKEN)
    sample = parse_tegrastats(R36_ORIN_NX)
    for text, plain in ((hostile, benign), (tegrastats_exposition(sample, TAKEN, model),
                                             tegrastats_exposition(sample, TAKEN, "Jetson"))):
        lines, expected = text.split("\n"), plain.split("\n")  # at line feeds only, as Prometheus splits
        assert [re.split(r"[{ ]", line, maxsplit=1)[0] for line in lines] == [
            re.split(r"[{ ]", line, maxsplit=1)[0] for line in expected]
    temperature = next(line for line in hostile.split("\n") if line.startswith("DCGM_FI_DEV_GPU_TEMP{"))
    labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', temperature))
    assert {key: _unescape(value) for key, value in labels.items()} == {
        "gpu": "0", "device": "nvidia0", **({"UUID": uuid} if uuid else {}), **({"modelName": name} if name else {})}


# --- the program ---------------------------------------------------------------------------------------------------


def fake_tool(bin_dir: Path, name: str, body: str) -> Path:
    """A `name` on PATH running `body` (Python) after recording its argv and PID in <bin_dir>/<name>.json."""
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    record = bin_dir / f"{name}.json"
    path.write_text(f"#!{sys.executable}\nimport json, os, sys, time\n"
                    f"open({str(record)!r}, 'w').write(json.dumps({{'argv': sys.argv[1:], 'pid': os.getpid()}}))\n"
                    + body)
    path.chmod(0o755)
    return path


def recorded(bin_dir: Path, name: str) -> dict[str, Any]:
    return json.loads((bin_dir / f"{name}.json").read_text())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def environment(bin_dir: Path) -> dict[str, str]:
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}", "PYTHONPATH": str(REPO)}


def program(*args: str) -> list[str]:
    return [sys.executable, "-m", "cnhost.gpu_metrics", *args]


def collect(bin_dir: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(program(*args), env=environment(bin_dir), capture_output=True, text=True, timeout=timeout,
                          check=False, cwd=bin_dir)


def block_of(*rows: str) -> str:
    """Python printing nvidia-smi's rows of one loop iteration, flushed."""
    return "".join(f"print({row!r})\n" for row in rows) + "sys.stdout.flush()\n"


HANG = "time.sleep(300)\n"
T4 = "1, GPU-y, Tesla T4, 0, 0, 30, 0, 15095, 9.87"


def test_once_writes_one_nvidia_smi_sample_and_stops_the_tool(tmp_path: Path) -> None:
    bin_dir, textfile = tmp_path / "bin", tmp_path / "gpu.prom"
    fake_tool(bin_dir, "nvidia-smi", block_of(L4, T4) + HANG)
    started = time.monotonic()
    ran = collect(bin_dir, "--tool", "nvidia-smi", "--textfile", str(textfile), "--once")
    assert ran.returncode == 0, ran.stderr
    assert time.monotonic() - started < 10  # the iteration is complete BLOCK_GAP after its last row
    assert json.loads(ran.stdout.splitlines()[-1]) == {
        "result": "ok", "message": f"wrote nvidia-smi's sample of 2 GPU(s) to {textfile}"}
    found = series(textfile.read_text())
    assert found[f"DCGM_FI_DEV_GPU_TEMP{{{DCGM_L4}}}"] == "34"
    assert found['DCGM_FI_DEV_POWER_USAGE{gpu="1",UUID="GPU-y",device="nvidia1",modelName="Tesla T4"}'] == "9.87"
    assert oct(textfile.stat().st_mode & 0o777) == "0o644" and sorted(p.name for p in tmp_path.iterdir()) == [
        "bin", "gpu.prom"]  # no temporary file left
    tool = recorded(bin_dir, "nvidia-smi")
    assert tool["argv"] == [f"--query-gpu={','.join(QUERY)}", "--format=csv,noheader,nounits", "--loop=15"]
    assert not alive(tool["pid"])


def test_once_writes_one_tegrastats_sample(tmp_path: Path) -> None:
    bin_dir, textfile = tmp_path / "bin", tmp_path / "gpu.prom"
    fake_tool(bin_dir, "tegrastats", f"print({R36_ORIN_NANO_USER!r}, flush=True)\n" + HANG)
    ran = collect(bin_dir, "--tool", "tegrastats", "--textfile", str(textfile), "--interval", "2", "--once")
    assert ran.returncode == 0, ran.stderr
    assert series(textfile.read_text())['cnctl_tegra_power_watts{rail="VDD_IN"}'] == "4.556"
    tool = recorded(bin_dir, "tegrastats")
    assert tool["argv"] == ["--interval", "2000"] and not alive(tool["pid"])


def test_each_iteration_replaces_the_file_and_a_tool_that_exits_is_exit_1(tmp_path: Path) -> None:
    bin_dir, textfile = tmp_path / "bin", tmp_path / "gpu.prom"
    iterations = [block_of(L4.replace(", 34, ", f", {40 + n}, "), T4) + "time.sleep(0.2)\n" for n in range(3)]
    fake_tool(bin_dir, "nvidia-smi", "".join(iterations) + "sys.exit(0)\n")
    ran = collect(bin_dir, "--tool", "nvidia-smi", "--textfile", str(textfile), "--interval", "1")
    assert ran.returncode == 1 and ran.stdout == ""
    assert "gpu_metrics: nvidia-smi exited (status 0) after 3 sample(s): systemd starts the collector again" in (
        ran.stderr)
    assert series(textfile.read_text())[f"DCGM_FI_DEV_GPU_TEMP{{{DCGM_L4}}}"] == "42"  # the last iteration's


def test_a_tool_that_dies_before_a_sample_is_named_with_its_status(tmp_path: Path) -> None:
    bin_dir, textfile = tmp_path / "bin", tmp_path / "gpu.prom"
    fake_tool(bin_dir, "nvidia-smi", "print('NVIDIA-SMI has failed because it couldn\\'t communicate with the "
                                     "NVIDIA driver.')\nsys.exit(9)\n")
    ran = collect(bin_dir, "--tool", "nvidia-smi", "--textfile", str(textfile), "--once")
    assert ran.returncode == 1 and not textfile.exists()
    assert json.loads(ran.stdout.splitlines()[-1]) == {
        "result": "failed", "message": "nvidia-smi exited (status 9) after 0 sample(s)"}
    assert "skipped a line nvidia-smi printed that is not a sample" in ran.stderr


def test_bad_lines_are_skipped_until_too_many_come_in_a_row(tmp_path: Path) -> None:
    bin_dir, textfile = tmp_path / "bin", tmp_path / "gpu.prom"
    garbage = "print('\\x00\\xff garbage, with, commas')\n" * (gpu_metrics.BAD_LIMIT - 1)
    fake_tool(bin_dir, "tegrastats", garbage + f"print({R32_TX2!r}, flush=True)\n" + HANG)
    ran = collect(bin_dir, "--tool", "tegrastats", "--textfile", str(textfile), "--once")
    assert ran.returncode == 0, ran.stderr
    assert ran.stderr.count("skipped a line tegrastats printed that is not a sample") == gpu_metrics.BAD_LIMIT - 1
    textfile.unlink()
    fake_tool(bin_dir, "tegrastats", "while True:\n    print('Error: cannot read sensors', flush=True)\n"
                                     "    time.sleep(0.01)\n")
    ran = collect(bin_dir, "--tool", "tegrastats", "--textfile", str(textfile))
    assert ran.returncode == 1 and not textfile.exists()
    assert (f"gpu_metrics: tegrastats printed {gpu_metrics.BAD_LIMIT} lines in a row that are not samples: stopping it"
            in ran.stderr)
    assert not alive(recorded(bin_dir, "tegrastats")["pid"])


def test_sigterm_stops_the_tool_and_exits_0(tmp_path: Path) -> None:
    bin_dir, textfile = tmp_path / "bin", tmp_path / "gpu.prom"
    fake_tool(bin_dir, "nvidia-smi", block_of(L4) + HANG)
    process = subprocess.Popen(program("--tool", "nvidia-smi", "--textfile", str(textfile)), env=environment(bin_dir),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not textfile.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert textfile.exists()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        tool = recorded(bin_dir, "nvidia-smi")
        if alive(tool["pid"]):  # only if the program failed to: the fake tool this test started
            os.kill(tool["pid"], signal.SIGKILL)
    assert process.returncode == 0, err
    assert out == "" and not alive(tool["pid"])


def test_a_missing_directory_is_exit_2_naming_it_and_the_tool_never_starts(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir, "nvidia-smi", block_of(L4))
    textfile = tmp_path / "node-exporter" / "gpu.prom"
    ran = collect(bin_dir, "--tool", "nvidia-smi", "--textfile", str(textfile))
    assert ran.returncode == 2 and ran.stdout == ""
    assert f"its directory {textfile.parent} does not exist" in ran.stderr
    assert not (bin_dir / "nvidia-smi.json").exists()


def test_a_tool_not_on_path_is_exit_1(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    ran = collect(tmp_path / "bin", "--tool", "tegrastats", "--textfile", str(tmp_path / "gpu.prom"), "--once")
    assert ran.returncode == 1
    assert json.loads(ran.stdout)["message"].startswith("cannot run tegrastats: ")


@pytest.mark.parametrize("args", [["--tool", "rocm-smi", "--textfile", "x"], ["--tool", "tegrastats"],
                                  ["--tool", "tegrastats", "--textfile", "x", "--interval", "0"]])
def test_bad_usage_is_exit_2(tmp_path: Path, args: list[str]) -> None:
    assert collect(tmp_path, *args).returncode == 2


def test_a_tool_that_prints_nothing_is_given_up_on(tmp_path: Path) -> None:
    """In the program's process, on a pipe: no sample for `stall` seconds is exit 1, naming the wait."""
    read, write = os.pipe()
    try:
        collector = gpu_metrics.Collector("nvidia-smi", tmp_path / "gpu.prom", 1, False, gpu_metrics.Lines(read))
        collector.stall = 0.3
        started = time.monotonic()
        assert collector.run() == 1 and time.monotonic() - started < 5
        assert collector.problem == "nvidia-smi printed no sample for 0.3 s"
    finally:
        os.close(read)
        os.close(write)


def test_a_line_longer_than_max_line_is_cut_into_bad_lines_and_reading_goes_on() -> None:
    read, write = os.pipe()
    output = b"x" * (gpu_metrics.MAX_LINE + 10) + b"\n" + L4.encode() + b"\n"  # more than a pipe holds

    def tool() -> None:
        with os.fdopen(write, "wb") as pipe:
            pipe.write(output)

    writer = threading.Thread(target=tool)
    writer.start()
    try:
        lines = gpu_metrics.Lines(read)
        deadline = time.monotonic() + 10
        assert [lines.next(deadline), lines.next(deadline), lines.next(deadline)] == [
            b"x" * gpu_metrics.MAX_LINE, b"x" * 10, L4.encode()]
        with pytest.raises(EOFError):
            lines.next(deadline)
    finally:
        writer.join(10)
        os.close(read)
