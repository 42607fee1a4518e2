"""Options more than one `cnctl` command takes, defined once so they mean the same everywhere."""

from __future__ import annotations

from typing import Any

import typer

from cnctl.inventory import DEFAULT_STACK, STACK_ENV

STACK_HELP = "stack name (Pulumi.<name>.yaml in $CNCTL_STACKS_DIR, else ./stacks or ./; docs/install.md) or a path"


def stack_option(help: str = STACK_HELP) -> Any:
    """`--stack/-s`: the stack a command reads. Unset, it is CNCTL_STACK's, else `local`, for every command
    (the same default the pyinfra inventories use), so one exported CNCTL_STACK points the whole CLI at a stack."""
    return typer.Option(DEFAULT_STACK, "--stack", "-s", envvar=STACK_ENV, show_envvar=True, show_default=True, help=help)
