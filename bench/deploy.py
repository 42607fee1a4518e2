"""Benchmark the host layers (deploy.py / playbooks/site.yml) on fresh sandbox fleets of 1 and of 6 hosts,
with both engines side by side: the first run, a no-op (second) run, and the remote commands per host that a
no-op run costs. Needs root (like the sandbox itself).

    sudo .venv/bin/python bench/deploy.py [--sizes 1,6] [--engines pyinfra,ansible] [--noop-runs 3] [--json]

What is measured, and how:

- Every (engine, fleet size) pair gets a fleet of its own, booted fresh from the cached image (`up`) and torn
  down after it: each engine's first run starts from the same bare hosts, and its no-op runs find the end
  state that engine left (the parity tests, tests/e2e/test_layers.py, prove both engines leave the same
  files, packages, holds and services, so the no-op runs compare like with like). Engines never run at the
  same time: on a 2-core machine they would slow each other down.
- The hosts are amd64 servers, taking every layer deploy.py applies to a server (platform -> nvidia ->
  container -> model -> inference -> verify when this was written). The arm64 Jetsons run under qemu-user,
  about 10x slower per process, which would measure the emulator rather than the engines.
- Times are the wall time of `cnctl deploy --stack <the local stack on the bench subnet> --engine E`, the
  command users type (its table's engine-only time is recorded in --json as well). The first run installs
  Docker and the stand-in NVIDIA packages on every host: minutes. The no-op time is the median of
  --noop-runs runs, each of which must report changed=0 and failed=0 on every host (else the benchmark stops:
  a run that changes something is not a no-op).
- Remote commands are counted by each host's SSH server, not by the engines: before the first run every
  host's sshd is restarted with `-E <file> -o LogLevel=VERBOSE` (its /etc/default/ssh, SSHD_OPTS), which logs
  one "Starting session: ..." line for every channel that runs something: an `exec` request (a command, or
  Ansible's pipelined module) or a subsystem (pyinfra's SFTP uploads). The log is read from the host's disk on
  the machine side (no SSH session of our own is counted), from the offset it had before the run. pyinfra
  (paramiko, one connection) and Ansible (OpenSSH with ControlMaster, pipelining on) are counted alike:
  sessions, whatever connection they were multiplexed over. The SSH connections opened are counted too.
- The machine's 1-minute load average is sampled around every run and shown: other work on the machine
  (a demo, a test session) slows every run, and says how far the times can be trusted.

Its own sandbox: prefix `cnbd`, subnet 172.31.246.0/24, state /run/cnctl/bench-deploy, the normal cache; a
demo or a test session is left alone, and whatever the benchmark boots is torn down (also on Ctrl-C/SIGTERM).
Targets (issue 7): the 6-host pyinfra no-op <= 1.5x the 1-host one; the pyinfra no-op <= 0.6x the Ansible
no-op on 6 hosts. Exit 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cnctl.config import load_stack
from cnctl.sandbox import fleet, prereqs
from cnctl.sandbox.host import ssh_banner
from cnctl.sandbox.instance import Instance
from cnctl.sandbox.progress import Quiet
from cnctl.sandbox.remote import ssh
from cnctl.sandbox.state import FleetState
from tests.e2e.fleet_helpers import deploy_rows

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BENCH_PREFIX = "cnbd"
BENCH_NET = "172.31.246."
BENCH_STATE = Path("/run/cnctl/bench-deploy")
DEPLOY_TIMEOUT_S = 3600
# On the host: where its sshd logs (VERBOSE: one "Starting session" line per exec/subsystem channel).
SSHD_LOG = "/var/log/cnctl-bench-sshd.log"
SSHD_OPTS = f'SSHD_OPTS="-E {SSHD_LOG} -o LogLevel=VERBOSE"\n'
SESSION = re.compile(r"Starting session: (?P<kind>command|subsystem|shell|forced-command)")
CONNECTION = re.compile(r"Accepted publickey for ")
TARGET_SCALING = 1.5  # pyinfra no-op, 6 hosts / 1 host
TARGET_VS_ANSIBLE = 0.6  # pyinfra no-op / Ansible no-op, 6 hosts


@dataclass
class Measure:
    engine: str
    hosts: int
    first_s: float = 0.0
    first_engine_s: float = 0.0
    noop_s: list[float] = field(default_factory=list)
    noop_engine_s: list[float] = field(default_factory=list)
    commands: dict[str, int] = field(default_factory=dict)  # host -> sessions on the last no-op run
    subsystems: dict[str, int] = field(default_factory=dict)  # host -> of which SFTP (pyinfra's uploads)
    connections: dict[str, int] = field(default_factory=dict)  # host -> SSH connections on the last no-op run
    load: list[float] = field(default_factory=list)  # the machine's 1-minute load average, sampled around each run

    @property
    def noop(self) -> float:
        return statistics.median(self.noop_s)

    def to_json(self) -> dict[str, object]:
        return {
            "engine": self.engine, "hosts": self.hosts, "first_s": round(self.first_s, 2),
            "first_engine_s": round(self.first_engine_s, 2), "noop_s": [round(s, 2) for s in self.noop_s],
            "noop_median_s": round(self.noop, 2), "noop_engine_s": [round(s, 2) for s in self.noop_engine_s],
            "commands_per_host": self.commands, "sftp_per_host": self.subsystems,
            "connections_per_host": self.connections, "load_1min": [round(x, 2) for x in self.load],
        }


def say(message: str) -> None:
    print(f"[bench/deploy] {message}", file=sys.stderr, flush=True)


def bench_stack(directory: Path) -> Path:
    """The local stack moved to the benchmark's own /24 (named Pulumi.local.yaml: it is the local stack)."""
    path = directory / "Pulumi.local.yaml"
    path.write_text((ROOT / "stacks" / "Pulumi.local.yaml").read_text().replace("172.31.254.", BENCH_NET))
    return path


