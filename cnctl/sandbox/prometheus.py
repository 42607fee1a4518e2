"""A real Prometheus on loopback, for tests and benchmarks, no root, no fleet: the one copy of "run Debian's
/usr/bin/prometheus on a free port, wait until it is ready, stop it by its PID".

    with loopback_prometheus(config_text, web_config=None, extra_args=[...]) as site:   # any prometheus.yml
        ... site.url ..., site.log_text()                                                 # http://127.0.0.1:<port>

    hosts = FakeHosts({"belt-1-orin": exposition(report), "gpu-server-1": 503})   # text, or an HTTP status
    with hosts.serving(), running_prometheus(tmp, hosts, PASSWORD) as site:
        wait_for_targets(site, len(hosts.pages))

`loopback_prometheus` (the fleet dashboards' test, tests/unit/test_dashboards.py) runs Prometheus with the
configuration it is given, its TSDB and log in the caller's directory or a temporary one, on 127.0.0.1 and a
free port. `running_prometheus` (what `cnctl status --source prometheus` is tested and benchmarked against:
tests/unit/test_status_prometheus_live.py, bench/status_sources.py) is that Prometheus as the site's is: behind
basic auth (`--web.config.file`, user `circularnet`, a bcrypt hash of the password), scraping fake hosts. One
loopback HTTP server (stdlib, a thread) serves every fake host's page at `/hosts/<name>/metrics`; Prometheus
scrapes each as job `circularnet-node` with the target labels the site gives (`instance` the host's name,
`site`, `group`, `platform`). Prometheus is a package of the machine's one list (prereqs.TOOLS): missing, it is
a FileNotFoundError naming the command that installs it. Every process started here is stopped by its PID when
the block ends, every wait is bounded.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import yaml

PROMETHEUS = "prometheus"
INSTALL = "sudo python3 cnctl/sandbox/prereqs.py ensure (Debian's `prometheus` package)"
USER = "circularnet"
JOB = "circularnet-node"
READY_S = 30.0  # seconds for /-/ready
STOP_S = 10.0  # seconds between SIGTERM and SIGKILL, and after SIGKILL
ATTEMPTS = 3  # a free port taken by someone else between our probe and Prometheus' bind: try another


@dataclass
class FakeHosts:
    """The fake hosts' pages: name -> the metrics text it serves, or an HTTP status it answers instead (a
    node-exporter that fails: `up` 0). `labels`: a host's target labels beside `instance` (default: group edge,
    platform jetson, site plant-a). Pages may be changed while served."""

    pages: dict[str, str | int]
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    url: str = ""

    def target_labels(self, name: str) -> dict[str, str]:
        return {"site": "plant-a", "group": "edge", "platform": "jetson", **self.labels.get(name, {}), "instance": name}

    @contextlib.contextmanager
    def serving(self) -> Iterator[str]:
        """Serve the pages on 127.0.0.1 and a free port while the block runs; yields (and sets) `url`."""
        pages = self.pages

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = self.path.split("/")
                page = pages.get(parts[2]) if len(parts) == 4 and parts[1] == "hosts" and parts[3] == "metrics" else 404
                body = page.encode() if isinstance(page, str) else b"unavailable\n"
                self.send_response(200 if isinstance(page, str) else int(page or 404))
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            yield self.url
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=STOP_S)


@dataclass(frozen=True)
class Site:
    """A Prometheus this module started: its base URL, the basic auth password of USER (None: no auth), the
    process and the file it logs to."""

    url: str
    password: str | None
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        """What Prometheus has logged so far (for a failure's message)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def web_config(password: str, rounds: int = 10) -> str:
    """Prometheus' --web.config.file: basic auth of USER with a bcrypt hash of `password`."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()
    return yaml.safe_dump({"basic_auth_users": {USER: hashed}})


def scrape_config(hosts: FakeHosts, interval_s: float) -> str:
    """prometheus.yml: one static target per fake host, its page as `__metrics_path__`, its labels as the site's."""
    address = urllib.parse.urlsplit(hosts.url).netloc
    targets = [{"targets": [address], "labels": {**hosts.target_labels(name), "__metrics_path__": f"/hosts/{name}/metrics"}}
               for name in hosts.pages]
    interval = f"{max(1, round(interval_s * 1000))}ms"
    return yaml.safe_dump({
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": "1m"},
        "scrape_configs": [{"job_name": JOB, "static_configs": targets}],
    })


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def binary() -> str:
    """The Prometheus executable; FileNotFoundError with the install hint when the machine lacks it."""
    found = shutil.which(PROMETHEUS) or shutil.which(PROMETHEUS, path="/usr/bin")
    if found is None:
        raise FileNotFoundError(f"no `{PROMETHEUS}` on this machine: {INSTALL} installs it")
    return found


@contextlib.contextmanager
def loopback_prometheus(config_text: str, web_config: str | None = None, extra_args: Sequence[str] = (), *,
                        password: str | None = None, workdir: Path | None = None) -> Iterator[Site]:
    """Prometheus with this prometheus.yml (and --web.config.file, when given: basic auth or TLS) on 127.0.0.1
    and a free port, ready (its /-/ready answers, READY_S at most; probed with USER and `password` when given),
    stopped by its PID (SIGTERM, then SIGKILL after STOP_S) when the block ends. Its files (configuration, TSDB,
    log) are in `workdir`, which is the caller's and kept; without one, in a temporary directory removed at the
    end. A port taken between the probe and Prometheus' bind is tried again with another (ATTEMPTS at most).
    Raises FileNotFoundError with the install hint when the machine has no Prometheus (a failure, never a
    skip: it is a package of the machine's one list), RuntimeError or TimeoutError with its log when it does
    not become ready."""
    executable = binary()
    work = Path(tempfile.mkdtemp(prefix="cnctl-prometheus-")) if workdir is None else workdir
    try:
        work.mkdir(parents=True, exist_ok=True)
        site = _start(executable, work, config_text, web_config, extra_args, password)
        try:
            yield site
        finally:
            _stop(site.process)
    finally:
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def running_prometheus(workdir: Path, hosts: FakeHosts, password: str, interval_s: float = 1.0,
                       rounds: int = 10) -> contextlib.AbstractContextManager[Site]:
    """Prometheus over `hosts` (already serving) behind basic auth of USER and `password`, as the site's is:
    loopback_prometheus with its files in `workdir`."""
    return loopback_prometheus(scrape_config(hosts, interval_s), web_config(password, rounds), password=password,
                               workdir=workdir)


def _start(executable: str, work: Path, config_text: str, web_config: str | None, extra_args: Sequence[str],
           password: str | None) -> Site:
    (work / "prometheus.yml").write_text(config_text)
    argv = ["prometheus", f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
            "--log.level=warn"]
    if web_config is not None:
        (work / "web.yml").write_text(web_config)
        argv.append(f"--web.config.file={work / 'web.yml'}")
    scheme = "https" if web_config and "tls_server_config" in web_config else "http"
    log = work / "prometheus.log"
    for attempt in range(1, ATTEMPTS + 1):
        port = free_port()
        with log.open("wb") as out:
            process = subprocess.Popen([*argv, f"--web.listen-address=127.0.0.1:{port}", *extra_args],
                                       executable=executable, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, cwd=work, start_new_session=True)
        site = Site(f"{scheme}://127.0.0.1:{port}", password, process, log)
        try:
            _wait_ready(site)
            return site
        except BaseException as exc:
            _stop(process)
            taken = isinstance(exc, RuntimeError | TimeoutError) and "address already in use" in site.log_text()
            if not taken or attempt == ATTEMPTS:
                raise
            shutil.rmtree(work / "data", ignore_errors=True)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _wait_ready(site: Site) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if site.process.poll() is not None:
            raise RuntimeError(f"prometheus exited {site.process.returncode}: {site.log_text()[-2000:]}")
        with contextlib.suppress(urllib.error.URLError, OSError):
            if get(site, "/-/ready", timeout=2.0).startswith(b"Prometheus"):
                return
        time.sleep(0.1)
    raise TimeoutError(f"prometheus at {site.url} not ready within {READY_S:.0f} s: {site.log_text()[-2000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_S)


def get(site: Site, path: str, timeout: float = 10.0) -> bytes:
    """GET `path` of the site's Prometheus, with its basic auth when it has a password."""
    headers: dict[str, str] = {}
    if site.password is not None:
        token = base64.b64encode(f"{USER}:{site.password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    request = urllib.request.Request(site.url + path, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return bytes(response.read())


def wait_for_targets(site: Site, count: int, timeout_s: float = 30.0, with_metric: str = "cnctl_health_healthy",
                     healthy_pages: int | None = None) -> float:
    """Wait (at most `timeout_s`) until Prometheus has scraped all `count` targets once (`up` of each) and
    `with_metric` of `healthy_pages` of them (default: all); the seconds it took."""
    started = time.monotonic()
    wanted = count if healthy_pages is None else healthy_pages
    while True:
        ups = _vector(site, f'up{{job="{JOB}"}}')
        metrics = _vector(site, f'{with_metric}{{job="{JOB}"}}')
        if len(ups) >= count and len(metrics) >= wanted:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"prometheus at {site.url} scraped {len(ups)} of {count} targets and has {with_metric} "
                               f"of {len(metrics)} of {wanted} within {timeout_s:.0f} s: {site.log_text()[-2000:]}")
        time.sleep(0.2)


def _vector(site: Site, promql: str) -> list[object]:
    body = json.loads(get(site, "/api/v1/query?" + urllib.parse.urlencode({"query": promql})))
    result = body.get("data", {}).get("result", [])
    return list(result) if isinstance(result, list) else []


def site_sections(site: str, edge: Sequence[str], port: int, password_file: Path) -> dict[str, object]:
    """A stack's `fleets` and `monitoring` sections for fake hosts: the site server `site` at localhost (a stack
    refuses a loopback IP as a host's address, not a name) with its Prometheus on `port`, and `edge` as Jetsons."""
    return {
        "circularnet:fleets": {
            "servers": [{"name": site, "address": "localhost", "site": "plant-a", "driverBranch": "550"}],
            "edge": [{"name": name, "address": f"10.40.{i // 200}.{i % 200 + 10}", "site": "plant-a", "jetpack": "6.2",
                      "camera": {"framePrefix": f"belt{i + 1}"}} for i, name in enumerate(edge)]},
        "circularnet:monitoring": {"server": site, "interface": "lo", "prometheusPort": port,
                                   "passwordFile": str(password_file)},
    }
