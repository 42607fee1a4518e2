"""Benchmark pull mode against push on a fresh sandbox fleet of amd64 servers (issue 12). Needs root.

    sudo .venv/bin/python bench/pull.py [--hosts 6] [--json]

Its own sandbox (prefix `cnb6`, subnet 172.31.240.0/24, state /run/cnctl/bench-pull, the normal cache), torn
down after it (also on Ctrl-C/SIGTERM). The local stack with a `bundle` section (a key made for the run,
`pollSeconds` 30, the shortest allowed) and every server in `mode: pull`, channel stable. Measured, side by side:

- push: `cnctl deploy` (pyinfra) first run of every layer, the pull layer last (it installs the agent and its
  timer), then a no-op run of the whole fleet, and a no-op run of one host (`--limit`);
- pull no-op: version 1 of the bundle, built from the stack just pushed (so nothing is left to change), is
  published to `stable`; every host's timer applies it: the agent's own seconds per host (its report.json:
  download, signature and manifest checks, unpack, `pyinfra @local` over the same layers as the push);
- publish to converged: version 2 (`pipeline.batchFrames` changed) published to `stable`: seconds from the
  `cnctl bundle publish` start to the last host whose applied.json names version 2 (its pipeline.json checked).
  It includes each host's wait for its timer (up to pollSeconds plus a fifth of it) — what a site sees.

Jetsons are left out: qemu-user would time the emulator. Hosts are read over SSH (the bench keeps it open).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnctl.config import load_stack
from cnctl.sandbox import fleet, prereqs
from cnctl.sandbox.instance import Instance
from cnctl.sandbox.progress import Quiet
from cnctl.sandbox.remote import ssh as remote_ssh
from cnctl.sandbox.state import FleetState, HostState

PREFIX, NET, STATE = "cnb6", "172.31.240.", "/run/cnctl/bench-pull"
BIN = Path(sys.executable).parent
TIMEOUT_S = 3600
POLL_SECONDS = 30
PULL_STATE = "/var/lib/circularnet/pull"


def say(message: str) -> None:
    print(f"[bench/pull] {message}", file=sys.stderr, flush=True)


def host_json(state: FleetState, host: HostState, path: str) -> dict[str, Any]:
    text = remote_ssh(state, host, f"sudo cat {path}", timeout=60).stdout
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        return {}


def pull_stack(directory: Path) -> Path:
    """The local stack on the bench's subnet, every server in pull mode, a bundle section with a fresh key."""
    key = directory / "release"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f", str(key)], check=True)
    document = yaml.safe_load((ROOT / "stacks" / "Pulumi.local.yaml").read_text().replace("172.31.254.", NET))
    config = document["config"]
    config["circularnet:bundle"] = {
        "signers": [{"identity": "bench@sandbox", "publicKey": (directory / "release.pub").read_text().strip()}],
        "signingKey": str(key), "pollSeconds": POLL_SECONDS}
    for server in config["circularnet:fleets"]["servers"]:
        server["mode"] = "pull"
    path = directory / "Pulumi.local.yaml"
    path.write_text(yaml.safe_dump(document))
    load_stack(str(path))
    return path


def set_batch_frames(stack: Path, frames: int) -> None:
    document = yaml.safe_load(stack.read_text())
    document["config"].setdefault("circularnet:pipeline", {})["batchFrames"] = frames
    stack.write_text(yaml.safe_dump(document))