def log_sessions(state: FleetState) -> None:
    """Restart each host's sshd logging every session to SSHD_LOG (VERBOSE); wait until it answers again."""
    for host in state.hosts:
        (Path(host.merged) / "etc" / "default" / "ssh").write_text(SSHD_OPTS)
        result = ssh(state, host, "sudo systemctl restart ssh", timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"{host.name}: restarting sshd failed: {result.stderr.strip()}")
    deadline = time.monotonic() + 60
    for host in state.hosts:
        log = Path(host.merged) / SSHD_LOG.lstrip("/")
        while not (ssh_banner(host.address) and log.exists()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{host.name}: sshd did not come back logging to {SSHD_LOG}")
            time.sleep(0.1)


def log_offsets(state: FleetState) -> dict[str, int]:
    return {h.name: (Path(h.merged) / SSHD_LOG.lstrip("/")).stat().st_size for h in state.hosts}


def sessions_since(state: FleetState, offsets: dict[str, int]) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Per host, since `offsets`: (sessions, of which subsystems, connections), from the host's sshd log."""
    sessions, subsystems, connections = {}, {}, {}
    for host in state.hosts:
        with open(Path(host.merged) / SSHD_LOG.lstrip("/"), "rb") as fh:
            fh.seek(offsets[host.name])
            text = fh.read().decode(errors="replace")
        kinds = [m["kind"] for m in SESSION.finditer(text)]
        sessions[host.name] = len(kinds)
        subsystems[host.name] = kinds.count("subsystem")
        connections[host.name] = len(CONNECTION.findall(text))
    return sessions, subsystems, connections


def deploy(env: dict[str, str], stack: Path, engine: str, logs: Path,
           label: str) -> tuple[float, float, dict[str, tuple[int, int]]]:
    """Run `cnctl deploy --engine ENGINE` once: (wall seconds, the engine's own seconds, {host: (changed,
    failed)}). Its log is kept under `logs`; a failed run raises with the end of it."""
    log = logs / f"{label}.log"
    started = time.monotonic()
    with open(log, "w") as err:
        proc = subprocess.run([str(BIN / "cnctl"), "deploy", "--stack", str(stack), "--engine", engine], check=False,
                              cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=err,
                              timeout=DEPLOY_TIMEOUT_S)
    seconds = time.monotonic() - started
    engine_s = 0.0
    for line in proc.stdout.splitlines():
        if (m := re.search(r"· ([0-9.]+) s$", line.strip())):
            engine_s = float(m[1])
    rows = {host: (changed, failed) for host, (_, changed, failed) in deploy_rows(proc.stdout, (engine,)).items()}
    if proc.returncode != 0 or not rows or any(failed for _, failed in rows.values()):
        text = log.read_text(errors="replace")
        errors = "\n".join(line[:2000] for line in text.splitlines() if re.search(r"fatal:|\] Error|^\s*E: ", line))
        raise RuntimeError(f"{label}: `cnctl deploy --engine {engine}` exited {proc.returncode} (log: {log}):\n"
                           f"{proc.stdout}\n{errors or text[-4000:]}")
    return seconds, engine_s, rows


def measure(inst: Instance, stack: Path, engine: str, size: int, noop_runs: int, logs: Path) -> Measure:
    """One fresh fleet of `size` amd64 servers: up, the first run, `noop_runs` no-op runs, down."""
    cfg = load_stack(str(stack))
    env = {**os.environ, **inst.environment(), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = Measure(engine, size)
    label = f"{engine}-{size}"
    try:
        say(f"{label}: up, {size} fresh amd64 server(s)")
        state = fleet.up(inst, cfg, stack="local", edge=0, servers=size, progress=Quiet())
        log_sessions(state)
        say(f"{label}: first run")
        result.load.append(os.getloadavg()[0])
        result.first_s, result.first_engine_s, rows = deploy(env, stack, engine, logs, f"{label}-first")
        if sorted(rows) != sorted(h.name for h in state.hosts) or not all(changed for changed, _ in rows.values()):
            raise RuntimeError(f"{label}: the first run did not converge every host: {rows}")
        say(f"{label}: first run {result.first_s:.0f} s; {noop_runs} no-op run(s)")
        for n in range(noop_runs):
            offsets = log_offsets(state)
            result.load.append(os.getloadavg()[0])
            seconds, engine_s, rows = deploy(env, stack, engine, logs, f"{label}-noop-{n + 1}")
            result.load.append(os.getloadavg()[0])
            if any(changed for changed, _ in rows.values()):
                raise RuntimeError(f"{label}: a second run changed something, so it is no no-op: {rows}")
            result.noop_s.append(seconds)
            result.noop_engine_s.append(engine_s)
            result.commands, result.subsystems, result.connections = sessions_since(state, offsets)
        say(f"{label}: no-op {result.noop:.1f} s, {sorted(set(result.commands.values()))} remote commands per host")
    finally:
        fleet.down(inst, progress=Quiet())
    return result


def spread(values: dict[str, int]) -> str:
    low, high = min(values.values()), max(values.values())
    return str(low) if low == high else f"{low}-{high}"


def verdicts(results: list[Measure]) -> list[tuple[str, float, float]]:
    """(target, measured ratio, limit) for each target whose runs were measured."""
    by = {(m.engine, m.hosts): m for m in results}
    out = []
    if ("pyinfra", 6) in by and ("pyinfra", 1) in by:
        out.append(("pyinfra no-op: 6 hosts / 1 host", by["pyinfra", 6].noop / by["pyinfra", 1].noop, TARGET_SCALING))
    if ("pyinfra", 6) in by and ("ansible", 6) in by:
        out.append(("no-op on 6 hosts: pyinfra / Ansible", by["pyinfra", 6].noop / by["ansible", 6].noop,
                    TARGET_VS_ANSIBLE))
    return out


def render(results: list[Measure], noop_runs: int) -> tuple[Table, Table]:
    table = Table(title="host layers on fresh amd64 sandbox servers (`cnctl deploy`)")
    for column in ("engine", "hosts", "first run, s", f"no-op, s (median of {noop_runs})",
                   "remote commands/host, no-op", "of which SFTP", "SSH connections/host, no-op", "machine load"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    for m in results:
        table.add_row(m.engine, str(m.hosts), f"{m.first_s:.1f}", f"{m.noop:.1f}", spread(m.commands),
                      spread(m.subsystems), spread(m.connections), f"{min(m.load):.1f}-{max(m.load):.1f}")
    targets = Table(title="targets (issue 7)")
    for column in ("target", "measured", "limit", "verdict"):
        targets.add_column(column, justify="left" if column == "target" else "right")
    for name, ratio, limit in verdicts(results):
        targets.add_row(name, f"{ratio:.2f}x", f"<= {limit}x", "ok" if ratio <= limit else "MISSED")
    return table, targets


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through the finally that tears the fleet down


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,6", help="fleet sizes, comma-separated (amd64 servers)")
    parser.add_argument("--engines", default="pyinfra,ansible", help="engines, comma-separated")
    parser.add_argument("--noop-runs", type=int, default=3, help="no-op runs per fleet (the median is reported)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    args = parser.parse_args(argv)
    prereqs.require("benchmark the host layers")
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)

    cache = Path(os.environ.get("CNCTL_CACHE") or "/var/cache/cnctl")
    inst = Instance(prefix=BENCH_PREFIX, state_dir=BENCH_STATE, cache=cache)
    sizes = [int(s) for s in args.sizes.split(",")]
    engines = [e.strip() for e in args.engines.split(",")]
    results: list[Measure] = []
    started = time.monotonic()
    # The engines' logs, kept when a run fails (the error names the file), removed otherwise.
    logs = Path(tempfile.mkdtemp(prefix="cnctl-bench-deploy-", dir="/var/tmp"))
    stack = bench_stack(logs)
    try:
        for size in sizes:
            for engine in engines:
                results.append(measure(inst, stack, engine, size, max(1, args.noop_runs), logs))
    finally:
        fleet.down(inst, progress=Quiet())  # idempotent: nothing is left even if a run failed
    shutil.rmtree(logs)
    say(f"done in {time.monotonic() - started:.0f} s")

    checks = verdicts(results)
    if args.json:
        print(json.dumps({"runs": [m.to_json() for m in results],
                          "targets": [{"target": n, "ratio": round(r, 3), "limit": lim, "met": r <= lim}
                                      for n, r, lim in checks]}, indent=2))
    else:
        table, targets = render(results, max(1, args.noop_runs))
        console = Console(highlight=False, width=None if sys.stdout.isatty() else 132)  # a file or make: no folding
        console.print(table)
        console.print(targets)
        console.print("Remote commands: sessions (exec requests and SFTP subsystems) the hosts' sshd logged during "
                      "the last no-op run. Each engine on fleets of its own, fresh for its first run. amd64 hosts "
                      "only: the arm64 Jetsons run under qemu-user, ~10x slower. Machine load: 1-minute load "
                      "average around the runs (2 cores here).")
    return 1 if any(ratio > limit for _, ratio, limit in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
