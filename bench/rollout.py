"""Benchmark the model rollout on fresh sandbox fleets of 3 and 6 amd64 servers: bytes each host downloads on
a first and a no-op run, seconds from `cnctl model rollout` to the new version served on every host, and the
requests that failed meanwhile. Needs root (like the sandbox itself).

    sudo .venv/bin/python bench/rollout.py [--sizes 3,6] [--json]

What is measured, and how, for each fleet size (a fleet of its own, booted fresh from the cached image and
torn down after it):

- `cnctl deploy` of the local stack pinning the stand-in model version 1 (the first run: every layer), then
  the same command again (a no-op run). Bytes per host are what the site's artifact server sent to that
  host's address, from its request log (one JSON line per request, with the bytes it sent): model archives
  (`/artifacts/models/`), the target, and everything it served (apt indexes and packages, wheels) beside.
- One client per host sends inference requests in a loop to the host's Triton (the client of
  tests/e2e/test_rollout.py: tritonclient.http, from this machine inside the host's network namespace, one
  request a second). Once every client has been answered,
  `cnctl model rollout` to version 2 starts (default plan: a canary, then batches of 50 % of the rest; pyinfra).
  Seconds to v2 everywhere: from the command's start to the first request answered by version 2 on the last
  host to switch (the clients' logs); the command's own wall time beside it. Failed requests: every request
  of every client from the rollout's start to its end that got no answer.

Hosts are amd64 servers only: the arm64 Jetsons run under qemu-user, about 10x slower per process, which
would measure the emulator. Its own sandbox: prefix `cnb9`, subnet 172.31.243.0/24 for the first size and
172.31.242.0/24 for the second, state /run/cnctl/bench-rollout, the normal cache; a demo or a test session is
left alone, and whatever the benchmark boots is torn down (also on Ctrl-C/SIGTERM).

Targets (issue 8): 0 model bytes per host on a no-op run; 0 failed requests; the rollout on 6 hosts takes at
most 1.5x its time on 3 hosts (the hosts of a batch converge in parallel). Exit 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the client loop lives with the e2e test that proves it

from cnctl.config import load_stack
from cnctl.sandbox import fleet, prereqs
from cnctl.sandbox.instance import Instance
from cnctl.sandbox.progress import Quiet
from cnctl.sandbox.state import FleetState
from tests.e2e.test_rollout import CLIENT

BIN = Path(sys.executable).parent
BENCH_PREFIX = "cnb9"
BENCH_NETS = ("172.31.243.", "172.31.242.")  # one /24 per fleet size, in --sizes order
BENCH_STATE = Path("/run/cnctl/bench-rollout")
RUN_TIMEOUT_S = 3600
CLIENT_READY_S = 300
# One request per host every second: enough to see every switch, without the clients' inferences (CPU-only
# Triton, 1024x1024 images) taking the 2 cores the engines need; the e2e test sends four times as many.
CLIENT_PERIOD_S = 1.0
BATCH_LINE = re.compile(r"^(?P<batch>(canary|batch) \d+): (ok|FAILED) in (?P<s>[0-9.]+) s$", re.MULTILINE)
MODELS = "/artifacts/models/"
TARGET_SCALING = 1.5  # rollout seconds, 6 hosts / 3 hosts


@dataclass
class Measure:
    """One fleet's numbers."""

    hosts: int
    first_model_bytes: dict[str, int] = field(default_factory=dict)
    first_all_bytes: dict[str, int] = field(default_factory=dict)
    noop_model_bytes: dict[str, int] = field(default_factory=dict)
    noop_all_bytes: dict[str, int] = field(default_factory=dict)
    first_s: float = 0.0
    noop_s: float = 0.0
    rollout_s: float = 0.0  # the command's wall time
    batches: dict[str, float] = field(default_factory=dict)  # "canary 1" -> seconds (engine run and gate)
    v2_everywhere_s: float = 0.0  # from its start to v2 answering on the last host
    requests: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {key: (round(value, 2) if isinstance(value, float) else value) for key, value in self.__dict__.items()}


def say(message: str) -> None:
    print(f"[bench/rollout] {message}", file=sys.stderr, flush=True)


def bench_stacks(directory: Path, net: str) -> tuple[Path, Path]:
    """Where the local stack moved to `net` (pinning the stand-in's version 1) is written, and where its copy
    pinning version 2 goes (`pin_v2`, once the site is up); both are named Pulumi.local.yaml: the local stack."""
    text = (ROOT / "stacks" / "Pulumi.local.yaml").read_text().replace("172.31.254.", net)
    v1 = directory / "v1" / "Pulumi.local.yaml"
    v1.parent.mkdir()
    v1.write_text(text)
    return v1, directory / "v2" / "Pulumi.local.yaml"


