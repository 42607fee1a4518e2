"""`cnctl plan-diff`: what a change does to a stack, as CI posts it (one comment per stack, < 64 KB)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cnctl.cli.main import app
from cnctl.plan.diff import COMMENT_LIMIT, diff_plans, render_markdown

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


@pytest.fixture(scope="module")
def dev() -> dict[str, Any]:
    return json.loads((GOLDEN / "plan-dev.json").read_text())


def _resource(plan: dict[str, Any], token_end: str) -> dict[str, Any]:
    return next(r for r in plan["resources"] if r["type"].endswith(token_end))


def test_identical_plans_have_no_change(dev: dict[str, Any]) -> None:
    diff = diff_plans(dev, dev)
    assert diff.empty and diff.unchanged == len(dev["resources"])
    assert "No change to the cloud layer" in render_markdown(diff)


def test_a_changed_machine_type_is_named_with_before_and_after(dev: dict[str, Any]) -> None:
    head = copy.deepcopy(dev)
    _resource(head, ":Instance")["inputs"]["machineType"] = "n1-standard-16"
    diff = diff_plans(dev, head)
    [(key, changes)] = diff.changed.items()
    assert key.startswith("gcp:compute/instance:Instance ")
    assert [(c.path, c.before, c.after) for c in changes] == [("machineType", "n1-standard-8", "n1-standard-16")]
    text = render_markdown(diff)
    assert "0 to add, 1 to change, 0 to delete" in text
    assert '`machineType`: `"n1-standard-8"` → `"n1-standard-16"`' in text


def test_added_and_removed_resources(dev: dict[str, Any]) -> None:
    head = copy.deepcopy(dev)
    removed = head["resources"].pop(0)
    head["resources"].append({"type": "gcp:storage/bucket:Bucket", "name": "cn-dev-extra", "inputs": {}})
    diff = diff_plans(dev, head)
    assert diff.added == ["gcp:storage/bucket:Bucket cn-dev-extra"]
    assert diff.removed == [f"{removed['type']} {removed['name']}"]


def test_a_missing_base_means_everything_is_new(dev: dict[str, Any]) -> None:
    diff = diff_plans(None, dev)
    assert len(diff.added) == len(dev["resources"]) and not diff.removed and not diff.changed


def test_comment_carries_one_marker_per_stack_and_the_guardrail_failures(dev: dict[str, Any]) -> None:
    head = copy.deepcopy(dev)
    head["violations"] = [{"rule": "no-open-ingress", "resource": "cn-dev-allow-inference", "message": "allows 0.0.0.0/0"}]
    text = render_markdown(diff_plans(dev, head))
    assert text.startswith("<!-- cnctl-plan:dev -->\n")
    assert "`no-open-ingress` on `cn-dev-allow-inference`" in text


def test_a_huge_change_is_trimmed_below_the_comment_limit_with_a_pointer(dev: dict[str, Any]) -> None:
    head = copy.deepcopy(dev)
    for i in range(2000):
        head["resources"].append({"type": "gcp:storage/bucket:Bucket", "name": f"cn-dev-bucket-{i:04d}", "inputs": {}})
    text = render_markdown(diff_plans(dev, head), full_plan_url="https://ci.example/run/1")
    assert len(text) <= COMMENT_LIMIT
    assert "trimmed" in text and "https://ci.example/run/1" in text
    assert "2000 to add" in text, "the summary counts everything even when the list is trimmed"


def test_cli_diffs_two_plan_files_and_exits_1_on_violations(tmp_path: Path, dev: dict[str, Any]) -> None:
    base, head = tmp_path / "base.json", tmp_path / "head.json"
    base.write_text(json.dumps(dev))
    changed = copy.deepcopy(dev)
    _resource(changed, ":Instance")["inputs"]["machineType"] = "n1-standard-16"
    head.write_text(json.dumps(changed))
    result = CliRunner().invoke(app, ["plan-diff", str(base), str(head), "--markdown"])
    assert result.exit_code == 0 and "1 to change" in result.output
    changed["violations"] = [{"rule": "r", "resource": "x", "message": "m"}]
    head.write_text(json.dumps(changed))
    assert CliRunner().invoke(app, ["plan-diff", str(base), str(head)]).exit_code == 1
    missing = CliRunner().invoke(app, ["plan-diff", str(tmp_path / "nope.json"), str(base)])
    assert missing.exit_code == 0 and f"{len(dev['resources'])} to add" in missing.output


def test_cli_rejects_a_file_that_is_not_a_plan(tmp_path: Path) -> None:
    bad = tmp_path / "head.json"
    bad.write_text("{\"stack\": \"dev\"}")
    result = CliRunner().invoke(app, ["plan-diff", str(bad), str(bad)])
    assert result.exit_code == 2 and "not a plan" in result.output


# --- what the provider compares: sets (catalog `sets`) ------------------------------------------------

GROUP = "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager"
TEMPLATE = "gcp:compute/instanceTemplate:InstanceTemplate"
NOTIFICATION = "gcp:storage/notification:Notification"
FIREWALL = "gcp:compute/firewall:Firewall"
INSTANCE = "gcp:compute/instance:Instance"
ZONES = ["us-central1-a", "us-central1-b", "us-central1-c"]
T4, L4 = {"type": "nvidia-tesla-t4", "count": 1}, {"type": "nvidia-l4", "count": 1}


def one_resource(type_: str, inputs: dict[str, Any]) -> dict[str, Any]:
    return {"stack": "t", "resources": [{"type": type_, "name": "judged", "inputs": inputs}]}


# (type, inputs before, inputs after, the changed paths, the paths that force a replacement)
SET_CASES = [
    (GROUP, {"distributionPolicyZones": ZONES}, {"distributionPolicyZones": ZONES[::-1]}, [], []),
    (GROUP, {"distributionPolicyZones": ZONES}, {"distributionPolicyZones": ZONES[:2]},
     ["distributionPolicyZones"], ["distributionPolicyZones"]),
    (TEMPLATE, {"tags": ["vm", "worker"]}, {"tags": ["worker", "vm"]}, [], []),
    (TEMPLATE, {"tags": ["vm", "worker"]}, {"tags": ["vm"]}, ["tags"], ["tags"]),
    (TEMPLATE, {"serviceAccount": {"email": "e", "scopes": ["a", "b"]}},
     {"serviceAccount": {"email": "e", "scopes": ["b", "a"]}}, [], []),
    (NOTIFICATION, {"eventTypes": ["OBJECT_FINALIZE", "OBJECT_DELETE"]},
     {"eventTypes": ["OBJECT_DELETE", "OBJECT_FINALIZE"]}, [], []),
    (FIREWALL, {"sourceRanges": ["35.191.0.0/16", "130.211.0.0/22"]},
     {"sourceRanges": ["130.211.0.0/22", "35.191.0.0/16"]}, [], []),
    (FIREWALL, {"allows": [{"protocol": "tcp", "ports": ["22"]}, {"protocol": "icmp"}]},
     {"allows": [{"protocol": "icmp"}, {"protocol": "tcp", "ports": ["22"]}]}, [], []),
    (FIREWALL, {"sourceRanges": ["35.191.0.0/16"]}, {"sourceRanges": ["10.0.0.0/8"]}, ["sourceRanges"], []),
    (INSTANCE, {"tags": ["a", "b"]}, {"tags": ["b", "a"]}, [], []),
    # a list the provider keeps in order is still compared in order
    (INSTANCE, {"guestAccelerators": [T4, L4]}, {"guestAccelerators": [L4, T4]}, ["guestAccelerators"], ["guestAccelerators"]),
]


@pytest.mark.parametrize(("type_", "before", "after", "changed", "forced"), SET_CASES,
                         ids=[f"{t.rsplit(':', 1)[-1]}-{i}" for i, (t, *_) in enumerate(SET_CASES)])
def test_a_set_in_another_order_is_no_change(
    type_: str, before: dict[str, Any], after: dict[str, Any], changed: list[str], forced: list[str]
) -> None:
    diff = diff_plans(one_resource(type_, before), one_resource(type_, after))
    assert [c.path for c in diff.changed.get(f"{type_} judged", [])] == changed
    assert diff.replaced.get(f"{type_} judged", []) == forced


# --- a transfer's replacement: dangerous, with the safe procedure (catalog `when`, `on_replace`) -------

TRANSFER = "gcp:bigquery/dataTransferConfig:DataTransferConfig"
GCS_TRANSFER: dict[str, Any] = {
    "dataSourceId": "google_cloud_storage", "location": "us-central1", "project": "p", "destinationDatasetId": "d",
    "schedule": "every 15 minutes",
    "params": {"data_path_template": "gs://results/detections/tf/*.ndjson", "destination_table_name_template": "t_tf",
               "max_bad_records": "0"},
}


def transfer(**changes: Any) -> dict[str, Any]:
    """GCS_TRANSFER with top-level inputs and (`params`) params replaced; None removes one."""
    inputs = copy.deepcopy(GCS_TRANSFER)
    params = {**inputs["params"], **changes.pop("params", {})}
    inputs.update(changes, params={k: v for k, v in params.items() if v is not None})
    return inputs


# (case, inputs after, the inputs that force a replacement); every replacement of a transfer is dangerous
TRANSFER_CASES = [
    ("data-path", transfer(params={"data_path_template": "gs://results/v2/detections/tf/*.ndjson"}),
     ["params.data_path_template"]),
    ("destination-table", transfer(params={"destination_table_name_template": "t2_tf"}),
     ["params.destination_table_name_template"]),
    ("location", transfer(location="europe-west4"), ["location"]),
    ("schedule", transfer(schedule="every 60 minutes"), []),
    ("other-param", transfer(params={"max_bad_records": "5"}), []),
    ("destination-dataset", transfer(destinationDatasetId="d2"), []),  # the provider updates it in place
]


@pytest.mark.parametrize(("case", "after", "forced"), TRANSFER_CASES, ids=[c[0] for c in TRANSFER_CASES])
def test_a_replaced_transfer_is_dangerous_and_says_the_safe_procedure(case: str, after: dict[str, Any], forced: list[str]) -> None:
    base = {**one_resource(TRANSFER, GCS_TRANSFER), "production": True}
    diff = diff_plans(base, {**one_resource(TRANSFER, after), "production": True})
    key = f"{TRANSFER} judged"
    assert diff.replaced.get(key, []) == forced
    assert (diff.dangerous, diff.refused(), diff.refused(["judged"])) == (([key], [key], []) if forced else ([], [], []))
    text = render_markdown(diff)
    assert ("replacement(s) with side effects" in text) is bool(forced)
    if forced:
        assert "its first run loads every object its data path matches" in diff.procedures[key]
        assert f"- `{key}`: {diff.procedures[key]}" in text
    assert diff.destructive == []  # the rows stay in the table: not stateful, dangerous


# The provider's CustomizeDiff replaces only Cloud Storage and S3 transfers, only when both values are set.
CONDITIONAL_CASES = [
    ("scheduled-query", {**GCS_TRANSFER, "dataSourceId": "scheduled_query"}, "destination_table_name_template", "t2", []),
    ("s3", {**GCS_TRANSFER, "dataSourceId": "amazon_s3", "params": {"data_path": "s3://b/a/*"}}, "data_path", "s3://b/b/*",
     ["params.data_path"]),
    ("gcs-path-set-late", transfer(params={"data_path_template": None}), "data_path_template", "gs://r/*.ndjson", []),
]


@pytest.mark.parametrize(("case", "before", "param", "value", "forced"), CONDITIONAL_CASES, ids=[c[0] for c in CONDITIONAL_CASES])
def test_a_param_replaces_a_transfer_only_for_its_data_source(
    case: str, before: dict[str, Any], param: str, value: str, forced: list[str]
) -> None:
    after = copy.deepcopy(before)
    after["params"][param] = value
    diff = diff_plans(one_resource(TRANSFER, before), one_resource(TRANSFER, after))
    assert diff.replaced.get(f"{TRANSFER} judged", []) == forced


def test_plan_diff_prints_the_safe_procedure_and_refuses_in_prod(tmp_path: Path) -> None:
    base, head = tmp_path / "base.json", tmp_path / "head.json"
    base.write_text(json.dumps({**one_resource(TRANSFER, GCS_TRANSFER), "production": True}))
    after = transfer(params={"destination_table_name_template": "t2_tf"})
    head.write_text(json.dumps({**one_resource(TRANSFER, after), "production": True}))
    refused = CliRunner().invoke(app, ["plan-diff", str(base), str(head)])
    text = " ".join(refused.output.split())
    assert refused.exit_code == 1
    assert "⚠ a new transfer has no run history" in text
    assert f"refused: {TRANSFER} judged would be replaced or deleted in production stack t, with the side effect above" in text
    assert CliRunner().invoke(app, ["plan-diff", str(base), str(head), "--allow-replace", "judged"]).exit_code == 0


# --- a dataset updated in place rewrites its access list: the safe way is printed (catalog `on_update`) --

DATASET = "gcp:bigquery/dataset:Dataset"
GOOD_DATASET = {"datasetId": "d", "location": "europe-west4", "labels": {"environment": "prod"}, "description": "x"}

# (case, inputs after, resource options after, the procedure is printed, the dataset is replaced)
DATASET_CASES = [
    ("labels", {**GOOD_DATASET, "labels": {"environment": "prod", "team": "vision"}}, {"protect": True}, True, False),
    ("description", {**GOOD_DATASET, "description": "y"}, {"protect": True}, True, False),
    ("protect-only", GOOD_DATASET, {"protect": False}, False, False),  # no call to the provider
    ("location", {**GOOD_DATASET, "location": "europe-west1"}, {"protect": True}, False, True),  # a new dataset
    ("nothing", GOOD_DATASET, {"protect": True}, False, False),
]


@pytest.mark.parametrize(("case", "after", "options", "printed", "replaced"), DATASET_CASES, ids=[c[0] for c in DATASET_CASES])
def test_a_dataset_update_says_to_refresh_first(
    case: str, after: dict[str, Any], options: dict[str, Any], printed: bool, replaced: bool
) -> None:
    base = {"stack": "t", "production": True,
            "resources": [{"type": DATASET, "name": "judged", "inputs": GOOD_DATASET, "options": {"protect": True}}]}
    head = {**base, "resources": [{"type": DATASET, "name": "judged", "inputs": after, "options": options}]}
    diff = diff_plans(base, head)
    key = f"{DATASET} judged"
    assert (key in diff.procedures, key in diff.replaced) == (printed, replaced)
    assert diff.dangerous == [] and diff.refused() == ([key] if replaced else [])  # a caution, never a refusal
    text = render_markdown(diff)
    assert ("update(s) in place with side effects" in text) is printed
    if printed:
        assert "`pulumi up --refresh`" in diff.procedures[key] and f"- `{key}`: {diff.procedures[key]}" in text
