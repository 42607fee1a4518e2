#!/usr/bin/env python3
"""The GPU's metrics for node-exporter's textfile collector: nvidia-smi's or tegrastats' samples, as Prometheus text.

Runs on every GPU host with the host's python3 (standard library only; Python 3.10+), from the monitoring
layer's service (systemd restarts it when it exits):

    gpu_metrics.py --tool nvidia-smi|tegrastats --textfile PATH [--interval SECONDS] [--once]

It starts the tool once, in the tool's own looping mode, as an argv list (never a shell; `command`):
`nvidia-smi --query-gpu=<QUERY> --format=csv,noheader,nounits --loop=<S>` on servers and cloud VMs,
`tegrastats --interval <S*1000>` on Jetsons, and turns each sample it prints into the text format, written over
PATH (0644, replaced atomically by cnhost.replace_file, so a scrape never reads half a file). `--interval`
(whole seconds, default 15) is the tool's; `--once` writes one sample, prints one JSON line {"result",
"message"} and exits.

The parsers and the exposition are pure functions, tested as data: `parse_nvidia_smi(lines, fields)` (rows
in, one dict per GPU out; `samples(rows)` groups a loop's rows into samples, a repeated GPU index starting the
next one), `parse_tegrastats(line)` (one line in, one dict out), `nvidia_smi_exposition(gpus, taken)` and
`tegrastats_exposition(sample, taken, model)` (text out). The metric names are DCGM exporter's for what both
kinds of GPU have (DCGM_FI_DEV_GPU_UTIL, _GPU_TEMP, _FB_USED, _FB_FREE, _POWER_USAGE, _MEM_COPY_UTIL, with its
labels gpu, UUID, device, modelName), so one alert or dashboard serves the whole fleet; the rest of what
tegrastats prints is `cnctl_tegra_*`; docs/monitoring.md lists them. Every value the tool prints that is not a
number (GPU names, UUIDs, zone and rail names) is a label value only, escaped (cnhost.metrics); a value the tool
prints as `[N/A]`, `[Not Supported]` or the like, or a thermal zone at -256 °C (tegrastats' "no reading"), is
left out, never written as 0.

Logged on stderr (the journal), one line each: a line the tool prints that is not a sample is skipped; after
BAD_LIMIT of them in a row, or when the tool exits, or prints no sample for STALL_FACTOR intervals (plus
STALL_GRACE seconds), the program stops the tool and exits 1 (systemd starts it again). SIGTERM or SIGINT: the
tool is stopped, exit 0. Exit codes (EXIT): 0 ok; 1 the tool failed (or PATH could not be written); 2 bad
usage, or PATH's directory does not exist (no textfile collector: install prometheus-node-exporter, or fix
--textfile).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cnhost import metrics, replace_file, stop

EXIT = {"ok": 0, "failed": 1, "usage": 2}
TOOLS = ("nvidia-smi", "tegrastats")
# The nvidia-smi fields asked for, in this order (`--query-gpu`); CSV, no header, no units.
QUERY = ("index", "uuid", "name", "utilization.gpu", "utilization.memory", "temperature.gpu", "memory.used",
         "memory.free", "power.draw")
TEXT_FIELDS = ("uuid", "name")  # every other field is a number (index an integer)
BAD_LIMIT = 5  # lines in a row that are not samples before the program gives up (exit 1)
STALL_FACTOR, STALL_GRACE = 5, 10.0  # no sample for 5 intervals + 10 s: the tool hangs (exit 1)
BLOCK_GAP = 0.5  # seconds without a row after which nvidia-smi's rows of one loop iteration are complete
MAX_LINE = 65536  # bytes without a line feed taken as one (bad) line: a tool printing garbage stays bounded
DEVICE_MODEL = "/proc/device-tree/model"  # a Jetson's model name (the modelName label); "Jetson" without it
NO_READING = -256.0  # what tegrastats prints for a thermal zone that has no reading (a rail-gated GPU)

# The DCGM exporter's names (its default counters) for what both kinds of GPU report.
DCGM = {
    "DCGM_FI_DEV_GPU_UTIL": "GPU utilization in percent (nvidia-smi utilization.gpu, tegrastats GR3D_FREQ)",
    "DCGM_FI_DEV_MEM_COPY_UTIL": "Memory utilization in percent (nvidia-smi utilization.memory)",
    "DCGM_FI_DEV_GPU_TEMP": "GPU temperature in degrees Celsius (nvidia-smi temperature.gpu, tegrastats gpu@)",
    "DCGM_FI_DEV_FB_USED": "Framebuffer memory used in MiB (nvidia-smi memory.used)",
    "DCGM_FI_DEV_FB_FREE": "Framebuffer memory free in MiB (nvidia-smi memory.free)",
    "DCGM_FI_DEV_POWER_USAGE": "Power draw in watts (nvidia-smi power.draw)",
}
# nvidia-smi field -> the DCGM metric it is.
NVIDIA_SMI_METRICS = {
    "utilization.gpu": "DCGM_FI_DEV_GPU_UTIL",
    "utilization.memory": "DCGM_FI_DEV_MEM_COPY_UTIL",
    "temperature.gpu": "DCGM_FI_DEV_GPU_TEMP",
    "memory.used": "DCGM_FI_DEV_FB_USED",
    "memory.free": "DCGM_FI_DEV_FB_FREE",
    "power.draw": "DCGM_FI_DEV_POWER_USAGE",
}

Sample = dict[str, Any]


def log(message: str) -> None:
    print(f"gpu_metrics: {message}", file=sys.stderr, flush=True)


# --- nvidia-smi -------------------------------------------------------------------------------------------------


def _absent(cell: str) -> bool:
    """A value nvidia-smi prints for a field the GPU lacks or cannot report: `[N/A]`, `[Not Supported]`,
    `[Unknown Error]`, `[GPU requires reset]` ... (and a bare `N/A`)."""
    return (cell.startswith("[") and cell.endswith("]")) or cell == "N/A"


def _number(text: str) -> int | float:
    """An integer or a decimal as printed (ValueError for anything else: no inf, nan or hex)."""
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d+\.\d+", text):
        return float(text)
    raise ValueError(f"{text!r} is not a number")


def parse_nvidia_smi_row(line: str, fields: Sequence[str] = QUERY) -> Sample:
    """One row of `nvidia-smi --query-gpu=<fields> --format=csv,noheader,nounits`: {field: value}, numbers as
    int or float, a value the GPU lacks left out. ValueError when the line is not such a row (wrong number of
    cells, a number field that is not a number, no index when one was asked for). A GPU name holding ", " keeps
    its cells: the surplus belongs to `name`, the one field of free text."""
    cells = line.strip().split(", ")
    if len(cells) > len(fields) and "name" in fields:
        at, surplus = fields.index("name"), len(cells) - len(fields)
        cells[at:at + surplus + 1] = [", ".join(cells[at:at + surplus + 1])]
    if len(cells) != len(fields):
        raise ValueError(f"{len(cells)} values where nvidia-smi was asked for {len(fields)}")
    row: Sample = {}
    for field, cell in zip(fields, cells):
        cell = cell.strip()
        if _absent(cell):
            continue
        if field in TEXT_FIELDS:
            row[field] = cell
        else:
            try:
                row[field] = _number(cell)
            except ValueError as exc:
                raise ValueError(f"{field}: {exc}") from None
    if "index" in fields and (not isinstance(row.get("index"), int) or row["index"] < 0):
        raise ValueError("no GPU index")
    return row


def parse_nvidia_smi(lines: Iterable[str], fields: Sequence[str] = QUERY) -> list[Sample]:
    """Every row of nvidia-smi's CSV output (blank lines skipped): one dict per GPU and loop iteration, in order.
    ValueError on the first line that is not a row."""
    return [parse_nvidia_smi_row(line, fields) for line in lines if line.strip()]


def samples(rows: Iterable[Sample]) -> list[list[Sample]]:
    """A loop's rows grouped into samples: `--loop` prints one row per GPU each interval, with nothing between
    the iterations, so a GPU index already in the current sample starts the next one."""
    out: list[list[Sample]] = []
    for row in rows:
        if not out or any(seen["index"] == row["index"] for seen in out[-1]):
            out.append([])
        out[-1].append(row)
    return out


def nvidia_smi_exposition(gpus: Sequence[Sample], taken: float) -> str:
    """One sample of nvidia-smi (a row per GPU), as the text format: DCGM's names and labels (gpu, UUID,
    device="nvidia<index>", modelName)."""
    families = [metrics.family(name, "gauge", DCGM[name], [(_dcgm_labels(gpu), gpu.get(field)) for gpu in gpus])
                for field, name in NVIDIA_SMI_METRICS.items()]
    return "".join(families) + _collector("nvidia-smi", taken)


def _dcgm_labels(gpu: Sample) -> dict[str, Any]:
    return {"gpu": gpu["index"], "UUID": gpu.get("uuid"), "device": f"nvidia{gpu['index']}",
            "modelName": gpu.get("name")}


def _collector(tool: str, taken: float) -> str:
    return (metrics.family("cnctl_gpu_collector_timestamp_seconds", "gauge", "When the GPU sample was taken",
                           [({}, taken)])
            + metrics.family("cnctl_gpu_collector_info", "gauge", "The tool the GPU metrics come from (always 1)",
                             [({"tool": tool}, 1)]))


# --- tegrastats -------------------------------------------------------------------------------------------------

_UNIT = {"k": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_RAM = re.compile(r"\bRAM (\d+)/(\d+)([kMG])B")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)([kMG])B(?: ?\(cached (\d+)([kMG])B\))?")
# `CPU [3%@729,off,...]` (per core), `CPU [17%,13%]@1734` (one frequency for all; JetPack 4 and older, lower case
# before L4T 28.2)
_CPU = re.compile(r"\b(?:CPU|cpu) \[([^\]]*)\](?:@(\d+))?")
_CORE = re.compile(r"(\d+)%(?:@(\d+))?")
# `GR3D_FREQ 0%`, `GR3D_FREQ 0%@305`, `GR3D_FREQ 0%@[305]`, `GR3D_FREQ 0%@[0,0]` (a frequency per GPC, as root),
# `GR3D 3%@76` (L4T 28)
_GR3D = re.compile(r"\bGR3D(?:_FREQ)? (\d+)%(?:@\[?(\d+(?:,\d+)*)\]?)?")
_EMC = re.compile(r"\bEMC(?:_FREQ)? (\d+)%(?:@(\d+))?")
_TEMP = re.compile(r"\b([A-Za-z][\w-]*)@(-?\d+(?:\.\d+)?)C\b")
# `VDD_IN 4556mW/4556mW` (JetPack 5 and 6), `VDD_IN 3140/3208` (milliwatts, JetPack 4)
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+(?:\.\d+)?)(mW|W)?/(\d+(?:\.\d+)?)(mW|W)?(?![\w/.])")
_NOT_RAILS = {"RAM", "SWAP", "IRAM", "NC"}  # memory, and an INA3221 channel not connected


def _bytes(value: str, unit: str) -> int:
    return int(value) * _UNIT[unit]


def _watts(value: str, unit: str | None) -> float:
    return float(value) if unit == "W" else float(value) / 1000


def parse_tegrastats(line: str) -> Sample:
    """One line of tegrastats (any JetPack: a leading date or not, `CPU [...]` either way, `off` cores, GR3D with
    or without its frequencies): {"ram": {"used", "total"} (bytes), "swap": {"used", "total", "cached"},
    "cpus": [{"core", "online", "load" (%), "mhz"}], "gpu": {"load" (%), "mhz": [one per GPC]},
    "emc": {"load", "mhz"}, "temperatures": {zone: °C} (as printed, no-reading zones left out),
    "power": {rail: {"current", "average"} (watts)}}; what the line lacks is absent. ValueError when the line
    is not tegrastats' (it has no RAM)."""
    ram = _RAM.search(line)
    if ram is None:
        raise ValueError("no RAM field: not a tegrastats line")
    sample: Sample = {"ram": {"used": _bytes(ram[1], ram[3]), "total": _bytes(ram[2], ram[3])}}
    swap = _SWAP.search(line)
    if swap:
        sample["swap"] = {"used": _bytes(swap[1], swap[3]), "total": _bytes(swap[2], swap[3])}
        if swap[4]:
            sample["swap"]["cached"] = _bytes(swap[4], swap[5])
    cpu = _CPU.search(line)
    if cpu:
        sample["cpus"] = [core for core in (_core(n, text.strip(), cpu[2]) for n, text in enumerate(cpu[1].split(",")))
                          if core is not None]
    gr3d = _GR3D.search(line)
    if gr3d:
        sample["gpu"] = {"load": int(gr3d[1])}
        if gr3d[2]:
            sample["gpu"]["mhz"] = [int(mhz) for mhz in gr3d[2].split(",")]
    emc = _EMC.search(line)
    if emc:
        sample["emc"] = {"load": int(emc[1])}
        if emc[2]:
            sample["emc"]["mhz"] = int(emc[2])
    temperatures = {zone: float(value) for zone, value in _TEMP.findall(line) if float(value) != NO_READING}
    if temperatures:
        sample["temperatures"] = temperatures
    power: dict[str, dict[str, float]] = {}
    for rail, current, unit, average, average_unit in _RAIL.findall(line):
        if rail not in _NOT_RAILS and rail not in power:  # a rail printed twice: the first
            power[rail] = {"current": _watts(current, unit or None), "average": _watts(average, average_unit or None)}
    if power:
        sample["power"] = power
    return sample


