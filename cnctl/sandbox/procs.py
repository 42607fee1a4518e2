"""Finding and stopping processes by what they are, never by name patterns alone.

A process is ours when it runs in one of our network namespaces (its /proc/PID/ns/net inode is one of
ours) or when it is a systemd-nspawn (or its supervisor) booting a directory under our state dir.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path


def pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def net_ns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def is_pid_ns_init(pid: int) -> bool:
    """True for the PID 1 of a nested PID namespace (a container's systemd): killing it ends the container."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                ids = line.split()[1:]
                return len(ids) > 1 and ids[-1] == "1"
    except OSError:
        pass
    return False


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie child of ours is reaped, and counts as gone)."""
    with contextlib.suppress(ChildProcessError, OSError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def boots_under(pid: int, root: Path) -> bool:
    """True if `pid` is a systemd-nspawn (or our supervisor of one) booting a directory below `root`."""
    args = cmdline(pid)
    if not any(os.path.basename(a) == "systemd-nspawn" for a in args):
        return False
    prefix = str(root).rstrip("/") + "/"
    return any(a.rpartition("=")[2].startswith(prefix) for a in args)  # `--directory=<path>` or `<path>`


def signal_all(targets: Iterable[int], signum: int) -> None:
    for pid in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def until(done: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `done` until it is true or `timeout` seconds pass; return its last answer. The sandbox's one wait loop."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            return done()
        time.sleep(interval)
    return True


Waiting = Callable[[list[int], float], None]  # (the pids still running, seconds waited so far)
WAITING_EVERY_S = 5.0


def wait_gone(targets: Iterable[int], timeout: float, waiting: Waiting | None = None) -> list[int]:
    """Wait (bounded) until every pid has exited; return those still running. Polls, so it returns as soon as
    they are gone; every WAITING_EVERY_S seconds of waiting, `waiting` is told which still run."""
    every = WAITING_EVERY_S
    remaining = [p for p in targets if alive(p)]
    started = told = time.monotonic()

    def gone() -> bool:
        nonlocal told
        running = [p for p in remaining if alive(p)]
        now = time.monotonic()
        if running and waiting is not None and now - told >= every:
            told = now
            waiting(running, now - started)
        return not running

    until(gone, timeout)
    return [p for p in remaining if alive(p)]


def terminate(targets: Iterable[int], timeout: float, signum: int = signal.SIGTERM,
              waiting: Waiting | None = None) -> tuple[list[int], list[int]]:
    """Ensure the pids are gone: `signum`, a bounded wait (`waiting` hears which still run), then SIGKILL.
    Returns (stopped, killed)."""
    targets = [p for p in targets if alive(p)]
    signal_all(targets, signum)
    stubborn = wait_gone(targets, timeout, waiting)
    if stubborn:
        signal_all(stubborn, signal.SIGKILL)
        wait_gone(stubborn, 5)
    return [p for p in targets if p not in stubborn], stubborn
