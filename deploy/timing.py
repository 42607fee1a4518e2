"""Where a deploy's time goes: seconds per layer, per host and for the run, printed when pyinfra's run ends.

pyinfra applies one operation at a time on every host at once, so a layer's time on a host is the sum of its
operations' times there (start to success or error, retries included), and its time in the run ("wall") is
the sum, over its operations, of the slowest host. An operation's layer is its deploy's name up to a colon
("Jetson: JetPack, power mode, clocks | Jetson: nvpmodel" is in Jetson). What the deploy file reads before the first operation runs (the
platform check's facts, connecting) is outside these figures. The table goes to stderr after pyinfra's own
results, so `--json` output on stdout stays one JSON document.
"""

from __future__ import annotations

import atexit
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from pyinfra.api.state import BaseStateCallback

OTHER = "(other)"


def layer_of(names: Iterable[str]) -> str:
    """The layer an operation belongs to: its layer deploy's name (pyinfra names an operation of a deploy
    "<deploy> | <operation>"), else the title its own name starts with, up to the colon either way."""
    for name in sorted(names):
        title, colon, _ = name.split(" | ", 1)[0].partition(":")
        if (colon or " | " in name) and title.strip():
            return title.strip()
    return OTHER


class LayerTimes(BaseStateCallback):
    """Collects operation times by (layer, host) and by layer for the run (pyinfra calls these per operation)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started: dict[tuple[str, str], float] = {}
        self._op_hosts: dict[str, list[float]] = {}
        self.per_host: dict[tuple[str, str], float] = {}  # (layer, host) -> seconds
        self.wall: dict[str, float] = {}  # layer -> seconds, in the order the layers first ran
        self.hosts: list[str] = []

    def operation_host_start(self, state: Any, host: Any, op_hash: str) -> None:  # type: ignore[override]
        self._started[(op_hash, host.name)] = self._clock()

    def operation_host_success(self, state: Any, host: Any, op_hash: str, *_: Any) -> None:  # type: ignore[override]
        self._host_done(state, host.name, op_hash)

    def operation_host_error(self, state: Any, host: Any, op_hash: str, *_: Any) -> None:  # type: ignore[override]
        self._host_done(state, host.name, op_hash)

    def operation_end(self, state: Any, op_hash: str) -> None:  # type: ignore[override]
        took = self._op_hosts.pop(op_hash, [])
        if took:
            layer = layer_of(state.get_op_meta(op_hash).names)
            self.wall[layer] = self.wall.get(layer, 0.0) + max(took)

    def _host_done(self, state: Any, host: str, op_hash: str) -> None:
        started = self._started.pop((op_hash, host), None)
        if started is None:
            return
        took = self._clock() - started
        layer = layer_of(state.get_op_meta(op_hash).names)
        self.per_host[(layer, host)] = self.per_host.get((layer, host), 0.0) + took
        self._op_hosts.setdefault(op_hash, []).append(took)
        if host not in self.hosts:
            self.hosts.append(host)

    def table(self) -> list[str]:
        """The summary's lines: one row per layer, its wall time then each host's; empty when nothing ran."""
        if not self.wall:
            return []
        width = max(len(layer) for layer in [*self.wall, "layer"])
        cols = [max(len(h), 7) for h in self.hosts]
        head = f"{'layer':<{width}}  {'wall s':>7}  " + "  ".join(f"{h:>{c}}" for h, c in zip(self.hosts, cols, strict=True))
        rows = [
            f"{layer:<{width}}  {wall:>7.1f}  "
            + "  ".join(_cell(self.per_host.get((layer, h)), c) for h, c in zip(self.hosts, cols, strict=True))
            for layer, wall in self.wall.items()
        ]
        total = f"{'total':<{width}}  {sum(self.wall.values()):>7.1f}"
        return ["Time per layer (s; a host's column: its operations' time there; wall: the slowest host per operation)",
                head.rstrip(), *(r.rstrip() for r in rows), total]


def _cell(seconds: float | None, width: int) -> str:
    return f"{'-' if seconds is None else f'{seconds:.1f}':>{width}}"


_installed: list[LayerTimes] = []  # the one collector of this process


def install(state: Any, write: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> LayerTimes:
    """Once per pyinfra process (the deploy file runs once per host): collect the times, print them at exit."""
    if not _installed:
        times = LayerTimes()
        state.add_callback_handler(times)
        atexit.register(_print_table, times, write)
        _installed.append(times)
    return _installed[0]


def _print_table(times: LayerTimes, write: Callable[[str], None]) -> None:
    for line in times.table():
        write(line)
