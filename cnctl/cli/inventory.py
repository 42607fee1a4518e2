"""`cnctl inventory`: the inventory of a stack's hosts, for users who run pyinfra or Ansible themselves.

    cnctl inventory --stack prod --engine ansible --output prod.yml && ansible-playbook -i prod.yml playbooks/site.yml
    cnctl inventory --stack dev --group cloud --engine pyinfra --output dev_cloud.py && pyinfra dev_cloud.py deploy.py
"""

from __future__ import annotations

from pathlib import Path

import typer

from cnctl.cli.errors import user_errors
from cnctl.errors import UsageProblem
from cnctl.hostvars import GROUPS, Group
from cnctl.inventory import (
    FLEET_GROUPS,
    ansible_inventory_text,
    pyinfra_groups,
    pyinfra_module_text,
    ssh_config_path,
    stack_hosts,
    write_private,
    write_ssh_config,
)

ENGINES = ("pyinfra", "ansible")


def inventory(
    stack: str = typer.Option("local", "--stack", "-s", help="stack name (stacks/Pulumi.<name>.yaml) or a path"),
    engine: str = typer.Option("ansible", "--engine", "-e", help="inventory format: pyinfra (a Python module) or ansible (YAML)"),
    group: list[str] = typer.Option(
        list(FLEET_GROUPS), "--group", "-g",
        help="host groups: edge, servers (from fleets), cloud (the GPU VMs, from the Pulumi stack outputs); repeatable",
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="write here instead of stdout"),
) -> None:
    """Print or write the inventory of the stack's hosts with their cn_* variables, the same for both engines.

    Cloud VMs are reached through IAP (an SSH ProxyCommand); for pyinfra that is an ssh_config written
    beside --output (or into ~/.cache/cnctl/ssh/). Exit 2 for bad input (invalid stack, missing fleet file,
    missing stack outputs).
    """
    with user_errors():
        if engine not in ENGINES:
            raise UsageProblem(f"--engine {engine}: unknown engine; known: {', '.join(ENGINES)}")
        groups = _groups(group)
        cfg, hosts = stack_hosts(stack, groups)
        if engine == "ansible":
            text = ansible_inventory_text(cfg.environment, hosts)
        else:
            config_path = output.with_name(output.name + ".ssh_config") if output else ssh_config_path(cfg.environment)
            config = write_ssh_config(hosts, config_path.resolve())
            text = pyinfra_module_text(cfg.environment, {g: m for g, m in pyinfra_groups(hosts, config).items() if g in groups})
        if output is None:
            typer.echo(text, nl=False)
        else:
            write_private(output, text)
            typer.echo(f"wrote {output} ({len(hosts)} hosts)", err=True)


def _groups(names: list[str]) -> list[Group]:
    """The groups asked for, each once, in the order given; UsageProblem naming the known ones."""
    chosen: list[Group] = []
    for name in names:
        match = next((g for g in GROUPS if g == name), None)
        if match is None:
            raise UsageProblem(f"--group {name}: unknown group; known: {', '.join(GROUPS)}")
        if match not in chosen:
            chosen.append(match)
    return chosen
