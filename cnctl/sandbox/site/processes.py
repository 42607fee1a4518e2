"""Background processes of the site, recorded by PID so that only what was started here is ever stopped.

Each service runs in its own session (process group), optionally inside a network namespace through
`ip netns exec` (which execs the command, so the recorded PID is the service itself). Its record, a JSON
pidfile, also holds the process start time from /proc/<pid>/stat: a PID that was reused by another process
does not match, so stop() never signals a stranger.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from cnctl.sandbox import procs

# Popen objects of services this Python process started, so they get reaped (no zombies, no warnings).
_CHILDREN: dict[int, subprocess.Popen] = {}


@dataclass(frozen=True)
class ProcessRecord:
    """What is needed to recognise, and later stop, one started service."""

    name: str
    pid: int
    starttime: int
    argv: list[str]


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of a process, or None when there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


def is_running(rec: ProcessRecord) -> bool:
    """True while the recorded process (same PID and start time, not a zombie) is alive."""
    child = _CHILDREN.get(rec.pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(rec.pid, None)
    stat = _stat(rec.pid)
    return stat is not None and stat[1] == rec.starttime and stat[0] != "Z"


def spawn(name: str, argv: list[str], netns: str | None, record_dir: Path, *,
          env: dict[str, str] | None = None, cwd: Path | None = None) -> ProcessRecord:
    """Start `argv` in the background (in `netns` if given), log to `<record_dir>/<name>.log`, record it."""
    record_dir.mkdir(parents=True, exist_ok=True)
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    with open(record_dir / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)
    _CHILDREN[proc.pid] = proc
    stat = _stat(proc.pid)
    rec = ProcessRecord(name, proc.pid, stat[1] if stat else -1, full)
    (record_dir / f"{name}.pid").write_text(json.dumps(asdict(rec)) + "\n")
    return rec


def records(record_dir: Path) -> list[ProcessRecord]:
    """Every recorded service (pidfiles that cannot be parsed are ignored, never acted upon)."""
    out = []
    for pidfile in sorted(record_dir.glob("*.pid")):
        try:
            out.append(ProcessRecord(**json.loads(pidfile.read_text())))
        except (ValueError, TypeError):
            continue
    return out


def _signal(rec: ProcessRecord, sig: int) -> None:
    """Signal the service's whole process group when it leads one (it does: start_new_session), else itself."""
    try:
        if os.getpgid(rec.pid) == rec.pid:
            os.killpg(rec.pid, sig)
        else:
            os.kill(rec.pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(rec: ProcessRecord, timeout: float) -> bool:
    return procs.until(lambda: not is_running(rec), timeout)


def terminate(rec: ProcessRecord, timeout: float = 5.0) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL; only if the record still names a live process of ours."""
    if is_running(rec):
        _signal(rec, signal.SIGTERM)
        if not _wait_gone(rec, timeout):
            _signal(rec, signal.SIGKILL)
            _wait_gone(rec, 2.0)
    child = _CHILDREN.pop(rec.pid, None)
    if child is not None:
        try:
            child.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass


def stop_all(record_dir: Path, timeout: float = 5.0) -> None:
    """Stop every recorded service and remove its pidfile."""
    for rec in records(record_dir):
        terminate(rec, timeout)
        (record_dir / f"{rec.name}.pid").unlink(missing_ok=True)
