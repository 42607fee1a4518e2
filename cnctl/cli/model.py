"""`cnctl model ...`: the stack's model archive as seen from the controller."""

from __future__ import annotations

import shutil

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from cnctl.cli.errors import UsageProblem, user_errors
from cnctl.config import load_stack, stack_path
from cnctl.model.fetch import FetchError
from cnctl.model.pin import archive_url, download, write_pin

app = typer.Typer(help="The stack's model archive: pin its checksum.", no_args_is_help=True)
out = Console(highlight=False)


@app.callback()
def model() -> None:
    """The stack's model archive: pin its checksum."""


@app.command()
def pin(
    stack: str = typer.Option("dev", "--stack", "-s", help="stack name (stacks/Pulumi.<name>.yaml) or a path"),
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
