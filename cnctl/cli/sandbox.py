"""`cnctl sandbox up|status|down`: the virtual fleet of Jetson devices and GPU servers on this machine.

Only the commands are declared here: each loads the sandbox (cnctl/sandbox/cli.py) when it runs. The sandbox is
test infrastructure, a consumer of the product: no other command loads it. It hands the product the fleet it
booted as data, a fleet file (docs/fleet-files.md), which hosts/*.py, `cnctl deploy`, `status` and `infer` read
like any other.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    help="The sandbox fleet: virtual Jetson devices and GPU servers (systemd-nspawn hosts reached over SSH) "
    "and their site services, on this machine. Needs root.",
    no_args_is_help=True,
)


@app.command()
def up(
    stack: str = typer.Option("local", "--stack", "-s", help="the stack that describes the fleet (stacks/Pulumi.<name>.yaml)"),
    edge: int | None = typer.Option(None, "--edge", min=0, max=8, help="edge hosts to boot (default: the stack's)"),
    servers: int | None = typer.Option(None, "--servers", min=0, max=8, help="servers to boot (default: the stack's)"),
) -> None:
    """Boot the stack's sandbox fleet and its site services (idempotent; cleans leftovers of a crashed run)."""
    from cnctl.sandbox import cli

    cli.up(stack, edge, servers)


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Show the hosts (process, SSH, systemd state), the site services and the inventory paths.

    Exit 0 when the sandbox is up and every host answers, 1 otherwise.
    """
    from cnctl.sandbox import cli

    cli.status(as_json)


@app.command()
def down() -> None:
    """Stop every host and site service and remove their mounts, namespaces and state (idempotent)."""
    from cnctl.sandbox import cli

    cli.down()
