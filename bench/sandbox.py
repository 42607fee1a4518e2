"""Benchmark the sandbox fleet: cold image build, `up` of the local stack's 3 hosts from the cached image,
and `down`. Needs root (like the sandbox itself).

    sudo .venv/bin/python bench/sandbox.py [--runs 3] [--skip-cold] [--json]

The cold build goes into a throwaway cache under /var/tmp (debootstrap downloads every package again);
`up`/`down` use the normal cache ($CNCTL_CACHE, default /var/cache/cnctl) with their own sandbox (prefix
`cnbn`, subnet 172.31.249.0/24, state under /run/cnctl/bench), so a running demo is left alone.
Targets: `up` of 3 hosts from cache <= 10 s (site content cached too; reported separately), `down` <= 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cnctl.config import load_stack
from cnctl.sandbox import fleet, image, mounts, prereqs
from cnctl.sandbox.instance import Instance
from cnctl.sandbox.progress import Quiet
from cnctl.sandbox.site import build_site_content

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"up": 10.0, "down": 5.0}
BENCH_NET = "172.31.249."


def cold_image_build() -> float:
    """Seconds to build the host image into an empty cache (removed afterwards)."""
    scratch = Path(tempfile.mkdtemp(prefix="cnctl-bench-", dir="/var/tmp"))
    try:
        started = time.monotonic()
        image.ensure_image(scratch / "sandbox" / "images", Quiet())
        return time.monotonic() - started
    finally:
        mounts.remove_tree(scratch)


def bench_stack(directory: Path) -> Path:
    """The local stack moved to the benchmark's own /24."""
    path = directory / "Pulumi.local.yaml"
    path.write_text((ROOT / "stacks" / "Pulumi.local.yaml").read_text().replace("172.31.254.", BENCH_NET))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="up/down cycles (the median is reported)")
    parser.add_argument("--skip-cold", action="store_true", help="skip the cold image build (~45 s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    prereqs.require("benchmark the sandbox")

    cache = Path(os.environ.get("CNCTL_CACHE") or "/var/cache/cnctl")
    inst = Instance(prefix="cnbn", state_dir=Path("/run/cnctl/bench"), cache=cache)
    results: dict[str, float] = {}
    if not args.skip_cold:
        results["image build (cold)"] = cold_image_build()
    image.ensure_image(inst.image_cache, Quiet())  # the warm cache `up` uses (built here if missing, untimed)

    started = time.monotonic()
    build_site_content(cache, progress=lambda _message: None)
    results["site content (cached)"] = time.monotonic() - started

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_stack(str(bench_stack(Path(tmp))))
        ups, downs, boots = [], [], []
        try:
            for _ in range(max(1, args.runs)):
                started = time.monotonic()
                state = fleet.up(inst, cfg, progress=Quiet())
                ups.append(time.monotonic() - started)
                boots.append(state.timings.get("hosts", 0.0))
                started = time.monotonic()
                fleet.down(inst, progress=Quiet())
                downs.append(time.monotonic() - started)
        finally:
            fleet.down(inst, progress=Quiet())  # idempotent: nothing is left even if a run failed
    results[f"up, {len(cfg.fleets.edge) + len(cfg.fleets.servers)} hosts from cache (median of {len(ups)})"] = statistics.median(ups)
    results["  of which: boot until SSH answers"] = statistics.median(boots)
    results[f"down (median of {len(downs)})"] = statistics.median(downs)

    if args.json:
        print(json.dumps({k.strip(): round(v, 2) for k, v in results.items()}, indent=2))
        return 0
    table = Table(title="sandbox fleet")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_column("target", justify="right")
    failed = False
    for step, seconds in results.items():
        key = step.split(",")[0].split(" (")[0]
        target = TARGETS.get(key)
        verdict = "" if target is None else (f"<= {target:.0f} s ok" if seconds <= target else f"<= {target:.0f} s MISSED")
        failed |= target is not None and seconds > target
        table.add_row(step, f"{seconds:.2f}", verdict)
    Console(highlight=False).print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
