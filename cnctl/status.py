"""The fleet's health: every host's verify-layer report, collected over SSH at once (`cnctl status`).

    fleet = collect("local")                 # or collect("prod", limit="belt-1-orin")
    fleet.healthy, fleet.unhealthy           # all good? / the names of the hosts that are not
    fleet.hosts[0].report["model"]           # what cnhost/health_report.py reported

Each host runs its health report fresh and read-only (`health_report.py --read-only`, through `sudo -n`
where the login user may: Docker's socket is root's), reached the way the engines reach it
(cnctl.inventory: the fleet file's key and address for a stack that has one, the fleet entry's address, cloud VMs
through their IAP ProxyCommand). When the script cannot run (missing, crashed), the last report the timer
wrote (/var/lib/circularnet/health.json) is shown instead, and the host counts as unhealthy: its state now
is unknown. A host that does not answer within the timeout is unreachable, hence unhealthy too.

A pull-mode host (its fleet entry's `mode: pull`, host variable cn_deploy_mode) is not asked over SSH: its SSH
may be closed. Its status is its agent's newest report in the stack's results bucket,
`pull-reports/<stack>/<host>/<UTC time>.json` (cnctl/bundle/agent.py `Agent.report`), read with this machine's
own identity (cnctl.store). Source `bucket`; healthy only when that report's outcome is `applied` or
`up-to-date` (`waiting` is not: such a host has applied no bundle) and it is at most STALE_HEARTBEATS hourly
heartbeats plus the stack's bundle.pollSeconds old (a host that stopped reporting is not healthy). `reachable`
then means: heard from within that bound. No report, an unreadable bucket, a report of another host: a problem
naming the bucket and the fix.

`cnctl status --source prometheus` (or `auto` on a stack with monitoring.server) reads the same HostStatus and
FleetStatus from the site's Prometheus instead: cnctl/status_prometheus.py.
"""

from __future__ import annotations

import datetime
import json
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import cnhost
from cnctl.bundle.agent import REPORT_HEARTBEAT_S, REPORTS_PREFIX
from cnctl.config import StackConfig, load_stack
from cnctl.errors import UsageProblem
from cnctl.hostvars import Group
from cnctl.inventory import FLEET_GROUPS, InventoryHost, stack_hosts
from cnctl.remote import RemoteOutcome, run_on_hosts
from cnctl.store import Store

# Where the verify layer puts its script and the timer its report (roles/verify/defaults/main.yml).
SCRIPT = f"{cnhost.HOME}/cnhost/health_report.py"
LAST_REPORT = "/var/lib/circularnet/health.json"
TIMEOUT_S = 90.0  # a report probes Triton, Docker and nvidia-smi with 10 s each at most; SSH comes on top
_SAVED = "--- cnctl status: the last report written ---"
_MISSING = "the verify layer has not run here; run the deploy"

Runner = Callable[[Sequence[InventoryHost], str, float], Mapping[str, RemoteOutcome]]
Source = Literal["fresh", "saved", "none", "bucket", "prometheus"]
# A pull host's newest report may be this old: the agent reports every state change and, unchanged, once an hour
# at its first run after the hour (REPORT_HEARTBEAT_S + bundle.pollSeconds apart); one missed heartbeat is allowed.
STALE_HEARTBEATS = 2
DEFAULT_POLL_S = 300  # bundle.pollSeconds' default, for a host variable that lacks it
HEALTHY_OUTCOMES = ("applied", "up-to-date")


class StatusProblem(UsageProblem):
    """`cnctl status` cannot be run as asked (no host in the stack, an unknown --limit): exit 2."""


@dataclass(frozen=True)
class HostStatus:
    """One host: could it be reached, is it healthy, its report (None when there is none) and its problems.
    `source` says whether the report was made now (`fresh`), is the last one the timer wrote (`saved`), is a
    pull-mode host's newest pull report from the results bucket (`bucket`; `origin` is then that object's URL,
    or the prefix searched when there is none), or was rebuilt from the site Prometheus' metrics (`prometheus`,
    cnctl/status_prometheus.py; `origin` its URL)."""

    name: str
    group: str
    reachable: bool
    healthy: bool
    problems: tuple[str, ...]
    source: Source = "none"
    report: dict[str, Any] | None = None
    origin: str | None = None


@dataclass(frozen=True)
class FleetStatus:
    """Every host's status; `source` says how they were asked: `ssh` (each host over SSH, pull hosts from the
    bucket) or `prometheus` (the site's Prometheus at `origin`; the hosts it does not collect over SSH)."""

    stack: str
    hosts: tuple[HostStatus, ...] = field(default_factory=tuple)
    source: Literal["ssh", "prometheus"] = "ssh"
    origin: str | None = None

    @property
    def healthy(self) -> bool:
        return all(h.healthy for h in self.hosts)

    @property
    def unhealthy(self) -> list[str]:
        """The hosts that are unreachable or unhealthy, in fleet order."""
        return [h.name for h in self.hosts if not h.healthy]

    def to_json(self) -> dict[str, Any]:
        return {"stack": self.stack, "source": self.source, "origin": self.origin, "healthy": self.healthy,
                "unhealthy": self.unhealthy, "hosts": [{**asdict(h), "problems": list(h.problems)} for h in self.hosts]}