def pin_v2(v1: Path, v2: Path) -> None:
    """Write `v2`: `v1` pinning sandbox_standin-v2.zip as version 2, with the sha256 the site's artifact server
    publishes beside it (reachable from this machine, as in the e2e tests)."""
    document = yaml.safe_load(v1.read_text())
    model = document["config"]["circularnet:model"]
    url = str(model["url"]).replace("sandbox_standin.zip", "sandbox_standin-v2.zip")
    with urllib.request.urlopen(f"{url}.sha256", timeout=30) as resp:
        digest = resp.read().decode().split()[0]
    model.update(version=2, url=url, sha256=digest)
    v2.parent.mkdir(exist_ok=True)
    v2.write_text(yaml.safe_dump(document, sort_keys=False))
    load_stack(str(v2))


def request_log(inst: Instance) -> Path:
    return Path(inst.state_dir) / "site" / "artifacts-requests.log"


def log_size(inst: Instance) -> int:
    path = request_log(inst)
    return path.stat().st_size if path.exists() else 0


def bytes_since(inst: Instance, offset: int, state: FleetState) -> tuple[dict[str, int], dict[str, int]]:
    """Per host, since byte `offset` of the artifact server's request log: (model archive bytes, all bytes)."""
    by_address = {h.address: h.name for h in state.hosts}
    models, everything = dict.fromkeys(by_address.values(), 0), dict.fromkeys(by_address.values(), 0)
    with open(request_log(inst), "rb") as fh:
        fh.seek(offset)
        for line in fh.read().decode(errors="replace").splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            name = by_address.get(record.get("client", ""))
            if name is None:
                continue
            sent = int(record.get("bytes") or 0)
            everything[name] += sent
            if str(record.get("path", "")).startswith(MODELS):
                models[name] += sent
    return models, everything


def cnctl(args: list[str], env: dict[str, str], logs: Path, label: str) -> float:
    """Run `cnctl ARGS`; its wall seconds. A failed run raises with the end of its log (`logs`/`label`.log)."""
    log = logs / f"{label}.log"
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.run([str(BIN / "cnctl"), *args], check=False, cwd=ROOT, env=env, text=True, stdout=out,
                              stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT_S)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{label}: `cnctl {' '.join(args)}` exited {proc.returncode}:\n"
                           f"{log.read_text(errors='replace')[-4000:]}")
    return seconds


