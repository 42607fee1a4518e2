"""Roll the model version a stack pins out to its fleet, and back, batch by batch behind a health gate.

    plan = plan_batches(hosts, canary=1, percent=50)       # canary host(s) first, then batches of the rest
    report = run_rollout(plan, version=2, converge=..., health=..., base=target, say=print)

A batch is one engine run limited to its hosts (they converge in parallel) applying the layers model,
inference and verify; batches run one after another. After each batch every host of it must pass the gate:
it serves the expected version READY in Triton and a real inference is answered by that version
(`model_serve.py status` and `probe` on the host, over SSH). A batch that fails the gate, or whose engine run
fails, stops the rollout and is rolled back at once (an engine run on it with `cn_model_action=previous`),
then gated again for the version it served before. Earlier batches stay on the new version.

A rollback (`cnctl model rollback`) is the same walk with `cn_model_action=previous` on every batch: each
host that serves the pinned version returns to the one it served before it; hosts that serve another
version are left alone. The stack still pins the new version afterwards: the next deploy or rollout
re-applies it unless the stack is pinned to another one.

No CLI here: cnctl/cli/model.py parses the options and prints; engines and hosts are reached through the
functions passed in, so tests drive the whole walk with fakes.
"""

from __future__ import annotations

import math
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import cnhost
from cnctl.config import StackConfig
from cnctl.engines import DeployResult, EngineFailure, Target
from cnctl.errors import UsageProblem
from cnctl.inventory import FLEET_GROUPS, InventoryHost, fleet_hosts
from cnctl.layers import ROLLOUT
from cnhost import triton_endpoint

LAYERS = ROLLOUT  # cnctl/layers.py: the model, Triton serving it, the health report
ACTION = "cn_model_action"
PINNED, PREVIOUS = "pinned", "previous"
SERVE_SCRIPT = f"{cnhost.HOME}/cnhost/model_serve.py"  # roles/inference/defaults/main.yml inference_helper
MODEL_REPOSITORY = "/opt/circularnet/models"
PROBE_TIMEOUT_S = 30
SSH_TIMEOUT_S = 120
GATE_ATTEMPTS = 3  # the engine waited for readiness already; retries only cover a blip, never a slow load
GATE_DELAY_S = 2.0
MARK = "@@cnctl-gate:"  # starts the lines that separate the outputs of the health command

Converge = Callable[[Target], DeployResult]  # one engine run; EngineFailure when it gives no result


class NotStarted(Exception):
    """The walk could not start (a host's state cannot be read): nothing was changed. Exit 1."""


@dataclass(frozen=True)
class Batch:
    """Hosts that converge together, in one engine run. `number` counts from 1."""

    number: int
    hosts: tuple[str, ...]
    canary: bool = False

    @property
    def label(self) -> str:
        return f"{'canary' if self.canary else 'batch'} {self.number}"


# --- the plan ------------------------------------------------------------------------------------


def parse_batch(text: str) -> int:
    """`"50%"` or `"50"` -> 50; UsageProblem naming --batch unless it is a whole percentage from 1 to 100."""
    digits = text.strip().removesuffix("%").strip()
    if not digits.isdigit() or not 1 <= int(digits) <= 100:
        raise UsageProblem(f"--batch {text}: give a percentage of the hosts after the canary from 1% to 100% (e.g. 50%)")
    return int(digits)


def plan_batches(hosts: Sequence[str], canary: int, percent: int) -> list[Batch]:
    """The batches of a walk over `hosts` (in their order): the first `canary` hosts alone, then the rest in
    batches of `percent` % of the rest (rounded up, at least one host). UsageProblem for a canary the
    selection cannot give or a percentage outside 1-100."""
    if not hosts:
        raise UsageProblem("no host to roll out to: the stack's fleets (or --limit) select none")
    if not 0 <= canary <= len(hosts):
        raise UsageProblem(f"--canary {canary}: the selection has {len(hosts)} host(s) ({', '.join(hosts)}); "
                           f"give 0 to {len(hosts)}")
    if not 1 <= percent <= 100:
        raise UsageProblem(f"--batch {percent}%: give a percentage from 1% to 100%")
    batches = [Batch(1, tuple(hosts[:canary]), canary=True)] if canary else []
    rest = list(hosts[canary:])
    size = max(1, math.ceil(len(rest) * percent / 100))
    for start in range(0, len(rest), size):
        batches.append(Batch(len(batches) + 1, tuple(rest[start:start + size])))
    return batches


