"""Benchmark what the monitoring layer costs a host (issue 22): the exporters' CPU and memory, the scrape's
duration and size, and `cnctl status` over SSH. Needs root (like the sandbox itself).

    sudo .venv/bin/python bench/exporters.py [--window 120] [--json]

A fresh sandbox fleet of the local stack's first Jetson (arm64, under qemu-user) and first server (amd64) is
converged with `cnctl deploy --layers jetson,nvidia,monitoring,verify` (pyinfra; platform always applies):
node-exporter on the host's Triton bind address (loopback here) port 9100 with its textfile directory, the GPU
collector (cnhost/gpu_metrics.py over the STAND-IN nvidia-smi or tegrastats, every 15 s), and the verify layer's
health timer writing circularnet.prom beside gpu.prom. Without the inference layer there is no Triton, so the
verify layer's last step refuses each host as unhealthy and the deploy exits 1: that refusal (and only that) is
accepted, once both exporters run. Then, on every host at once, over SSH, as root (one stdlib script, PROBE):

- CPU: each unit's cgroup `cpu.stat` usage_usec (the unit's processes and every child: the GPU collector's tool)
  over a window of `--window` seconds (120) during which the host is scraped as Prometheus would, a GET of
  http://127.0.0.1:9100/metrics every 15 s; percent of one core. utime+stime of the same processes from
  /proc/<pid>/stat beside it (--json), as a cross-check;
- memory, at the window's end: each unit's cgroup memory.current and memory.stat anon and file, and the PSS of
  its processes (/proc/<pid>/smaps_rollup), MiB;
- a scrape: 10 GETs of /metrics one after another: median and max seconds, the response's bytes, and the sum of
  node-exporter's own node_scrape_collector_duration_seconds (its collectors' time in the last one);
- `cnctl status --stack <the bench's stack>` for the fleet (SSH, every host's health report run fresh): wall
  seconds, median of 3.

Targets (issue 22): node-exporter and the GPU collector together under 2 % of one core and under 100 MiB per host
(cgroup memory.current; the processes' PSS when the cgroup has no memory accounting), judged on native hosts:
an emulated host's figures are shown, not judged. Exit 1 when one is missed.
The Jetson is arm64 under qemu-user: every figure of it includes the emulator (CPU, translated code in memory),
so it overstates a real Jetson; the tools are the sandbox's STAND-INs (Python scripts, where NVIDIA's are
native binaries). `cnctl status` from Prometheus (50 hosts) is bench/status_sources.py's.

Its own sandbox: prefix `cnb8`, subnet 172.31.244.0/24, state /run/cnctl/bench-exporters, the normal cache; a
demo or a test session is left alone, and whatever the benchmark boots is torn down (also on Ctrl-C/SIGTERM).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cnctl.config import load_stack
from cnctl.paths import REPO_ROOT
from cnctl.sandbox import fleet, prereqs
from cnctl.sandbox.instance import Instance
from cnctl.sandbox.progress import Quiet
from cnctl.sandbox.remote import ssh as remote_ssh
from cnctl.sandbox.state import FleetState, HostState

BIN = Path(sys.executable).parent
PREFIX, NET, STATE = "cnb8", "172.31.244.", Path("/run/cnctl/bench-exporters")
LAYERS = "jetson,nvidia,monitoring,verify"
DEPLOY_TIMEOUT_S = 3600
READY_S = 300  # after the deploy: both exporters active, gpu.prom and circularnet.prom written
STATUS_RUNS = 3
STATUS_TIMEOUT_S = 600
SCRAPE_PERIOD_S = 15.0  # Prometheus' scrape interval
TIMED_SCRAPES = 10
EXPORTER_URL = "http://127.0.0.1:9100/metrics"  # the local stack binds Triton, hence node-exporter, to loopback
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
UNITS = {"node-exporter": "prometheus-node-exporter.service", "GPU collector": "circularnet-gpu-metrics.service"}
TARGET_CPU_PCT = 2.0
TARGET_MIB = 100.0
MIB = 1 << 20

# Runs on the host as root (python3 -, stdlib only): argv is the units (JSON), the URL, the window, the scrape
# period and the number of timed scrapes; prints one JSON object. Every wait in it is bounded.
PROBE = r'''
import json, os, re, statistics, subprocess, sys, time, urllib.request

UNITS = json.loads(sys.argv[1])
URL, WINDOW, PERIOD, TIMED = sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
TICK = os.sysconf("SC_CLK_TCK")


def read(path):
    try:
        with open(path, errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def flat(text):
    pairs = (line.split() for line in (text or "").splitlines())
    return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].isdigit()}


def show(unit):
    out = subprocess.run(["systemctl", "show", "-p", "ControlGroup,MainPID,ActiveState,NRestarts", "--", unit],
                         capture_output=True, text=True, timeout=30).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def pids(cgroup):
    return [int(p) for p in (read(cgroup + "/cgroup.procs") or "").split()] if cgroup else []


def ticks(pid):
    stat = read(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # fields[0] is stat's field 3 (state): utime is 14, stime 15
    return int(fields[11]) + int(fields[12])


def cgroup_dir(path):
    """The unit's cgroup v2 directory: /sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a hybrid one
    (the sandbox's hosts, under a cgroup v1 machine). cpu.stat's usage_usec is there with or without the cpu
    controller."""
    for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if path and os.path.exists(f"{root}{path}/cpu.stat"):
            return root + path
    return None


def snapshot():
    out = {}
    for name, unit in UNITS.items():
        props = show(unit)
        cgroup = cgroup_dir(props.get("ControlGroup"))
        out[name] = {"unit": unit, "active": props.get("ActiveState"), "main_pid": int(props.get("MainPID") or 0),
                     "restarts": int(props.get("NRestarts") or 0), "cgroup": cgroup,
                     "usage_usec": flat(read(cgroup + "/cpu.stat")).get("usage_usec") if cgroup else None,
                     "ticks": {p: ticks(p) for p in pids(cgroup)}, "t": time.monotonic()}
    return out


def kib(text, key):
    found = re.search(rf"^{key}:\s+(\d+) kB", text or "", re.MULTILINE)
    return int(found.group(1)) * 1024 if found else None


def memory(cgroup):
    """memory.current and memory.stat's anon and file when the cgroup accounts memory (None when not: a hybrid
    host's memory controller is cgroup v1's), and every process's PSS (its anon and file parts) and RSS."""
    stat = flat(read(cgroup + "/memory.stat")) if cgroup else {}
    current = (read(cgroup + "/memory.current") or "").strip() if cgroup else ""
    procs = []
    for pid in pids(cgroup):
        rollup = read(f"/proc/{pid}/smaps_rollup")
        procs.append({"pid": pid, "comm": (read(f"/proc/{pid}/comm") or "?").strip(),
                      "cmdline": (read(f"/proc/{pid}/cmdline") or "").replace("\0", " ").strip()[:160],
                      **{key.lower(): kib(rollup, key) for key in ("Pss", "Pss_Anon", "Pss_File", "Rss")}})
    total = {key: sum(p[key] or 0 for p in procs) if procs and all(p[key] is not None for p in procs) else None
             for key in ("pss", "pss_anon", "pss_file", "rss")}
    return {"current": int(current) if current.isdigit() else None, "anon": stat.get("anon"), "file": stat.get("file"),
            **total, "procs": procs}


