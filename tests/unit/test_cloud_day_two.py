"""Day two on Google Cloud: what each change a user makes does to the planned resources.

Every test plans the example stack and a changed copy on the mock engine, diffs the two plans as
CI does (`cnctl plan-diff`), and asserts what would be updated, replaced or refused. The diff of
each change is also kept as a golden file (tests/golden/diff-*.md): regenerate on purpose with

    CNCTL_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_cloud_day_two.py
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

import cnctl.catalog as catalog_module
from cnctl.catalog import catalog
from cnctl.paths import REPO_ROOT
from cnctl.plan import Plan, plan_stack
from cnctl.plan.diff import PlanDiff, diff_plans, render_markdown
from cnctl.plan.replace import schema_change_is_additive
from tests.unit.bundle_helpers import keypair
from tests.unit.stack_variants import stack_variant

INSTANCE = "gcp:compute/instance:Instance"
DISK = "gcp:compute/disk:Disk"
TABLE = "gcp:bigquery/table:Table"
GOLDEN = Path(__file__).resolve().parents[1] / "golden"
UPDATE = os.environ.get("CNCTL_UPDATE_GOLDEN") == "1"
Change = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="module")
def dev() -> Plan:
    return plan_stack("dev")


@pytest.fixture(scope="module")
def prod() -> Plan:
    return plan_stack("prod")


def diff(base: Plan, head: Plan) -> PlanDiff:
    return diff_plans(base.to_json(), head.to_json())


def resource(plan: Plan, token: str, name: str) -> dict[str, Any]:
    entry = next(r for r in plan.to_json()["resources"] if r["type"] == token and r["name"] == name)
    return dict(entry)


def golden(name: str, result: PlanDiff) -> None:
    """The pull-request comment of this change, compared with tests/golden/diff-<name>.md."""
    path = GOLDEN / f"diff-{name}.md"
    rendered = render_markdown(result, full_plan_url="https://ci.example/plans")
    if UPDATE:
        path.write_text(rendered, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == rendered, f"diff-{name}.md changed; if intended: CNCTL_UPDATE_GOLDEN=1"


# --- 1. no accidental loss --------------------------------------------------------------------------


def test_prod_vms_carry_deletion_protection_and_protect(prod: Plan, dev: Plan) -> None:
    for index in (0, 1):
        vm = resource(prod, INSTANCE, f"cn-prod-gpu-{index}")
        assert vm["inputs"]["deletionProtection"] is True
        assert vm["options"] == {"protect": True, "deleteBeforeReplace": False}
    vm = resource(dev, INSTANCE, "cn-dev-gpu-0")
    assert vm["inputs"]["deletionProtection"] is False
    assert vm["options"] == {"protect": False, "deleteBeforeReplace": False}


def test_prod_data_is_protected_too(prod: Plan) -> None:
    stateful = [r for r in prod.to_json()["resources"] if r["type"] in (TABLE, "gcp:storage/bucket:Bucket", "gcp:bigquery/dataset:Dataset")]
    assert len(stateful) == 2 + 3 + 1
    assert all(r["options"] == {"protect": True} for r in stateful)


def test_allow_replace_lifts_protect_of_that_vm_only(tmp_path: Path, prod: Plan) -> None:
    def change(config: dict[str, Any]) -> None:
        config["circularnet:compute"]["placement"][1]["allowReplace"] = True

    head = plan_stack(stack_variant(tmp_path, change, base="prod"))
    result = diff(prod, head)
    pair = [f"{DISK} cn-prod-gpu-1", f"{INSTANCE} cn-prod-gpu-1"]
    assert list(result.changed) == pair and not result.replaced  # that VM (and its disk) only, and in place
    for key in pair:
        assert [(c.path, c.before, c.after) for c in result.changed[key]] == [("resourceOptions.protect", True, False)]
    assert head.violations == ()  # GCE's deletion protection stays on, as the production guardrail wants
    assert resource(head, INSTANCE, "cn-prod-gpu-1")["options"]["protect"] is False
    assert resource(head, INSTANCE, "cn-prod-gpu-1")["inputs"]["deletionProtection"] is True
    assert resource(head, INSTANCE, "cn-prod-gpu-0")["options"]["protect"] is True


@pytest.mark.parametrize(
    ("name", "change", "disk_forced_by", "vm_forced_by"),
    [
        ("image-family", lambda c: c["circularnet:compute"].update(imageFamily="common-cu129-ubuntu-2204-nvidia-580"),
         ["name", "image"], ["name", "bootDisk.source"]),
        ("disk-type", lambda c: c["circularnet:compute"].update(diskType="pd-ssd"),
         ["name", "type"], ["name", "bootDisk.source"]),
        ("disk-shrunk", lambda c: c["circularnet:compute"].update(diskSizeGb=200),  # GCE cannot shrink a disk
         ["size"], None),
        ("spot", lambda c: c["circularnet:compute"].update(spot=True),  # a new VM, so a new disk to boot it
         ["name"], ["name", "bootDisk.source", "scheduling.provisioningModel", "scheduling.preemptible"]),
    ],
    ids=["image-family", "disk-type", "disk-shrunk", "spot"],
)
def test_a_change_that_replaces_prod_vms_or_their_disks_is_flagged_and_refused(
    tmp_path: Path, prod: Plan, name: str, change: Change, disk_forced_by: list[str], vm_forced_by: list[str] | None
) -> None:
    head = plan_stack(stack_variant(tmp_path, change, base="prod"))
    result = diff(prod, head)
    disks = [f"{DISK} cn-prod-gpu-{index}" for index in (0, 1)]
    vms = [f"{INSTANCE} cn-prod-gpu-{index}" for index in (0, 1)] if vm_forced_by else []
    assert sorted(result.replaced) == disks + vms
    assert all(result.replaced[d] == disk_forced_by for d in disks) and all(result.replaced[v] == vm_forced_by for v in vms)
    assert result.destructive == disks + vms and result.refused() == disks + vms
    # one name allows a VM and its disk; the other pair stays refused
    assert result.refused(["cn-prod-gpu-0"]) == [key for key in disks + vms if key.endswith("-1")]
    assert result.refused(["all"]) == []
    for index in (0, 1):
        for type_ in (DISK, INSTANCE):
            before = resource(prod, type_, f"cn-prod-gpu-{index}")["inputs"]
            after = resource(head, type_, f"cn-prod-gpu-{index}")["inputs"]
            # Created before the old one goes: a new name in the same zone, and no delete-first.
            assert (before["name"] != after["name"]) is bool(vm_forced_by) and before["zone"] == after["zone"]
            assert after["name"].startswith(f"cn-prod-gpu-{index}-")
    golden(f"prod-{name}", result)


def test_a_bigger_boot_disk_grows_in_place_and_keeps_the_vm(tmp_path: Path, prod: Plan) -> None:
    def change(config: dict[str, Any]) -> None:
        config["circularnet:compute"]["diskSizeGb"] = 500

    result = diff(prod, plan_stack(stack_variant(tmp_path, change, base="prod")))
    disks = [f"{DISK} cn-prod-gpu-{index}" for index in (0, 1)]
    assert list(result.changed) == disks  # the VMs: untouched, names and all
    assert all([(c.path, c.after) for c in result.changed[d]] == [("size", 500)] for d in disks)
    assert result.replaced == {} and result.destructive == [] and result.refused() == []


def test_in_place_changes_are_not_replacements(tmp_path: Path, prod: Plan) -> None:
    def change(config: dict[str, Any]) -> None:
        config["circularnet:compute"]["machineType"] = "g2-standard-16"  # resize: stop, update, start
        config["circularnet:gcp"]["labels"]["team"] = "vision"
        config["circularnet:model"]["version"] = 2  # the startup script's stack record changes

    result = diff(prod, plan_stack(stack_variant(tmp_path, change, base="prod")))
    assert f"{INSTANCE} cn-prod-gpu-0" in result.changed
    assert result.replaced == {} and result.destructive == [] and result.refused() == []
    # a new label updates the dataset, which rewrites its access list: plan-diff says to refresh first
    assert list(result.procedures) == ["gcp:bigquery/dataset:Dataset cn-prod-dataset"]


# --- 2. zones per VM ----------------------------------------------------------------------------------


def test_moving_one_vm_after_a_stock_out_touches_that_vm_only(tmp_path: Path, prod: Plan) -> None:
    def change(config: dict[str, Any]) -> None:
        config["circularnet:compute"]["placement"][1]["zone"] = "europe-west4-c"

    result = diff(prod, plan_stack(stack_variant(tmp_path, change, base="prod")))
    disk, vm = f"{DISK} cn-prod-gpu-1", f"{INSTANCE} cn-prod-gpu-1"
    assert list(result.changed) == [disk, vm] and not result.added and not result.removed
    assert [(c.path, c.before, c.after) for c in result.changed[disk]] == [("zone", "europe-west4-b", "europe-west4-c")]
    assert result.replaced == {disk: ["zone"], vm: ["zone", "bootDisk.source"]}
    assert result.refused() == [disk, vm] and result.refused(["cn-prod-gpu-1"]) == []
    golden("prod-zone-move", result)


def test_reordering_gcp_zones_touches_no_placed_vm(tmp_path: Path, prod: Plan) -> None:
    def change(config: dict[str, Any]) -> None:
        config["circularnet:gcp"]["zones"] = ["europe-west4-c", "europe-west4-b", "europe-west4-a"]

    head = plan_stack(stack_variant(tmp_path, change, base="prod"))
    result = diff(prod, head)
    assert result.empty, result.changed
    assert head.outputs["vms"][0]["fallbackZones"] == ["europe-west4-c", "europe-west4-b"]  # outputs only
    golden("prod-zone-reorder", result)


# --- 3. schema evolution without data loss ----------------------------------------------------------


@contextmanager
def catalog_with(change: Callable[[dict[str, Any]], None], tmp_path: Path) -> Iterator[None]:
    """The catalogs with models.yaml changed by `change`, for this block only."""
    folder = tmp_path / "catalog"
    folder.mkdir()
    for source in catalog_module.CATALOG_DIR.glob("*.yaml"):  # every catalog, so a new one is not left behind
        if source.name != "models.yaml":
            (folder / source.name).write_text(source.read_text())
    models = yaml.safe_load((catalog_module.CATALOG_DIR / "models.yaml").read_text())
    change(models)
    (folder / "models.yaml").write_text(yaml.safe_dump(models))
    original = catalog_module.CATALOG_DIR
    catalog_module.CATALOG_DIR = folder
    catalog.cache_clear()
    try:
        yield
    finally:
        catalog_module.CATALOG_DIR = original
        catalog.cache_clear()


def test_columns_are_nullable_so_they_can_be_added_in_place(dev: Plan) -> None:
    table = resource(dev, TABLE, "cn-dev-table-detections_tf")["inputs"]
    assert {f["mode"] for f in json.loads(table["schema"])} == {"NULLABLE"}


def test_catalog_v1_to_v2_adds_a_column_in_place(tmp_path: Path, dev: Plan) -> None:
    def v2(models: dict[str, Any]) -> None:
        models["generations"]["tf"]["bigquery_schema"].append({"name": "belt_speed", "type": "FLOAT"})

    with catalog_with(v2, tmp_path):
        head = plan_stack("dev")
    result = diff(dev, head)
    table = f"{TABLE} cn-dev-table-detections_tf"
    assert list(result.changed) == [table] and [c.path for c in result.changed[table]] == ["schema"]
    assert result.replaced == {} and result.destructive == [] and not result.removed
    golden("dev-schema-add-column", result)


def test_a_renamed_column_is_flagged_as_a_table_replacement(tmp_path: Path, prod: Plan) -> None:
    def rename(models: dict[str, Any]) -> None:
        models["generations"]["tf"]["bigquery_schema"][0]["name"] = "object_id"

    with catalog_with(rename, tmp_path):
        head = plan_stack("prod")
    result = diff(prod, head)
    table = f"{TABLE} cn-prod-table-detections_tf"
    assert result.replaced == {table: ["schema"]} and result.refused() == [table]
    golden("prod-schema-rename", result)


def test_switching_generation_keeps_the_old_table(tmp_path: Path, prod: Plan) -> None:
    def change(config: dict[str, Any]) -> None:
        config["circularnet:model"]["key"] = "CircularNet_model_v2"
        config["circularnet:inference"]["images"] = {"server": "nvcr.io/nvidia/tritonserver:25.05-py3"}

    head = plan_stack(stack_variant(tmp_path, change, base="prod"))
    result = diff(prod, head)
    assert not [key for key in (*result.removed, *result.changed) if key.startswith(TABLE)]
    assert result.destructive == [] and result.refused() == []
    assert head.outputs["tableId"] == "detections_detr" and prod.outputs["tableId"] == "detections_tf"
    golden("prod-generation-switch", result)


def test_a_new_table_name_replaces_the_transfers_and_says_how_to_do_it_safely(tmp_path: Path, prod: Plan) -> None:
    """A transfer whose destination table changes is a new transfer: flagged, refused in prod, with the procedure."""
    def change(config: dict[str, Any]) -> None:
        config["circularnet:analytics"]["table"] = "objects"

    result = diff(prod, plan_stack(stack_variant(tmp_path, change, base="prod")))
    transfers = [f"gcp:bigquery/dataTransferConfig:DataTransferConfig cn-prod-load-{g}" for g in ("detr", "tf")]
    assert all(result.replaced[t] == ["params.destination_table_name_template"] for t in transfers)
    assert result.dangerous == transfers and set(transfers) <= set(result.refused())
    assert all("a new, empty table" in result.procedures[t] for t in transfers)
    golden("prod-table-rename", result)


# --- 4. what the VMs are given ------------------------------------------------------------------------


def test_driver_metadata_comes_from_the_image_family(prod: Plan) -> None:
    family = catalog().gcp.images.families["common-cu128-ubuntu-2204-nvidia-570"]
    metadata = resource(prod, INSTANCE, "cn-prod-gpu-0")["inputs"]["metadata"]
    assert family.metadata and all(metadata[key] == value for key, value in family.metadata.items())
    assert "cnctl-zones" not in metadata  # fallbacks live in the outputs: a reorder touches no VM


def test_a3_gets_gvnic_and_cmek_disks(tmp_path: Path) -> None:
    key = "projects/my-circularnet-prod/locations/europe-west4/keyRings/circularnet/cryptoKeys/disk"

    def change(config: dict[str, Any]) -> None:
        config["circularnet:compute"].update(
            machineType="a3-highgpu-8g", gpu={"type": "nvidia-h100-80gb", "count": 8}, kmsKeyName=key
        )
        config["circularnet:analytics"]["kmsKeyName"] = key

    plan = plan_stack(stack_variant(tmp_path, change, base="prod"))
    vm = resource(plan, INSTANCE, "cn-prod-gpu-0")["inputs"]
    assert vm["networkInterfaces"][0]["nicType"] == "GVNIC"
    assert vm["bootDisk"]["kmsKeySelfLink"] == key
    dataset = resource(plan, "gcp:bigquery/dataset:Dataset", "cn-prod-dataset")["inputs"]
    assert dataset["defaultEncryptionConfiguration"] == {"kmsKeyName": key}


def test_spot_vms_ask_to_be_running(dev: Plan) -> None:
    assert resource(dev, INSTANCE, "cn-dev-gpu-0")["inputs"]["desiredStatus"] == "RUNNING"


# --- 8. least privilege for the edge uploader -------------------------------------------------------


def test_uploader_can_only_create_objects(dev: Plan) -> None:
    """A device's credentials add frames and results, nothing else: no reading, overwriting, deleting, no BigQuery."""
    edge = "serviceAccount:cn-dev-edge@my-circularnet-dev.iam.gserviceaccount.com"
    grants = [r for r in dev.to_json()["resources"] if "IAM" in r["type"].upper() and r["inputs"].get("member") == edge]
    assert sorted((r["type"], r["inputs"]["role"], r["inputs"]["bucket"]) for r in grants) == [
        ("gcp:storage/bucketIAMMember:BucketIAMMember", "roles/storage.objectCreator", "my-circularnet-dev-images"),
        ("gcp:storage/bucketIAMMember:BucketIAMMember", "roles/storage.objectCreator", "my-circularnet-dev-results"),
    ]
    # The insert-only custom role of the streaming design is gone with it: the one custom role is the transfer's.
    assert [r.name for r in dev.resources if r.type == "gcp:projects/iAMCustomRole:IAMCustomRole"] == ["cn-dev-load-dataset"]