def plan_text(batches: Sequence[Batch], what: str) -> str:
    """The plan as lines a person reads: one per batch, its hosts in order."""
    lines = [f"{what}: {len(batches)} batch(es), one after another; the hosts of a batch converge in parallel"]
    lines += [f"  {b.label}: {', '.join(b.hosts)}" for b in batches]
    return "\n".join(lines)


# --- what a host serves ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HostHealth:
    """What `model_serve.py status` and `probe` printed on one host (their JSON), or why there is none."""

    host: str
    status: dict[str, Any] = field(default_factory=dict)
    probe: dict[str, Any] = field(default_factory=dict)
    error: str = ""  # unreachable, or the script printed no JSON

    @property
    def served(self) -> int | None:
        value = self.status.get("served")
        return int(value) if isinstance(value, int | str) and str(value).isdigit() else None

    @property
    def history(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.status.get("history") or [] if str(v).isdigit())


Health = Callable[[Sequence[str]], dict[str, HostHealth]]  # read hosts' health (read-only)


@dataclass(frozen=True)
class Verdict:
    """The gate's verdict on one host for the version it must serve."""

    host: str
    ok: bool
    expected: int | None
    served: int | None
    detail: str  # ok: what was seen; failed: why, in Triton's words where it gave any

    def line(self) -> str:
        return f"{self.host}: {'ok' if self.ok else 'FAILED'}: {self.detail}"


def judge(health: HostHealth, expected: int | None) -> Verdict:
    """Does the host serve `expected` READY, and did a real inference come back from that version?"""
    status, probe = health.status, health.probe

    def failed(why: str) -> Verdict:
        return Verdict(health.host, False, expected, health.served, why)

    if health.error:
        return failed(health.error)
    if expected is None:
        return failed("no version to expect: it served none before")
    if status.get("result") != "ok" and not status.get("live", True):
        return failed(f"Triton is not live: {status.get('message') or 'no message'}")
    if health.served != expected:
        return failed(f"serves version {health.served}, expected {expected}"
                      + (f" ({status['message']})" if status.get("message") else ""))
    if not status.get("ready"):
        return failed(f"version {expected} is not READY in Triton: {status.get('message') or 'no message'}")
    if probe.get("result") != "ok":
        return failed(f"inference failed: {probe.get('message') or 'no message'}")
    answered = str(probe.get("model_version"))
    if answered != str(expected):
        return failed(f"the inference was answered by version {answered}, expected {expected}")
    ms = probe.get("ms")
    return Verdict(health.host, True, expected, health.served,
                   f"version {expected} READY, inference answered" + (f" in {ms:.0f} ms" if isinstance(ms, int | float) else ""))


def serve_where(host: InventoryHost) -> list[str]:
    """model_serve.py's words for where `host`'s Triton listens: `--interface NAME --port N` when it binds a named
    interface (the script looks that address up on the host: nothing is computed in a shell), else `--url` as
    cnhost/triton_endpoint.py builds it (IPv6 in brackets, loopback for every address). UsageProblem naming the
    host for a bind address that is no address."""
    data = host.vars
    port = int(data.get("cn_inference_http_port") or 8000)
    if data.get("cn_inference_bind_interface"):
        return ["--interface", str(data["cn_inference_bind_interface"]), "--port", str(port)]
    try:
        return ["--url", triton_endpoint.http_url(str(data.get("cn_inference_bind_address") or ""), port)]
    except ValueError as exc:
        raise UsageProblem(f"host {host.name}: cn_inference_bind_address: {exc}; fix inference.bindAddress") from None


