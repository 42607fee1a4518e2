"""Detections reach BigQuery through the cloud layer: a BigQuery Data Transfer per generation table, run as its own
least-privilege account, loading the objects the hosts upload to the results bucket (mock engine).

And the on-premise stack, whose data stays on site: no cloud resource at all.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cnctl.catalog import catalog
from cnctl.cli.main import app
from cnctl.config import load_stack
from cnctl.config.errors import StackConfigError
from cnctl.config.schema import Analytics
from cnctl.plan import Plan, plan_stack
from cnctl.plan.guardrails import is_grant
from cnctl.plan.mocks import project_number
from tests.unit.plan_queries import grantee, of_type
from tests.unit.stack_variants import stack_variant

TRANSFER = "gcp:bigquery/dataTransferConfig:DataTransferConfig"
TABLE = "gcp:bigquery/table:Table"
ACCESS = "gcp:bigquery/datasetAccess:DatasetAccess"
CUSTOM_ROLE = "gcp:projects/iAMCustomRole:IAMCustomRole"
LOAD = "cn-dev-load@my-circularnet-dev.iam.gserviceaccount.com"
DATASET_ROLE = "projects/my-circularnet-dev/roles/cn_dev_load_dataset"

@pytest.fixture(scope="module")
def dev() -> Plan:
    return plan_stack("dev")


def object_name(generation: str) -> str:
    """A results object as the design names it: detections/<generation>/<host>/<YYYYMMDD>/<batch id>.ndjson."""
    return f"detections/{generation}/belt-1-orin/20261201/belt1_20261201_10150000--belt1_20261201_10153150.ndjson"


def test_one_transfer_per_generation_table(dev: Plan) -> None:
    transfers = of_type(dev, TRANSFER)
    tables = {t["tableId"]: t for t in of_type(dev, TABLE).values()}
    generations = sorted(catalog().models.generations)
    assert sorted(transfers) == [f"cn-dev-load-{g}" for g in generations]
    for generation in generations:
        transfer = transfers[f"cn-dev-load-{generation}"]
        table = Analytics(dataset="circularnet_dev", table="detections").table_of(generation)
        assert transfer["params"]["destination_table_name_template"] == table and table in tables
        assert transfer["dataSourceId"] == "google_cloud_storage"
        assert transfer["destinationDatasetId"] == tables[table]["datasetId"] == "circularnet_dev"
        assert transfer["location"] == "us-central1"  # where the dataset is (a transfer must be)
        assert transfer["project"] == "my-circularnet-dev"
        assert transfer["schedule"] == "every 15 minutes"  # the shortest interval Cloud Storage transfers allow
        assert transfer["serviceAccountName"] == LOAD


def test_the_transfer_reads_what_the_hosts_upload(dev: Plan) -> None:
    for generation in catalog().models.generations:
        params = of_type(dev, TRANSFER)[f"cn-dev-load-{generation}"]["params"]
        assert params == {
            "data_path_template": f"gs://my-circularnet-dev-results/detections/{generation}/*.ndjson",
            "destination_table_name_template": f"detections_{generation}",
            "file_format": "JSON",  # newline-delimited JSON
            "write_disposition": "APPEND",  # never truncates; each object is loaded once
            "max_bad_records": "0",
            "ignore_unknown_values": "false",
            "delete_source_files": "false",
        }
        # One wildcard; BigQuery's `*` is not bounded by `/`, like fnmatch's.
        path = params["data_path_template"]
        assert path.count("*") == 1
        assert fnmatch.fnmatchcase(f"gs://my-circularnet-dev-results/{object_name(generation)}", path)
        other = "tf" if generation != "tf" else "detr"
        assert not fnmatch.fnmatchcase(f"gs://my-circularnet-dev-results/{object_name(other)}", path)
        assert not fnmatch.fnmatchcase(f"gs://my-circularnet-dev-images/{object_name(generation)}", path)


def test_a_line_of_the_generation_fits_its_table(dev: Plan) -> None:
    """The NDJSON contract: each line carries exactly the generation's columns, which are the table's."""
    tables = {t["tableId"]: json.loads(t["schema"]) for t in of_type(dev, TABLE).values()}
    for generation, spec in catalog().models.generations.items():
        line = {f.name: {"INTEGER": 1, "FLOAT": 0.5, "STRING": "x"}[f.type] for f in spec.bigquery_schema}
        columns = tables[f"detections_{generation}"]
        assert [c["name"] for c in columns] == list(line)
        assert all(c["mode"] == "NULLABLE" for c in columns)  # a later column added in place loads old lines too


def test_the_transfer_runs_as_its_own_least_privilege_account(dev: Plan) -> None:
    member = f"serviceAccount:{LOAD}"
    grants = sorted(
        (r.type.split(":")[-1], r.inputs["role"]) for r in dev.resources if is_grant(r.type) and grantee(r.inputs) == member
    )
    assert grants == [
        ("BucketIAMMember", "roles/storage.objectViewer"),
        ("DatasetAccess", "WRITER"),  # dataEditor
        ("DatasetAccess", DATASET_ROLE),
        ("IAMMember", "roles/bigquery.jobUser"),
    ]
    bucket_grant = next(r for r in dev.resources if r.name == "cn-dev-load-storage.objectViewer-results")
    assert bucket_grant.inputs["bucket"] == "my-circularnet-dev-results"  # the results bucket only
    # The Data Transfer Service's agent mints this account's tokens: on this account, not the project.
    agent = next(r for r in dev.resources if r.type == "gcp:serviceaccount/iAMMember:IAMMember")
    assert agent.inputs == {
        "serviceAccountId": f"projects/my-circularnet-dev/serviceAccounts/{LOAD}",
        "role": "roles/iam.serviceAccountTokenCreator",
        "member": f"serviceAccount:service-{project_number('my-circularnet-dev')}"
        "@gcp-sa-bigquerydatatransfer.iam.gserviceaccount.com",
    }
    services = {r.inputs["service"] for r in dev.resources if r.type == "gcp:projects/service:Service"}
    assert "bigquerydatatransfer.googleapis.com" in services
    assert dev.outputs["serviceAccounts"]["transfer"] == LOAD


def test_only_the_transfer_writes_bigquery(dev: Plan) -> None:
    members = {
        grantee(r.inputs)
        for r in dev.resources
        if is_grant(r.type) and (r.type == ACCESS or str(r.inputs.get("role", "")).startswith("roles/bigquery."))
    }
    assert members == {f"serviceAccount:{LOAD}"}
    assert dev.violations == ()


@pytest.mark.parametrize("stack", ["dev", "dev-group", "prod"])
def test_the_transfer_account_may_update_its_dataset_as_googles_doc_requires(stack: str) -> None:
    """cloud.google.com/bigquery/docs/use-service-accounts: a transfer's account needs bigquery.datasets.get and
    bigquery.datasets.update on the target dataset. A custom role of exactly those, granted on that dataset only
    (dataOwner, the narrowest predefined role with update, could also delete the dataset)."""
    plan = plan_stack(stack)
    project, dataset = plan.outputs["project"], plan.outputs["datasetId"]
    role_id = f"cn_{stack.replace('-', '_')}_load_dataset"
    [role] = of_type(plan, CUSTOM_ROLE).values()
    assert (role["roleId"], role["project"]) == (role_id, project)
    assert sorted(role["permissions"]) == ["bigquery.datasets.get", "bigquery.datasets.update"]
    granted = [r.inputs for r in plan.resources if is_grant(r.type) and r.inputs.get("role") == f"projects/{project}/roles/{role_id}"]
    load = f"cn-{stack}-load@{project}.iam.gserviceaccount.com"
    assert [(g.get("datasetId"), grantee(g)) for g in granted] == [(dataset, f"serviceAccount:{load}")]
    assert plan.violations == ()


@pytest.mark.parametrize("stack", ["dev", "dev-group", "prod"])
def test_dataset_grants_are_access_entries_that_leave_other_entries_alone(stack: str) -> None:
    """pulumi-gcp's dataset IAM resources rewrite the dataset's access list as an IAM policy, which drops authorized
    views made outside the stack; a DatasetAccess adds its one entry. Roles in the form the API returns (WRITER):
    `roles/bigquery.dataEditor` would come back as WRITER, a diff on every refresh, and a replacement."""
    plan = plan_stack(stack)
    assert not [r.name for r in plan.resources if r.type.startswith("gcp:bigquery/datasetIam")]
    entries = of_type(plan, ACCESS)
    roles = {e["role"].rsplit("/", 1)[-1] for e in entries.values()}
    assert roles == {"WRITER", f"cn_{stack.replace('-', '_')}_load_dataset"}
    assert all(not e["role"].startswith("roles/") and e["datasetId"] == plan.outputs["datasetId"] for e in entries.values())


def test_the_schedule_follows_the_stack(tmp_path: Path) -> None:
    plan = plan_stack(stack_variant(tmp_path, lambda c: c["circularnet:analytics"].update(loadEveryMinutes=60)))
    assert {t["schedule"] for t in of_type(plan, TRANSFER).values()} == {"every 60 minutes"}
    with pytest.raises(StackConfigError, match="analytics.loadEveryMinutes"):
        load_stack(stack_variant(tmp_path, lambda c: c["circularnet:analytics"].update(loadEveryMinutes=5), name="fast"))


# --- the on-premise stack ----------------------------------------------------------------------------


def test_onprem_stack_is_valid_and_keeps_its_data_on_site() -> None:
    cfg = load_stack("onprem")
    assert cfg.gcp is None and cfg.compute is None
    assert cfg.storage.kind == "s3" and cfg.storage.endpoint == "https://s3.plant.local:9000"
    assert cfg.storage.credentials_file == "~/.config/cnctl/onprem-s3.json"
    assert [s.name for s in cfg.fleets.servers] == ["plant-gpu-1"] and cfg.fleets.edge == []
    assert cfg.model == load_stack("dev").model  # pinned like dev


def test_onprem_plan_creates_no_cloud_resource() -> None:
    plan = plan_stack("onprem")
    assert plan.resources == () and plan.outputs == {} and plan.violations == ()
    assert plan.without_cloud is not None and "stays on site" in plan.without_cloud
    assert plan.to_json() == {"stack": "onprem", "production": False, "resources": [], "violations": [], "outputs": {}}


def test_onprem_plan_says_so() -> None:
    result = CliRunner().invoke(app, ["plan", "--stack", "onprem"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "0 cloud resources" in text and "`pulumi up` creates nothing" in text
    assert "its data stays on site (s3 store at https://s3.plant.local:9000)" in text


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda c: c["circularnet:storage"].pop("endpoint"), "storage.endpoint"),  # and no credentials: nowhere to go
        (lambda c: c.update({"circularnet:gcp": {"project": "my-plant-1234", "region": "us-central1",
                                                  "zones": ["us-central1-a"]}}), "storage.kind"),
    ],
    ids=["no-store", "s3-beside-a-cloud-layer"],
)
def test_storage_must_match_the_cloud_layer(tmp_path: Path, change: Any, path: str) -> None:
    def edit(config: dict[str, Any]) -> None:
        config["circularnet:storage"].pop("credentialsFile")
        change(config)

    with pytest.raises(StackConfigError) as raised:
        load_stack(stack_variant(tmp_path, edit, base="onprem"))
    assert path in str(raised.value)
