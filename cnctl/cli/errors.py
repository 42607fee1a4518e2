"""How every command reports bad input: one line per problem, exit code 2, no traceback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import typer
from rich.text import Text

from cnctl.config import StackConfigError
from cnctl.config.errors import printable
from cnctl.console import console
from cnctl.errors import EXIT_BAD_INPUT, EXIT_VIOLATIONS, UsageProblem

if TYPE_CHECKING:
    from cnctl.plan import Violation

err = console(stderr=True)  # one problem per line, never wrapped

__all__ = ["EXIT_BAD_INPUT", "EXIT_VIOLATIONS", "UsageProblem", "err", "report_violations", "say_error", "user_errors"]


def report_violations(violations: Iterable[Violation]) -> None:
    """One unwrapped line per guardrail failure: CI logs get grepped for "guardrail <rule> failed"."""
    for v in violations:
        say_error(f"guardrail {v.rule} failed", f" on {v.resource}: {v.message}")


def say_error(label: str, text: str) -> None:
    """`label` in bold red, then `text` as plain text: user values are never read as rich markup, and
    control characters inside a line are escaped (the lines themselves stay lines)."""
    err.print(Text.assemble((label, "bold red"), "\n".join(printable(line) for line in text.split("\n"))))


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the user's mistakes into a clear message and exit code 2."""
    try:
        yield
    except StackConfigError as exc:
        say_error("error:", f" {exc.render()}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except UsageProblem as exc:
        say_error("error:", f" {exc}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