def test_with_pull_hosts_the_uploader_also_reads_the_stacks_bundles_and_nothing_else(tmp_path: Path) -> None:
    """A pull-mode device downloads its bundles with the uploader's credentials: objectViewer on the models bucket,
    under a condition that admits bundles/<env>/ only (not the model archives); still nothing it could write there."""
    _, signer = keypair(tmp_path / "keys")

    def change(config: dict[str, Any]) -> None:
        config["circularnet:bundle"] = {"signers": [{"identity": "release@plant", "publicKey": signer}]}
        config["circularnet:fleets"]["edge"][0]["mode"] = "pull"

    plan = plan_stack(stack_variant(tmp_path, change))
    edge = "serviceAccount:cn-dev-edge@my-circularnet-dev.iam.gserviceaccount.com"
    grants = [r["inputs"] for r in plan.to_json()["resources"] if "IAM" in r["type"].upper() and r["inputs"].get("member") == edge]
    assert sorted((g["role"], g["bucket"]) for g in grants) == [
        ("roles/storage.objectCreator", "my-circularnet-dev-images"),
        ("roles/storage.objectCreator", "my-circularnet-dev-results"),
        ("roles/storage.objectViewer", "my-circularnet-dev-models"),
    ]
    viewer = next(g for g in grants if g["role"] == "roles/storage.objectViewer")
    assert viewer["condition"]["expression"] == (
        'resource.name.startsWith("projects/_/buckets/my-circularnet-dev-models/objects/bundles/dev/")')
    assert not plan.violations, plan.violations