def remote_command(script: str = SCRIPT, last: str = LAST_REPORT) -> str:
    """The shell command run on each host: the report now (through `sudo -n` where allowed); after any exit
    but 0, a marker line and the last report the timer wrote (an unhealthy report exits 1, and so does a
    crash: which one it was, only the output tells)."""
    s, saved = shlex.quote(script), shlex.quote(last)
    home, program = cnhost.located(script)
    return (
        'if sudo -n true 2>/dev/null; then as_root="sudo -n"; else as_root=""; fi; '
        f"if [ -f {s} ]; then $as_root {shlex.join(cnhost.argv(program, home))} --read-only; rc=$?; "
        f"else echo {shlex.quote(f'no {script}: {_MISSING}')} >&2; rc=127; fi; "
        f"if [ $rc -ne 0 ]; then echo {shlex.quote(_SAVED)}; cat {saved} 2>/dev/null; fi; exit 0"
    )


def host_status(host: InventoryHost, outcome: RemoteOutcome) -> HostStatus:
    """What one host's answer to `remote_command()` says about it."""
    def status(healthy: bool, problems: list[str], source: Source = "none",
               report: dict[str, Any] | None = None) -> HostStatus:
        return HostStatus(host.name, host.group, outcome.reachable, healthy, tuple(problems), source, report)

    if not outcome.reachable:
        why = (outcome.stderr.strip().splitlines() or ["no answer"])[-1]
        return status(False, [f"unreachable: {why}"])
    fresh_part, marker, saved_part = outcome.stdout.partition(_SAVED)
    report = cnhost.answer(fresh_part, "healthy")
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


def hosts_of(stack: str, limit: str | None = None,
             environ: Mapping[str, str] | None = None) -> tuple[str, list[InventoryHost]]:
    """(the stack's name, the hosts `cnctl status` asks): its fleets' hosts, and its cloud VMs when it has some
    and `limit` names no fleet host or group; only those `limit` names (a host or a group)."""
    cfg, hosts = chosen(stack, limit, environ)
    return cfg.environment, hosts


def chosen(stack: str, limit: str | None, environ: Mapping[str, str] | None) -> tuple[StackConfig, list[InventoryHost]]:
    """(the stack, the hosts `cnctl status` asks): see hosts_of(); also what the Prometheus source reads."""
    cfg = load_stack(stack)
    groups: list[Group] = list(FLEET_GROUPS)
    fleet_names = {e.name for e in cfg.fleets.edge} | {s.name for s in cfg.fleets.servers} | set(FLEET_GROUPS)
    if cfg.gcp is not None and cfg.compute is not None and (limit is None or limit not in fleet_names):
        groups.append("cloud")  # their inventory needs the stack outputs: asked only when they may be meant
    _, hosts = stack_hosts(stack, groups, environ)
    if not hosts:
        raise StatusProblem(f"stack {cfg.environment}: its fleets list no host and it has no cloud VM")
    chosen = [h for h in hosts if limit is None or limit in (h.name, h.group)]
    if not chosen:
        known = ", ".join([h.name for h in hosts] + sorted({h.group for h in hosts}))
        raise StatusProblem(f"--limit {limit}: no such host or group in stack {cfg.environment}; known: {known}")
    return cfg, chosen


class ReportStore(Protocol):
    """Where pull reports are read: cnctl.store.Store of the results bucket (a test may hand in another)."""

    url: str

    def newest(self, prefix: str) -> tuple[str, bytes] | None: ...


def is_pull(host: InventoryHost) -> bool:
    return host.vars.get("cn_deploy_mode") == "pull"


def report_prefix(stack: str, host: str) -> str:
    return f"{REPORTS_PREFIX}/{stack}/{host}/"


def stale_after(host: InventoryHost) -> int:
    """Seconds after which a pull host's newest report no longer counts as news from it."""
    return STALE_HEARTBEATS * REPORT_HEARTBEAT_S + int(host.vars.get("cn_pull_interval") or DEFAULT_POLL_S)


def duration(seconds: float) -> str:
    """A short age for a person: `42 s`, `17 min`, `3 h 5 min`, `4 days`."""
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes} min" if minutes else f"{int(seconds)} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours < 48 else f"{hours // 24} days"


def _reported_at(name: str, report: dict[str, Any]) -> datetime.datetime | None:
    """When the agent wrote the report: the time in its object's name, else its `at`."""
    for text, form in ((name.rsplit("/", 1)[-1].removesuffix(".json"), "%Y%m%dT%H%M%S%fZ"),
                       (str(report.get("at") or ""), "%Y-%m-%dT%H:%M:%SZ")):
        try:
            return datetime.datetime.strptime(text, form).replace(tzinfo=datetime.UTC)
        except ValueError:
            continue
    return None


