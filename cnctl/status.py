"""The fleet's health: every host's verify-layer report, collected over SSH at once (`cnctl status`).

    fleet = collect("local")                 # or collect("prod", limit="belt-1-orin")
    fleet.healthy, fleet.unhealthy           # all good? / the names of the hosts that are not
    fleet.hosts[0].report["model"]           # what deploy/health_report.py reported

Each host runs its health report fresh and read-only (`health_report.py --read-only`, through `sudo -n`
where the login user may: Docker's socket is root's), reached the way the engines reach it
(cnctl.inventory: the running sandbox's key for the local stack, the fleet entry's address, cloud VMs
through their IAP ProxyCommand). When the script cannot run (missing, crashed), the last report the timer
wrote (/var/lib/circularnet/health.json) is shown instead, and the host counts as unhealthy: its state now
is unknown. A host that does not answer within the timeout is unreachable, hence unhealthy too.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from cnctl.config import load_stack
from cnctl.errors import UsageProblem
from cnctl.hostvars import Group
from cnctl.inventory import FLEET_GROUPS, InventoryHost, stack_hosts
from cnctl.remote import RemoteOutcome, run_on_hosts

# Where the verify layer puts its script and the timer its report (roles/verify/defaults/main.yml).
SCRIPT = "/usr/local/lib/circularnet/health_report.py"
LAST_REPORT = "/var/lib/circularnet/health.json"
TIMEOUT_S = 90.0  # a report probes Triton, Docker and nvidia-smi with 10 s each at most; SSH comes on top
_SAVED = "--- cnctl status: the last report written ---"
_MISSING = "the verify layer has not run here; run the deploy"

Runner = Callable[[Sequence[InventoryHost], str, float], Mapping[str, RemoteOutcome]]
Source = Literal["fresh", "saved", "none"]


class StatusProblem(UsageProblem):
    """`cnctl status` cannot be run as asked (no host in the stack, an unknown --limit): exit 2."""


@dataclass(frozen=True)
class HostStatus:
    """One host: could it be reached, is it healthy, its report (None when there is none) and its problems.
    `source` says whether the report was made now (`fresh`) or is the last one the timer wrote (`saved`)."""

    name: str
    group: str
    reachable: bool
    healthy: bool
    problems: tuple[str, ...]
    source: Source = "none"
    report: dict[str, Any] | None = None


@dataclass(frozen=True)
class FleetStatus:
    stack: str
    hosts: tuple[HostStatus, ...] = field(default_factory=tuple)

    @property
    def healthy(self) -> bool:
        return all(h.healthy for h in self.hosts)

    @property
    def unhealthy(self) -> list[str]:
        """The hosts that are unreachable or unhealthy, in fleet order."""
        return [h.name for h in self.hosts if not h.healthy]

    def to_json(self) -> dict[str, Any]:
        return {"stack": self.stack, "healthy": self.healthy, "unhealthy": self.unhealthy,
                "hosts": [{**asdict(h), "problems": list(h.problems)} for h in self.hosts]}


def remote_command(script: str = SCRIPT, last: str = LAST_REPORT) -> str:
    """The shell command run on each host: the report now (through `sudo -n` where allowed); after any exit
    but 0, a marker line and the last report the timer wrote (an unhealthy report exits 1, and so does a
    crash: which one it was, only the output tells)."""
    s, saved = shlex.quote(script), shlex.quote(last)
    return (
        'if sudo -n true 2>/dev/null; then as_root="sudo -n"; else as_root=""; fi; '
        f"if [ -f {s} ]; then $as_root python3 {s} --read-only; rc=$?; "
        f"else echo {shlex.quote(f'no {script}: {_MISSING}')} >&2; rc=127; fi; "
        f"if [ $rc -ne 0 ]; then echo {shlex.quote(_SAVED)}; cat {saved} 2>/dev/null; fi; exit 0"
    )


def _fresh_report(lines: Sequence[str]) -> dict[str, Any] | None:
    for line in reversed(lines):
        try:
            found = json.loads(line)
        except ValueError:
            continue
        if isinstance(found, dict) and "healthy" in found:
            return found
    return None


def host_status(host: InventoryHost, outcome: RemoteOutcome) -> HostStatus:
    """What one host's answer to `remote_command()` says about it."""
    def status(healthy: bool, problems: list[str], source: Source = "none",
               report: dict[str, Any] | None = None) -> HostStatus:
        return HostStatus(host.name, host.group, outcome.reachable, healthy, tuple(problems), source, report)

    if not outcome.reachable:
        why = (outcome.stderr.strip().splitlines() or ["no answer"])[-1]
        return status(False, [f"unreachable: {why}"])
    fresh_part, marker, saved_part = outcome.stdout.partition(_SAVED)
    report = _fresh_report(fresh_part.splitlines())
    if report is not None:
        problems = [str(p) for p in report.get("problems") or []]
        return status(bool(report.get("healthy")) and not problems, problems, "fresh", report)
    why = (outcome.stderr.strip().splitlines() or ["it printed no report"])[-1]
    problem = why if why.endswith(_MISSING) else f"the health report could not run now ({why})"
    try:
        saved = json.loads(saved_part) if marker else None
    except ValueError:
        saved = None
    if isinstance(saved, dict):
        stale = f"{problem}: showing the last report, of {saved.get('checked', 'an unknown time')}"
        return status(False, [stale, *[str(p) for p in saved.get("problems") or []]], "saved", saved)
    return status(False, [problem if why.endswith(_MISSING) else f"{problem}; no earlier report in {LAST_REPORT}"])