# --- the override, through the console script --------------------------------------------------------


def test_plan_diff_refuses_a_prod_replacement_unless_allowed(tmp_path: Path, prod: Plan) -> None:
    def change(config: dict[str, Any]) -> None:
        config["circularnet:compute"]["placement"][0]["zone"] = "europe-west4-c"

    base, head = tmp_path / "base.json", tmp_path / "head.json"
    base.write_text(prod.render_json())
    head.write_text(plan_stack(stack_variant(tmp_path, change, base="prod")).render_json())
    cnctl = str(REPO_ROOT / ".venv/bin/cnctl")

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [cnctl, "plan-diff", str(base), str(head), *extra]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    refused = run()
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert (
        "refused: gcp:compute/instance:Instance cn-prod-gpu-0 would be replaced or deleted in production stack prod"
        in refused.stderr
    )
    assert "--allow-replace cn-prod-gpu-0" in refused.stderr
    assert run("--allow-replace", "cn-prod-gpu-1").returncode == 1
    allowed = run("--allow-replace", "cn-prod-gpu-0", "--markdown")
    assert allowed.returncode == 0, allowed.stderr
    assert "🔁 `gcp:compute/instance:Instance cn-prod-gpu-0` (replaced: zone, bootDisk.source)" in allowed.stdout
    assert "🔁 `gcp:compute/disk:Disk cn-prod-gpu-0` (replaced: zone)" in allowed.stdout


