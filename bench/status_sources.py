"""Benchmark `cnctl status` by source (issue 22 item 5): the site's Prometheus for 50 hosts vs SSH to every host.

    .venv/bin/python bench/status_sources.py [--hosts 50] [--runs 5] [--json]

Prometheus: Debian's /usr/bin/prometheus on 127.0.0.1 behind basic auth (a bcrypt hash of cost 10, as a site's
would be), scraping `--hosts` fake hosts every 5 s, each a loopback page of a converged host's health report as
node-exporter serves it (cnhost.metrics.exposition; one stdlib HTTP server, a path per host:
cnctl/sandbox/prometheus.py), with a stack in a temporary directory naming those hosts and the site. Timed, each
the median of `--runs` after one untimed run: the collect in this process (`cnctl.status_prometheus.collect`: the
stack loaded, the one query, every host rebuilt), and the whole `cnctl status --source prometheus` process
(Python's start and cnctl's imports included), with the bytes of the query's answer.

SSH: the real path needs real hosts. When the local sandbox fleet is up (its fleet file
/run/cnctl/sandbox/fleet.json exists) `cnctl status --stack local --source ssh` is timed against it (its hosts,
not 50); else its row says n/a: this benchmark boots no sandbox (`make demo` does, as root). No root needed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from cnctl import status_prometheus
from cnctl.config import stack_path
from cnctl.sandbox import prometheus
from cnhost.metrics import exposition

BIN = Path(sys.executable).parent
FLEET_FILE = Path("/run/cnctl/sandbox/fleet.json")
PASSWORD = "bench-site-password"
SCRAPE_S = 5.0
TIMEOUT_S = 600


def report(host: str, now: float) -> dict[str, Any]:
    """A converged Jetson's health report with its pipeline, checked at `now` (cnhost/health_report.py's keys)."""
    at = datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat(timespec="seconds")
    return {
        "host": host, "hostname": host, "checked": at, "healthy": True, "problems": [],
        "platform": {"platform": "jetson", "host": host, "l4t": "36.4.3"},
        "versions": {"driver": None, "docker": "26.1.5+dfsg1", "l4t": "36.4.3", "triton": "2.48.0"},
        "triton": {"live": True}, "model": {"name": "circularnet", "version": 2, "ready": True},
        "disk": [{"path": "/opt/circularnet/models", "free_bytes": 40 << 30, "total_bytes": 100 << 30},
                 {"path": "/", "free_bytes": 40 << 30, "total_bytes": 100 << 30}],
        "last_deploy": {"at": at, "stack": "bench", "runtime": "native",
                        "model": {"name": "circularnet", "version": 2, "action": "pinned"}},
        "pipeline": {"frames_captured": 1200, "frames_dropped": 3, "last_frame": at, "last_run": at, "last_ok": at,
                     "batches": 40, "rows": 950, "failed_batches": 1, "queue_files": 3, "queue_bytes": 4096,
                     "last_upload": at, "uploaded_files": 37, "dropped_files": 0},
    }


def write_stack(folder: Path, names: list[str], port: int) -> Path:
    """The onprem stack with `names` as edge hosts and the site's Prometheus at localhost:`port`."""
    document = yaml.safe_load(stack_path("onprem").read_text())
    secret = folder / "monitoring.password"
    secret.write_text(PASSWORD + "\n")
    document["config"].update(prometheus.site_sections("site-1", names, port, secret))
    path = folder / "Pulumi.bench.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def median_seconds(runs: int, action: Any) -> tuple[float, float, float]:
    action()  # untimed: page cache, .pyc files, Prometheus' first answer
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - started)
    return min(seconds), statistics.median(seconds), max(seconds)


def cnctl(*args: str) -> None:
    result = subprocess.run([str(BIN / "cnctl"), *args], capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    if result.returncode not in (0, 1):  # 1: a host unhealthy, still an answer
        raise RuntimeError(f"cnctl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()[-500:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="the figures as one JSON object")
    args = parser.parse_args()
    names = [f"belt-{i + 1}-orin" for i in range(args.hosts)]
    now = time.time()
    texts = {name: exposition(report(name, now)) for name in names}
    texts["site-1"] = exposition({**report("site-1", now), "platform": {"platform": "server", "host": "site-1"}})
    pages: dict[str, str | int] = dict(texts)
    hosts = prometheus.FakeHosts(pages)
    figures: dict[str, Any] = {"hosts": len(pages), "page_bytes": len(texts[names[0]])}
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp, hosts.serving(), \
            prometheus.running_prometheus(Path(tmp) / "prometheus", hosts, PASSWORD, SCRAPE_S) as site:
        figures["first_scrape_s"] = prometheus.wait_for_targets(site, len(pages), timeout_s=60)
        stack = str(write_stack(Path(tmp), names, int(site.url.rsplit(":", 1)[1])))
        answer = prometheus.get(site, "/api/v1/query?" + urllib.parse.urlencode({"query": status_prometheus.QUERY}))
        figures["answer_bytes"] = len(answer)
        figures["series"] = len(json.loads(answer)["data"]["result"])
        fleet = status_prometheus.collect(stack)
        if fleet.unhealthy:
            raise RuntimeError(f"hosts not healthy from Prometheus: {fleet.unhealthy[:5]}: {fleet.hosts[0].problems}")
        figures["collect_s"] = median_seconds(args.runs, lambda: status_prometheus.collect(stack))
        figures["cli_s"] = median_seconds(args.runs, lambda: cnctl("status", "--stack", stack, "--source", "prometheus"))
    if FLEET_FILE.exists():
        count = len(json.loads(FLEET_FILE.read_text()).get("hosts", []) or [])
        env_stack = "local"
        figures["ssh_hosts"] = count
        figures["ssh_cli_s"] = median_seconds(min(args.runs, 3), lambda: cnctl("status", "--stack", env_stack,
                                                                               "--source", "ssh"))
    else:
        figures["ssh_cli_s"] = None

    if args.json:
        print(json.dumps(figures))
        return 0
    table = Table(title=f"`cnctl status` by source · {figures['hosts']} hosts · seconds, min / median / max of "
                        f"{args.runs} · {os.cpu_count()} cores")
    for column in ("source", "what is timed", "hosts", "min", "median", "max", "notes"):
        table.add_column(column)

    def row(source: str, what: str, count: Any, seconds: tuple[float, float, float] | None, notes: str) -> None:
        cells = [f"{s:.3f}" for s in seconds] if seconds else ["n/a", "n/a", "n/a"]
        table.add_row(source, what, str(count), *cells, notes)

    row("prometheus", "collect, in process", figures["hosts"], figures["collect_s"], "one query")
    row("prometheus", "cnctl process", figures["hosts"], figures["cli_s"], "start, imports")
    if figures["ssh_cli_s"] is None:
        row("ssh", "cnctl process", "-", None, "n/a (no sandbox)")
    else:
        row("ssh", "cnctl process", figures["ssh_hosts"], figures["ssh_cli_s"], "local sandbox")
    console = Console()
    console.print(table)
    console.print(f"the query's answer: {figures['series']} series, {figures['answer_bytes']:,} bytes; each host's "
                  f"page {figures['page_bytes']:,} bytes; every target scraped {figures['first_scrape_s']:.1f} s "
                  f"after start", soft_wrap=True)
    console.print("ssh: " + (f"`cnctl status --stack local --source ssh` against the sandbox fleet ({FLEET_FILE}), "
                             "each host's health report run fresh" if figures["ssh_cli_s"] is not None else
                             f"n/a: no sandbox ({FLEET_FILE} is absent); this benchmark boots none"), soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
