"""One default stack for every command: `--stack` unset means CNCTL_STACK, else `local`, wherever it exists.

The commands are found by walking the CLI's own command tree, so a command added later with a `--stack` of its
own (and its own default) fails here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer

from cnctl.cli.main import app


def commands_with_stack(node: Any, path: str = "cnctl") -> Iterator[tuple[str, Any]]:
    """Every (path, command) in the tree under node that takes `--stack`."""
    if hasattr(node, "commands"):
        for name, child in sorted(node.commands.items()):
            yield from commands_with_stack(child, f"{path} {name}")
    elif any("--stack" in param.opts for param in node.params):
        yield path, node


COMMANDS = list(commands_with_stack(typer.main.get_command(app)))


def default_stack(command: Any) -> str:
    """The stack the command would read when the user types no --stack (parsed as click parses a real call)."""
    ctx = command.make_context(command.name, [], resilient_parsing=True)
    return str(ctx.params["stack"])


def test_the_walk_finds_every_command_that_reads_a_stack() -> None:
    paths = {path for path, _ in COMMANDS}
    assert {"cnctl deploy", "cnctl plan", "cnctl validate", "cnctl up", "cnctl model pin", "cnctl sandbox up",
            "cnctl bundle verify"} <= paths
    assert len(paths) >= 15, paths


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[path for path, _ in COMMANDS])
def test_unset_it_is_local(path: str, command: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CNCTL_STACK", raising=False)
    assert default_stack(command) == "local", path


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[path for path, _ in COMMANDS])
def test_cnctl_stack_is_the_default(path: str, command: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNCTL_STACK", "prod")
    assert default_stack(command) == "prod", path


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[path for path, _ in COMMANDS])
def test_the_option_wins_over_cnctl_stack(path: str, command: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNCTL_STACK", "prod")
    ctx = command.make_context(command.name, ["--stack", "dev"], resilient_parsing=True)
    assert ctx.params["stack"] == "dev", path


def test_an_empty_cnctl_stack_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNCTL_STACK", "")
    assert {default_stack(command) for _, command in COMMANDS} == {"local"}


def test_help_says_where_the_default_comes_from() -> None:
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["model", "pin", "--help"], env={"COLUMNS": "200", "CNCTL_STACK": ""})
    assert "CNCTL_STACK" in result.stdout