def health_command(host: InventoryHost) -> str:
    """The shell command that prints what `model_serve.py status` and `probe` say about `host`'s Triton, each
    after a MARK line (read-only: status reads the record and Triton, probe sends one inference). Each command is
    an argv list joined with shlex: a value is always one word, whatever it holds."""
    name = str(host.vars.get("cn_model_name") or "circularnet")
    home, program = cnhost.located(SERVE_SCRIPT)
    serve = ["sudo", "-n", *cnhost.argv(program, home)]
    where = serve_where(host)
    status = shlex.join([*serve, "status", *where, "--repository", MODEL_REPOSITORY, "--name", name])
    probe = shlex.join([*serve, "probe", *where, "--name", name, "--timeout", str(PROBE_TIMEOUT_S)])

    def mark(part: str) -> str:
        return shlex.join(["echo", f"{MARK}{part}"])

    # Each output follows its marker line; stderr too, for the reason when no JSON comes (a missing script, sudo).
    return f"{mark('status')}; {status} 2>&1; {mark('probe')}; {probe} 2>&1; {mark('end')}"


def parse_health(host: str, reachable: bool, stdout: str, stderr: str) -> HostHealth:
    """A HostHealth from the output of `health_command`, or one whose error says why there is none."""
    if not reachable:
        return HostHealth(host, error=f"unreachable: {_last_line(stderr) or 'no answer'}")
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in stdout.splitlines():
        if line.startswith(MARK):
            current = sections.setdefault(line.removeprefix(MARK).strip(), [])
        elif current is not None:
            current.append(line)
    parts: dict[str, dict[str, Any]] = {}
    problems = []
    for key in ("status", "probe"):
        lines = sections.get(key, [])
        found = cnhost.answer(lines)
        if found is not None:
            parts[key] = found
            continue
        said = _last_line("\n".join(lines)) or _last_line(stderr) or "nothing"
        hint = " (is the inference layer deployed? `cnctl deploy`)" if "No module named" in said else ""  # no cnhost
        problems.append(f"model_serve.py {key} printed no JSON: {said}{hint}")
    if "status" not in parts:
        return HostHealth(host, error=problems[0])
    return HostHealth(host, parts["status"], parts.get("probe") or {"result": "failed", "message": "; ".join(problems)})


def inventory_hosts(cfg: StackConfig) -> list[InventoryHost]:
    """The stack's fleet hosts with their SSH settings (from its fleet file, for a stack that has one)."""
    return fleet_hosts(cfg, FLEET_GROUPS)


def remote_health(hosts: Sequence[InventoryHost], run: Callable[..., Mapping[str, Any]] | None = None) -> Health:
    """A Health reading the inventory's `hosts` over SSH (cnctl.remote.run_on_hosts unless `run` is given)."""
    by_name = {h.name: h for h in hosts}

    def read(names: Sequence[str]) -> dict[str, HostHealth]:
        runner = run
        if runner is None:
            from cnctl.remote import run_on_hosts  # SSH only where a real fleet is read
            runner = run_on_hosts
        groups: dict[str, list[InventoryHost]] = {}
        for name in names:  # hosts with the same command share one fan-out
            groups.setdefault(health_command(by_name[name]), []).append(by_name[name])
        result: dict[str, HostHealth] = {}
        for command, members in groups.items():
            for name, outcome in runner(members, command, SSH_TIMEOUT_S).items():
                result[name] = parse_health(name, outcome.reachable, outcome.stdout, outcome.stderr)
        return {name: result[name] for name in names}

    return read


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# --- one walk ------------------------------------------------------------------------------------


