"""Cloud Monitoring for a stack: alert policies on what the cloud side does, notification channels, a dashboard.

The conditions are data (`conditions`: what to watch, in Cloud Monitoring's filter language, and when it is
wrong), so tests read them without a Pulumi engine; `Monitoring` declares one alert policy per condition, the
stack's notification channels, and one dashboard of the same metrics. Everything here reads Google's own
metrics: no endpoint is opened, nothing is probed from outside (no uptime check on a private VM).

| condition          | metric (resource)                                                    | wrong when                    |
|--------------------|----------------------------------------------------------------------|-------------------------------|
| transfer-failed    | bigquerydatatransfer…/completed_runs, FAILED (bigquery_dts_config)   | any run failed in 30 min      |
| backlog-age        | pubsub…/oldest_unacked_message_age (the work subscription)           | over monitoring.backlogAge…   |
| dead-letters       | pubsub…/num_undelivered_messages (the dead-letter subscription)      | any message, for 5 min        |
| workers-below-min  | compute…/instance_group/size (the worker group)                      | under group.min for 15 min    |

The first is in every stack with a cloud layer; the queue's two with `compute.mode: group`; the last with a
group whose `min` is above 0.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
from pulumi_gcp import monitoring

from cnctl.cloud.base import Component, Naming
from cnctl.config.schema import Monitoring as MonitoringConfig

TRANSFER_RUNS = "bigquerydatatransfer.googleapis.com/transfer_config/completed_runs"
BACKLOG_AGE = "pubsub.googleapis.com/subscription/oldest_unacked_message_age"
UNDELIVERED = "pubsub.googleapis.com/subscription/num_undelivered_messages"
GROUP_SIZE = "compute.googleapis.com/instance_group/size"


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


@dataclass(frozen=True)
class Watched:
    """What the stack has to watch: its transfers always; a queue and a worker group in `compute.mode: group`."""

    queue: bool = False
    group_min: int | None = None  # the worker group's minimum; None: no group


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
            "Workers cannot be created or keep failing their health check: see the group's errors "
            "(`gcloud compute instance-groups managed list-errors`); a zone out of GPUs needs another zone.",
        ))
    return found


def dashboard(watched: Watched, names: Mapping[str, str], title: str) -> str:
    """The dashboard's JSON: one chart per watched metric, two columns."""

    def on(metric: str, label: str, value: str) -> str:
        return f'metric.type = "{metric}" AND resource.labels.{label} = "{value}"'

    charts: list[tuple[str, str, str, list[str]]] = [
        ("BigQuery loads by result", f'metric.type = "{TRANSFER_RUNS}" AND resource.type = "bigquery_dts_config"',
         "ALIGN_SUM", ["metric.labels.completion_state"])]
    if watched.queue:
        charts += [
            ("Oldest image waiting (s)", on(BACKLOG_AGE, "subscription_id", names["subscription"]), "ALIGN_MAX", []),
            ("Images waiting", on(UNDELIVERED, "subscription_id", names["subscription"]), "ALIGN_MAX", []),
            ("Dead letters", on(UNDELIVERED, "subscription_id", names["dead_letters"]), "ALIGN_MAX", []),
        ]
    if watched.group_min is not None:
        charts.append(("Workers", on(GROUP_SIZE, "instance_group_name", names["group"]), "ALIGN_MEAN", []))
    tiles = [
        {
            "xPos": 6 * (i % 2), "yPos": 4 * (i // 2), "width": 6, "height": 4,
            "widget": {"title": name, "xyChart": {"dataSets": [{
                "plotType": "LINE",
                "timeSeriesQuery": {"timeSeriesFilter": {
                    "filter": chart_filter,
                    "aggregation": {"alignmentPeriod": "60s", "perSeriesAligner": aligner,
                                    **({"crossSeriesReducer": "REDUCE_SUM", "groupByFields": group_by}
                                       if group_by else {})},
                }},
            }]}},
        }
        for i, (name, chart_filter, aligner, group_by) in enumerate(charts)
    ]
    return json.dumps({"displayName": title, "mosaicLayout": {"columns": 12, "tiles": tiles}}, sort_keys=True)


class Monitoring(Component):
    """Ensures the stack's alert policies, their notification channels (e-mail) and its dashboard.

    `names`: the watched resources' names as the conditions' templates use them (`configs`: the transfer
    configs' ids as a `one_of`; `subscription`, `dead_letters`, `group` with a group); they may be Outputs.
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
        resolved: pulumi.Output[dict[str, str]] = pulumi.Output.all(**names)

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
