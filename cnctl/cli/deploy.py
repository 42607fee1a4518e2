"""`cnctl deploy`: apply the host layers to a stack's fleet with either engine, and summarize per host."""

from __future__ import annotations

from dataclasses import replace

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from cnctl import engines
from cnctl.cli.errors import err, user_errors
from cnctl.cli.options import stack_option
from cnctl.config import load_stack
from cnctl.console import console
from cnctl.engines import DeployResult, EngineFailure
from cnctl.errors import UsageProblem
from cnctl.layers import LAYERS, UnknownLayers, chosen

out = console()
EXIT_FAILED = 1


def deploy(
    stack: str = stack_option(),
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
        err.print(f"[bold red]failed[/] on {escape(', '.join(result.failed_hosts)) or 'no host'} "
                  f"({result.engine} exited {result.returncode})")
        raise typer.Exit(EXIT_FAILED)


def chosen_layers(text: str) -> tuple[str, ...]:
    """The layers `--layers` names, in the order they apply; an unknown one is bad input naming the choices."""
    try:
        return chosen(text)
    except UnknownLayers as exc:
        raise UsageProblem(f"--layers {text!r}: {exc}") from None


def summary(result: DeployResult, stack: str) -> Table:
    """One row per host: host, engine, ok, changed (or would change), failed and, when a host failed, why (as
    the engine said it). Every cell is shown as text, never read as markup."""
    mode = "dry run" if result.dry else "run"
    table = Table(title=Text(f"deploy · stack {stack} · {result.engine} {mode} · {result.seconds:.1f} s"))
    for column in ("host", "engine", "ok", "would change" if result.dry else "changed", "failed"):
        table.add_column(column, overflow="fold", justify="left" if column in ("host", "engine") else "right")
    reasons = any(h.reason for h in result.hosts if h.failed)
    if reasons:
        table.add_column("reason", overflow="fold")
    for h in result.hosts:
        row: list[Text | str] = [
            Text(h.host), result.engine, "-" if h.ok is None else str(h.ok),
            Text(str(h.changed), style="yellow" if h.changed else ""),
            Text(str(h.failed), style="bold red" if h.failed else ""),
        ]
        table.add_row(*row, *([Text(h.reason if h.failed else "")] if reasons else []))
    return table