def _core(n: int, text: str, shared_mhz: str | None) -> Sample | None:
    """One entry of the CPU list: a core's load and frequency, or `off`; None for anything else."""
    if text == "off":
        return {"core": n, "online": False}
    match = _CORE.fullmatch(text)
    if match is None:
        return None
    core: Sample = {"core": n, "online": True, "load": int(match[1])}
    mhz = match[2] or shared_mhz
    if mhz:
        core["mhz"] = int(mhz)
    return core


def tegrastats_exposition(sample: Sample, taken: float, model: str = "Jetson") -> str:
    """One tegrastats sample as the text format: the integrated GPU as DCGM's GPU 0 (device="gr3d",
    modelName=`model`), everything else as cnctl_tegra_*."""
    gpu = sample.get("gpu") or {}
    temperatures = sample.get("temperatures") or {}
    gpu_temperature = next((value for zone, value in temperatures.items() if zone.lower() == "gpu"), None)
    dcgm = {"gpu": 0, "device": "gr3d", "modelName": model}
    ram, swap, emc = sample.get("ram") or {}, sample.get("swap") or {}, sample.get("emc") or {}
    cpus, power = sample.get("cpus") or [], sample.get("power") or {}
    mhz = gpu.get("mhz") or []
    families: list[tuple[str, str, list[tuple[metrics.Labels, Any]]]] = [
        ("DCGM_FI_DEV_GPU_UTIL", DCGM["DCGM_FI_DEV_GPU_UTIL"], [(dcgm, gpu.get("load"))]),
        ("DCGM_FI_DEV_GPU_TEMP", DCGM["DCGM_FI_DEV_GPU_TEMP"], [(dcgm, gpu_temperature)]),
        ("cnctl_tegra_gpu_frequency_hertz", "The GPU's frequency, per GPC (GR3D_FREQ; root's tegrastats only)",
         [({"gpc": n}, value * 1_000_000) for n, value in enumerate(mhz)]),
        ("cnctl_tegra_ram_used_bytes", "RAM in use, shared by the CPU and the GPU", [({}, ram.get("used"))]),
        ("cnctl_tegra_ram_total_bytes", "RAM available to applications", [({}, ram.get("total"))]),
        ("cnctl_tegra_swap_used_bytes", "Swap in use", [({}, swap.get("used"))]),
        ("cnctl_tegra_swap_total_bytes", "Swap available", [({}, swap.get("total"))]),
        ("cnctl_tegra_swap_cached_bytes", "Swap cached", [({}, swap.get("cached"))]),
        ("cnctl_tegra_cpu_online", "1 when the CPU core is online (0: tegrastats prints it off)",
         [({"core": c["core"]}, c["online"]) for c in cpus]),
        ("cnctl_tegra_cpu_utilization_percent", "The CPU core's load in percent",
         [({"core": c["core"]}, c.get("load")) for c in cpus]),
        ("cnctl_tegra_cpu_frequency_hertz", "The CPU core's frequency",
         [({"core": c["core"]}, c["mhz"] * 1_000_000 if "mhz" in c else None) for c in cpus]),
        ("cnctl_tegra_emc_utilization_percent", "The external memory controller's load in percent (EMC_FREQ)",
         [({}, emc.get("load"))]),
        ("cnctl_tegra_emc_frequency_hertz", "The external memory controller's frequency",
         [({}, emc["mhz"] * 1_000_000 if "mhz" in emc else None)]),
        ("cnctl_tegra_temperature_celsius", "The thermal zone's temperature (zone as tegrastats names it)",
         [({"zone": zone}, value) for zone, value in temperatures.items()]),
        ("cnctl_tegra_power_watts", "The power rail's draw (rail as tegrastats names it)",
         [({"rail": rail}, values["current"]) for rail, values in power.items()]),
        ("cnctl_tegra_power_average_watts", "The power rail's average draw since tegrastats started",
         [({"rail": rail}, values["average"]) for rail, values in power.items()]),
    ]
    return "".join(metrics.family(name, "gauge", text, values) for name, text, values in families) + _collector(
        "tegrastats", taken)


