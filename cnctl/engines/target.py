"""What a deploy is aimed at: a stack's fleet, as inventories both engines read, and the hosts in scope.

Any stack with hosts in `fleets` (or in its fleet file) can be deployed: the inventories come from
cnctl.inventory. pyinfra reads hosts/fleet.py, which serves the stack named by CNCTL_STACK (and the fleet file
CNCTL_FLEET_FILE names, when the run was given one); Ansible reads a YAML inventory written for the run. Cloud VMs are reached with
`pyinfra hosts/cloud.py deploy.py` (their inventory needs the Pulumi stack outputs).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnctl.config import StackConfig, stack_path
from cnctl.config.loader import is_path
from cnctl.errors import UsageProblem
from cnctl.fleet import FLEET_FILE_ENV, file_of
from cnctl.hostvars import stack_vars
from cnctl.inventory import (
    FLEET_GROUPS,
    STACK_ENV,
    InventoryHost,
    ansible_inventory_text,
    fleet_hosts,
    user_cache,
    write_private,
)
from cnctl.paths import HOSTS_DIR, REPO_ROOT, STACKS_DIR_ENV

REPO = REPO_ROOT
PYINFRA_INVENTORY = HOSTS_DIR / "fleet.py"


class TargetProblem(UsageProblem):
    """The stack cannot be deployed as asked (no inventory, unknown host): the user fixes it (exit 2)."""


@dataclass(frozen=True)
class Target:
    """A fleet as the engines see it.

    `pyinfra_inventory` is a pyinfra inventory module, `ansible_inventory` an Ansible inventory file; both
    name the same hosts with the same host data. `hosts` are the names in scope after `limit` (a host or
    group name, passed on to the engine as its own limit). `env` is what the inventories read from the
    environment (which stack, which fleet file). `extravars` are the stack values every host shares
    (`hostvars.stack_vars`); per-host values are host data in the inventories, for both engines alike.
    """

    stack: str
    pyinfra_inventory: Path
    ansible_inventory: Path
    hosts: tuple[str, ...]
    limit: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    extravars: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    layers: tuple[str, ...] | None = None

    @property
    def limits(self) -> tuple[str, ...]:
        """The host or group names of `limit`, one per comma-separated part (none without a limit)."""
        return limit_parts(self.limit)


def for_stack(cfg: StackConfig, *, limit: str | None = None, stack: str | None = None) -> Target:
    """The target of `cfg`'s fleet, or TargetProblem saying what is missing. `stack` is how `cfg` was named
    (a stack name or a file path): the pyinfra inventory module loads it again from that, and reads the
    same fleet file as here."""
    env = {STACK_ENV: stack or cfg.environment}
    if stack:  # the engine runs in cnctl's tree, maybe not where we are: it is told where the stack file is
        found = stack_path(stack).resolve()
        env.update({STACK_ENV: str(found)} if is_path(stack) else {STACKS_DIR_ENV: str(found.parent)})
    named = file_of(cfg)
    if named is not None:
        env[FLEET_FILE_ENV] = str(named[0].resolve())
    hosts = fleet_hosts(cfg, FLEET_GROUPS)  # a missing fleet file says who writes it
    if not hosts:
        where = f"its fleet file {named[0]} lists" if named else "fleets.edge and fleets.servers list"
        raise TargetProblem(f"stack {cfg.environment}: {where} no host to deploy to")
    return Target(
        stack=cfg.environment,
        pyinfra_inventory=PYINFRA_INVENTORY,
        ansible_inventory=write_ansible_inventory(cfg.environment, hosts),
        hosts=_in_scope(hosts, limit),
        limit=limit,
        env=env,
        extravars=stack_vars(cfg),
    )


def write_ansible_inventory(stack: str, hosts: list[InventoryHost]) -> Path:
    """Ensure the user's cache holds the Ansible inventory of `hosts` for this run. The file is named by its
    content: two runs at once (two fleet files of one stack, or a pyinfra run beside an Ansible one) never
    overwrite each other's inventory; the same fleet reuses one file."""
    text = ansible_inventory_text(stack, hosts)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return write_private(user_cache("inventory", f"{stack}-{digest}.yml"), text)


def limit_parts(limit: str | None) -> tuple[str, ...]:
    """`"a, b,servers"` -> `("a", "b", "servers")`; empty parts dropped."""
    return tuple(part.strip() for part in (limit or "").split(",") if part.strip())


def _in_scope(hosts: list[InventoryHost], limit: str | None) -> tuple[str, ...]:
    """The hosts `limit` selects by host or group name, a comma list selecting the union (all hosts without
    one), in the fleet's order; TargetProblem naming the first part that selects nothing."""
    parts = limit_parts(limit)
    for part in parts:
        if not any(part in (h.name, h.group) for h in hosts):
            known = ", ".join([h.name for h in hosts] + sorted({h.group for h in hosts}))
            raise TargetProblem(f"--limit {part}: no such host or group in the fleet; known: {known}")
    names = tuple(h.name for h in hosts if not parts or {h.name, h.group} & set(parts))
    if not names:  # a fleet without hosts (for_stack refuses it before; kept for the type's promise)
        raise TargetProblem(f"--limit {limit}: selects no host")
    return names
