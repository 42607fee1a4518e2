"""`cnctl collection build`: the Ansible roles as the collection circularnet.fleet (cnctl/collection.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from cnctl import collection as assembly
from cnctl.cli.errors import user_errors
from cnctl.console import console

app = typer.Typer(help="The Ansible roles as the collection circularnet.fleet.", no_args_is_help=True)
out = console()


@app.callback()
def collection() -> None:
    """The Ansible roles as the collection circularnet.fleet."""


@app.command()
def build(
    output: Path = typer.Option(Path("dist"), "--output", help="directory the tarball is written to"),
) -> None:
    """Assemble the collection (in ~/.cache/cnctl/collections, where ansible.cfg looks) and build its tarball.

    Install the tarball into your own playbooks' collections with `ansible-galaxy collection install <tarball>`.
    """
    with user_errors():
        tarball = assembly.build(output)
    out.print(f"{assembly.FQCN} {assembly.version()}: {tarball}")
    out.print(f"assembled in {assembly.cache_root() / 'ansible_collections'} (ansible.cfg's collections path)")
