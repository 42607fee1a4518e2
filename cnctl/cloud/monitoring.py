"""Cloud Monitoring for a stack: alert policies on what the cloud side does, notification channels, a dashboard.

The conditions are data (`conditions`: what to watch, in Cloud Monitoring's filter language, and when it is
wrong), so tests read them without a Pulumi engine; `Monitoring` declares one alert policy per condition, the
stack's notification channels, the log-based metric one of them reads, and one dashboard of the same metrics.
Everything here reads Google's own metrics and logs, and what each VM's Ops Agent sends (cnctl/cloud/ops_agent.py):
no endpoint is opened, nothing is probed from outside (no uptime check on a private VM; guardrail
`no-uptime-checks-from-the-internet`).

| condition          | metric (resource)                                                    | wrong when                    |
|--------------------|----------------------------------------------------------------------|-------------------------------|
| transfer-failed    | bigquerydatatransfer…/completed_runs, FAILED (bigquery_dts_config)   | any run failed in 30 min      |
| backlog-age        | pubsub…/oldest_unacked_message_age (the work subscription)           | over monitoring.backlogAge…   |
| dead-letters       | pubsub…/num_undelivered_messages (the dead-letter subscription)      | any message, for 5 min        |
| workers-below-min  | compute…/instance_group/size (the worker group)                      | under group.min for 15 min    |
| workers-recreated  | logging…/user/cn-<env>-worker-recreations (gce_instance)             | over 2 in an hour             |
| host-unhealthy     | prometheus…/cnctl_health_healthy/gauge (prometheus_target, job)      | 0 on a VM for 10 min          |

The first is in every stack with a cloud layer; the queue's two and workers-recreated with `compute.mode: group`;
workers-below-min with a group whose `min` is above 0; host-unhealthy wherever the stack has cloud VMs.

Group size against its target: `instance_group/size` counts the VMs the group holds, whatever their state (a worker
being recreated still counts), so workers-below-min fires when the group cannot *create* workers up to its minimum
(a GPU stock-out in every zone, a quota), the one target a stack states. The autoscaler's own target above the
minimum is not a Cloud Monitoring metric; a group that stays short of it shows as backlog-age (the images wait).

Worker restarts: a worker that keeps failing is one autohealing keeps recreating (Triton not ready for 30 s after the
initial delay), so workers-recreated counts Compute Engine's own record of each recreation, the System Event
audit log entry `compute.instances.repair.recreateInstance` of the group's instances (`<base instance name>-*`),
through a log-based metric. Those entries are written by Compute Engine whatever runs on the VM, always, at no
charge, and cannot be turned off; the alternative, the worker unit's journal lines as the Ops Agent ships them, would
go silent exactly when a VM is too broken to ship logs, or when its agent failed to install (which the startup
script allows), and would depend on systemd's wording. A preempted Spot worker is recreated the same way and counts
too (hence more than two an hour). A worker unit that restarts while Triton stays ready is not recreated: the health
report says so (host-unhealthy), and the backlog grows (backlog-age).

Notification channels: one e-mail channel per `monitoring.emails` address. No webhook: its token would have to be a
Pulumi secret the offline plan cannot read, and a URL carrying it would sit in the stack file in plain text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
from pulumi_gcp import logging, monitoring

from cnctl.cloud import ops_agent
from cnctl.cloud.base import Component, Naming
from cnctl.config.schema import Monitoring as MonitoringConfig

TRANSFER_RUNS = "bigquerydatatransfer.googleapis.com/transfer_config/completed_runs"
BACKLOG_AGE = "pubsub.googleapis.com/subscription/oldest_unacked_message_age"
UNDELIVERED = "pubsub.googleapis.com/subscription/num_undelivered_messages"
GROUP_SIZE = "compute.googleapis.com/instance_group/size"
USER_METRIC = "logging.googleapis.com/user"  # a log-based metric's type: USER_METRIC/<its name>
# What Compute Engine writes when a managed instance group recreates a VM to repair it (autohealing, a preempted or
# failed VM): a System Event audit log entry on the VM (its resourceName ends /instances/<name>).
REPAIR_METHOD = "compute.instances.repair.recreateInstance"


def recreations_filter(base_instance_name: str) -> str:
    """The log-based metric's filter: repairs of the group's instances (`<base_instance_name>-xxxx`)."""
    return (f'resource.type="gce_instance" AND protoPayload.methodName="{REPAIR_METHOD}" AND '
            f'protoPayload.resourceName:"/instances/{base_instance_name}-"')


@dataclass(frozen=True)
class Condition:
    """One alert policy's condition: a threshold on a filtered metric, and what to do when it fires. `filter` is a
    template: `{configs}`, `{subscription}`, `{dead_letters}` and `{group}` are the watched resources' names
    (`Monitoring`'s `names`), known once they exist."""

    key: str
    title: str
    filter: str
    comparison: str  # COMPARISON_GT or COMPARISON_LT
    threshold: float
    duration_s: int
    aligner: str  # how each series is reduced per period
    period_s: int
    severity: str  # CRITICAL, ERROR or WARNING
    what_to_do: str
    reducer: str = ""  # how the series are combined (REDUCE_SUM: one series); "": each series on its own


@dataclass(frozen=True)
class Watched:
    """What the stack has to watch: its transfers always; a queue and a worker group in `compute.mode: group`; the
    health of its cloud VMs (fixed or workers) where it has any."""

    queue: bool = False
    group_min: int | None = None  # the worker group's minimum; None: no group
    group_max: int | None = None
    hosts: bool = False  # the stack has cloud VMs (their Ops Agent sends the health report's metrics)


def one_of(values: Sequence[str]) -> str:
    """A filter's `one_of("a", "b")`: the transfer configs' ids, sorted (a set: no order to diff on)."""
    return "one_of(" + ", ".join(json.dumps(v) for v in sorted(values)) + ")"


def conditions(watched: Watched, config: MonitoringConfig) -> list[Condition]:
    """The stack's conditions, in the table's order."""
    found = [
        Condition(
            "transfer-failed", "A BigQuery load of the results failed",
            f'resource.type = "bigquery_dts_config" AND metric.type = "{TRANSFER_RUNS}" AND '
            'metric.labels.completion_state = "FAILED" AND resource.labels.config_id = {configs}',
            "COMPARISON_GT", 0, 0, "ALIGN_SUM", 1800, "ERROR",
            "The results stay in the results bucket and the next run loads them. See the transfer's run history "
            "(`bq ls --transfer_run` or the BigQuery console) for the reason: usually a permission or a schema.",
        ),
    ]
    if watched.queue:
        found.append(Condition(
            "backlog-age", "Images wait in the queue too long",
            'resource.type = "pubsub_subscription" AND resource.labels.subscription_id = "{subscription}" '
            f'AND metric.type = "{BACKLOG_AGE}"',
            "COMPARISON_GT", config.backlog_age_seconds, 300, "ALIGN_MAX", 60, "WARNING",
            "The workers fall behind the belt: the group is at its maximum (raise compute.group.max), workers fail "
            "their batches (see their journal: `journalctl -u circularnet-worker`), or none can start (GPU stock-out).",
        ))
        found.append(Condition(
            "dead-letters", "Images were set aside after repeated failures",
            'resource.type = "pubsub_subscription" AND resource.labels.subscription_id = "{dead_letters}" '
            f'AND metric.type = "{UNDELIVERED}"',
            "COMPARISON_GT", 0, 300, "ALIGN_MAX", 60, "WARNING",
            "Each dead letter names an image no worker could run (compute.group.maxDeliveryAttempts times). "
            "Pull them from the dead-letter subscription to see which, fix the cause, then publish them again.",
        ))
    if watched.group_min:
        found.append(Condition(
            "workers-below-min", "Fewer workers run than the group's minimum",
            'resource.type = "instance_group" AND resource.labels.instance_group_name = "{group}" '
            f'AND metric.type = "{GROUP_SIZE}"',
            "COMPARISON_LT", watched.group_min, 900, "ALIGN_MEAN", 60, "CRITICAL",
            "The group holds fewer VMs than its minimum: it cannot create them. See its errors "
            "(`gcloud compute instance-groups managed list-errors`): a zone out of GPUs "
            "(ZONE_RESOURCE_POOL_EXHAUSTED) needs another zone in `gcp.zones`, QUOTA_EXCEEDED a quota increase. "
            "Workers that exist but keep failing show as workers-recreated.",
        ))
    if watched.group_min is not None:
        found.append(Condition(
            "workers-recreated", "Autohealing keeps recreating workers",
            f'resource.type = "gce_instance" AND metric.type = "{USER_METRIC}/{{recreations}}"',
            "COMPARISON_GT", 2, 0, "ALIGN_SUM", 3600, "ERROR",
            "More than two workers were recreated within an hour: Triton on them was not ready for 30 s after the "
            "initial delay, or Spot workers were preempted. Which and why: `gcloud logging read "
            f"'protoPayload.methodName=\"{REPAIR_METHOD}\"' --freshness=2h` (each entry's status message gives "
            "the reason). A worker that is never ready in time needs a longer `compute.group.initialDelaySeconds` "
            "(docs/cloud.md, First real apply); one whose Triton fails, its journal "
            "(`journalctl -u circularnet-triton`) and bootstrap record (`/etc/circularnet/`).",
            reducer="REDUCE_SUM",
        ))
    if watched.hosts:
        found.append(Condition(
            "host-unhealthy", "A cloud VM's health report has problems",
            f'resource.type = "{ops_agent.PROMETHEUS_RESOURCE}" AND resource.labels.job = "{{node_job}}" '
            f'AND metric.type = "{ops_agent.HEALTHY}"',
            "COMPARISON_LT", 1, 600, "ALIGN_MAX", 300, "ERROR",
            "A VM's health report (the verify layer's, every 5 minutes) has listed problems for 10 minutes; the "
            "alert's `namespace` label is the VM (`<instance id>/<name>`). `cnctl status` shows them for fixed VMs; "
            "on any VM, `sudo cat /var/lib/circularnet/health.json` or `journalctl -u circularnet-health` "
            "over IAP SSH. Each problem names its fix (Triton down, model not ready, disk filling, uploads failing).",
        ))
    return found


@dataclass(frozen=True)
class Chart:
    """One tile of the dashboard: a metric's series, reduced per `period_s`; `group_by` sums them by those labels;
    `thresholds` are (label, value) lines drawn across it."""

    title: str
    filter: str
    aligner: str
    group_by: tuple[str, ...] = ()
    period_s: int = 60
    thresholds: tuple[tuple[str, float], ...] = ()


def charts(watched: Watched, names: Mapping[str, str]) -> list[Chart]:
    """What the dashboard shows, in order: what the policies watch, and the VMs' GPUs."""

    def on(metric: str, label: str, value: str) -> str:
        return f'metric.type = "{metric}" AND resource.labels.{label} = "{value}"'

    found = [Chart("BigQuery loads by result", f'metric.type = "{TRANSFER_RUNS}" AND resource.type = "bigquery_dts_config"',
                   "ALIGN_SUM", ("metric.labels.completion_state",))]
    if watched.queue:
        found += [
            Chart("Oldest image waiting (s)", on(BACKLOG_AGE, "subscription_id", names["subscription"]), "ALIGN_MAX"),
            Chart("Images waiting", on(UNDELIVERED, "subscription_id", names["subscription"]), "ALIGN_MAX"),
            Chart("Dead letters", on(UNDELIVERED, "subscription_id", names["dead_letters"]), "ALIGN_MAX"),
        ]
    if watched.group_min is not None:
        bounds = [(name, value) for name, value in (("minimum", watched.group_min), ("maximum", watched.group_max))
                  if value]  # the size against what the stack allows (a minimum of 0 draws nothing)
        found += [
            Chart("Workers", on(GROUP_SIZE, "instance_group_name", names["group"]), "ALIGN_MEAN",
                  thresholds=tuple(bounds)),
            Chart("Workers recreated by autohealing (per hour)",
                  f'metric.type = "{USER_METRIC}/{names["recreations"]}" AND resource.type = "gce_instance"',
                  "ALIGN_SUM", ("resource.label.zone",), period_s=3600),
        ]
    if watched.hosts:
        found += [
            Chart("VMs healthy (1: no problem in the health report)",
                  f'metric.type = "{ops_agent.HEALTHY}" AND resource.type = "{ops_agent.PROMETHEUS_RESOURCE}" '
                  f'AND resource.labels.job = "{names["node_job"]}"', "ALIGN_MIN"),
            Chart("GPU utilization (%, NVML via the Ops Agent)",
                  f'metric.type = "{ops_agent.GPU_UTILIZATION}" AND resource.type = "gce_instance" '
                  f'AND metadata.user_labels."environment" = "{names["environment"]}" '
                  'AND metadata.user_labels."managed-by" = "cnctl"', "ALIGN_MEAN"),
        ]
    return found


def dashboard(watched: Watched, names: Mapping[str, str], title: str) -> str:
    """The dashboard's JSON: one tile per chart, two columns."""
    tiles = []
    for i, chart in enumerate(charts(watched, names)):
        aggregation: dict[str, object] = {"alignmentPeriod": f"{chart.period_s}s", "perSeriesAligner": chart.aligner}
        if chart.group_by:
            aggregation.update(crossSeriesReducer="REDUCE_SUM", groupByFields=list(chart.group_by))
        xy: dict[str, object] = {"dataSets": [{
            "plotType": "LINE",
            "timeSeriesQuery": {"timeSeriesFilter": {"filter": chart.filter, "aggregation": aggregation}},
        }]}
        if chart.thresholds:
            xy["thresholds"] = [{"label": label, "value": value} for label, value in chart.thresholds]
        tiles.append({"xPos": 6 * (i % 2), "yPos": 4 * (i // 2), "width": 6, "height": 4,
                      "widget": {"title": chart.title, "xyChart": xy}})
    return json.dumps({"displayName": title, "mosaicLayout": {"columns": 12, "tiles": tiles}}, sort_keys=True)


class Monitoring(Component):
    """Ensures the stack's alert policies, their notification channels (e-mail), the log-based metric of the worker
    group's recreations, and its dashboard.

    `names`: the watched resources' names as the conditions' templates use them (`configs`: the transfer
    configs' ids as a `one_of`; `node_job`, the VMs' scrape job, and `environment` always; `subscription`,
    `dead_letters`, `group` and `workers` (its base instance name) with a group); they may be Outputs.
    `recreations`, the log-based metric's name, is added here.
    """

    def __init__(
        self,
        naming: Naming,
        config: MonitoringConfig,
        watched: Watched,
        names: Mapping[str, pulumi.Input[str]],
        opts: pulumi.ResourceOptions | None = None,
        requires: Sequence[pulumi.Resource] = (),
    ) -> None:
        super().__init__("Monitoring", naming("monitoring"), opts, requires)
        self.channels = [
            monitoring.NotificationChannel(
                naming("alerts", str(i)),
                monitoring.NotificationChannelArgs(
                    type="email", display_name=f"{naming('alerts')} {address}", labels={"email_address": address},
                    user_labels=dict(naming.labels),
                ),
                opts=self.child(),
            )
            for i, address in enumerate(config.emails)
        ]
        watching = dict(names)
        self.recreations: logging.Metric | None = None
        if watched.group_min is not None:
            self.recreations = logging.Metric(
                naming("worker-recreations"),
                logging.MetricArgs(
                    name=naming("worker-recreations"),
                    description="Workers of the group recreated by Compute Engine to repair them (autohealing, "
                                "preemption): its System Event audit log entries",
                    filter=pulumi.Output.from_input(names["workers"]).apply(recreations_filter),
                    metric_descriptor=logging.MetricMetricDescriptorArgs(
                        metric_kind="DELTA", value_type="INT64", unit="1",
                        display_name=f"{naming('worker-recreations')}: workers recreated"),
                ),
                opts=self.child(),
            )
            watching["recreations"] = self.recreations.name
        resolved: pulumi.Output[dict[str, str]] = pulumi.Output.all(**watching)

        def render(template: str) -> pulumi.Output[str]:
            return resolved.apply(lambda found: template.format(**found))

        self.policies = {
            c.key: monitoring.AlertPolicy(
                naming("alert", c.key),
                monitoring.AlertPolicyArgs(
                    display_name=f"{naming('alert', c.key)}: {c.title}",
                    combiner="OR",
                    conditions=[monitoring.AlertPolicyConditionArgs(
                        display_name=c.title,
                        condition_threshold=monitoring.AlertPolicyConditionConditionThresholdArgs(
                            filter=render(c.filter),
                            comparison=c.comparison,
                            threshold_value=c.threshold,
                            duration=f"{c.duration_s}s",
                            aggregations=[monitoring.AlertPolicyConditionConditionThresholdAggregationArgs(
                                alignment_period=f"{c.period_s}s", per_series_aligner=c.aligner,
                                cross_series_reducer=c.reducer or None,
                            )],
                        ),
                    )],
                    severity=c.severity,
                    documentation=monitoring.AlertPolicyDocumentationArgs(content=c.what_to_do, mime_type="text/markdown"),
                    notification_channels=[channel.id for channel in self.channels],
                    user_labels=dict(naming.labels),
                ),
                opts=self.child(),
            )
            for c in conditions(watched, config)
        }
        self.dashboard = monitoring.Dashboard(
            naming("dashboard"),
            monitoring.DashboardArgs(dashboard_json=resolved.apply(lambda found: dashboard(watched, found, naming("fleet")))),
            opts=self.child(),
        )
        self.register_outputs({"policies": [p.name for p in self.policies.values()], "dashboard": self.dashboard.id})
