"""`cnctl status`: the fleet's health, one row per host, from each host's verify-layer report."""

from __future__ import annotations

import json
from typing import Any, cast

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from cnctl import status as fleet_status
from cnctl.cli.errors import err, say_error, user_errors
from cnctl.cli.options import stack_option
from cnctl.console import console
from cnctl.status import FleetStatus, HostStatus
from cnctl.status_prometheus import CHOICES, Choice, collect_from_source

out = console()
EXIT_UNHEALTHY = 1


def status(
    stack: str = stack_option(),
    as_json: bool = typer.Option(False, "--json", help="every host's report as JSON"),
    limit: str | None = typer.Option(None, "--limit", help="only this host (or group: edge, servers, cloud)"),
    source: str = typer.Option(
        "auto", "--source", help="auto|ssh|prometheus: where the hosts' health is read; auto: the site's Prometheus "
        "when the stack names a monitoring.server (SSH when it cannot be asked), else SSH"),
) -> None:
    """Show the fleet's health: each host's platform, model served, Triton readiness, free disk, last deploy.

    Each host runs its health report now, over SSH (the verify layer's script; its last saved report when the
    script cannot run). A pull-mode host is not asked over SSH: its status is its agent's newest report in the
    results bucket, read with this machine's identity (source `bucket`; healthy when it applied or is up to date
    and reported recently). Exit 0 when every host is healthy, 1 when any is unhealthy or unreachable (named on
    stderr), 2 for bad input (unknown stack or host, a sandbox that is not up). `cnctl sandbox status` is the
    sandbox's own health (its processes and site services), not the fleet's.

    `--source prometheus` reads every fleet host's health from the site's Prometheus (monitoring.server; user
    circularnet, the password in monitoring.passwordFile) in one query instead of SSH: the same table, each
    problem's text excepted (the metrics carry how many). `auto`, the default: Prometheus when the stack names a
    monitoring server, else SSH; a Prometheus that cannot be asked is a warning and SSH. A line says which source.
    """
    with user_errors():
        if source not in CHOICES:
            raise fleet_status.StatusProblem(f"--source {source}: not a source; choose one of {', '.join(CHOICES)}")
        fleet = collect_from_source(cast(Choice, source), stack, limit, warn=_warn)
    if as_json:
        out.print_json(json.dumps(fleet.to_json()))
    else:
        out.print(table(fleet))
        out.print(source_line(fleet), soft_wrap=True)
        for line in [*pull_lines(fleet), *problem_lines(fleet)]:
            out.print(line, soft_wrap=True)  # whole lines: they are grepped, and each ends with its fix
    if not fleet.healthy:
        err.print(f"[bold red]not healthy:[/] {escape(', '.join(_why(h) for h in fleet.hosts if not h.healthy))}")
        raise typer.Exit(EXIT_UNHEALTHY)


def _warn(text: str) -> None:
    say_error("warning:", f" {text}")


def source_line(fleet: FleetStatus) -> Text:
    """`source: ...`: where the table's rows come from."""
    if fleet.source == "prometheus":
        others = [h.name for h in fleet.hosts if h.source != "prometheus"]
        rest = f" ({', '.join(others)}: not collected there, asked directly)" if others else ""
        return Text(f"source: prometheus, the site's at {fleet.origin}{rest}")
    return Text("source: ssh, each host's health report run now (pull-mode hosts: their newest pull report)")


def _why(host: HostStatus) -> str:
    if host.source == "bucket":
        return f"{host.name} ({'no recent pull report' if not host.reachable else 'unhealthy'})"
    return f"{host.name} ({'unreachable' if not host.reachable else 'unhealthy'})"


