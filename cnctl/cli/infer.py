"""`cnctl infer`: one real inference on every host's Triton, as a smoke test after a deploy or a rollout."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from cnctl.cli.errors import err, user_errors
from cnctl.cli.options import stack_option
from cnctl.config import load_stack
from cnctl.console import console
from cnctl.engines.target import TargetProblem
from cnctl.rollout import HostHealth, inventory_hosts, remote_health

out = console()
EXIT_FAILED = 1


def infer(
    stack: str = stack_option(),
    limit: str | None = typer.Option(None, "--limit", help="only this host (or group: edge, servers)"),
    as_json: bool = typer.Option(False, "--json", help="each host's answer as JSON"),
) -> None:
    """Send one inference to every host's Triton and show who answered, with which model version, what it found.

    Each host's own `model_serve.py probe` sends a test card (a grey image with one red square, shaped as the
    served model's input) to Triton on the address the unit binds (loopback by default: nothing is exposed
    for this), over SSH. Exit 0 when every host answered, 1 when any did not (named), 2 for bad input.
    """
    with user_errors():
        hosts = inventory_hosts(load_stack(stack))
        if limit:
            hosts = [h for h in hosts if limit in (h.name, h.group)]
            if not hosts:
                raise TargetProblem(f"--limit {limit}: no host or group of stack {stack} has that name")
        answers = remote_health(hosts)([h.name for h in hosts])
    groups: dict[str, str] = {h.name: h.group for h in hosts}
    if as_json:
        out.print_json(json.dumps({name: {"status": a.status, "probe": a.probe, "error": a.error} for name, a in answers.items()}))
    else:
        out.print(table(answers, groups, stack))
    failed = [name for name, answer in answers.items() if not answered(answer)]
    if failed:
        err.print(f"[bold red]no answer[/] from {', '.join(failed)}: "
                  + "; ".join(escape(f"{n}: {reason(answers[n])}") for n in failed))
        raise typer.Exit(EXIT_FAILED)


def answered(answer: HostHealth) -> bool:
    return not answer.error and answer.probe.get("result") == "ok"


def reason(answer: HostHealth) -> str:
    return answer.error or str(answer.probe.get("message") or answer.status.get("message") or "no answer")


def table(answers: dict[str, HostHealth], groups: dict[str, str], stack: str) -> Table:
    """One row per host: the request went in, this came out."""
    grid = Table(title=f"inference · stack {stack} · one test card per host")
    for column in ("host", "group", "served", "answered by", "detections", "outputs", "ms"):
        grid.add_column(column, overflow="fold", justify="right" if column in ("detections", "ms") else "left")
    for name, answer in answers.items():
        probe = answer.probe
        if not answered(answer):
            grid.add_row(name, groups.get(name, ""), str(answer.served or "-"), f"[bold red]{escape(reason(answer))}[/]",
                         "-", "-", "-")
            continue
        outputs = f"{len(probe.get('outputs') or {})} tensors"
        detections = probe.get("detections")
        grid.add_row(name, groups.get(name, ""), str(answer.served), f"version {probe.get('model_version')}",
                     "-" if detections is None else str(detections), escape(outputs), f"{probe.get('ms', 0):.0f}")
    return grid
