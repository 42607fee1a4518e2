"""Cloud Monitoring (cnctl/cloud/monitoring.py): the conditions as data, then the offline plan's alert policies,
channels and dashboard, each naming the stack's own resources."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cnctl.cloud.monitoring import Watched, conditions, one_of
from cnctl.config.schema import Monitoring
from cnctl.plan import Plan, plan_stack
from tests.unit.plan_queries import of_type, one
from tests.unit.stack_variants import stack_variant

REPO = Path(__file__).resolve().parents[2]
POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"
CHANNEL = "gcp:monitoring/notificationChannel:NotificationChannel"
DASHBOARD = "gcp:monitoring/dashboard:Dashboard"


@pytest.mark.parametrize(
    ("watched", "keys"),
    [
        (Watched(), ["transfer-failed"]),  # fixed VMs: the loads only
        (Watched(queue=True, group_min=0), ["transfer-failed", "backlog-age", "dead-letters"]),  # may scale to none
        (Watched(queue=True, group_min=2), ["transfer-failed", "backlog-age", "dead-letters", "workers-below-min"]),
    ],
    ids=["vms", "group-from-zero", "group-min-2"],
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


def test_one_of_quotes_each_id() -> None:
    assert one_of(['a"b', "4371a820"]) == 'one_of("4371a820", "a\\"b")'


@pytest.fixture(scope="module")
def group() -> Plan:
    return plan_stack("dev-group")


def test_the_group_stacks_policies_name_its_subscriptions_and_transfers(group: Plan) -> None:
    policies = of_type(group, POLICY)
    assert sorted(policies) == [f"cn-dev-group-alert-{k}" for k in ("backlog-age", "dead-letters", "transfer-failed")]
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
    assert titles == ["BigQuery loads by result", "Oldest image waiting (s)", "Images waiting", "Dead letters", "Workers"]
    assert board["displayName"] == "cn-dev-group-fleet"
    assert all(tile["xPos"] + tile["width"] <= board["mosaicLayout"]["columns"] for tile in board["mosaicLayout"]["tiles"])


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


def test_a_stack_of_fixed_vms_watches_its_loads_only() -> None:
    assert sorted(of_type(plan_stack("dev"), POLICY)) == ["cn-dev-alert-transfer-failed"]


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
