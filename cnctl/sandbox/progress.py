"""How the slow parts of the sandbox report themselves.

The fleet code calls `step(title)` around slow work and `note(message)` for one-line facts; the CLI
renders them with rich on a terminal (a spinner with the latest detail line), and as plain lines when its
output goes to a file or pipe, like the tests and the benchmark: a line when a step starts, a heartbeat
with the elapsed time and the latest detail every HEARTBEAT_S while it runs (so a log never sits silent
for minutes), and a line with its duration when it ends.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

Detail = Callable[[str], None]

HEARTBEAT_S = 30.0
DETAIL_CHARS = 90  # the end of a detail line: a build's output lines can be long


class Progress:
    """Plain-text progress: a line when a step starts, a heartbeat while it runs, a line with its duration."""

    def __init__(self, write: Callable[[str], None] = print, heartbeat_s: float | None = HEARTBEAT_S) -> None:
        self._write = write
        self._heartbeat_s = heartbeat_s
        self._lock = threading.Lock()  # the heartbeat writes from its own thread

    def note(self, message: str) -> None:
        self._say(message)

    def _say(self, message: str) -> None:
        with self._lock:
            self._write(message)

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[Detail]:
        started = time.monotonic()
        latest = [""]
        self._say(f"{title} …")
        with _beating(self._heartbeat_s, lambda: self._say(heartbeat_line(title, time.monotonic() - started, latest[0]))):
            yield lambda line: latest.__setitem__(0, line)
        self._say(f"{title} ({time.monotonic() - started:.1f} s)")


def heartbeat_line(title: str, elapsed: float, detail: str) -> str:
    """`  … <title without its parenthesis>: <elapsed> s [<end of the latest detail line>]`."""
    tail = f" [{detail[-DETAIL_CHARS:]}]" if detail else ""
    return f"  … {title.split(' (', 1)[0]}: {elapsed:.0f} s{tail}"


@contextlib.contextmanager
def _beating(every: float | None, beat: Callable[[], None]) -> Iterator[None]:
    """Call `beat` every `every` seconds in a daemon thread until the block ends (never when `every` is None)."""
    if not every:
        yield
        return
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(every):
            beat()

    thread = threading.Thread(target=run, name="progress-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class Quiet(Progress):
    """No output (the session fixtures of the tests print nothing between tests)."""

    def __init__(self) -> None:
        super().__init__(lambda _message: None, heartbeat_s=None)