@dataclass
class BatchRun:
    """What happened to one batch: the engine's result, the gate's verdicts, and why hosts failed."""

    batch: Batch
    seconds: float = 0.0
    engine: DeployResult | None = None
    engine_error: str = ""
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # host -> reason (engine and/or gate)

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class Report:
    """A whole walk: the plan, the batches that ran, and for a stopped one what its rollback did."""

    action: str  # "rollout" | "rollback"
    stack: str
    version: int  # the version the stack pins
    engine: str
    batches: list[Batch]
    runs: list[BatchRun] = field(default_factory=list)
    rollback: BatchRun | None = None  # the automatic rollback of the failed batch
    before: dict[str, int | None] = field(default_factory=dict)  # what each host served before its batch
    skipped: dict[str, str] = field(default_factory=dict)  # hosts left out, and why
    seconds: float = 0.0

    @property
    def failed(self) -> BatchRun | None:
        return next((r for r in self.runs if not r.ok), None)

    @property
    def ok(self) -> bool:
        return self.failed is None


@dataclass
class Walk:
    """Everything one walk needs: the fleet as the engines see it, how to converge and read hosts, and where
    progress goes. `sleep` and `clock` are time's, replaceable in tests."""

    base: Target
    converge: Converge
    health: Health
    say: Callable[[str], None] = print
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    engine: str = "pyinfra"


def batch_target(base: Target, hosts: Sequence[str], action: str) -> Target:
    """The engine target of one batch: only its hosts, the rollout's layers, `cn_model_action=action`."""
    return replace(base, hosts=tuple(hosts), limit=",".join(hosts), layers=LAYERS, overrides={ACTION: action})


def converge(walk: Walk, hosts: Sequence[str], action: str) -> tuple[DeployResult | None, str, dict[str, str]]:
    """One engine run on `hosts`: (its result, the engine's own error, {host: reason} of hosts it failed)."""
    try:
        result = walk.converge(batch_target(walk.base, hosts, action))
    except EngineFailure as exc:  # no result: pyinfra writes none when every host failed; its log may name why
        first = (str(exc).strip().splitlines() or ["failed"])[0].rstrip(":")
        return None, str(exc), {h: f"{walk.engine}: {exc.reasons.get(h) or first}" for h in hosts}
    failures = {h: f"{walk.engine}: {result.reason(h) or 'failed (its log says why; --verbose shows it)'}"
                for h in result.failed_hosts}
    if result.returncode and not failures:  # the engine failed without naming a host: none can be trusted
        failures = dict.fromkeys(hosts, f"{walk.engine} exited {result.returncode}")
    return result, "", failures


def gate(walk: Walk, expected: Mapping[str, int | None]) -> dict[str, Verdict]:
    """The gate's verdict on every host of `expected`; a failing host is read again up to GATE_ATTEMPTS times
    (a passing one never is)."""
    verdicts: dict[str, Verdict] = {}
    pending = list(expected)
    for attempt in range(GATE_ATTEMPTS):
        if attempt:
            walk.sleep(GATE_DELAY_S)
        read = walk.health(pending)
        for host in pending:
            verdicts[host] = judge(read[host], expected[host])
        pending = [h for h in pending if not verdicts[h].ok]
        if not pending:
            break
    return {h: verdicts[h] for h in expected}


def run_batch(walk: Walk, batch: Batch, action: str, expected: Mapping[str, int | None]) -> BatchRun:
    """Converge `batch` with `action`, then gate each of its hosts for its expected version."""
    started = walk.clock()
    walk.say(f"{batch.label}: {', '.join(batch.hosts)}: converging ({walk.engine}, cn_model_action={action})")
    run = BatchRun(batch)
    run.engine, run.engine_error, engine_failures = converge(walk, batch.hosts, action)
    run.verdicts = gate(walk, expected)
    for host in batch.hosts:
        reasons = [engine_failures[host]] if host in engine_failures else []
        if not run.verdicts[host].ok:
            reasons.append(f"health gate: {run.verdicts[host].detail}")
        if reasons:
            run.failures[host] = "; ".join(reasons)
    run.seconds = walk.clock() - started
    for verdict in run.verdicts.values():
        walk.say(f"  {verdict.line()}")
    walk.say(f"{batch.label}: {'ok' if run.ok else 'FAILED'} in {run.seconds:.1f} s")
    return run


