"""Problems with a stack file, reported one per line with the field path, the value and the fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a stack: where (`compute.gpu.type`), what was given, and what is allowed."""

    path: str
    value: Any
    message: str

    def __str__(self) -> str:
        # The value is printed as repr (quotes, escapes) and the path and message with control
        # characters escaped: whatever a stack file holds, the report stays one line of plain text.
        if self.value is None or self.value == "…":
            return f"{printable(self.path)}: {printable(self.message)}"
        return f"{printable(self.path)}: {self.value!r} {printable(self.message)}"


def printable(text: str) -> str:
    """`text` with every non-printable character (newline, ESC, ...) written as its escape."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class StackConfigError(Exception):
    """A stack file that cannot be used. Carries every problem found, not only the first."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        count = len(self.problems)
        lines = [f"{printable(self.source)}: {count} problem{'s' if count != 1 else ''}"]
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)
