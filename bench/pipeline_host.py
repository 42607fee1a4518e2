"""Benchmark the pipeline on one sandbox host: frames per second from the spool to the bucket. Needs root.

    sudo .venv/bin/python bench/pipeline_host.py [--frames 40,160] [--json]

A fresh amd64 server of its own sandbox (prefix `cnb7`, subnet 172.31.241.0/24, state
/run/cnctl/bench-pipeline, the normal cache) is converged with every layer (`cnctl deploy`, pyinfra); then, for
each count N, N frames of the site's footage are written into its spool at once (as a camera burst would) and
the clock runs until the pipeline has made rows of all of them and the uploader has emptied its queue into the
site's GCS emulator: the runner (a batch of `pipeline.batchFrames` at a time), the STAND-IN client against the
host's real CPU Triton (container runtime) with 1024x1024x3 input tensors, and the uploader. Reported: seconds,
frames per second, batches, rows, objects stored. The timer starts a run 10 s after the last (the stack's
`pipeline.intervalSeconds`), which bounds the rate of small bursts. Jetsons are left out: qemu-user would
time the emulator. Whatever the benchmark boots is torn down, also on Ctrl-C/SIGTERM.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnctl.config import load_stack
from cnctl.sandbox import fleet, prereqs
from cnctl.sandbox.instance import Instance
from cnctl.sandbox.progress import Quiet
from cnctl.sandbox.remote import ssh as remote_ssh
from cnctl.sandbox.state import FleetState, HostState
from tests.e2e.host_state import FEED

PREFIX, NET, STATE = "cnb7", "172.31.241.", "/run/cnctl/bench-pipeline"
BIN = Path(sys.executable).parent
TIMEOUT_S = 1800


def say(message: str) -> None:
    print(f"[bench/pipeline_host] {message}", file=sys.stderr, flush=True)


def ssh(state: FleetState, host: HostState, command: str, stdin: str | None = None) -> str:
    result = remote_ssh(state, host, command, input=stdin, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"{host.name}: {command}: {result.stderr.strip()[-500:]}")
    return result.stdout


def pipeline_state(state: FleetState, host: HostState, name: str) -> dict[str, Any]:
    text = remote_ssh(state, host, f"sudo cat /var/lib/circularnet/pipeline/state/{name}", timeout=60).stdout
    return json.loads(text) if text.strip() else {}


def burst(state: FleetState, host: HostState, start: int, count: int) -> dict[str, Any]:
    """`count` frames into the spool at once; the seconds until all are rows in the bucket, and what was made."""
    before_run, before_up = pipeline_state(state, host, "pipeline.json"), pipeline_state(state, host, "upload.json")
    frames0, batches0, rows0 = (before_run.get(k, 0) for k in ("frames", "batches", "rows"))
    uploaded0 = before_up.get("uploaded_files", 0)
    started = time.monotonic()
    ssh(state, host, f"sudo -u circularnet-pipeline python3 - http://{NET}2:8080 bench {start} {count}", stdin=FEED)
    while time.monotonic() - started < TIMEOUT_S:
        run, up = pipeline_state(state, host, "pipeline.json"), pipeline_state(state, host, "upload.json")
        if run.get("frames", 0) - frames0 >= count and up.get("queue_files") == 0 and up.get("uploaded_files", 0) > uploaded0:
            seconds = time.monotonic() - started
            return {"frames": count, "seconds": round(seconds, 1), "fps": round(count / seconds, 2),
                    "batches": run["batches"] - batches0, "rows": run["rows"] - rows0,
                    "objects": up["uploaded_files"] - uploaded0}
        time.sleep(0.5)
    raise RuntimeError(f"{count} frames did not reach the bucket in {TIMEOUT_S} s")


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through the finally that tears the fleet down


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", default="40,160", help="burst sizes, comma-separated")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.frames.split(",") if c.strip()]
    if not counts or any(c < 1 or c > 10_000 for c in counts):
        parser.error(f"--frames {args.frames}: give burst sizes from 1 to 10000, e.g. 40,160")
    prereqs.require("benchmark the pipeline on a sandbox host")
    signal.signal(signal.SIGTERM, _interrupt)
    inst = Instance(prefix=PREFIX, state_dir=Path(STATE), cache=Path(os.environ.get("CNCTL_CACHE") or "/var/cache/cnctl"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="cnctl-bench-pipeline-") as tmp:
        stack = Path(tmp) / "Pulumi.local.yaml"
        stack.write_text((ROOT / "stacks" / "Pulumi.local.yaml").read_text().replace("172.31.254.", NET))
        env = {**os.environ, **inst.environment(),  # the sandbox's fleet file: what cnctl and pyinfra read
               "XDG_CACHE_HOME": str(Path(tmp) / "cache"), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        try:
            say("up: one fresh amd64 server")
            state = fleet.up(inst, load_stack(str(stack)), stack="local", edge=0, servers=1, progress=Quiet())
            say("deploy: every layer (pyinfra)")
            done = subprocess.run([str(BIN / "cnctl"), "deploy", "--stack", str(stack)], env=env, cwd=ROOT,
                                  capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"deploy failed:\n{(done.stdout + done.stderr)[-3000:]}")
            host, start = state.hosts[0], 0
            for count in counts:
                say(f"burst of {count} frames")
                rows.append(burst(state, host, start, count))
                start += count
        finally:
            fleet.down(inst, progress=Quiet())
    if args.json:
        print(json.dumps({"runs": rows}, indent=2))
        return 0
    print(f"{'frames':>7} {'seconds':>8} {'frames/s':>9} {'batches':>8} {'rows':>6} {'objects':>8}")
    for r in rows:
        print(f"{r['frames']:>7} {r['seconds']:>8} {r['fps']:>9} {r['batches']:>8} {r['rows']:>6} {r['objects']:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
