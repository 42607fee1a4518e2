"""Cloud Monitoring (cnctl/cloud/monitoring.py): the conditions as data, then the offline plan's alert policies,
channels, log-based metric and dashboard, each naming the stack's own resources."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cnctl.cloud import startup
from cnctl.cloud.monitoring import Watched, conditions, one_of, recreations_filter
from cnctl.config import load_stack
from cnctl.config.schema import Monitoring
from cnctl.plan import Plan, plan_stack
from tests.unit.plan_queries import of_type, one
from tests.unit.stack_variants import stack_variant

REPO = Path(__file__).resolve().parents[2]
POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"
CHANNEL = "gcp:monitoring/notificationChannel:NotificationChannel"
DASHBOARD = "gcp:monitoring/dashboard:Dashboard"
LOG_METRIC = "gcp:logging/metric:Metric"


@pytest.mark.parametrize(
    ("watched", "keys"),
    [
        (Watched(), ["transfer-failed"]),  # no cloud VM: the loads only
        (Watched(hosts=True), ["transfer-failed", "host-unhealthy"]),  # fixed VMs
        (Watched(queue=True, group_min=0, group_max=3, hosts=True),  # may scale to none: no minimum to watch
         ["transfer-failed", "backlog-age", "dead-letters", "workers-recreated", "host-unhealthy"]),
        (Watched(queue=True, group_min=2, group_max=3, hosts=True),
         ["transfer-failed", "backlog-age", "dead-letters", "workers-below-min", "workers-recreated", "host-unhealthy"]),
    ],
    ids=["no-vms", "vms", "group-from-zero", "group-min-2"],
)
def test_what_a_stack_watches_follows_its_mode(watched: Watched, keys: list[str]) -> None:
    found = conditions(watched, Monitoring())
    assert [c.key for c in found] == keys
    assert all(c.severity in ("CRITICAL", "ERROR", "WARNING") and c.what_to_do for c in found)


def test_the_thresholds_are_the_stacks() -> None:
    by_key = {c.key: c for c in conditions(Watched(queue=True, group_min=3), Monitoring.model_validate({"backlogAgeSeconds": 600}))}
    assert (by_key["backlog-age"].comparison, by_key["backlog-age"].threshold) == ("COMPARISON_GT", 600)
    assert (by_key["workers-below-min"].comparison, by_key["workers-below-min"].threshold) == ("COMPARISON_LT", 3)
    assert by_key["workers-below-min"].duration_s == 900  # longer than a rolling replacement of one worker


def test_worker_restarts_are_counted_from_compute_engines_repair_records() -> None:
    """Autohealing's recreations of the group's own workers, as Compute Engine logs them (System Event audit logs:
    always written, whatever runs on the VM): more than two in an hour, over the whole group."""
    by_key = {c.key: c for c in conditions(Watched(queue=True, group_min=0, hosts=True), Monitoring())}
    recreated = by_key["workers-recreated"]
    assert recreated.filter == ('resource.type = "gce_instance" AND '
                                'metric.type = "logging.googleapis.com/user/{recreations}"')
    assert (recreated.comparison, recreated.threshold, recreated.aligner, recreated.period_s, recreated.reducer) == (
        "COMPARISON_GT", 2, "ALIGN_SUM", 3600, "REDUCE_SUM")
    assert recreations_filter("cn-dev-group-worker") == (
        'resource.type="gce_instance" AND protoPayload.methodName="compute.instances.repair.recreateInstance" '
        'AND protoPayload.resourceName:"/instances/cn-dev-group-worker-"')


def test_a_vm_is_unhealthy_when_its_health_report_says_so_for_ten_minutes() -> None:
    """The health report's gauge as the VM's Ops Agent scrapes it (prometheus_target, the stack's job): each VM a
    series of its own, unhealthy when no sample of a 5-minute window was 1, for 10 minutes."""
    host = {c.key: c for c in conditions(Watched(hosts=True), Monitoring())}["host-unhealthy"]
    assert host.filter == ('resource.type = "prometheus_target" AND resource.labels.job = "{node_job}" '
                           'AND metric.type = "prometheus.googleapis.com/cnctl_health_healthy/gauge"')
    assert (host.comparison, host.threshold, host.duration_s, host.aligner, host.period_s, host.reducer) == (
        "COMPARISON_LT", 1, 600, "ALIGN_MAX", 300, "")


def test_one_of_quotes_each_id() -> None:
    assert one_of(['a"b', "4371a820"]) == 'one_of("4371a820", "a\\"b")'


@pytest.fixture(scope="module")
def group() -> Plan:
    return plan_stack("dev-group")


def test_the_group_stacks_policies_name_its_subscriptions_and_transfers(group: Plan) -> None:
    policies = of_type(group, POLICY)
    assert sorted(policies) == [f"cn-dev-group-alert-{k}" for k in ("backlog-age", "dead-letters", "host-unhealthy",
                                                                     "transfer-failed", "workers-recreated")]
    configs = [name.rsplit("/", 1)[-1] for name in group.outputs["transfers"].values()]  # one per generation
    filters = {name: policy["conditions"][0]["conditionThreshold"]["filter"] for name, policy in policies.items()}
    assert filters["cn-dev-group-alert-transfer-failed"].endswith(f"resource.labels.config_id = {one_of(configs)}")
    assert 'subscription_id = "cn-dev-group-images-work"' in filters["cn-dev-group-alert-backlog-age"]
    assert 'subscription_id = "cn-dev-group-images-dead-inspect"' in filters["cn-dev-group-alert-dead-letters"]
    assert all(p["userLabels"]["managed-by"] == "cnctl" and p["documentation"]["content"] for p in policies.values())
    assert group.violations == ()


def test_the_dashboard_charts_what_the_policies_watch(group: Plan) -> None:
    board = json.loads(one(group, DASHBOARD)["dashboardJson"])
    titles = [tile["widget"]["title"] for tile in board["mosaicLayout"]["tiles"]]
    assert titles == ["BigQuery loads by result", "Oldest image waiting (s)", "Images waiting", "Dead letters", "Workers",
                      "Workers recreated by autohealing (per hour)", "VMs healthy (1: no problem in the health report)",
                      "GPU utilization (%, NVML via the Ops Agent)"]
    assert board["displayName"] == "cn-dev-group-fleet"
    assert all(tile["xPos"] + tile["width"] <= board["mosaicLayout"]["columns"] for tile in board["mosaicLayout"]["tiles"])
    charts = {tile["widget"]["title"]: tile["widget"]["xyChart"] for tile in board["mosaicLayout"]["tiles"]}
    assert charts["Workers"]["thresholds"] == [{"label": "maximum", "value": 3}]  # min 0 draws no line
    queries = {title: chart["dataSets"][0]["timeSeriesQuery"]["timeSeriesFilter"]["filter"] for title, chart in charts.items()}
    assert 'resource.labels.job = "cn-dev-group-node"' in queries["VMs healthy (1: no problem in the health report)"]
    assert 'metadata.user_labels."environment" = "dev-group"' in queries["GPU utilization (%, NVML via the Ops Agent)"]
    assert "logging.googleapis.com/user/cn-dev-group-worker-recreations" in \
        queries["Workers recreated by autohealing (per hour)"]


def test_the_group_counts_its_own_workers_recreations(group: Plan) -> None:
    """The log-based metric the workers-recreated policy reads: the group's base instance name in its filter, the
    policy naming the metric it creates (so Pulumi creates the metric first)."""
    metric = one(group, LOG_METRIC)
    base = one(group, "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager")["baseInstanceName"]
    assert base == "cn-dev-group-worker" and metric["filter"] == recreations_filter(base)
    assert metric["name"] == "cn-dev-group-worker-recreations"
    assert (metric["metricDescriptor"]["metricKind"], metric["metricDescriptor"]["valueType"]) == ("DELTA", "INT64")
    condition = of_type(group, POLICY)["cn-dev-group-alert-workers-recreated"]["conditions"][0]["conditionThreshold"]
    assert 'metric.type = "logging.googleapis.com/user/cn-dev-group-worker-recreations"' in condition["filter"]
    assert condition["aggregations"] == [{"alignmentPeriod": "3600s", "perSeriesAligner": "ALIGN_SUM",
                                          "crossSeriesReducer": "REDUCE_SUM"}]
    host = of_type(group, POLICY)["cn-dev-group-alert-host-unhealthy"]["conditions"][0]["conditionThreshold"]
    assert 'resource.labels.job = "cn-dev-group-node"' in host["filter"]  # the job the workers' agents scrape as


def test_each_address_is_a_channel_every_policy_notifies_and_a_group_minimum_is_watched(tmp_path: Path) -> None:
    def change(config: dict[str, Any]) -> None:
        config["circularnet:monitoring"] = {"emails": ["ops@plant.example", "night.shift+cn@plant.example"]}
        config["circularnet:compute"]["group"]["min"] = 2

    plan = plan_stack(stack_variant(tmp_path, change, base="dev-group"))
    channels = of_type(plan, CHANNEL)
    assert [c["labels"] for c in channels.values()] == [{"email_address": "ops@plant.example"},
                                                        {"email_address": "night.shift+cn@plant.example"}]
    assert all(c["type"] == "email" for c in channels.values())
    policies = of_type(plan, POLICY)
    assert all(len(p["notificationChannels"]) == 2 for p in policies.values())
    below = policies["cn-dev-group-alert-workers-below-min"]["conditions"][0]["conditionThreshold"]
    assert below["thresholdValue"] == 2 and 'instance_group_name = "cn-dev-group-gpu-workers-' in below["filter"]
    board = json.loads(one(plan, DASHBOARD)["dashboardJson"])
    workers = next(t["widget"]["xyChart"] for t in board["mosaicLayout"]["tiles"] if t["widget"]["title"] == "Workers")
    assert workers["thresholds"] == [{"label": "minimum", "value": 2}, {"label": "maximum", "value": 3}]


def test_a_stack_of_fixed_vms_watches_its_loads_and_its_vms_health() -> None:
    dev = plan_stack("dev")
    assert sorted(of_type(dev, POLICY)) == ["cn-dev-alert-host-unhealthy", "cn-dev-alert-transfer-failed"]
    assert of_type(dev, LOG_METRIC) == {}  # no group: nothing is recreated
    job = of_type(dev, POLICY)["cn-dev-alert-host-unhealthy"]["conditions"][0]["conditionThreshold"]["filter"]
    assert 'resource.labels.job = "cn-dev-node"' in job
    assert 'job_name: cn-dev-node' in startup.template_values(load_stack("dev"))["ops_agent"]["config"]  # the same job


@pytest.mark.parametrize(
    ("address", "why"),
    [("Ops <ops@plant.example>", "e-mail address"), ("ops@plant", "e-mail address"), ("a b@plant.example", "e-mail address"),
     ("ops@-plant.example", "e-mail address"), ("ops@plant.example\nBcc: x@y.example", "control character U+000A")],
)
def test_an_address_that_is_no_mailbox_is_refused_at_its_field(tmp_path: Path, address: str, why: str) -> None:
    def change(config: dict[str, Any]) -> None:
        config["circularnet:monitoring"] = {"emails": ["ops@plant.example", address]}

    done = subprocess.run([str(REPO / ".venv/bin/cnctl"), "validate", "--stack", stack_variant(tmp_path, change)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "monitoring.emails[1]" in done.stderr and why in done.stderr