def pull_status(host: InventoryHost, stack: str, store: ReportStore | UsageProblem,
                now: datetime.datetime | None = None) -> HostStatus:
    """A pull-mode host's status from its newest pull report (see the module doc). `store` is the problem that
    kept the results bucket from being opened, when it could not be."""
    prefix = report_prefix(stack, host.name)

    def status(healthy: bool, problems: list[str], reachable: bool = False, report: dict[str, Any] | None = None,
               origin: str | None = None) -> HostStatus:
        where = origin or (f"{store.url}/{prefix}" if not isinstance(store, UsageProblem) else None)
        return HostStatus(host.name, host.group, reachable, healthy, tuple(problems), "bucket", report, where)

    if isinstance(store, UsageProblem):
        return status(False, [f"pull mode: its reports cannot be read: {store}"])
    try:
        found = store.newest(prefix)
    except UsageProblem as exc:
        return status(False, [f"pull mode: its reports cannot be read: {exc}"])
    if found is None:
        never = (f"pull mode: no report in {store.url}/{prefix}: its agent has never reported; deploy it once with "
                 f"SSH open (`cnctl deploy --limit {host.name}`: the pull layer installs the agent), then check "
                 "`systemctl status circularnet-pull.service` on it")
        return status(False, [never])
    name, body = found
    origin = f"{store.url}/{name}"
    try:
        report = json.loads(body)
    except ValueError:
        report = None
    if not isinstance(report, dict) or report.get("host") not in (None, host.name) or "outcome" not in report:
        foreign = (f"pull mode: {origin} is not a pull report of {host.name}: only its agent writes under {prefix}; "
                   "find out which identity wrote it")
        return status(False, [foreign], origin=origin)
    problems: list[str] = []
    outcome = str(report.get("outcome"))
    if outcome not in HEALTHY_OUTCOMES:
        problems.append(f"pull agent {outcome}: {report.get('message') or 'no message'}")
    health = report.get("health")
    if isinstance(health, dict) and health.get("healthy") is False:  # the verify layer's report, carried along
        problems += [f"health report: {p}" for p in health.get("problems") or ["unhealthy (no problem named)"]]
    at = _reported_at(name, report)
    age = ((now or datetime.datetime.now(datetime.UTC)) - at).total_seconds() if at is not None else None
    bound = stale_after(host)
    fresh = age is not None and age <= bound
    if age is None:
        problems.append(f"pull mode: {origin} says no time it was written; the agent's report format has changed?")
    elif not fresh:
        problems.append(f"pull mode: its newest report is {duration(age)} old (of {at:%Y-%m-%d %H:%M} UTC), over "
                        f"{duration(bound)} ({STALE_HEARTBEATS} hourly heartbeats + bundle.pollSeconds): its agent "
                        f"has stopped reporting; check `systemctl status circularnet-pull.timer` on it and that it "
                        f"reaches {store.url}")
    return status(not problems, problems, fresh, report, origin)


def collect_from(stack: str, hosts: Sequence[InventoryHost], run: Runner | None = None,
                 timeout: float = TIMEOUT_S, reports: Callable[[], ReportStore] | None = None,
                 now: datetime.datetime | None = None) -> FleetStatus:
    """Every host's status, in fleet order: the push hosts asked at once over SSH (each bounded by `timeout`
    seconds), the pull hosts from their newest report in the store `reports()` opens (only when there is one)."""
    push = [h for h in hosts if not is_pull(h)]
    outcomes = (run or run_on_hosts)(push, remote_command(), timeout) if push else {}
    store: ReportStore | UsageProblem = UsageProblem("no results bucket given to read pull reports from")
    if len(push) < len(hosts) and reports is not None:
        try:
            store = reports()
        except UsageProblem as exc:
            store = exc
    return FleetStatus(stack, tuple(pull_status(h, stack, store, now) if is_pull(h) else host_status(h, outcomes[h.name])
                                    for h in hosts))


def collect(stack: str, limit: str | None = None, *, run: Runner | None = None, timeout: float = TIMEOUT_S,
            environ: Mapping[str, str] | None = None,
            now: datetime.datetime | None = None) -> FleetStatus:
    """The health of `stack`'s hosts (or the one host or group `limit` names). Bad input (unknown stack or
    host, a missing fleet file, missing cloud outputs) raises a UsageProblem saying what to fix; a results
    bucket that cannot be read is a problem of each pull host, not an error."""
    cfg, hosts = chosen(stack, limit, environ)
    return collect_from(cfg.environment, hosts, run, timeout, results_store(cfg), now)


def results_store(cfg: StackConfig) -> Callable[[], ReportStore]:
    """Opens the stack's results bucket, where pull hosts' reports are read (only when one is asked)."""
    return lambda: Store.of_stack(cfg, "results")