def get(url):
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = resp.read()
    return time.monotonic() - started, body


before = snapshot()
t0 = time.monotonic()
window_scrapes, errors = [], []
for k in range(int(WINDOW // PERIOD) + 1):
    due = t0 + k * PERIOD
    if due >= t0 + WINDOW:
        break
    time.sleep(max(0.0, due - time.monotonic()))
    try:
        window_scrapes.append(get(URL)[0])
    except OSError as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
time.sleep(max(0.0, t0 + WINDOW - time.monotonic()))
after = snapshot()
units = {}
for name in UNITS:
    b, a = before[name], after[name]
    wall = a["t"] - b["t"]
    usage = (a["usage_usec"] - b["usage_usec"]) if None not in (a["usage_usec"], b["usage_usec"]) else None
    # the cross-check: processes alive at the end (a child started in the window counts from 0); an exited one is lost
    proc_ticks = sum((t or 0) - (b["ticks"].get(p) or 0) for p, t in a["ticks"].items()) if a["ticks"] else None
    units[name] = {"unit": b["unit"], "active": [b["active"], a["active"]], "main_pid": [b["main_pid"], a["main_pid"]],
                   "restarts": a["restarts"] - b["restarts"], "cgroup": a["cgroup"], "wall_s": wall,
                   "cpu_pct": usage / 1e6 / wall * 100 if usage is not None else None,
                   "cpu_proc_pct": proc_ticks / TICK / wall * 100 if proc_ticks is not None else None,
                   "processes": len(a["ticks"]), "memory": memory(a["cgroup"])}
timed, body = [], b""
for _ in range(TIMED):
    try:
        seconds, body = get(URL)
        timed.append(seconds)
    except OSError as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
text = body.decode(errors="replace")
collectors = re.findall(r'^node_scrape_collector_duration_seconds\{collector="([^"]+)"\} (\S+)$', text, re.MULTILINE)
textfile_error = re.search(r"^node_textfile_scrape_error (\S+)$", text, re.MULTILINE)
print(json.dumps({
    "units": units, "window_scrapes": window_scrapes, "errors": errors, "timed_s": timed, "bytes": len(body),
    "collectors_s": {c: float(v) for c, v in collectors},
    "textfile_scrape_error": float(textfile_error.group(1)) if textfile_error else None,
    "has": {name: bool(re.search(rf"^{name}[{{ ]", text, re.MULTILINE))
            for name in ("cnctl_gpu_collector_info", "DCGM_FI_DEV_GPU_TEMP", "cnctl_health_healthy")},
}))
'''


def say(message: str) -> None:
    print(f"[bench/exporters] {message}", file=sys.stderr, flush=True)


def ssh(state: FleetState, host: HostState, command: str, *, timeout: float = 120, stdin: str | None = None) -> str:
    result = remote_ssh(state, host, command, input=stdin, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{host.name}: `{command[:200]}` exited {result.returncode}: {result.stderr.strip()[-1500:]}")
    return result.stdout


def journal(state: FleetState, host: HostState) -> str:
    """What the host's systemd says about the exporters: their state and last journal lines (for a failure)."""
    units = " ".join(UNITS.values())
    return remote_ssh(state, host, f"sudo -n systemctl --no-pager status {units}; "
                      f"sudo -n journalctl --no-pager -n 40 -u {' -u '.join(UNITS.values())}", timeout=60).stdout


def cnctl(args: list[str], env: dict[str, str], log: Path, timeout: float) -> tuple[int, float]:
    """`cnctl ARGS` with its output appended to `log`; (exit code, wall seconds)."""
    started = time.monotonic()
    with open(log, "a") as out:
        out.write(f"$ cnctl {shlex.join(args)}\n")
        out.flush()
        proc = subprocess.run([str(BIN / "cnctl"), *args], check=False, cwd=REPO_ROOT, env=env, text=True, stdout=out,
                              stderr=subprocess.STDOUT, timeout=timeout)
    return proc.returncode, time.monotonic() - started


def deploy(stack: Path, env: dict[str, str], log: Path, state: FleetState) -> dict[str, Any]:
    """Converge the fleet with the exporters' layers. Exit 1 is accepted only when every host that failed was
    refused by the verify layer's last step as unhealthy (no Triton without the inference layer)."""
    rc, seconds = cnctl(["deploy", "--stack", str(stack), "--layers", LAYERS], env, log, DEPLOY_TIMEOUT_S)
    text = log.read_text(errors="replace")
    refused = {h.name: next((line.strip(" │") for line in text.splitlines() if f"{h.name}: unhealthy:" in line), "")
               for h in state.hosts}
    if rc != 0 and not all(refused.values()):
        raise RuntimeError(f"`cnctl deploy --layers {LAYERS}` exited {rc}, not (only) the verify layer's refusal:\n"
                           f"{text[-4000:]}")
    return {"exit": rc, "seconds": round(seconds, 1), "verify_refused": {n: r for n, r in refused.items() if r}}


def wait_ready(state: FleetState, host: HostState) -> None:
    """Both exporters active and both textfiles written (the health timer's first run is 30 s after a deploy)."""
    check = (f"systemctl is-active --quiet {' '.join(UNITS.values())} && "
             f"sudo -n test -s {TEXTFILE_DIR}/gpu.prom && sudo -n test -s {TEXTFILE_DIR}/circularnet.prom")
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if remote_ssh(state, host, check, timeout=60).returncode == 0:
            return
        time.sleep(5)
    raise RuntimeError(f"{host.name}: the exporters were not running with both textfiles after {READY_S} s:\n"
                       f"{journal(state, host)[-6000:]}")


def probe(state: FleetState, host: HostState, window: float) -> dict[str, Any]:
    command = shlex.join(["sudo", "-n", "python3", "-", json.dumps(UNITS), EXPORTER_URL, str(window),
                          str(SCRAPE_PERIOD_S), str(TIMED_SCRAPES)])
    result: dict[str, Any] = json.loads(ssh(state, host, command, timeout=window + 300, stdin=PROBE))
    result.update(host=host.name, flavour=host.spec.flavour, arch=host.spec.arch,
                  emulated=host.spec.arch != "amd64")
    return result


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MIB:.1f}"


def unit_cpu(unit: dict[str, Any]) -> tuple[float | None, str]:
    """A unit's CPU percent of one core and where it came from: its cgroup's cpu.stat, else its processes' stat."""
    if unit["cpu_pct"] is not None:
        return unit["cpu_pct"], "cgroup cpu.stat"
    return unit["cpu_proc_pct"], "/proc/<pid>/stat"


def charged(unit: dict[str, Any]) -> tuple[float | None, str]:
    """The bytes a unit's memory is judged by and what they are: its cgroup's memory.current, else (no memory
    accounting in the cgroup, as on the sandbox's hybrid-cgroup hosts) its processes' PSS."""
    memory = unit["memory"]
    if memory["current"] is not None:
        return float(memory["current"]), "memory.current"
    return (float(memory["pss"]), "PSS") if memory["pss"] is not None else (None, "not measured")


def totals(host: dict[str, Any]) -> tuple[float | None, float | None, str]:
    """(CPU percent of one core, bytes, what the bytes are) of both exporters on one host; None: not measured."""
    cpus = [unit_cpu(u)[0] for u in host["units"].values()]
    memories = [charged(u) for u in host["units"].values()]
    cpu = None if None in cpus else sum(c for c in cpus if c is not None)
    memory = None if any(m is None for m, _ in memories) else sum(m for m, _ in memories if m is not None)
    return cpu, memory, " + ".join(sorted({what for _, what in memories}))


def label(host: dict[str, Any]) -> str:
    return f"{host['host']} ({host['arch']}{', under qemu-user: overstates' if host['emulated'] else ''})"


OK, MISSED, SHOWN = "ok", "MISSED", "shown, not judged (qemu-user)"


def _verdict(value: float | None, limit: float, judged: bool) -> str:
    """A figure against its limit: a figure that could not be measured misses it; an emulated host's is shown only."""
    if value is None or (judged and value >= limit):
        return MISSED
    return OK if judged else SHOWN


def verdicts(hosts: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(target, measured, limit, verdict) for each target. The cost targets are a real host's: an emulated host's
    figures (qemu-user's translation included) are shown, not judged."""
    out = []
    for h in hosts:
        cpu, memory, what = totals(h)
        judged = not h["emulated"]
        out.append((f"node-exporter + GPU collector CPU, {label(h)}",
                    "not measured" if cpu is None else f"{cpu:.2f} % of one core", f"< {TARGET_CPU_PCT} %",
                    _verdict(cpu, TARGET_CPU_PCT, judged)))
        out.append((f"node-exporter + GPU collector memory, {label(h)}",
                    "not measured" if memory is None else f"{memory / MIB:.1f} MiB ({what})", f"< {TARGET_MIB:.0f} MiB",
                    _verdict(None if memory is None else memory / MIB, TARGET_MIB, judged)))
        for name, unit in h["units"].items():
            if unit["restarts"] or unit["active"] != ["active", "active"] or not unit["processes"]:
                seen = f"{unit['restarts']} restarts, {'/'.join(map(str, unit['active']))}, {unit['processes']} processes"
                out.append((f"{name} ran through the window, {h['host']}", seen, "0 restarts, active, running", MISSED))
        if h["errors"] or len(h["timed_s"]) < TIMED_SCRAPES:
            out.append((f"scrapes answered, {h['host']}", f"{len(h['errors'])} failed", "0 failed", MISSED))
    return out


def render(result: dict[str, Any]) -> list[Table]:
    hosts = result["hosts"]
    usage = Table(title=f"the exporters' cost per host: CPU over {result['window_s']:.0f} s, scraped every "
                        f"{SCRAPE_PERIOD_S:.0f} s (the unit's cgroup cpu.stat: its processes and their children); "
                        "memory at the window's end")
    for column in ("host", "arch", "unit", "CPU, % of one core", "memory.current, MiB", "PSS, MiB", "PSS anon, MiB",
                   "PSS file, MiB", "RSS, MiB", "processes"):
        usage.add_column(column, justify="left" if column in ("host", "arch", "unit", "processes") else "right")
    for h in hosts:
        arch = f"{h['arch']} (qemu-user)" if h["emulated"] else h["arch"]
        for name, unit in h["units"].items():
            memory, (cpu, _) = unit["memory"], unit_cpu(unit)
            usage.add_row(h["host"], arch, name, "-" if cpu is None else f"{cpu:.2f}", mib(memory["current"]),
                          mib(memory["pss"]), mib(memory["pss_anon"]), mib(memory["pss_file"]), mib(memory["rss"]),
                          ", ".join(p["comm"] for p in memory["procs"]) or "none")
        cpu, total, what = totals(h)
        usage.add_row(h["host"], arch, "both", "-" if cpu is None else f"{cpu:.2f}",
                      mib(total) if what == "memory.current" else "-", mib(total) if what == "PSS" else "-",
                      "", "", "", "")
    scrape = Table(title=f"a scrape of {EXPORTER_URL} from the host itself ({TIMED_SCRAPES} GETs one after another)")
    for column in ("host", "arch", "median, s", "max, s", "bytes", "collectors' own time, s", "series present"):
        scrape.add_column(column, justify="left" if column in ("host", "arch", "series present") else "right")
    for h in hosts:
        present = ", ".join(name for name, ok in h["has"].items() if ok) or "none"
        scrape.add_row(h["host"], f"{h['arch']} (qemu-user)" if h["emulated"] else h["arch"],
                       f"{statistics.median(h['timed_s']):.3f}" if h["timed_s"] else "-",
                       f"{max(h['timed_s']):.3f}" if h["timed_s"] else "-", f"{h['bytes']:,}",
                       f"{sum(h['collectors_s'].values()):.3f}", present)
    status = Table(title=f"`cnctl status` for the fleet ({len(hosts)} hosts), wall seconds")
    for column in ("over SSH, median of 3", "runs", "exit codes", "from Prometheus"):
        status.add_column(column, justify="right")
    s = result["status"]
    status.add_row(f"{s['median_s']:.2f}", " / ".join(f"{x:.2f}" for x in s["runs_s"]), ", ".join(map(str, s["exits"])),
                   "not measured: no site Prometheus yet")
    targets = Table(title="targets (issue 22)")
    for column in ("target", "measured", "limit", "verdict"):
        targets.add_column(column, justify="left" if column == "target" else "right")
    for name, measured, limit, verdict in verdicts(hosts):
        targets.add_row(name, measured, limit, verdict)
    return [usage, scrape, status, targets]


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through the finally that tears the fleet down


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=120.0, help="seconds of the CPU window (15 to 3600)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    args = parser.parse_args(argv)
    if not 15 <= args.window <= 3600:
        parser.error(f"--window {args.window}: give 15 to 3600 seconds")
    prereqs.require("benchmark the exporters on sandbox hosts")
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)

    inst = Instance(prefix=PREFIX, state_dir=STATE, cache=Path(os.environ.get("CNCTL_CACHE") or "/var/cache/cnctl"))
    started = time.monotonic()
    result: dict[str, Any] = {"window_s": args.window, "layers": LAYERS,
                              "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")}
    with tempfile.TemporaryDirectory(prefix="cnctl-bench-exporters-") as tmp:
        work = Path(tmp)
        stack = work / "Pulumi.local.yaml"
        stack.write_text((REPO_ROOT / "stacks" / "Pulumi.local.yaml").read_text().replace("172.31.254.", NET))
        env = {**os.environ, **inst.environment(),  # the sandbox's fleet file: what cnctl and pyinfra read
               "XDG_CACHE_HOME": str(work / "cache"), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        log = work / "cnctl.log"
        try:
            say(f"up: the local stack's first Jetson (arm64, qemu-user) and first server (amd64) on {NET}0/24")
            state = fleet.up(inst, load_stack(str(stack)), stack="local", edge=1, servers=1, progress=Quiet())
            say(f"deploy --layers {LAYERS}")
            result["deploy"] = deploy(stack, env, log, state)
            say(f"deploy: {result['deploy']['seconds']:.0f} s, exit {result['deploy']['exit']}; waiting for both exporters")
            for host in state.hosts:
                wait_ready(state, host)
            say(f"window: {args.window:.0f} s on every host at once, a scrape every {SCRAPE_PERIOD_S:.0f} s")
            with ThreadPoolExecutor(max_workers=len(state.hosts)) as pool:
                result["hosts"] = list(pool.map(lambda h: probe(state, h, args.window), state.hosts))
            say(f"`cnctl status`, {STATUS_RUNS} runs")
            runs = [cnctl(["status", "--stack", str(stack), "--source", "ssh"], env, log, STATUS_TIMEOUT_S) for _ in range(STATUS_RUNS)]
            result["status"] = {"runs_s": [round(s, 2) for _, s in runs], "exits": [rc for rc, _ in runs],
                                "median_s": statistics.median(s for _, s in runs), "prometheus": None}
            result["load"] = os.getloadavg()
        finally:
            fleet.down(inst, progress=Quiet())  # idempotent: nothing is left even if a step failed
    result["seconds"] = round(time.monotonic() - started, 1)
    say(f"done in {result['seconds']:.0f} s")

    checks = verdicts(result["hosts"])
    if args.json:
        result["targets"] = [{"target": n, "measured": v, "limit": lim, "verdict": verdict} for n, v, lim, verdict in checks]
        print(json.dumps(result, indent=2))
    else:
        console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
        for table in render(result):
            console.print(table)
        console.print("The Jetson is arm64 under qemu-user: its figures include the emulator and overstate a real "
                      "Jetson. nvidia-smi and tegrastats are the sandbox's STAND-INs (Python). `cnctl status` from "
                      "Prometheus: bench/status_sources.py.")
    return 1 if any(verdict == MISSED for *_, verdict in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