def start_clients(inst: Instance, state: FleetState, logs: Path) -> tuple[list[subprocess.Popen[str]], dict[str, Path], Path]:
    """One client loop per host; returns once every one has been answered (or raises)."""
    stop = logs / "stop-clients"
    paths = {h.name: logs / f"requests-{h.name}.jsonl" for h in state.hosts}
    procs = [subprocess.Popen(["ip", "netns", "exec", inst.host_netns(h.name), str(BIN / "python"), "-c", CLIENT,
                               "127.0.0.1", "8000", "circularnet", str(paths[h.name]), str(stop), str(CLIENT_PERIOD_S)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True) for h in state.hosts]
    deadline = time.monotonic() + CLIENT_READY_S
    while not all(any(r["ok"] for r in records(p)) for p in paths.values()):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            stop_clients(procs, stop)
            raise RuntimeError(f"the clients got no answer within {CLIENT_READY_S} s: "
                               f"{ {n: records(p)[-1:] for n, p in paths.items()} }")
        time.sleep(1)
    return procs, paths, stop


def stop_clients(procs: list[subprocess.Popen[str]], stop: Path) -> None:
    stop.touch()
    for proc in procs:
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def measure(inst: Instance, size: int, net: str, logs: Path) -> Measure:
    """One fresh fleet of `size` amd64 servers: up, first and no-op deploy, a rollout under load, down."""
    result = Measure(size)
    label = f"{size}-hosts"
    work = logs / label
    work.mkdir()
    v1, v2 = bench_stacks(work, net)
    cfg = load_stack(str(v1))
    env = {**os.environ, **inst.environment(), "XDG_CACHE_HOME": str(work / "cache"),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    try:
        say(f"{label}: up, {size} fresh amd64 server(s) on {net}0/24")
        state = fleet.up(inst, cfg, stack="local", edge=0, servers=size, progress=Quiet())
        pin_v2(v1, v2)
        offset = log_size(inst)
        say(f"{label}: first run (every layer, model version 1)")
        result.first_s = cnctl(["deploy", "--stack", str(v1)], env, work, "first")
        result.first_model_bytes, result.first_all_bytes = bytes_since(inst, offset, state)
        offset = log_size(inst)
        say(f"{label}: first run {result.first_s:.0f} s; no-op run")
        result.noop_s = cnctl(["deploy", "--stack", str(v1)], env, work, "noop")
        result.noop_model_bytes, result.noop_all_bytes = bytes_since(inst, offset, state)
        say(f"{label}: no-op {result.noop_s:.0f} s; clients, then the rollout to version 2")
        procs, paths, stop = start_clients(inst, state, work)
        started_wall = time.time()
        try:
            result.rollout_s = cnctl(["model", "rollout", "--stack", str(v2)], env, work, "rollout")
            result.batches = {m["batch"]: float(m["s"]) for m in BATCH_LINE.finditer((work / "rollout.log").read_text())}
        finally:
            ended_wall = time.time()
            stop_clients(procs, stop)
        during = {name: [r for r in records(path) if started_wall <= r["t"] <= ended_wall] for name, path in paths.items()}
        result.requests = sum(len(rs) for rs in during.values())
        result.failed = [{"host": name, **r} for name, rs in during.items() for r in rs if not r["ok"]]
        first_v2 = {name: min((r["t"] for r in rs if r["ok"] and r["version"] == "2"), default=None)
                    for name, rs in during.items()}
        missing = [name for name, t in first_v2.items() if t is None]
        if missing:
            raise RuntimeError(f"{label}: no request was answered by version 2 on {', '.join(missing)} during the rollout")
        result.v2_everywhere_s = max(t for t in first_v2.values() if t is not None) - started_wall
        say(f"{label}: rollout {result.rollout_s:.0f} s, v2 everywhere after {result.v2_everywhere_s:.0f} s, "
            f"{len(result.failed)} of {result.requests} requests failed")
    finally:
        fleet.down(inst, progress=Quiet())
    return result


def spread(values: dict[str, int]) -> str:
    if not values:
        return "-"
    low, high = min(values.values()), max(values.values())
    return f"{low:,}" if low == high else f"{low:,}-{high:,}"


def verdicts(results: list[Measure]) -> list[tuple[str, str, str, bool]]:
    """(target, measured, limit, met) for each target."""
    out = []
    for m in results:
        worst = max(m.noop_model_bytes.values(), default=0)
        out.append((f"model bytes per host, no-op run, {m.hosts} hosts", f"{worst:,}", "0", worst == 0))
        out.append((f"failed requests during the rollout, {m.hosts} hosts", f"{len(m.failed)} of {m.requests}", "0",
                    not m.failed))
    by = {m.hosts: m for m in results}
    if 3 in by and 6 in by:
        ratio = by[6].rollout_s / by[3].rollout_s
        out.append(("rollout time: 6 hosts / 3 hosts", f"{ratio:.2f}x", f"<= {TARGET_SCALING}x", ratio <= TARGET_SCALING))
    return out


def render(results: list[Measure]) -> tuple[Table, Table]:
    table = Table(title="model rollout on fresh amd64 sandbox servers (pyinfra; canary 1, batches of 50 %)")
    for column in ("hosts", "first run: model bytes/host", "first run: all bytes/host", "no-op: model bytes/host",
                   "no-op: all bytes/host", "first run, s", "no-op, s", "rollout, s", "batches, s",
                   "v2 on every host, s", "failed requests"):
        table.add_column(column, justify="right")
    for m in results:
        table.add_row(str(m.hosts), spread(m.first_model_bytes), spread(m.first_all_bytes), spread(m.noop_model_bytes),
                      spread(m.noop_all_bytes), f"{m.first_s:.0f}", f"{m.noop_s:.0f}", f"{m.rollout_s:.1f}",
                      " + ".join(f"{s:.0f}" for s in m.batches.values()), f"{m.v2_everywhere_s:.1f}",
                      f"{len(m.failed)} of {m.requests}")
    targets = Table(title="targets (issue 8)")
    for column in ("target", "measured", "limit", "verdict"):
        targets.add_column(column, justify="left" if column == "target" else "right")
    for name, measured, limit, met in verdicts(results):
        targets.add_row(name, measured, limit, "ok" if met else "MISSED")
    return table, targets


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through the finally that tears the fleet down


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3,6", help=f"fleet sizes, comma-separated (at most {len(BENCH_NETS)})")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or len(sizes) > len(BENCH_NETS) or any(not re.fullmatch(r"[1-9][0-9]?", str(s)) for s in sizes):
        parser.error(f"--sizes {args.sizes}: give 1 to {len(BENCH_NETS)} fleet sizes from 1 to 99, e.g. 3,6")
    prereqs.require("benchmark the model rollout")
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)

    cache = Path(os.environ.get("CNCTL_CACHE") or "/var/cache/cnctl")
    inst = Instance(prefix=BENCH_PREFIX, state_dir=BENCH_STATE, cache=cache)
    results: list[Measure] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cnctl-bench-rollout-") as tmp:
        try:
            for size, net in zip(sizes, BENCH_NETS, strict=False):
                results.append(measure(inst, size, net, Path(tmp)))
        finally:
            fleet.down(inst, progress=Quiet())  # idempotent: nothing is left even if a run failed
    say(f"done in {time.monotonic() - started:.0f} s")

    checks = verdicts(results)
    if args.json:
        print(json.dumps({"runs": [m.to_json() for m in results],
                          "targets": [{"target": n, "measured": v, "limit": lim, "met": ok} for n, v, lim, ok in checks]},
                         indent=2))
    else:
        table, targets = render(results)
        console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
        console.print(table)
        console.print(targets)
    return 0 if all(ok for *_, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