def table(fleet: FleetStatus) -> Table:
    """One row per host: host, group, platform, model@version, Triton ready, free disk, last deploy, problems
    (how many, and the first one, folded; problem_lines() gives each on one line). A pull-mode host's row comes from
    its pull report in the bucket (group `<group> · pull`, last deploy the bundle version it runs; pull_lines()
    names the object): what the agent did, and the verify layer's health report it sent along (its cells are `-`
    when it sent none: before a bundle was applied, or a host without the verify layer's report)."""
    table = Table(title=f"status · stack {fleet.stack} · {sum(h.healthy for h in fleet.hosts)}/{len(fleet.hosts)} healthy")
    for column in ("host", "group", "platform", "model", "triton", "pipeline", "free disk", "last deploy (UTC)"):
        table.add_column(column, overflow="fold")
    table.add_column("problems", overflow="fold")
    for h in fleet.hosts:
        first = f"[red]{len(h.problems)}: {escape(h.problems[0])}[/]" if h.problems else "[green]none[/]"
        if h.source == "bucket":
            current = str((h.report or {}).get("current") or "no bundle")  # 16 hex digits: as wide as a date
            health = (h.report or {}).get("health")
            if isinstance(health, dict):  # the verify layer's report the agent sent along
                table.add_row(escape(h.name), f"{h.group} · pull", escape(_platform(health)), escape(_model(health)),
                              _triton(h, health), escape(_pipeline(health)), _disk(health), escape(current), first)
            else:
                table.add_row(escape(h.name), f"{h.group} · pull", "-", "-", "-", "-", "-", escape(current), first)
            continue
        report = h.report or {}
        table.add_row(escape(h.name), h.group, escape(_platform(report)), escape(_model(report)), _triton(h, report),
                      escape(_pipeline(report)), _disk(report), escape(_deployed(report)), first)
    return table


def pull_lines(fleet: FleetStatus) -> list[Text]:
    """`<host>: pull report <url>: <outcome>, bundle <current> (channel <c>), of <time>` for every pull-mode host
    with a report: where its status came from and the version it runs."""
    lines = []
    for h in fleet.hosts:
        if h.source != "bucket" or h.report is None:
            continue
        r = h.report
        lines.append(Text.assemble((h.name, "bold"), f": pull report {h.origin}: {r.get('outcome')}, "
                                   f"{_bundle(r)} (channel {r.get('channel') or '?'}), of {r.get('at') or '?'}"))
    return lines


def _bundle(report: dict[str, Any] | None) -> str:
    current = (report or {}).get("current")
    return f"bundle {current}" if current else "no bundle applied"


def problem_lines(fleet: FleetStatus) -> list[Text]:
    """`<host>: <problem>` for every problem of every host, in fleet order."""
    return [Text.assemble((h.name, "bold"), ": ", (p, "red")) for h in fleet.hosts for p in h.problems]


def _platform(report: dict[str, Any]) -> str:
    platform = report.get("platform") or {}
    versions = report.get("versions") or {}
    if platform.get("platform") == "jetson":
        return f"jetson · L4T {platform.get('l4t') or '?'}"
    if platform:
        return f"{platform.get('platform')} · driver {versions.get('driver') or '?'}"
    return "-"


def _model(report: dict[str, Any]) -> str:
    model = report.get("model")
    if not model:
        return "-"
    return f"{model.get('name')}@{model.get('version') if model.get('version') is not None else '-'}"


def _triton(host: HostStatus, report: dict[str, Any]) -> str:
    if not report:
        return "[red]?[/]"
    stale = " (saved)" if host.source == "saved" else ""
    if (report.get("model") or {}).get("ready"):
        return f"[green]ready[/]{stale}"
    live = (report.get("triton") or {}).get("live")
    return f"[red]{'not ready' if live else 'down'}[/]{stale}"


def _pipeline(report: dict[str, Any]) -> str:
    """Frames captured, the last run, rows made, the upload queue's depth, files uploaded and when last, drops."""
    pipe = report.get("pipeline")
    if not pipe:
        return "-"
    parts = []
    if pipe.get("frames_captured") is not None:
        parts.append(f"{pipe['frames_captured']} frames")
    parts.append(f"run {_clock(pipe.get('last_run'))}")
    parts.append(f"{pipe.get('rows') or 0} rows")
    parts.append(f"queue {pipe.get('queue_files') or 0}")
    parts.append(f"{pipe.get('uploaded_files') or 0} up {_clock(pipe.get('last_upload'))}")
    dropped = (pipe.get("frames_dropped") or 0) + (pipe.get("dropped_files") or 0)
    if dropped:
        parts.append(f"dropped {dropped}")
    return " · ".join(parts)


def _clock(at: Any) -> str:
    """HH:MM:SS of an ISO time (UTC), or '-' when never."""
    return str(at)[11:19] if at else "-"


def _disk(report: dict[str, Any]) -> str:
    """The fullest filesystem the report checked: its free space and percentage."""
    disks = report.get("disk") or []
    if not disks:
        return "-"
    tightest = min(disks, key=lambda d: d.get("free_percent", 100.0))
    return f"{tightest['free_bytes'] / (1 << 30):.1f} GiB ({tightest['free_percent']:.0f}%)"


def _deployed(report: dict[str, Any]) -> str:
    last = report.get("last_deploy") or {}
    at = str(last.get("at") or "")
    return at.replace("T", " ")[:16] if at else "-"