def cnctl(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Run `cnctl ARGS`: (wall seconds, its output); a failure raises with the output's end."""
    started = time.monotonic()
    done = subprocess.run([str(BIN / "cnctl"), *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`cnctl {' '.join(args)}` exited {done.returncode}:\n{(done.stdout + done.stderr)[-4000:]}")
    return time.monotonic() - started, done.stdout + done.stderr


def published_version(output: str) -> str:
    """The version `cnctl bundle publish` printed ("version <16 hex>: ...")."""
    for line in output.splitlines():
        if line.startswith("version "):
            return line.split()[1].rstrip(":")
    raise RuntimeError(f"no version in the publish output:\n{output[-2000:]}")


def converged(state: FleetState, version: str, started: float) -> dict[str, float]:
    """{host: seconds from `started` until its applied.json names `version`}; raises after TIMEOUT_S."""
    done: dict[str, float] = {}
    while len(done) < len(state.hosts):
        if time.monotonic() - started > TIMEOUT_S:
            missing = [h.name for h in state.hosts if h.name not in done]
            raise RuntimeError(f"version {version} not applied on {', '.join(missing)} within {TIMEOUT_S} s")
        for host in state.hosts:
            if host.name not in done and host_json(state, host, f"{PULL_STATE}/applied.json").get("current") == version:
                done[host.name] = time.monotonic() - started
        time.sleep(2)
    return done


def measure(inst: Instance, hosts: int, work: Path) -> dict[str, Any]:
    stack = pull_stack(work)
    env = {**os.environ, **inst.environment(),  # the sandbox's fleet file: what cnctl and pyinfra read
           "XDG_CACHE_HOME": str(work / "cache"), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    say(f"up: {hosts} fresh amd64 server(s) on {NET}0/24")
    state = fleet.up(inst, load_stack(str(stack)), stack="local", edge=0, servers=hosts, progress=Quiet())
    out: dict[str, Any] = {"hosts": hosts}
    say("push: first run, every layer")
    out["push_first_s"], _ = cnctl(["deploy", "--stack", str(stack)], env)
    say(f"push: first run {out['push_first_s']:.0f} s; no-op run of the fleet")
    out["push_noop_fleet_s"], _ = cnctl(["deploy", "--stack", str(stack)], env)
    say("push: no-op run of one host")
    out["push_noop_host_s"], _ = cnctl(["deploy", "--stack", str(stack), "--limit", state.hosts[0].name], env)

    say("pull: version 1 (the pushed stack) to stable; every timer applies it (a no-op)")
    started = time.monotonic()
    _, log = cnctl(["bundle", "publish", "--stack", str(stack), "--channel", "stable"], env)
    v1 = published_version(log)
    out["v1_everywhere_s"] = max(converged(state, v1, started).values())
    reports = {h.name: host_json(state, h, f"{PULL_STATE}/report.json") for h in state.hosts}
    out["pull_noop_host_s"] = sorted(float(r.get("seconds") or 0) for r in reports.values())

    frames = int(host_json(state, state.hosts[0], "/etc/circularnet/pipeline.json")["batch_frames"]) + 3
    set_batch_frames(stack, frames)
    say("pull: version 2 (a changed setting) to stable")
    started = time.monotonic()
    _, log = cnctl(["bundle", "publish", "--stack", str(stack), "--channel", "stable"], env)
    v2 = published_version(log)
    per_host = converged(state, v2, started)
    out["v2_everywhere_s"] = max(per_host.values())
    out["v2_first_host_s"] = min(per_host.values())
    wrong = [h.name for h in state.hosts
             if host_json(state, h, "/etc/circularnet/pipeline.json").get("batch_frames") != frames]
    if wrong:
        raise RuntimeError(f"version {v2} applied but batch_frames is not {frames} on {', '.join(wrong)}")
    return out


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through the finally that tears the fleet down


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=6, help="amd64 servers in the fleet (1 to 12)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if not 1 <= args.hosts <= 12:
        parser.error(f"--hosts {args.hosts}: give 1 to 12")
    prereqs.require("benchmark pull mode")
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    inst = Instance(prefix=PREFIX, state_dir=Path(STATE), cache=Path(os.environ.get("CNCTL_CACHE") or "/var/cache/cnctl"))
    with tempfile.TemporaryDirectory(prefix="cnctl-bench-pull-") as tmp:
        try:
            result = measure(inst, args.hosts, Path(tmp))
        finally:
            fleet.down(inst, progress=Quiet())
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    noop = result["pull_noop_host_s"]
    rows = [
        ("push, first run (every layer), whole fleet", f"{result['push_first_s']:.0f}"),
        ("push, no-op, whole fleet", f"{result['push_noop_fleet_s']:.0f}"),
        ("push, no-op, one host (--limit)", f"{result['push_noop_host_s']:.0f}"),
        ("pull, no-op apply on a host (agent's seconds, min-max)", f"{noop[0]:.0f}-{noop[-1]:.0f}"),
        ("publish v1 -> applied on every host", f"{result['v1_everywhere_s']:.0f}"),
        ("publish v2 (a change) -> first host converged", f"{result['v2_first_host_s']:.0f}"),
        ("publish v2 (a change) -> every host converged", f"{result['v2_everywhere_s']:.0f}"),
    ]
    print(f"pull mode vs push, {result['hosts']} amd64 sandbox servers (pollSeconds {POLL_SECONDS}); seconds")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
