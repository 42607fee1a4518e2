"""The consoles cnctl prints through, made in one place so every command prints the same way.

A line is printed whole (rich never breaks it: in a terminal the terminal wraps it, so a copied line is one
line). Tables fit the terminal's width when the output is a terminal, folding a cell onto more lines rather
than cutting it. When the output is a file or a pipe (make, CI logs, `> out.txt`), the width is unbounded, so
nothing is folded or cut: the width of a terminal the user also has open (rich looks at stdin's too) or a
COLUMNS left in the environment does not shape a log.
"""

from __future__ import annotations

from rich.console import Console, ConsoleDimensions

FILE_WIDTH = 10_000  # columns when the output is not a terminal: wider than any line or table cnctl prints


class CliConsole(Console):
    """A rich Console whose width is the terminal's only when its own stream is one."""

    @property
    def size(self) -> ConsoleDimensions:
        terminal = super().size
        return terminal if _isatty(self.file) else ConsoleDimensions(FILE_WIDTH, terminal.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


def _isatty(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr): no highlighting of values (they are data), lines printed whole."""
    return CliConsole(stderr=stderr, highlight=False, soft_wrap=True)
