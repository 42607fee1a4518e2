"""What `cnctl sandbox up|status|down` do and print: the virtual fleet of Jetson devices and GPU servers on this
machine. cnctl/cli/sandbox.py declares the commands, turns errors into exit codes, and loads this module only
when one of them runs: the sandbox is test infrastructure, a consumer of the product, never loaded by the
product's other commands, and it imports nothing of the CLI."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cnctl.config import StackConfig, load_stack
from cnctl.console import console
from cnctl.fleet import FLEET_FILE_ENV, file_of
from cnctl.sandbox import fleet, prereqs
from cnctl.sandbox.instance import Instance
from cnctl.sandbox.progress import Detail, Progress

out = console()


class RichProgress(Progress):
    """On a terminal: a spinner with the latest detail line while a step runs, a check mark and its duration
    after. To a file or pipe: Progress's plain lines (start, heartbeat with elapsed time, end)."""

    def __init__(self, console: Console) -> None:
        super().__init__(lambda message: console.print(message, markup=False, highlight=False))
        self.console = console

    def note(self, message: str) -> None:
        super().note(f"  {message}")

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[Detail]:
        if not self.console.is_terminal:
            with super().step(title) as detail:
                yield detail
            return
        started = time.monotonic()
        with self.console.status(f"{escape(title)} …") as spinner:
            yield lambda line: spinner.update(f"{escape(title)} … [dim]{escape(line[-90:])}[/]")
        self.console.print(f"[green]✓[/] {escape(title)} [dim]({time.monotonic() - started:.1f} s)[/]")


def _unread_by_the_stack(cfg: StackConfig, inst: Instance) -> str | None:
    """What to do when the stack would not read this sandbox's fleet file (another instance, or no fleets.file)."""
    named = file_of(cfg)
    if named is None:
        return (f"stack {cfg.environment} names no fleets.file: add `file: {inst.fleet_file}` under its fleets "
                "to deploy to this sandbox")
    if named[0] != inst.fleet_file:
        return (f"stack {cfg.environment} reads {named[0]} ({named[1]}): for this sandbox, "
                f"export {FLEET_FILE_ENV}={inst.fleet_file}")
    return None


def up(stack: str, edge: int | None, servers: int | None) -> None:
    """Boot the stack's sandbox fleet and its site services; say what to run next."""
    prereqs.require("start the sandbox")
    cfg = load_stack(stack)
    inst = Instance.from_env()
    state = fleet.up(inst, cfg, stack=cfg.environment, edge=edge, servers=servers, progress=RichProgress(out))
    out.print(f"[green]sandbox up[/]: {len(state.hosts)} hosts on {state.subnet}; fleet file {escape(str(inst.fleet_file))}")
    unread = _unread_by_the_stack(cfg, inst)
    if unread:
        out.print(f"  [yellow]{escape(unread)}[/]")
    out.print("next: [bold]pyinfra -y hosts/fleet.py deploy.py[/] (or [bold]cnctl deploy[/])  "
              "(status: cnctl sandbox status)")


def status(as_json: bool) -> bool:
    """Show the hosts, the site services and the inventory paths; whether every host answers."""
    prereqs.require("read the sandbox's state")
    report = fleet.status(Instance.from_env())
    if as_json:
        out.print_json(json.dumps(report.to_json()))
    else:
        _render(report)
    return report.healthy


def down() -> None:
    """Stop every host and site service and remove what they made."""
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
        table.add_column(column, overflow="fold")
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
        site.add_column("service", overflow="fold")
        site.add_column("url", overflow="fold")
        site.add_column("answering", overflow="fold")
        for name, svc in report.site.items():
            site.add_row(name, svc.url, "[green]yes[/]" if svc.answering else "[red]no[/]")
        out.print(site)
    out.print(f"fleet file: {report.inventories.get('fleet')}")
    out.print(f"pyinfra inventory: {report.inventories.get('pyinfra')}")
    out.print(f"Ansible inventory: {report.inventories.get('ansible')}")
    out.print(f"state: {report.state_file}")


def _systemd(state: str | None) -> str:
    if state is None:
        return "[dim]-[/]"
    return f"[green]{state}[/]" if state == "running" else f"[yellow]{state}[/]"
