"""Benchmark: `cnctl plan --stack dev --json` against a bare import of what the program uses.

The bare process imports pulumi and exactly the pulumi-gcp classes the cloud layer names (read
from cnctl/cloud/*.py, so the two cannot drift apart). pulumi-gcp loads its modules lazily and its
compute package alone takes about a second, so this is the floor any plan pays. Target: the plan's
median at most 2x the bare median.

    .venv/bin/python bench/plan.py [--runs N] [--stack dev]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CNCTL = Path(sys.executable).parent / "cnctl"
TARGET_RATIO = 2.0


def used_gcp_classes() -> dict[str, set[str]]:
    """{pulumi_gcp module: {class, ...}} as the cloud layer's sources name them."""
    used: dict[str, set[str]] = {}
    for source in sorted((ROOT / "cnctl" / "cloud").glob("*.py")):
        text = source.read_text(encoding="utf-8")
        for module, names in re.findall(r"^from (pulumi_gcp(?:\.\w+)?) import (.+)$", text, re.MULTILINE):
            for name in (n.strip() for n in names.split(",")):
                if name[:1].isupper():  # from pulumi_gcp.provider import Provider
                    used.setdefault(module, set()).add(name)
                else:  # from pulumi_gcp import compute: find compute.Xxx uses
                    classes = set(re.findall(rf"\b{name}\.([A-Z]\w+)", text))
                    used.setdefault(f"{module}.{name}", set()).update(classes)
    return used


def bare_import_code() -> str:
    lines = ["import pulumi"]
    for module, classes in sorted(used_gcp_classes().items()):
        if classes:
            lines.append(f"from {module} import {', '.join(sorted(classes))}")
    return "\n".join(lines)


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--stack", default="dev")
    args = parser.parse_args()

    cases = {
        f"cnctl plan --stack {args.stack} --json": [str(CNCTL), "plan", "--stack", args.stack, "--json"],
        "bare import (pulumi + used pulumi_gcp classes)": [sys.executable, "-c", bare_import_code()],
    }
    for command in cases.values():  # warm the page cache and .pyc files, untimed
        timed(command)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):  # interleaved, so drift hits both alike
        for name, command in cases.items():
            samples[name].append(timed(command))

    width = max(map(len, cases))
    print(f"{'case':<{width}}  {'min':>6}  {'median':>6}  {'max':>6}   ({args.runs} runs, seconds)")
    for name, values in samples.items():
        print(f"{name:<{width}}  {min(values):6.2f}  {statistics.median(values):6.2f}  {max(values):6.2f}")
    plan, bare = (statistics.median(v) for v in samples.values())
    ratio = plan / bare
    verdict = "within" if ratio <= TARGET_RATIO else "OVER"
    print(f"ratio of medians: {ratio:.2f}x ({verdict} the {TARGET_RATIO:g}x target)")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
