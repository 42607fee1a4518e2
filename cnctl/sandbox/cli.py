"""`cnctl sandbox up|status|down`: the virtual fleet of Jetson devices and GPU servers on this machine."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cnctl.cli.errors import err, user_errors
from cnctl.config import load_stack
from cnctl.sandbox import fleet, prereqs
from cnctl.sandbox.errors import SandboxFailure
from cnctl.sandbox.instance import Instance
from cnctl.sandbox.progress import Detail, Progress

# Not a terminal (make, CI logs): wide enough that the status tables do not fold.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 132)
EXIT_FAILED = 1

app = typer.Typer(
    help="The sandbox fleet: virtual Jetson devices and GPU servers (systemd-nspawn hosts reached over SSH) "
    "and their site services, on this machine. Needs root.",
    no_args_is_help=True,
)


class RichProgress(Progress):
    """Spinner with the latest detail line while a step runs; a check mark and its duration after."""

    def __init__(self, console: Console) -> None:
        super().__init__(console.print)
        self.console = console

    def note(self, message: str) -> None:
        self.console.print(f"  {escape(message)}")

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[Detail]:
        started = time.monotonic()
        with self.console.status(f"{escape(title)} …") as spinner:
            yield lambda line: spinner.update(f"{escape(title)} … [dim]{escape(line[-90:])}[/]")
        self.console.print(f"[green]✓[/] {escape(title)} [dim]({time.monotonic() - started:.1f} s)[/]")


@contextlib.contextmanager
def _failures() -> Iterator[None]:
    """A sandbox operation that failed on the machine: its message, exit 1, no traceback."""
    try:
        yield
    except SandboxFailure as exc:
        err.print(f"[bold red]failed:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_FAILED) from None
    except KeyboardInterrupt:
        err.print("[bold red]interrupted[/] (what had started was removed; `cnctl sandbox down` cleans any rest)")
        raise typer.Exit(130) from None


@app.command()
def up(
    stack: str = typer.Option("local", "--stack", "-s", help="the stack that describes the fleet (stacks/Pulumi.<name>.yaml)"),
    edge: int | None = typer.Option(None, "--edge", min=0, max=8, help="edge hosts to boot (default: the stack's)"),
    servers: int | None = typer.Option(None, "--servers", min=0, max=8, help="servers to boot (default: the stack's)"),
) -> None:
    """Boot the stack's sandbox fleet and its site services (idempotent; cleans leftovers of a crashed run)."""
    with user_errors(), _failures():
        prereqs.require("start the sandbox")
        cfg = load_stack(stack)
        inst = Instance.from_env()
        state = fleet.up(inst, cfg, stack=cfg.environment, edge=edge, servers=servers, progress=RichProgress(out))
    out.print(f"[green]sandbox up[/]: {len(state.hosts)} hosts on {state.subnet}; next: "
              "[bold]pyinfra -y hosts/edge.py deploy.py[/] and [bold]hosts/servers.py[/]  (status: cnctl sandbox status)")


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Show the hosts (process, SSH, systemd state), the site services and the inventory paths.

    Exit 0 when the sandbox is up and every host answers, 1 otherwise.
    """
    with user_errors(), _failures():
        prereqs.require("read the sandbox's state")
        report = fleet.status(Instance.from_env())
    if as_json:
        out.print_json(json.dumps(report.to_json()))
    else:
        _render(report)
    if not report.healthy:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def down() -> None:
    """Stop every host and site service and remove their mounts, namespaces and state (idempotent)."""
    with user_errors(), _failures():
        prereqs.require("stop the sandbox")
        removed = fleet.down(Instance.from_env(), progress=RichProgress(out))
    out.print(f"[green]sandbox down[/]: removed {removed.summary()}" if not removed.empty
              else "[green]sandbox down[/]: nothing was running")


def _render(report: fleet.FleetStatus) -> None:
    if not report.up:
        out.print("the sandbox is not up: run [bold]cnctl sandbox up[/] or [bold]make demo[/]")
        if report.leftovers:
            out.print(f"[yellow]leftovers of a crashed run[/] (removed by the next up or down): "
                      f"{escape(', '.join(report.leftovers))}")
        return
    table = Table(title=f"sandbox {report.prefix} · stack {report.stack} · {report.subnet}")
    for column in ("host", "flavour", "platform", "arch", "address", "state", "ssh", "systemd"):
        table.add_column(column, no_wrap=True)
    for h in report.hosts:
        platform = f"JP {h.jetpack} · L4T {h.l4t}" if h.flavour == "jetson" else f"driver {h.driver_branch}"
        table.add_row(
            h.name, h.flavour, platform, h.arch, h.address,
            "[green]running[/]" if h.running else "[red]stopped[/]",
            "[green]ok[/]" if h.ssh else "[red]no[/]",
            _systemd(h.systemd),
        )
    out.print(table)
    if report.site:
        site = Table(title=f"site services on {report.site_address}")
        site.add_column("service")
        site.add_column("url")
        site.add_column("answering")
        for name, svc in report.site.items():
            site.add_row(name, svc.url, "[green]yes[/]" if svc.answering else "[red]no[/]")
        out.print(site)
    out.print(f"pyinfra inventory: {report.inventories.get('pyinfra')}")
    out.print(f"Ansible inventory: {report.inventories.get('ansible')}")
    out.print(f"state: {report.state_file}")


def _systemd(state: str | None) -> str:
    if state is None:
        return "[dim]-[/]"
    return f"[green]{state}[/]" if state == "running" else f"[yellow]{state}[/]"
