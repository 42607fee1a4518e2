"""Every `cnctl` command the documentation shows exists, with the options it is shown with.

The pages are read as a user reads them: code blocks and inline code in README.md, docs/*.md, bench/README.md
and CHANGELOG.md. Each command is walked through the CLI's own command tree (typer's, built on its own copy
of click: groups have `commands`, commands `params`), so a renamed command or option, or one a page invents,
fails here instead of on a user's terminal.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from cnctl.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "bench" / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
INLINE = re.compile(r"`((?:\S*/)?cnctl [^`]+)`")
# a shell line's commands are separated by &&, ||, ; or a pipe (a | between words is a page's "one of")
SEPARATOR = re.compile(r"\s*(?:&&|\|\||;|\s\|\s)\s*")
CNCTL_COMMAND = re.compile(r"(?:sudo\s+)?(?:[A-Z_]+=\S*\s+)*(?:\S*/)?cnctl\s")
PLACEHOLDERS = ("...", "…")


def documented_commands(text: str) -> Iterator[str]:
    """The `cnctl ...` command lines of a page: from shell lines of its code blocks and its inline code."""
    lines = [line.split(" #", 1)[0].strip() for block in FENCE.findall(text) for line in block.splitlines()]
    for line in [*lines, *INLINE.findall(text)]:
        for command in SEPARATOR.split(line):
            if CNCTL_COMMAND.match(command):
                yield command


def words_of(command: str) -> list[str]:
    """The words after `cnctl`, without sudo, environment assignments and the optional-part brackets."""
    words = command.replace("[", " ").replace("]", " ").split()
    start = next(i for i, word in enumerate(words) if word == "cnctl" or word.endswith("/cnctl"))
    return words[start + 1 :]


def problems_of(command: str) -> list[str]:
    """What in a documented command the CLI does not have (nothing when every part exists)."""
    return walk(typer.main.get_command(app), words_of(command), "cnctl")


def walk(node: Any, words: list[str], path: str) -> list[str]:
    """Follow the words down the command tree; options are checked against the command they reach."""
    for i, word in enumerate(words):
        if word == "--" or word in PLACEHOLDERS or word.startswith("<"):
            return []
        if word.startswith("-"):
            name = word.split("=", 1)[0]
            if name not in option_names(node):
                return [f"`{path}` has no option {name}"]
            continue
        if hasattr(node, "commands"):
            problems = []
            for alternative in word.split("|"):
                child = node.commands.get(alternative)
                if child is None:
                    problems.append(f"`{path}` has no command {alternative!r}")
                else:
                    problems += walk(child, words[i + 1 :], f"{path} {alternative}")
            return problems
    return []


def option_names(node: Any) -> set[str]:
    """Every spelling of every option of one command, --help included."""
    names = {"--help"}
    for param in node.params:
        if param.param_type_name == "option":
            names.update(param.opts, param.secondary_opts)
    return names


def test_every_documented_command_exists_with_its_options() -> None:
    problems = []
    count = 0
    for page in PAGES:
        for command in documented_commands(page.read_text(encoding="utf-8")):
            count += 1
            problems += [f"{page.relative_to(ROOT)}: {command}: {p}" for p in problems_of(command)]
    assert count > 50, f"only {count} cnctl commands found in the pages: is the extraction broken?"
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ("cnctl deploy --stack local --nope", "`cnctl deploy` has no option --nope"),
        ("cnctl model promote --stack dev", "`cnctl model` has no command 'promote'"),
        ("cnctl sandbox up|halt", "`cnctl sandbox` has no command 'halt'"),
        ("sudo CNCTL_STACK=prod .venv/bin/cnctl status --stack prod --jsonx", "`cnctl status` has no option --jsonx"),
    ],
)
def test_a_command_the_cli_lacks_is_named(command: str, problem: str) -> None:
    assert problems_of(command) == [problem]


@pytest.mark.parametrize(
    "command",
    [
        "cnctl --version",
        "cnctl model pin|rollout|rollback --stack prod",
        "cnctl up --stack dev -- --yes",
        "cnctl sandbox up [--edge N] [--servers M]",
        "cnctl deploy --stack local --engine pyinfra|ansible [--dry] [--limit HOST]",
    ],
)
def test_the_shapes_pages_use_are_read(command: str) -> None:
    assert problems_of(command) == []


def test_commands_are_found_where_a_reader_sees_them() -> None:
    page = "```sh\nsudo make demo\npulumi up -s dev && CNCTL_STACK=dev cnctl status --stack dev  # comment --x\n```\n"
    page += "Run `cnctl validate --stack dev` first; `cnctl/cli` is a path.\n"
    assert list(documented_commands(page)) == ["CNCTL_STACK=dev cnctl status --stack dev", "cnctl validate --stack dev"]