def jetson_model(path: str = DEVICE_MODEL) -> str:
    """The board's model name from the device tree (NUL-terminated there), or "Jetson" when it has none."""
    try:
        name = Path(path).read_bytes().rstrip(b"\0").decode(errors="replace").strip()
    except OSError:
        return "Jetson"
    return name or "Jetson"


# --- the program ------------------------------------------------------------------------------------------------


def command(tool: str, interval: int) -> list[str]:
    """The tool in its own looping mode, one sample every `interval` seconds."""
    if tool == "nvidia-smi":
        return ["nvidia-smi", f"--query-gpu={','.join(QUERY)}", "--format=csv,noheader,nounits", f"--loop={interval}"]
    return ["tegrastats", "--interval", str(interval * 1000)]


class Stopped(Exception):
    """SIGTERM or SIGINT arrived."""


class Lines:
    """The tool's output, a line at a time, waiting no longer than a deadline (select on the pipe)."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buffer, self.ended = fd, b"", False
        self.stopping = False  # set by the signal handler

    def next(self, deadline: float) -> bytes | None:
        """The next line (without its line feed; MAX_LINE bytes at most), None when `deadline` (time.monotonic)
        passes first. EOFError when the output has ended; Stopped within 0.2 s of a signal asking to stop."""
        while b"\n" not in self.buffer and len(self.buffer) < MAX_LINE:
            if self.stopping:
                raise Stopped
            if self.ended:
                if not self.buffer:
                    raise EOFError
                line, self.buffer = self.buffer, b""
                return line
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.2))
            if ready:
                chunk = os.read(self.fd, 65536)
                self.ended = not chunk
                self.buffer += chunk
        if self.stopping:
            raise Stopped
        window = self.buffer[:MAX_LINE]
        if b"\n" in window:
            line, _, self.buffer = self.buffer.partition(b"\n")
        else:
            line, self.buffer = window, self.buffer[MAX_LINE:]
        return line


class Collector:
    """Reads the running tool's samples and writes each to the textfile. `run` returns the exit code; `message`
    says what it did, `problem` why it stopped (None: the tool's output ended)."""

    def __init__(self, tool: str, textfile: Path, interval: int, once: bool, lines: Lines) -> None:
        self.tool, self.textfile, self.once, self.lines = tool, textfile, once, lines
        self.stall = STALL_FACTOR * interval + STALL_GRACE
        self.model = jetson_model() if tool == "tegrastats" else ""
        self.block: list[Sample] = []  # nvidia-smi's rows of the current loop iteration
        self.block_at = self.last_row = 0.0
        self.expected = 0  # rows in a complete iteration, once one was seen
        self.last_sample = time.monotonic()
        self.written = 0
        self.message = ""
        self.problem: str | None = None

    def run(self) -> int:
        bad = 0
        while True:
            deadline = self.last_row + BLOCK_GAP if self.block else self.last_sample + self.stall
            try:
                raw = self.lines.next(deadline)
            except EOFError:
                if self.block and not self.flush():
                    return EXIT["failed"]
                return EXIT["ok"] if self.once and self.written else EXIT["failed"]
            if raw is None:
                if self.block:
                    if not self.flush():
                        return EXIT["failed"]
                    if self.once:
                        return EXIT["ok"]
                    continue
                return self.give_up(f"{self.tool} printed no sample for {self.stall:g} s")
            text = raw.decode(errors="replace").strip()
            if not text:
                continue
            try:
                parsed = parse_tegrastats(text) if self.tool == "tegrastats" else parse_nvidia_smi_row(text)
            except ValueError as exc:
                bad += 1
                log(f"skipped a line {self.tool} printed that is not a sample ({exc}): {text[:200]!r}")
                if bad >= BAD_LIMIT:
                    return self.give_up(f"{self.tool} printed {bad} lines in a row that are not samples")
                continue
            bad = 0
            if self.tool == "tegrastats":
                self.message = f"wrote tegrastats' sample to {self.textfile}"
                if not self.write(tegrastats_exposition(parsed, time.time(), self.model)):
                    return EXIT["failed"]
            else:
                # a GPU already in the iteration starts the next; a complete one is written at once
                if any(row["index"] == parsed["index"] for row in self.block) and not self.flush():
                    return EXIT["failed"]
                if not self.block:
                    self.block_at = time.time()
                self.block.append(parsed)
                self.last_row = time.monotonic()
                if self.expected and len(self.block) >= self.expected and not self.flush():
                    return EXIT["failed"]
            if self.once and self.written:
                return EXIT["ok"]

    def give_up(self, problem: str) -> int:
        self.problem = problem
        log(f"{problem}: stopping it (systemd starts the collector again)")
        return EXIT["failed"]

    def flush(self) -> bool:
        """Write nvidia-smi's current iteration (its rows so far) and start the next."""
        block, self.block = self.block, []
        self.expected = max(self.expected, len(block))
        self.message = f"wrote nvidia-smi's sample of {len(block)} GPU(s) to {self.textfile}"
        return self.write(nvidia_smi_exposition(block, self.block_at))

    def write(self, text: str) -> bool:
        try:
            replace_file(self.textfile, text.encode())
        except OSError as exc:
            self.problem = f"cannot write {self.textfile}: {exc.strerror or exc}"
            log(self.problem)
            return False
        self.written += 1
        self.last_sample = time.monotonic()
        return True


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpu_metrics.py", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tool", required=True, choices=TOOLS, help="nvidia-smi (servers, cloud VMs) or tegrastats")
    parser.add_argument("--textfile", required=True, help="the file to write, in node-exporter's textfile directory")
    parser.add_argument("--interval", type=int, default=15, help="seconds between samples (whole, at least 1)")
    parser.add_argument("--once", action="store_true", help="write one sample, print a JSON line, exit")
    args = parser.parse_args(argv)
    if args.interval < 1:
        parser.error(f"--interval {args.interval}: give whole seconds, at least 1")
    return args