def run_rollout(walk: Walk, batches: Sequence[Batch], version: int, stack: str) -> Report:
    """Converge each batch to the pinned `version` in turn; at the first failed batch stop, roll that batch
    back and re-check it. The report says what happened to every batch."""
    report = Report("rollout", stack, version, walk.engine, list(batches))
    started = walk.clock()
    for batch in batches:
        before = walk.health(batch.hosts)  # what each host serves now: where a rollback must bring it back to
        report.before.update({h: before[h].served for h in batch.hosts})
        run = run_batch(walk, batch, PINNED, dict.fromkeys(batch.hosts, version))
        report.runs.append(run)
        if not run.ok:
            report.rollback = roll_back_failed(walk, run, report.before, version)
            break
    report.seconds = walk.clock() - started
    return report


def roll_back_failed(walk: Walk, run: BatchRun, before: Mapping[str, int | None], version: int) -> BatchRun:
    """Return the hosts of a failed batch to what they served before it, and gate them for that.

    Only hosts that now serve the new version and served another one before get an engine run with
    `cn_model_action=previous`; a host whose switch never happened still serves the old version and is
    only checked; a host that served nothing before, or already served `version`, is left as it is."""
    batch = run.batch
    now = {h: v.served for h, v in run.verdicts.items()}
    back = [h for h in batch.hosts if now[h] == version and before[h] not in (None, version)]
    unreadable = [h for h in batch.hosts if now[h] is None and before[h] not in (None, version)]
    to_run = back + unreadable  # what a host we cannot read serves is unknown: roll it back all the same
    check = {h: before[h] for h in batch.hosts if before[h] not in (None, version)}
    rollback = BatchRun(Batch(batch.number, tuple(check), batch.canary))
    if not check:
        walk.say(f"{batch.label}: nothing to roll back to (its hosts served no other version before)")
        return rollback
    started = walk.clock()
    if to_run:
        walk.say(f"{batch.label}: rolling back {', '.join(to_run)} (cn_model_action={PREVIOUS})")
        rollback.engine, rollback.engine_error, engine_failures = converge(walk, to_run, PREVIOUS)
        rollback.failures.update(engine_failures)
    rollback.verdicts = gate(walk, check)
    for host, verdict in rollback.verdicts.items():
        if not verdict.ok:
            rollback.failures[host] = "; ".join(filter(None, [rollback.failures.get(host), f"health gate: {verdict.detail}"]))
        walk.say(f"  {verdict.line()}")
    rollback.seconds = walk.clock() - started
    walk.say(f"{batch.label}: rollback {'ok' if rollback.ok else 'FAILED'} in {rollback.seconds:.1f} s")
    return rollback


# --- rollback --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RollbackSelection:
    """Which hosts a rollback takes back, to which version, and which it leaves alone."""

    targets: dict[str, int]  # host -> the version it returns to (its newest earlier served one)
    skipped: dict[str, str]  # host -> why it is left alone


def select_rollback(health: Mapping[str, HostHealth], version: int) -> RollbackSelection:
    """Hosts serving the pinned `version` go back to the version they served before it; hosts serving
    another version are skipped (nothing of this pin to undo). UsageProblem naming hosts that serve
    `version` with no earlier version to return to, or whose state cannot be read."""
    targets: dict[str, int] = {}
    skipped: dict[str, str] = {}
    stuck, unreadable = [], []
    for host, h in health.items():
        if h.error:
            unreadable.append(f"{host} ({h.error})")
        elif h.served != version:
            skipped[host] = f"serves version {h.served}, not the pinned {version}: left as it is"
        elif (earlier := next((v for v in h.history if v != version), None)) is None:
            stuck.append(host)
        else:
            targets[host] = earlier  # what model_serve.py --previous serves: the newest other one served before
    if unreadable:
        raise NotStarted(f"cannot tell what {'; '.join(unreadable)} serve(s): nothing was changed; bring them "
                         "back, or leave them out with --limit")
    if stuck:
        raise UsageProblem(f"{', '.join(stuck)} serve(s) version {version} with no earlier version to return to; "
                           "nothing was changed; leave them out with --limit")
    return RollbackSelection(targets, skipped)


