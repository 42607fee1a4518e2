"""`cnctl plan`: the offline plan of a stack's cloud layer, with guardrail verdicts. No credentials."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from cnctl.cli.errors import EXIT_VIOLATIONS, UsageProblem, err, report_violations, say_error, user_errors
from cnctl.cli.options import stack_option
from cnctl.console import console

if TYPE_CHECKING:
    from cnctl.plan import Plan
    from cnctl.plan.diff import PlanDiff
    from cnctl.plan.guardrails import Violation
    from cnctl.plan.hostdiff import HostPreview

out = console()


def plan(
    stack: str = stack_option(),
    json_: bool = typer.Option(False, "--json", help="print the plan as JSON (resources, violations, outputs)"),
    base: Path | None = typer.Option(
        None, "--base", help="the plan this one replaces (`cnctl plan --json`, e.g. of main): flag what it replaces"
    ),
    allow_replace: list[str] = typer.Option(
        [], "--allow-replace", help="a resource name that may be replaced or deleted in production (repeatable; `all`)"
    ),
) -> None:
    """Plan a stack's Google Cloud resources offline and check them against the guardrails.

    Runs the real Pulumi program on Pulumi's mock engine. Exit 2: the stack file is wrong;
    exit 1: a guardrail failed (each failure names the rule and the resource), or, with `--base`, a
    production VM, bucket, dataset or table would be replaced or deleted, or a transfer replaced, without
    `--allow-replace`.
    """
    # Imported here, not at module level: every `cnctl` command imports this module, and only
    # this one needs the Pulumi SDK (the Google provider SDK then loads with the program).
    from cnctl.plan import plan_stack

    with user_errors():
        result = plan_stack(stack)
    if json_:
        sys.stdout.write(result.render_json())
    else:
        _show(result)
    if result.violations:
        report_violations(result.violations)
        raise typer.Exit(EXIT_VIOLATIONS)
    if base is not None:
        from cnctl.plan.diff import diff_plans

        with user_errors():
            base_plan = _read_plan(base)
        _refuse_unallowed_replacements(diff_plans(base_plan, result.to_json()), allow_replace)


def _refuse_unallowed_replacements(diff: PlanDiff, allowed: list[str]) -> None:
    """Exit 1 naming each production resource that would be replaced or deleted without an override."""
    for key in diff.replaced:
        procedure = f"; {diff.procedures[key]}" if key in diff.procedures else ""
        err.print(f"replace: {key} (forced by {', '.join(diff.replaced[key])}){procedure}", markup=False)
    refused = diff.refused(allowed)
    for key in refused:
        loss = "and its data with it" if key in diff.destructive else "with the side effect above"
        say_error(
            "refused:",
            f" {key} would be replaced or deleted in production stack {diff.stack}, {loss};"
            f" if intended, pass --allow-replace {key.split(' ', 1)[1]} (docs/cloud.md, day two)",
        )
    if refused:
        raise typer.Exit(EXIT_VIOLATIONS)


# --- the human view -----------------------------------------------------------------------------


def _show(result: Plan) -> None:
    if result.without_cloud is not None:
        out.print(f"stack {result.stack}: 0 cloud resources", markup=False)
        out.print(result.without_cloud, markup=False)
        return
    resources = Table(title=f"cloud resources of stack {result.stack} ({len(result.resources)})", title_justify="left")
    resources.add_column("resource", overflow="fold")
    resources.add_column("key properties", overflow="fold")
    for r in result.resources:
        resources.add_row(f"{r.name}\n[dim]{_short_type(r.type)}[/]", _describe(r.type, r.inputs))
    out.print(resources)

    verdicts = Table(title="guardrails", title_justify="left")
    verdicts.add_column("rule", overflow="fold")
    verdicts.add_column("verdict", overflow="fold")
    verdicts.add_column("checks", overflow="fold")
    for rule, failed in result.verdicts():
        verdict = "[green]pass[/]" if not failed else f"[bold red]FAIL[/] ({', '.join(v.resource for v in failed)})"
        verdicts.add_row(rule.id, verdict, rule.description)
    out.print(verdicts)

    outputs = Table(title="stack outputs", title_justify="left")
    outputs.add_column("output", overflow="fold")
    outputs.add_column("value", overflow="fold")
    for key, value in result.outputs.items():
        outputs.add_row(key, value if isinstance(value, str) else json.dumps(value))
    out.print(outputs)


def _short_type(token: str) -> str:
    """`gcp:compute/instance:Instance` -> `compute.Instance`."""
    package, module, kind = (token.split(":") + ["", ""])[:3]
    return f"{module.split('/')[0]}.{kind}" if package == "gcp" else token


def _describe(token: str, inputs: Mapping[str, Any]) -> str:
    describe = _DESCRIBERS.get(token.split(":")[-1])
    return describe(inputs) if describe else ""


def _instance(i: Mapping[str, Any]) -> str:
    gpus = i.get("guestAccelerators") or []
    gpu = ", ".join(f"{g['count']:g}× {g['type']}" for g in gpus) or "GPU in the machine type"
    sched = i.get("scheduling") or {}
    account = (i.get("serviceAccount") or {}).get("email")
    nics = i.get("networkInterfaces") or []
    external = "external IP" if any(n.get("accessConfigs") for n in nics) else "no external IP"
    protection = "deletion protection on" if i.get("deletionProtection") else "deletion protection off"
    return (
        f"{i.get('machineType')} + {gpu} · {i.get('zone')} · {sched.get('provisioningModel', 'STANDARD')}, "
        f"maintenance {sched.get('onHostMaintenance')} · {external} · as {account} · {protection}"
    )


def _n(value: Any) -> str:
    """An engine number as written (the engine's numbers are doubles: 8000, not 8000.0)."""
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def _template(i: Mapping[str, Any]) -> str:
    gpus = i.get("guestAccelerators") or []
    gpu = ", ".join(f"{g['count']:g}× {g['type']}" for g in gpus) or "GPU in the machine type"
    nics = i.get("networkInterfaces") or []
    external = "external IP" if any(n.get("accessConfigs") for n in nics) else "no external IP"
    sched = (i.get("scheduling") or {}).get("provisioningModel", "STANDARD")
    account = (i.get("serviceAccount") or {}).get("email")
    return f"{i.get('machineType')} + {gpu} · {sched} · {external} · as {account}"


def _group(i: Mapping[str, Any]) -> str:
    healing = i.get("autoHealingPolicies") or {}
    update = i.get("updatePolicy") or {}
    return (
        f"regional over {', '.join(i.get('distributionPolicyZones') or [])} · autohealing on "
        f"{str(healing.get('healthCheck', 'nothing')).rsplit('/', 1)[-1]} after {_n(healing.get('initialDelaySec', 0))} s · "
        f"updates: maxUnavailable {_n(update.get('maxUnavailableFixed'))}, maxSurge {_n(update.get('maxSurgeFixed'))}"
    )


def _autoscaler(i: Mapping[str, Any]) -> str:
    policy = i.get("autoscalingPolicy") or {}
    scaled = "; ".join(
        f"one per {_n(m.get('singleInstanceAssignment', m.get('target')))} of {m.get('name', '').rsplit('/', 1)[-1]}"
        f" ({m.get('filter', '').rsplit('=', 1)[-1].strip()})"
        for m in policy.get("metrics") or []
    )
    return f"{_n(policy.get('minReplicas'))}–{_n(policy.get('maxReplicas'))} workers · {scaled or 'CPU'}"


def _health_check(i: Mapping[str, Any]) -> str:
    http = i.get("httpHealthCheck") or {}
    return f"HTTP :{_n(http.get('port'))}{http.get('requestPath', '/')} every {_n(i.get('checkIntervalSec'))} s"


def _subscription(i: Mapping[str, Any]) -> str:
    dead = i.get("deadLetterPolicy")
    parts = [f"of {str(i.get('topic')).rsplit('/', 1)[-1]}", f"ack {_n(i.get('ackDeadlineSeconds'))} s"]
    if dead:
        parts.append(f"dead letter after {_n(dead.get('maxDeliveryAttempts'))} → {str(dead.get('deadLetterTopic')).rsplit('/', 1)[-1]}")
    return " · ".join(parts)


def _firewall(i: Mapping[str, Any]) -> str:
    allows = "; ".join(f"{a['protocol']}:{','.join(a.get('ports', []))}" for a in i.get("allows", []))
    sources, tags = ", ".join(i.get("sourceRanges", [])), ", ".join(i.get("targetTags", []))
    return f"{i.get('direction', 'INGRESS')} {allows} from {sources} to tag {tags}"


def _bucket(i: Mapping[str, Any]) -> str:
    parts = [str(i.get("location")), f"public access {i.get('publicAccessPrevention')}"]
    parts.append("uniform access" if i.get("uniformBucketLevelAccess") else "ACLs")
    if (i.get("versioning") or {}).get("enabled"):
        parts.append("versioned")
    for rule in i.get("lifecycleRules") or []:
        parts.append(f"{rule['action']['type'].lower()} after {rule['condition']['age']:g} d")
    if i.get("encryption"):
        parts.append("CMEK")
    parts.append("force destroy" if i.get("forceDestroy") else "kept on destroy")
    return " · ".join(parts)


def _table(i: Mapping[str, Any]) -> str:
    fields = json.loads(i.get("schema", "[]"))
    required = all(f.get("mode") == "REQUIRED" for f in fields)
    partition = (i.get("timePartitioning") or {}).get("type", "none")
    protection = "on" if i.get("deletionProtection") else "off"
    modes = " all REQUIRED" if required else ""
    return f"{len(fields)} fields{modes} · partitioned by {partition} · deletion protection {protection}"


def _grant(scope_key: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda i: f"{i.get('role')} → {i.get('member')} on {i.get(scope_key)}"


_DESCRIBERS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "Instance": _instance,
    "Firewall": _firewall,
    "Bucket": _bucket,
    "Table": _table,
    "Dataset": lambda i: f"{i.get('datasetId')} in {i.get('location')}",
    "BucketIAMMember": _grant("bucket"),
    "DatasetIamMember": _grant("datasetId"),
    "DatasetAccess": lambda i: f"{i.get('role')} → {i.get('userByEmail') or i.get('iamMember')} on {i.get('datasetId')}",
    "IAMCustomRole": lambda i: f"{i.get('roleId')}: {', '.join(i.get('permissions') or [])}",
    "IAMMember": _grant("project"),
    "Account": lambda i: f"{i.get('accountId')}: {i.get('displayName')}",
    "Service": lambda i: str(i.get("service")),
    "Network": lambda i: f"custom subnets (auto {str(i.get('autoCreateSubnetworks')).lower()})",
    "Subnetwork": lambda i: (
        f"{i.get('ipCidrRange')} in {i.get('region')}, private Google access "
        + str(i.get("privateIpGoogleAccess")).lower()
    ),
    "Router": lambda i: f"in {i.get('region')}",
    "RouterNat": lambda i: f"egress for the subnet via {i.get('router')}",
    "gcp": lambda i: f"project {i.get('project')}, region {i.get('region')}",
    # compute.mode group
    "InstanceTemplate": _template,
    "RegionInstanceGroupManager": _group,
    "RegionAutoscaler": _autoscaler,
    "HealthCheck": _health_check,
    "Topic": lambda i: str(i.get("name")),
    "Subscription": _subscription,
    "Notification": lambda i: f"{', '.join(i.get('eventTypes') or [])} of {i.get('bucket')} → {str(i.get('topic')).rsplit('/', 1)[-1]}",
    "TopicIAMMember": _grant("topic"),
    "SubscriptionIAMMember": _grant("subscription"),
}


def plan_diff(
    base: Path = typer.Argument(..., help="the base plan (`cnctl plan --json` of the target branch); may be missing"),
    head: Path = typer.Argument(..., help="the head plan (`cnctl plan --json` of the change)"),
    markdown: bool = typer.Option(False, "--markdown", help="print the pull-request comment (one per stack)"),
    full_plan_url: str | None = typer.Option(None, "--full-plan-url", help="where the untrimmed plans are"),
    allow_replace: list[str] = typer.Option(
        [], "--allow-replace", help="a resource name that may be replaced or deleted in production (repeatable; `all`)"
    ),
    base_tree: str | None = typer.Option(
        None, "--base-tree", help="the base revision (a checkout directory or a git ref): preview its hosts' pins too"
    ),
    head_tree: str = typer.Option(".", "--head-tree", help="the head revision (directory or git ref) for --base-tree"),
    repo: Path = typer.Option(Path("."), "--repo", help="the git repository a ref in --base-tree/--head-tree names"),
) -> None:
    """What a change does to a stack: the difference of two offline plans, and with --base-tree the host pins
    (driver branch, CUDA, JetPack, Triton image, model) that move, marking those that need a reboot.

    A base that does not exist (the stack is new, or the base branch predates cnctl) counts as empty.
    Exit 1 when the head plan has guardrail failures, as `cnctl plan` does, or when a production VM,
    bucket, dataset or table would be replaced or deleted, or a replacement has side effects (a transfer
    that would load every object again), and `--allow-replace` does not name it.
    """
    from cnctl.plan.diff import diff_plans, render_markdown

    with user_errors():
        head_plan = _read_plan(head)
        base_plan = _read_plan(base) if base.exists() and base.stat().st_size else None
    diff = diff_plans(base_plan, head_plan)
    with user_errors():
        pins = _pin_changes(diff.stack, base_tree, head_tree, repo) if base_tree is not None else None
    if markdown:
        from cnctl.plan import hostdiff
        from cnctl.plan.diff import COMMENT_LIMIT

        section = "" if pins is None else (f"\n{pins}\n" if isinstance(pins, str) else hostdiff.render_markdown(pins))
        sys.stdout.write(render_markdown(diff, limit=COMMENT_LIMIT - len(section), full_plan_url=full_plan_url) + section)
    else:
        # Plan files and resource names are data: printed with markup off, never read as rich markup.
        out.print(f"stack {diff.stack}: {len(diff.added)} to add, {len(diff.changed)} to change, "
                  f"{len(diff.removed)} to delete, {diff.unchanged} unchanged", markup=False)
        for key in diff.added:
            out.print(f"  + {key}", style="green", markup=False)
        for key in diff.removed:
            out.print(f"  - {key}", style="red", markup=False)
        for key, changes in diff.changed.items():
            forced = diff.replaced.get(key)
            if forced:
                out.print(f"  ± {key} (replaced: {', '.join(forced)})", style="magenta", markup=False)
            else:
                out.print(f"  ~ {key}", style="yellow", markup=False)
            for change in changes:
                out.print(f"      {change.path}: {json.dumps(change.before)} → {json.dumps(change.after)}",
                          soft_wrap=True, markup=False)
            if key in diff.procedures:
                out.print(f"      ⚠ {diff.procedures[key]}", style="magenta", soft_wrap=True, markup=False)
        _show_pins(pins)
    if diff.violations:
        if not markdown:
            report_violations(_violations(diff.violations))
        raise typer.Exit(EXIT_VIOLATIONS)
    _refuse_unallowed_replacements(diff, allow_replace)


def _pin_changes(stack: str, base_tree: str, head_tree: str, repo: Path) -> HostPreview | str:
    """The host pins and files that change between two revisions; a base that cannot be read is a note."""
    from cnctl.plan import hostdiff

    try:
        head_rev = hostdiff.read_revision(head_tree, stack, repo, missing_ok=False)
    except hostdiff.RevisionProblem as exc:
        raise UsageProblem(str(exc)) from None
    try:
        base_rev = hostdiff.read_revision(base_tree, stack, repo)
    except hostdiff.RevisionProblem as exc:
        return f"host pins: not compared; {exc}".splitlines()[0]
    return hostdiff.preview(base_rev, head_rev)


def _show_pins(pins: HostPreview | str | None) -> None:
    from cnctl.plan import hostdiff

    if pins is None:
        return
    lines = [pins] if isinstance(pins, str) else hostdiff.render_text(pins)
    for line in lines:
        out.print(line, markup=False, soft_wrap=True)


def _violations(rows: list[Mapping[str, str]]) -> list[Violation]:
    """The head plan's guardrail failures (JSON rows) as the report prints them."""
    from cnctl.plan.guardrails import Violation

    return [Violation(str(r.get("rule")), str(r.get("resource")), str(r.get("message"))) for r in rows]


def _read_plan(path: Path) -> dict[str, Any]:
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageProblem(f"{path}: not a plan from `cnctl plan --json` ({exc})") from None
    if not isinstance(plan, dict) or "resources" not in plan:
        raise UsageProblem(f"{path}: not a plan from `cnctl plan --json` (no `resources`)")
    return plan
