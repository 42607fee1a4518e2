"""The two configuration engines, behind one call: the same host layers through pyinfra (deploy.py,
deploy/) or Ansible (playbooks/site.yml, roles/), with one result type for both.

    target = for_stack(load_stack("local"), limit="belt-1-orin")
    result = run("ansible", target, dry=True)
"""

from __future__ import annotations

from collections.abc import Callable

from cnctl.engines import ansible, pyinfra
from cnctl.engines.result import DeployResult, EngineFailure, HostResult
from cnctl.engines.target import Target, TargetProblem, for_stack
from cnctl.errors import UsageProblem

Runner = Callable[..., DeployResult]
ENGINES: dict[str, Runner] = {pyinfra.NAME: pyinfra.run, ansible.NAME: ansible.run}


def engine(name: str) -> Runner:
    """The run function of engine `name`; UsageProblem naming the known engines otherwise."""
    try:
        return ENGINES[name]
    except KeyError:
        raise UsageProblem(f"--engine {name}: unknown engine; known: {', '.join(ENGINES)}") from None


def run(name: str, target: Target, *, dry: bool = False, echo: bool = True) -> DeployResult:
    """Deploy `target` with engine `name` (dry: change nothing, show what would change)."""
    return engine(name)(target, dry=dry, echo=echo)


__all__ = ["ENGINES", "DeployResult", "EngineFailure", "HostResult", "Target", "TargetProblem", "engine", "for_stack", "run"]
