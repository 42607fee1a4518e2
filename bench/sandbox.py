"""Benchmark the sandbox fleet: cold image builds (amd64, arm64), `up` of the local fleet (2 arm64 Jetsons, 1
server) and of 6 hosts from cache, a Docker engine ready per host, the Triton image pulled per host from the
site registry, and `down`. Needs root (like the sandbox itself).

    sudo .venv/bin/python bench/sandbox.py [--runs 3] [--skip-cold] [--skip-engine] [--json]

Cold builds go into a throwaway cache under /var/tmp (mmdebstrap downloads every package again; the arm64
one runs dpkg under qemu: minutes). Everything else uses the normal cache ($CNCTL_CACHE, default
/var/cache/cnctl) with its own sandbox (prefix `cnbn`, subnet 172.31.249.0/24, state under /run/cnctl/bench),
so a running demo is left alone. Targets: 6 hosts up from cache <= 5 s, `down` <= 5 s.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cnctl.catalog import catalog
from cnctl.config import load_stack
from cnctl.sandbox import fleet, image, mounts, prereqs
from cnctl.sandbox.instance import Instance
from cnctl.sandbox.progress import Quiet
from cnctl.sandbox.remote import ssh
from cnctl.sandbox.site import build_site_content
from cnctl.sandbox.state import FleetState, HostState

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"up, 6 hosts": 5.0, "down,": 5.0}  # by the start of a step's label
BENCH_NET = "172.31.249."
ENGINE_TIMEOUT_S = 900


def timed(step: Callable[[], object]) -> float:
    started = time.monotonic()
    step()
    return time.monotonic() - started


def cold_image_build(arch: str) -> float:
    """Seconds to build the host image of `arch` into an empty cache (removed afterwards)."""
    scratch = Path(tempfile.mkdtemp(prefix="cnctl-bench-", dir="/var/tmp"))
    try:
        return timed(lambda: image.ensure_image(scratch / "sandbox" / "images", Quiet(), arch))
    finally:
        mounts.remove_tree(scratch)


def bench_stack(directory: Path) -> Path:
    """The local stack moved to the benchmark's own /24."""
    path = directory / "Pulumi.local.yaml"
    path.write_text((ROOT / "stacks" / "Pulumi.local.yaml").read_text().replace("172.31.254.", BENCH_NET))
    return path


def _run(state: FleetState, host: HostState, command: str) -> None:
    result = ssh(state, host, command, timeout=ENGINE_TIMEOUT_S)
    if result.returncode != 0:
        raise RuntimeError(f"{host.name}: {command[:60]}... failed: {(result.stdout + result.stderr)[-800:]}")


def engine_and_pull(state: FleetState, host: HostState) -> tuple[float, float]:
    """(seconds until Docker answers, installed from the site repo; seconds to pull the host's Triton image)."""
    assert state.site
    keyring = Path(state.site["apt_keyring"]).read_bytes().hex()
    source = f"deb [signed-by=/etc/apt/keyrings/cnctl-sandbox.gpg] {state.site['apt_url']} /"
    engine = timed(lambda: _run(state, host, (
        f"set -e; sudo install -d /etc/apt/keyrings; echo {keyring} | xxd -r -p | sudo tee "
        f"/etc/apt/keyrings/cnctl-sandbox.gpg >/dev/null; echo '{source}' | sudo tee "
        "/etc/apt/sources.list.d/site.list >/dev/null; sudo apt-get update -q --error-on=any >/dev/null; "
        "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io >/dev/null; "
        "sudo docker info >/dev/null")))
    platforms = catalog().platforms
    upstream = (platforms.jetson.release(host.spec.jetpack or "6.0").triton_image if host.spec.flavour == "jetson"
                else platforms.servers.triton_images[0].image)
    ref = f"{state.site['registry']}/{upstream.split('/', 1)[1]}"
    pull = timed(lambda: _run(state, host, f"sudo docker pull -q {ref} >/dev/null"))
    return engine, pull


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="up/down cycles (the median is reported)")
    parser.add_argument("--skip-cold", action="store_true", help="skip the cold image builds (minutes)")
    parser.add_argument("--skip-engine", action="store_true", help="skip Docker install and image pull per host")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    prereqs.require("benchmark the sandbox")

    cache = Path(os.environ.get("CNCTL_CACHE") or "/var/cache/cnctl")
    inst = Instance(prefix="cnbn", state_dir=Path("/run/cnctl/bench"), cache=cache)
    results: dict[str, float] = {}
    if not args.skip_cold:
        for arch in image.ARCHES:
            results[f"image build, {arch} (cold)"] = cold_image_build(arch)
    rootfs = {arch: image.ensure_image(inst.image_cache, Quiet(), arch) for arch in image.ARCHES}  # warm, untimed
    results["site content (cached)"] = timed(lambda: build_site_content(
        cache, progress=lambda _message: None, host_images=rootfs, mirror=image.debian_mirror()))

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_stack(str(bench_stack(Path(tmp))))
        try:
            for label, edge, servers in (("local fleet, 3 hosts", None, None), ("6 hosts", 3, 3)):
                ups, downs = [], []
                for _ in range(max(1, args.runs)):
                    ups.append(timed(functools.partial(fleet.up, inst, cfg, progress=Quiet(), edge=edge, servers=servers)))
                    downs.append(timed(lambda: fleet.down(inst, progress=Quiet())))
                results[f"up, {label} from cache (median of {len(ups)})"] = statistics.median(ups)
                results[f"down, {label} (median of {len(downs)})"] = statistics.median(downs)
            if not args.skip_engine:
                state = fleet.up(inst, cfg, progress=Quiet())
                for host in (h for h in state.hosts if h.name in {state.hosts[0].name, state.hosts[-1].name}):
                    engine, pull = engine_and_pull(state, host)
                    results[f"Docker ready, {host.name} ({host.spec.arch})"] = engine
                    results[f"Triton image pull, {host.name} ({host.spec.arch})"] = pull
        finally:
            fleet.down(inst, progress=Quiet())  # idempotent: nothing is left even if a run failed

    if args.json:
        print(json.dumps({k: round(v, 2) for k, v in results.items()}, indent=2))
        return 0
    table = Table(title="sandbox fleet")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_column("target", justify="right")
    failed = False
    for step, seconds in results.items():
        target = next((t for key, t in TARGETS.items() if step.startswith(key)), None)
        verdict = "" if target is None else (f"<= {target:.0f} s ok" if seconds <= target else f"<= {target:.0f} s MISSED")
        failed |= target is not None and seconds > target
        table.add_row(step, f"{seconds:.2f}", verdict)
    Console(highlight=False).print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
