"""How the slow parts of the sandbox report themselves.

The fleet code calls `step(title)` around slow work and `note(message)` for one-line facts; the CLI
renders them with rich (a spinner with the latest detail line), tests and the benchmark print lines.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

Detail = Callable[[str], None]


class Progress:
    """Plain-text progress: one line per finished step with its duration."""

    def __init__(self, write: Callable[[str], None] = print) -> None:
        self._write = write

    def note(self, message: str) -> None:
        self._write(message)

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[Detail]:
        started = time.monotonic()
        yield lambda _line: None
        self._write(f"{title} ({time.monotonic() - started:.1f} s)")


class Quiet(Progress):
    """No output (the session fixtures of the tests print nothing between tests)."""

    def __init__(self) -> None:
        super().__init__(lambda _message: None)
