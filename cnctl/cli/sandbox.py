"""`cnctl sandbox up|status|down`: the virtual fleet of Jetson devices and GPU servers on this machine.

Only the commands and their exit codes are here: each loads the sandbox (cnctl/sandbox/commands.py) when it
runs. The sandbox is test infrastructure, a consumer of the product: no other command loads it, and it imports
nothing of the CLI. It hands the product the fleet it booted as data, a fleet file (docs/fleet-files.md), which
hosts/*.py, `cnctl deploy`, `status` and `infer` read like any other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType

import typer
from rich.markup import escape

from cnctl.cli.errors import err, user_errors
from cnctl.cli.options import stack_option
from cnctl.errors import UsageProblem

EXIT_FAILED = 1

app = typer.Typer(
    help="The sandbox fleet: virtual Jetson devices and GPU servers (systemd-nspawn hosts reached over SSH) "
    "and their site services, on this machine. Needs root.",
    no_args_is_help=True,
)


@app.command()
def up(
    stack: str = stack_option("the stack that describes the fleet (stacks/Pulumi.<name>.yaml)"),
    edge: int | None = typer.Option(None, "--edge", min=0, max=8, help="edge hosts to boot (default: the stack's)"),
    servers: int | None = typer.Option(None, "--servers", min=0, max=8, help="servers to boot (default: the stack's)"),
) -> None:
    """Boot the stack's sandbox fleet and its site services (idempotent; cleans leftovers of a crashed run)."""
    with _sandbox() as sandbox:
        sandbox.up(stack, edge, servers)


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Show the hosts (process, SSH, systemd state), the site services and the inventory paths.

    Exit 0 when the sandbox is up and every host answers, 1 otherwise.
    """
    with _sandbox() as sandbox:
        healthy = sandbox.status(as_json)
    if not healthy:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def down() -> None:
    """Stop every host and site service and remove their mounts, namespaces and state (idempotent)."""
    with _sandbox() as sandbox:
        sandbox.down()


@contextlib.contextmanager
def _sandbox() -> Iterator[ModuleType]:
    """The sandbox's commands, loaded now; bad input exits 2, a failure on the machine 1, Ctrl-C 130: one
    message, no traceback."""
    with user_errors():
        commands, SandboxFailure = _load()
        try:
            yield commands
        except SandboxFailure as exc:
            err.print(f"[bold red]failed:[/] {escape(str(exc))}")
            raise typer.Exit(EXIT_FAILED) from None
        except KeyboardInterrupt:
            err.print("[bold red]interrupted[/] (what had started was removed; `cnctl sandbox down` cleans any rest)")
            raise typer.Exit(130) from None


def _load() -> tuple[ModuleType, type[Exception]]:
    """The sandbox's commands and failure type; UsageProblem from an installed cnctl, whose wheel leaves the sandbox
    out (test infrastructure: it runs from a checkout, docs/install.md)."""
    try:
        from cnctl.sandbox import commands
        from cnctl.sandbox.errors import SandboxFailure
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("cnctl.sandbox"):
            raise
        raise UsageProblem("the sandbox runs from a checkout of cnctl (`make venv`, then .venv/bin/cnctl sandbox up); "
                           "an installed cnctl leaves it out") from None
    return commands, SandboxFailure
