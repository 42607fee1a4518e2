"""The real Prometheus (Debian's /usr/bin/prometheus) on a free loopback port, for tests: no root, no network.

    url, process = start(config_text, web_config=None, extra_args=[...])
    try: ... urllib against url ...
    finally: stop(process)

`start` writes the configuration (and the web configuration, when given: TLS or basic auth) to a fresh directory
that also holds the TSDB, starts Prometheus on 127.0.0.1 at a free port, waits (bounded) for /-/ready and returns
the base URL (http://127.0.0.1:PORT) and the process. `stop` ends that process by its PID (SIGTERM, then SIGKILL
after a bounded wait) and removes its directory. Prometheus missing is a failure with the install hint, never a
skip: it is a package of the machine's one list (cnctl/sandbox/prereqs.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pytest

PROMETHEUS = "/usr/bin/prometheus"
READY_TIMEOUT = 30.0  # seconds for /-/ready
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
ATTEMPTS = 3  # a free port taken by someone else between our probe and Prometheus's bind: try another
_dirs: dict[int, Path] = {}  # pid -> the directory start() made for it


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require() -> str:
    """The prometheus binary, or the test fails with the command that installs it."""
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.fail(f"{PROMETHEUS} is missing: `sudo python3 cnctl/sandbox/prereqs.py ensure` installs it (Debian's "
                    "prometheus package, in the machine's one list)")
    return PROMETHEUS


def start(config_text: str, web_config: str | None = None, extra_args: Sequence[str] = ()) -> tuple[str, subprocess.Popen[bytes]]:
    """Start Prometheus on 127.0.0.1 with this configuration; (base URL, process) once it is ready."""
    binary = require()
    last = ""
    for _ in range(ATTEMPTS):
        work = Path(tempfile.mkdtemp(prefix="cnctl-prometheus-"))
        (work / "prometheus.yml").write_text(config_text)
        port = free_port()
        argv = [binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn", *extra_args]
        if web_config is not None:
            (work / "web.yml").write_text(web_config)
            argv.append(f"--web.config.file={work / 'web.yml'}")
        log = (work / "prometheus.log").open("wb")
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=work)
        log.close()
        _dirs[process.pid] = work
        scheme = "https" if web_config and "tls_server_config" in web_config else "http"
        url = f"{scheme}://127.0.0.1:{port}"
        if _ready(url, process):
            return url, process
        last = (work / "prometheus.log").read_text(errors="replace")[-2000:]
        stop(process)
        if "address already in use" not in last:
            break
    pytest.fail(f"prometheus did not become ready within {READY_TIMEOUT:.0f} s:\n{last}")


def _ready(url: str, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


def log_of(process: subprocess.Popen[bytes]) -> str:
    """What the process has logged so far (for a failing test's message)."""
    work = _dirs.get(process.pid)
    return (work / "prometheus.log").read_text(errors="replace") if work else ""


def stop(process: subprocess.Popen[bytes]) -> None:
    """End the process start() began, by its PID, and remove its directory."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT)
    work = _dirs.pop(process.pid, None)
    if work is not None:
        shutil.rmtree(work, ignore_errors=True)