def report(once: bool, result: str, message: str, code: int) -> int:
    """The exit code; with --once, the answer as one JSON line on stdout too."""
    if once:
        print(json.dumps({"result": result, "message": message}), flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    textfile = Path(args.textfile)
    if not textfile.parent.is_dir():
        message = (f"--textfile {textfile}: its directory {textfile.parent} does not exist (node-exporter's textfile "
                   "collector's: install prometheus-node-exporter, or give the directory it reads)")
        log(message)
        return report(args.once, "failed", message, EXIT["usage"])
    tool_argv = command(args.tool, args.interval)
    try:
        process = subprocess.Popen(tool_argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    except OSError as exc:
        message = f"cannot run {tool_argv[0]}: {exc.strerror or exc}"
        log(message)
        return report(args.once, "failed", message, EXIT["failed"])
    assert process.stdout is not None
    lines = Lines(process.stdout.fileno())

    def stopping(_signum: int, _frame: object) -> None:
        lines.stopping = True

    previous = {sig: signal.signal(sig, stopping) for sig in (signal.SIGTERM, signal.SIGINT)}
    collector = Collector(args.tool, textfile, args.interval, args.once, lines)
    try:
        code = collector.run()
    except Stopped:
        code, collector.problem = EXIT["ok"], "stopped by a signal"
    finally:
        status = stop(process)
        process.stdout.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code == EXIT["ok"]:
        if collector.written:
            return report(args.once, "ok", collector.message, code)
        return report(args.once, "failed", collector.problem or "no sample", code)
    if collector.problem is None:
        collector.problem = f"{args.tool} exited (status {status}) after {collector.written} sample(s)"
        log(f"{collector.problem}: systemd starts the collector again")
    return report(args.once, "failed", collector.problem, code)


if __name__ == "__main__":
    sys.exit(main())
