"""`cnctl`: the project's command line. Each command group lives in its own module."""

from __future__ import annotations

import typer

from cnctl import version
from cnctl.cli import (
    bundle,
    cloud,
    collection,
    deploy,
    infer,
    inventory,
    model,
    monitoring,
    plan,
    sandbox,
    stack,
    status,
)

app = typer.Typer(
    name="cnctl",
    help="Deploy CircularNet to Google Cloud GPU VMs, Jetson edge devices and GPU servers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

def print_version(wanted: bool) -> None:
    """`cnctl --version`: print it and stop before any command runs."""
    if wanted:
        typer.echo(f"cnctl {version()}")
        raise typer.Exit()


@app.callback()
def main(
    _version: bool = typer.Option(
        False, "--version", callback=print_version, is_eager=True, help="Print cnctl's version and exit."
    ),
) -> None:
    """The options that come before any command."""


app.command("plan")(plan.plan)
app.command("plan-diff")(plan.plan_diff)
app.command("validate")(stack.validate)
app.command("preview")(cloud.preview)
app.command("up")(cloud.up)
app.command("deploy")(deploy.deploy)
app.command("inventory")(inventory.inventory)
app.command("status")(status.status)
app.command("infer")(infer.infer)
app.add_typer(sandbox.app, name="sandbox")
app.add_typer(model.app, name="model")
app.add_typer(bundle.app, name="bundle")
app.add_typer(collection.app, name="collection")
app.add_typer(monitoring.app, name="monitoring")

if __name__ == "__main__":
    app()
