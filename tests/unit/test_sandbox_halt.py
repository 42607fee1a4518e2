"""`cnctl sandbox down` gives hosts a bounded time to halt, returns as soon as they have, and says which it is
waiting for. The hosts are stood in for by child processes that take a while (or forever) to end on SIGTERM,
as systemd-nspawn does while its container halts: no root, no sandbox."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from cnctl.sandbox import fleet, procs
from cnctl.sandbox.progress import Progress

# Ends `halt_s` seconds after SIGTERM (never, when negative); says "ready" once its handler is in place.
HOST = """
import signal, sys, time
halt_s = float(sys.argv[1])
def term(*_):
    if halt_s >= 0:
        time.sleep(halt_s)
        sys.exit(0)
signal.signal(signal.SIGTERM, term)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


@pytest.fixture
def hosts() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def boot(hosts: list[subprocess.Popen[str]], halt_s: float) -> int:
    proc = subprocess.Popen([sys.executable, "-c", HOST, str(halt_s)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    hosts.append(proc)
    return proc.pid


def test_a_host_that_halts_at_once_is_not_waited_for(hosts: list[subprocess.Popen[str]]) -> None:
    pid = boot(hosts, 0)
    heard: list[list[int]] = []
    started = time.monotonic()
    assert procs.terminate([pid], fleet.DOWN_TIMEOUT_S, waiting=lambda p, _w: heard.append(p)) == ([pid], [])
    assert time.monotonic() - started < 2
    assert heard == []


def test_a_slow_host_is_waited_for_by_name_until_it_halts(hosts: list[subprocess.Popen[str]],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(procs, "WAITING_EVERY_S", 0.4)
    slow, fast = boot(hosts, 1.5), boot(hosts, 0)
    said: list[str] = []
    waiting = fleet.halting(Progress(said.append), {slow: "belt-1-orin", fast: "gpu-server-1"}, 30)
    started = time.monotonic()
    assert procs.terminate([slow, fast], 30, waiting=waiting) == ([slow, fast], [])
    assert 1.4 < time.monotonic() - started < 10  # waited for the slow one, not for the whole 30 s
    assert said, "nothing said while waiting"
    assert all(line.startswith("waiting for belt-1-orin to halt (") and line.endswith(" s of 30 s)") for line in said), said


def test_a_host_that_does_not_halt_in_time_is_killed(hosts: list[subprocess.Popen[str]]) -> None:
    stubborn = boot(hosts, -1)
    started = time.monotonic()
    assert procs.terminate([stubborn], 0.5) == ([], [stubborn])
    assert time.monotonic() - started < 5
    assert not procs.alive(stubborn)


def test_down_gives_hosts_a_realistic_time_to_halt() -> None:
    assert 20 <= fleet.DOWN_TIMEOUT_S <= 90  # systemd's own default stop timeout is 90 s
