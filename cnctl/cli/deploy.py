"""`cnctl deploy`: apply the host layers to a stack's fleet with either engine, and summarize per host."""

from __future__ import annotations

import sys
from dataclasses import replace

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cnctl import engines
from cnctl.cli.errors import err, user_errors
from cnctl.config import load_stack
from cnctl.engines import DeployResult, EngineFailure
from cnctl.errors import UsageProblem
from cnctl.layers import LAYERS, UnknownLayers, chosen

# Not a terminal (make, CI logs): wide enough that the table does not fold.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 132)
EXIT_FAILED = 1


def deploy(
    stack: str = typer.Option("local", "--stack", "-s", help="stack name (stacks/Pulumi.<name>.yaml) or a path"),
    engine: str = typer.Option("pyinfra", "--engine", "-e", help=f"configuration engine: {' or '.join(engines.ENGINES)}"),
    dry: bool = typer.Option(False, "--dry", help="change nothing; show what would change (pyinfra --dry --diff, "
                             "ansible --check --diff)"),
    limit: str | None = typer.Option(None, "--limit", help="only this host (or group: edge, servers)"),
    layers: str | None = typer.Option(None, "--layers", help=f"only these host layers, comma-separated ({', '.join(LAYERS)}); "
                                      "platform always applies"),
) -> None:
    """Deploy the host layers to the stack's fleet (platform, nvidia|jetson, container, model, inference, verify).

    The engine's own log goes to stderr; a per-host table (ok, changed, failed) ends the run on stdout.
    Exit 0 when every host succeeded, 1 when any failed, 2 for bad input (no fleet to reach, unknown host).
    """
    with user_errors():
        run = engines.engine(engine)
        target = engines.for_stack(load_stack(stack), limit=limit, stack=stack)
        if layers is not None:
            target = replace(target, layers=chosen_layers(layers))
    try:
        result = run(target, dry=dry)
    except EngineFailure as exc:
        err.print(f"[bold red]failed:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_FAILED) from None
    out.print(summary(result, target.stack))
    if not result.ok:
        err.print(f"[bold red]failed[/] on {', '.join(result.failed_hosts) or 'no host'} "
                  f"({result.engine} exited {result.returncode})")
        raise typer.Exit(EXIT_FAILED)


def chosen_layers(text: str) -> tuple[str, ...]:
    """The layers `--layers` names, in the order they apply; an unknown one is bad input naming the choices."""
    try:
        return chosen(text)
    except UnknownLayers as exc:
        raise UsageProblem(f"--layers {text!r}: {exc}") from None


def summary(result: DeployResult, stack: str) -> Table:
    """One row per host: host, engine, ok, changed (or would change), failed."""
    mode = "dry run" if result.dry else "run"
    table = Table(title=f"deploy · stack {stack} · {result.engine} {mode} · {result.seconds:.1f} s")
    for column in ("host", "engine", "ok", "would change" if result.dry else "changed", "failed"):
        table.add_column(column, no_wrap=True, justify="left" if column in ("host", "engine") else "right")
    for h in result.hosts:
        table.add_row(
            h.host, result.engine, "-" if h.ok is None else str(h.ok),
            f"[yellow]{h.changed}[/]" if h.changed else "0",
            f"[bold red]{h.failed}[/]" if h.failed else "0",
        )
    return table
