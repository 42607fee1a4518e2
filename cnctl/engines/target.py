"""What a deploy is aimed at: a stack's fleet, as inventories both engines read, and the hosts in scope.

Today only the local stack has an inventory (the sandbox fleet, generated from its state by
`cnctl sandbox up`). Inventories for real fleets come with the host layers (hosts/edge.py,
hosts/servers.py, hosts/cloud.py from stack outputs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnctl.cli.errors import UsageProblem
from cnctl.config import StackConfig
from cnctl.hostvars import stack_vars
from cnctl.sandbox.instance import Instance
from cnctl.sandbox.inventory import current_state
from cnctl.sandbox.state import PYINFRA_INVENTORY, FleetState

REPO = Path(__file__).resolve().parents[2]


class TargetProblem(UsageProblem):
    """The stack cannot be deployed as asked (no inventory, unknown host): the user fixes it (exit 2)."""


@dataclass(frozen=True)
class Target:
    """A fleet as the engines see it.

    `pyinfra_inventory` is a pyinfra inventory module, `ansible_inventory` an Ansible inventory file; both
    name the same hosts with the same host data. `hosts` are the names in scope after `limit` (a host or
    group name, passed on to the engine as its own limit). `env` is what the inventories read from the
    environment (which sandbox). `extravars` are stack values the roles take as inputs; per-host values
    (the site repository, the platform) are host data in the inventories, for both engines alike.
    """

    stack: str
    pyinfra_inventory: Path
    ansible_inventory: Path
    hosts: tuple[str, ...]
    limit: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    extravars: dict[str, Any] = field(default_factory=dict)


def for_stack(cfg: StackConfig, *, limit: str | None = None, inst: Instance | None = None) -> Target:
    """The target of `cfg`'s fleet, or TargetProblem saying what is missing."""
    if cfg.sandbox is None:
        raise TargetProblem(
            f"stack {cfg.environment}: its fleets have no inventory yet. Inventories for real fleets come with "
            "the host layers (hosts/edge.py, hosts/servers.py, hosts/cloud.py from stack outputs); today "
            "`cnctl deploy` reaches the sandbox fleet of the local stack (`--stack local`)"
        )
    inst = inst or Instance.from_env()
    state = current_state(inst)  # SandboxNotUp: "run `cnctl sandbox up` or `make demo`"
    if state.stack != cfg.environment:
        raise TargetProblem(
            f"the sandbox that is up was started from stack {state.stack!r}, not {cfg.environment!r}: "
            f"`cnctl sandbox up --stack {cfg.environment}` first"
        )
    if not os.access(state.ssh_key, os.R_OK):
        raise TargetProblem(f"cannot read the sandbox's SSH key {state.ssh_key}: run as root (sudo)")
    return Target(
        stack=cfg.environment,
        pyinfra_inventory=PYINFRA_INVENTORY,
        ansible_inventory=Path(state.inventories["ansible"]),
        hosts=_in_scope(state, limit),
        limit=limit,
        env={"CNCTL_SANDBOX_PREFIX": inst.prefix, "CNCTL_STATE": str(inst.state_dir), "CNCTL_CACHE": str(inst.cache)},
        extravars=stack_vars(cfg),
    )


def _in_scope(state: FleetState, limit: str | None) -> tuple[str, ...]:
    """The hosts `limit` selects by host or group name (all without one); TargetProblem if none."""
    hosts = tuple(h.name for h in state.hosts if limit is None or limit in (h.name, h.spec.group))
    if not hosts:
        names = ", ".join([h.name for h in state.hosts] + sorted({h.spec.group for h in state.hosts}))
        raise TargetProblem(f"--limit {limit}: no such host or group in the sandbox fleet; known: {names}")
    return hosts