def hosts_of(stack: str, limit: str | None = None, environ: Mapping[str, str] | None = None,
             inst: Any = None) -> tuple[str, list[InventoryHost]]:
    """(the stack's name, the hosts `cnctl status` asks): its fleets' hosts, and its cloud VMs when it has some
    and `limit` names no fleet host or group; only those `limit` names (a host or a group)."""
    cfg = load_stack(stack)
    groups: list[Group] = list(FLEET_GROUPS)
    fleet_names = {e.name for e in cfg.fleets.edge} | {s.name for s in cfg.fleets.servers} | set(FLEET_GROUPS)
    if cfg.gcp is not None and cfg.compute is not None and (limit is None or limit not in fleet_names):
        groups.append("cloud")  # their inventory needs the stack outputs: asked only when they may be meant
    _, hosts = stack_hosts(stack, groups, environ, inst)
    if not hosts:
        raise StatusProblem(f"stack {cfg.environment}: its fleets list no host and it has no cloud VM")
    chosen = [h for h in hosts if limit is None or limit in (h.name, h.group)]
    if not chosen:
        known = ", ".join([h.name for h in hosts] + sorted({h.group for h in hosts}))
        raise StatusProblem(f"--limit {limit}: no such host or group in stack {cfg.environment}; known: {known}")
    return cfg.environment, chosen


def collect_from(stack: str, hosts: Sequence[InventoryHost], run: Runner | None = None,
                 timeout: float = TIMEOUT_S) -> FleetStatus:
    """Every host's status, asked at once (each bounded by `timeout` seconds), in fleet order."""
    outcomes = (run or run_on_hosts)(hosts, remote_command(), timeout)
    return FleetStatus(stack, tuple(host_status(h, outcomes[h.name]) for h in hosts))


def collect(stack: str, limit: str | None = None, *, run: Runner | None = None, timeout: float = TIMEOUT_S,
            environ: Mapping[str, str] | None = None, inst: Any = None) -> FleetStatus:
    """The health of `stack`'s hosts (or the one host or group `limit` names). Bad input (unknown stack or
    host, a sandbox that is not up, missing cloud outputs) raises a UsageProblem saying what to fix."""
    name, hosts = hosts_of(stack, limit, environ, inst)
    return collect_from(name, hosts, run, timeout)
