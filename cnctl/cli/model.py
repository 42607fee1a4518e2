"""`cnctl model ...`: the stack's model archive as seen from the controller (pin), and the version the fleet
serves (rollout, rollback: cnctl/rollout.py walks the fleet batch by batch behind a health gate)."""

from __future__ import annotations

import shutil

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from cnctl import engines
from cnctl import rollout as walks
from cnctl.cli.errors import UsageProblem, say_error, user_errors
from cnctl.cli.options import stack_option
from cnctl.config import load_stack, stack_path
from cnctl.console import console
from cnctl.engines import Target
from cnctl.inventory import InventoryHost
from cnctl.model.fetch import FetchError
from cnctl.model.pin import archive_url, download, write_pin

app = typer.Typer(help="The stack's model: pin its checksum, roll it out to the fleet, roll it back.", no_args_is_help=True)
out = console()
EXIT_FAILED = 1

CANARY_HELP = "hosts that go first, alone (the first of the fleet, in the stack's order); 0: none"
BATCH_HELP = "the rest in batches of this share of them, rounded up (at least one host): 1% to 100%"
LIMIT_HELP = "only these hosts (comma list of host or group names)"
ENGINE_HELP = f"configuration engine: {' or '.join(engines.ENGINES)}"
VERBOSE_HELP = "pass the engine's own log through to stderr"


@app.callback()
def model() -> None:
    """The stack's model: pin its checksum, roll it out to the fleet, roll it back."""


@app.command()
def pin(
    stack: str = stack_option(),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the sha256, do not write the stack file"),
) -> None:
    """Download the stack's model archive once and write its sha256 into the stack file.

    Upstream publishes no checksums: review the resulting diff of the stack file like any change.
    """
    with user_errors():
        cfg = load_stack(stack, unpinned_ok=True)
        url = archive_url(cfg)
        out.print(f"fetching {url}")
        with Progress("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=out, transient=True) as bar:
            task = bar.add_task(cfg.model.key, total=None)
            try:
                fetched = download(cfg, progress=lambda done, total: bar.update(task, completed=done, total=total))
            except FetchError as exc:
                raise UsageProblem(f"{exc}\n  fix the URL (model.url in the stack, or the catalog's), or mirror the archive") from None
        shutil.rmtree(fetched.path.parent, ignore_errors=True)
        out.print(f"sha256 {fetched.sha256}  ({fetched.size} bytes)")
        if dry_run:
            return
        path = stack_path(stack)
        changed = write_pin(path, fetched.sha256)
        load_stack(stack)  # the written file must still be a valid stack
        out.print(f"[green]{'pinned' if changed else 'already pinned'}[/] model.sha256 in {path}")


def _say(line: str) -> None:
    out.print(line, markup=False, soft_wrap=True)


def _walk(target: Target, engine: str, hosts: list[InventoryHost], verbose: bool) -> walks.Walk:
    """How this command converges batches and reads hosts: the chosen engine, SSH to the fleet."""
    run = engines.engine(engine)
    return walks.Walk(base=target, converge=lambda t: run(t, echo=verbose), health=walks.remote_health(hosts),
                      say=_say, engine=engine)


@app.command()
def rollout(
    stack: str = stack_option(),
    canary: int = typer.Option(1, "--canary", help=CANARY_HELP),
    batch: str = typer.Option("50%", "--batch", help=BATCH_HELP),
    limit: str | None = typer.Option(None, "--limit", help=LIMIT_HELP),
    engine: str = typer.Option("pyinfra", "--engine", "-e", help=ENGINE_HELP),
    dry: bool = typer.Option(False, "--dry", help="print the batch plan; change nothing, reach no host"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
) -> None:
    """Roll out the model version the stack pins: canary first, then batches, a health gate after each.

    Each batch is one engine run on its hosts (layers model, inference, verify); then every host of it must
    serve the pinned version READY and answer a real inference with it. A batch that fails stops the
    rollout and is rolled back at once; earlier batches stay on the new version. Exit 0 when every host
    passed, 1 when a batch failed (each failed host named with the reason), 2 for bad input.
    """
    with user_errors():
        cfg = load_stack(stack)
        engines.engine(engine)
        percent = walks.parse_batch(batch)
        target = engines.for_stack(cfg, limit=limit, stack=stack)
        batches = walks.plan_batches(target.hosts, canary, percent)
    _say(walks.plan_text(batches, f"rollout of model version {cfg.model.version} (stack {cfg.environment}, {engine})"))
    if dry:
        return
    walk = _walk(target, engine, walks.inventory_hosts(cfg), verbose)
    report = walks.run_rollout(walk, batches, cfg.model.version, stack)
    _finish(report)


@app.command()
def rollback(
    stack: str = stack_option(),
    limit: str | None = typer.Option(None, "--limit", help=LIMIT_HELP),
    canary: int = typer.Option(1, "--canary", help=CANARY_HELP),
    batch: str = typer.Option("50%", "--batch", help=BATCH_HELP),
    engine: str = typer.Option("pyinfra", "--engine", "-e", help=ENGINE_HELP),
    dry: bool = typer.Option(False, "--dry", help="read what each host serves and print the batch plan; change nothing"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
) -> None:
    """Return the hosts serving the pinned version to the version they served before it, batch by batch
    behind the same health gate. Hosts serving another version are left alone.

    The stack still pins the new version afterwards: the next deploy or rollout serves it again unless the
    stack is re-pinned. Exit 0 ok, 1 a failed batch or a host whose state cannot be read, 2 bad input.
    """
    with user_errors():
        cfg = load_stack(stack)
        engines.engine(engine)
        percent = walks.parse_batch(batch)
        target = engines.for_stack(cfg, limit=limit, stack=stack)
    walk = _walk(target, engine, walks.inventory_hosts(cfg), verbose)
    with user_errors():
        try:
            selection = walks.select_rollback(walk.health(target.hosts), cfg.model.version)
        except walks.NotStarted as exc:
            say_error("failed:", f" {exc}")
            raise typer.Exit(EXIT_FAILED) from None
        hosts = [h for h in target.hosts if h in selection.targets]
        for host, why in selection.skipped.items():
            _say(f"{host}: {why}")
        if not hosts:
            _say(f"nothing to roll back: no selected host serves version {cfg.model.version}")
            return
        batches = walks.plan_batches(hosts, canary, percent)
    _say(walks.plan_text(batches, f"rollback from model version {cfg.model.version} (stack {cfg.environment}, {engine})"))
    for host in hosts:
        _say(f"  {host}: version {cfg.model.version} -> {selection.targets[host]}")
    try:
        if not dry:
            _finish(walks.run_rollback(walk, batches, selection, cfg.model.version, stack))
    finally:  # said last, after the outcome too: whatever happened, the stack's pin still points forward
        say_error("warning:", f" {walks.rollback_warning(stack, cfg.model.version)}")


def _finish(report: walks.Report) -> None:
    """The summary of a walk; exit 1 when a batch failed."""
    text = walks.summary(report)
    if report.ok:
        _say(text)
        return
    head, _, rest = text.partition("\n")
    say_error("failed:", f" {head}" + (f"\n{rest}" if rest else ""))
    raise typer.Exit(EXIT_FAILED)