def run_rollback(walk: Walk, batches: Sequence[Batch], selection: RollbackSelection, version: int, stack: str) -> Report:
    """Take each batch back to what its hosts served before `version`, gating each; stop at the first
    failed batch (a failed rollback is not undone: the report names the hosts and why)."""
    report = Report("rollback", stack, version, walk.engine, list(batches), skipped=dict(selection.skipped))
    started = walk.clock()
    for batch in batches:
        run = run_batch(walk, batch, PREVIOUS, {h: selection.targets[h] for h in batch.hosts})
        report.runs.append(run)
        if not run.ok:
            break
    report.seconds = walk.clock() - started
    return report


# --- what the user reads at the end ---------------------------------------------------------------------


def repin_hint(stack: str) -> str:
    return (f"edit circularnet:model (version, url) in the stack file of {stack} to the version to keep and "
            f"run `cnctl model pin --stack {stack}`")


def rollback_warning(stack: str, version: int) -> str:
    """Why a rollback does not stick by itself."""
    return (f"stack {stack} still pins model version {version}: the next `cnctl deploy` or `cnctl model rollout` "
            f"serves it again unless the stack is re-pinned ({repin_hint(stack)})")


def summary(report: Report) -> str:
    """The end of a walk in a few lines: ok, or which hosts failed and why, what was rolled back, what
    stays on the new version and how to take it back, what was never touched."""
    done = [r for r in report.runs if r.ok]
    if report.ok:
        hosts = sum(len(r.batch.hosts) for r in report.runs)
        what = "serve version" if report.action == "rollout" else "returned from version"
        line = f"{report.action} ok: {hosts} host(s) {what} {report.version} ({report.seconds:.1f} s, {len(report.runs)} batch(es))"
        skipped = [f"  {h}: {why}" for h, why in report.skipped.items()]
        return "\n".join([line, *(["left alone:", *skipped] if skipped else [])])
    failed = report.failed
    assert failed is not None
    head = f"{report.action} of version {report.version} stopped at {failed.batch.label} ({', '.join(failed.batch.hosts)}):"
    lines = [head]
    lines += [f"  {host}: {why}" for host, why in failed.failures.items()]
    if report.action == "rollout":
        lines += _rollback_lines(report, failed)
        if done:
            names = ",".join(h for r in done for h in r.batch.hosts)
            lines.append(f"{', '.join(r.batch.label for r in done)} ({names}) stay on version {report.version}: "
                         f"take them back with `cnctl model rollback --stack {report.stack} --limit {names}`, "
                         f"and re-pin the stack ({repin_hint(report.stack)})")
    else:
        lines.append(f"the failed hosts were not rolled forward again; earlier batches were rolled back "
                     f"({', '.join(h for r in done for h in r.batch.hosts) or 'none'})")
    untouched = [b for b in report.batches if b.number > failed.batch.number]
    if untouched:
        lines.append(f"not touched: {', '.join(h for b in untouched for h in b.hosts)}")
    return "\n".join(lines)


def _rollback_lines(report: Report, failed: BatchRun) -> list[str]:
    rollback = report.rollback
    if rollback is None or not rollback.verdicts:
        return [f"{failed.batch.label} not rolled back: its hosts served no other version before"]
    lines = [f"{failed.batch.label} rolled back{'' if rollback.ok else ' with FAILURES'}:"]
    for host, verdict in rollback.verdicts.items():
        state = (f"serves version {verdict.expected} again ({verdict.detail})" if verdict.ok
                 else f"NOT healthy on version {verdict.expected}: {rollback.failures.get(host, verdict.detail)}")
        lines.append(f"  {host}: {state}")
    left = [h for h in failed.batch.hosts if h not in rollback.verdicts]
    if left:
        lines.append(f"  left as it is (served no other version before): {', '.join(left)}")
    return lines