# --- the replace-on-change data --------------------------------------------------------------------


def _args_parameter(token: str, path: str) -> bool:
    """Whether `path` (camelCase, `*` for list elements) names an argument of the type's pulumi-gcp *Args."""
    _, module_path, kind = token.split(":")
    module = importlib.import_module(f"pulumi_gcp.{module_path.split('/')[0]}")
    args: Any = getattr(module, f"{kind}Args")
    for part in (p for p in path.split(".") if p != "*"):
        if args is None:
            return False
        parameter = inspect.signature(args.__init__).parameters.get(re.sub(r"(?<!^)(?=[A-Z])", "_", part).lower())
        if parameter is None:
            return False
        if "Mapping[" in str(parameter.annotation):
            return True  # a map (a transfer's params): what follows is one of its keys
        nested = re.findall(r"'(\w+Args)'", str(parameter.annotation))
        args = getattr(module, nested[0]) if nested else None
    return True


@pytest.mark.parametrize("token", sorted(catalog().gcp.replacements))
def test_every_replace_on_change_path_is_a_real_argument(token: str) -> None:
    rule = catalog().gcp.replacements[token]
    conditional = [path for condition in rule.when for path in (condition.input, *condition.paths)]
    for path in [*rule.paths, *([rule.schema_input] if rule.schema_input else []), *rule.sets, *rule.grow_only,
                 *conditional]:
        assert _args_parameter(token, path), f"{token}: {path} is not an input of pulumi-gcp's {token.split(':')[-1]}"
    assert not _args_parameter(token, "noSuchInput.atAll")


