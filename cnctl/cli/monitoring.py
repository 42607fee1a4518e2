"""`cnctl monitoring`: the site's monitoring (monitoring.server): where its pages are, and whether they answer."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from cnctl.cli.errors import err, user_errors
from cnctl.cli.options import stack_option
from cnctl.config import load_stack
from cnctl.console import console
from cnctl.fleet import as_fleet
from cnctl.site_pages import answer, pages
from cnctl.status import StatusProblem
from cnctl.status_prometheus import USER, read_password

app = typer.Typer(help="The site's Prometheus, dashboards and Alertmanager (monitoring.server)", no_args_is_help=True)
out = console()
EXIT_FAILED = 1


@app.command("urls")
def urls(stack: str = stack_option()) -> None:
    """Print the site's dashboards, alerts and Alertmanager, the login, and whether each page answers.

    Exit 0 when every page answers, 1 when one does not (named), 2 when the stack has no monitoring server or its
    password file cannot be read.
    """
    with user_errors():
        cfg = load_stack(stack)
        found = pages(as_fleet(cfg))  # the monitoring server's address as the fleet (file) has it
        if not found:
            raise StatusProblem(f"stack {cfg.environment} names no monitoring.server: it has no site monitoring "
                                "(docs/monitoring.md)")
        password = read_password(cfg)
    answers = {page.url: answer(page.url, password) for page in found}
    table = Table(title=f"site monitoring · stack {escape(cfg.environment)} · {escape(str(cfg.monitoring.server))}")
    for column in ("page", "URL", "answers"):
        table.add_column(column)
    for page in found:
        why = answers[page.url]
        table.add_row(page.name, escape(page.url), "[green]yes[/]" if not why else f"[red]no[/]: {escape(why)}")
    out.print(table)
    out.print(f"login: user [bold]{USER}[/], password: the first line of {escape(str(cfg.monitoring.password_file))}")
    failed = [page.name for page in found if answers[page.url]]
    if failed:
        err.print(f"[bold red]not answering[/]: {escape(', '.join(failed))}")
        raise typer.Exit(EXIT_FAILED)