def field(name: str, type_: str = "STRING", mode: str = "NULLABLE") -> dict[str, str]:
    return {"name": name, "type": type_, "mode": mode}


@pytest.mark.parametrize(
    ("before", "after", "additive"),
    [
        ([field("a")], [field("a"), field("b")], True),  # a new NULLABLE column
        ([field("a", mode="REQUIRED")], [field("a")], True),  # REQUIRED relaxed to NULLABLE
        ([field("a")], [field("a"), field("b", mode="REQUIRED")], False),  # a new REQUIRED column
        ([field("a")], [field("b")], False),  # renamed
        ([field("a"), field("b")], [field("a")], False),  # removed
        ([field("a")], [field("a", "INTEGER")], False),  # retyped
        ([field("a")], [field("a", mode="REQUIRED")], False),  # tightened
    ],
    ids=["add-nullable", "relax", "add-required", "rename", "remove", "retype", "tighten"],
)
def test_schema_changes_bigquery_applies_in_place(before: list[Any], after: list[Any], additive: bool) -> None:
    assert schema_change_is_additive(json.dumps(before), json.dumps(after)) is additive


def test_plan_with_a_base_flags_and_refuses_like_plan_diff(tmp_path: Path, prod: Plan) -> None:
    def change(config: dict[str, Any]) -> None:
        config["circularnet:compute"]["diskType"] = "pd-ssd"

    base = tmp_path / "base.json"
    base.write_text(prod.render_json())
    stack = stack_variant(tmp_path, change, base="prod")
    command = [str(REPO_ROOT / ".venv/bin/cnctl"), "plan", "--stack", stack, "--base", str(base), "--json"]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "replace: gcp:compute/disk:Disk cn-prod-gpu-1 (forced by name, type)" in refused.stderr
    assert json.loads(refused.stdout)["stack"] == "prod"  # the plan itself is still printed
    allowed = subprocess.run([*command, "--allow-replace", "all"], capture_output=True, text=True, timeout=120, check=False)
    assert allowed.returncode == 0, allowed.stderr


def test_the_documented_stock_out_move_is_the_golden_plan_diff() -> None:
    """docs/cloud.md shows the comment of the zone move as `test_moving_one_vm...` produces it."""
    doc = (REPO_ROOT / "docs" / "cloud.md").read_text()
    match = re.search(r"<!-- example: zone-move -->\n```markdown\n(.*?)```", doc, re.DOTALL)
    assert match, "docs/cloud.md lost its zone-move example"
    assert match.group(1).strip() in (GOLDEN / "diff-prod-zone-move.md").read_text()
    assert "cn-prod-gpu-0" not in match.group(1)  # the other VM is not touched
