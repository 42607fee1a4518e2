"""The cloud layer's resources, as the Pulumi engine receives them, for the example stacks and variants.

Every security property the guardrails and docs/cloud.md rely on is asserted here on the real
program's inputs (run on the mock engine through the offline plan).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cnctl.catalog import catalog
from cnctl.plan import Plan, plan_stack
from cnctl.plan.mocks import project_number
from tests.unit.plan_queries import grants as plan_grants
from tests.unit.plan_queries import of_type, one
from tests.unit.stack_variants import stack_variant

AGENT_NUMBER = project_number("my-circularnet-dev")  # the mock's project number

INSTANCE = "gcp:compute/instance:Instance"
DISK = "gcp:compute/disk:Disk"
BUCKET = "gcp:storage/bucket:Bucket"
FIREWALL = "gcp:compute/firewall:Firewall"
IAM_TYPES = {
    "gcp:storage/bucketIAMMember:BucketIAMMember": "bucket",
    "gcp:serviceaccount/iAMMember:IAMMember": "serviceAccountId",
    "gcp:bigquery/datasetIamMember:DatasetIamMember": "datasetId",
    "gcp:bigquery/datasetAccess:DatasetAccess": "datasetId",
    "gcp:projects/iAMMember:IAMMember": "project",
    "gcp:bigquery/iamMember:IamMember": "tableId",
}
def subnet_id(plan: Plan) -> str:
    return f"projects/{plan.outputs['project']}/regions/{plan.outputs['region']}/subnetworks/cn-{plan.stack}-subnet"


@pytest.fixture(scope="module")
def dev() -> Plan:
    return plan_stack("dev")


@pytest.fixture(scope="module")
def prod() -> Plan:
    return plan_stack("prod")


# --- provider and names ------------------------------------------------------------------------


def test_explicit_provider_from_the_stack_file(dev: Plan, prod: Plan) -> None:
    assert one(dev, "pulumi:providers:gcp") == {"project": "my-circularnet-dev", "region": "us-central1"}
    assert one(prod, "pulumi:providers:gcp") == {"project": "my-circularnet-prod", "region": "europe-west4"}


def test_names_are_prefixed_by_environment(dev: Plan) -> None:
    for r in dev.resources:
        assert r.name.startswith("cn-dev-"), r.name
        if "name" in r.inputs and r.type != BUCKET:
            assert r.inputs["name"].startswith("cn-dev-"), r


def test_services_from_catalog_never_disabled(dev: Plan) -> None:
    services = of_type(dev, "gcp:projects/service:Service").values()
    assert sorted(s["service"] for s in services) == sorted(catalog().gcp.services)
    assert all(s["disableOnDestroy"] is False and s["project"] == "my-circularnet-dev" for s in services)


# --- compute ------------------------------------------------------------------------------------


def test_dev_vm_n1_t4_spot(dev: Plan) -> None:
    vm = of_type(dev, INSTANCE)["cn-dev-gpu-0"]
    assert vm["machineType"] == "n1-standard-8"
    assert vm["guestAccelerators"] == [{"type": "nvidia-tesla-t4", "count": 1}]
    assert vm["zone"] == "us-central1-a"
    assert vm["scheduling"] == {
        "onHostMaintenance": "TERMINATE",
        "provisioningModel": "SPOT",
        "preemptible": True,
        "automaticRestart": False,
        "instanceTerminationAction": "STOP",
    }


def test_prod_vms_g2_have_no_attached_gpu_and_restart(prod: Plan) -> None:
    vms = of_type(prod, INSTANCE)
    assert sorted(vms) == ["cn-prod-gpu-0", "cn-prod-gpu-1"]
    for vm in vms.values():
        assert vm["machineType"] == "g2-standard-8"
        assert "guestAccelerators" not in vm  # the L4 comes with the g2 shape
        assert vm["scheduling"] == {
            "onHostMaintenance": "TERMINATE",
            "provisioningModel": "STANDARD",
            "preemptible": False,
            "automaticRestart": True,
        }


def test_vms_in_their_placement_zones(prod: Plan) -> None:
    vms = of_type(prod, INSTANCE)
    assert vms["cn-prod-gpu-0"]["zone"] == "europe-west4-a"
    assert vms["cn-prod-gpu-1"]["zone"] == "europe-west4-b"


def test_without_placement_vms_run_in_the_one_zone(tmp_path: Path) -> None:
    """Several VMs without placement only over one zone (test_gcp_checks: several zones need a placement)."""
    def change(config: dict[str, Any]) -> None:
        del config["circularnet:compute"]["placement"]
        config["circularnet:compute"]["instances"] = 3
        config["circularnet:gcp"]["zones"] = ["europe-west4-b"]

    plan = plan_stack(stack_variant(tmp_path, change, base="prod"))
    zones = [vm["zone"] for _, vm in sorted(of_type(plan, INSTANCE).items())]
    assert zones == ["europe-west4-b"] * 3
    assert [vm["fallbackZones"] for vm in plan.outputs["vms"]] == [[], [], []]


def test_vm_is_private_shielded_and_os_login(dev: Plan, prod: Plan) -> None:
    for plan in (dev, prod):
        for vm in of_type(plan, INSTANCE).values():
            # Exactly the subnet, and so no accessConfigs: no external IP.
            assert vm["networkInterfaces"] == [{"subnetwork": subnet_id(plan)}]
            # DLVM images build unsigned driver modules: "auto" Secure Boot is off for them.
            assert vm["shieldedInstanceConfig"] == {
                "enableVtpm": True,
                "enableIntegrityMonitoring": True,
                "enableSecureBoot": False,
            }
            assert vm["metadata"]["enable-oslogin"] == "TRUE"
            assert vm["metadata"]["block-project-ssh-keys"] == "TRUE"
            assert vm["tags"] == [f"cn-{plan.stack}-gpu-vm"]


def test_vm_runs_as_dedicated_account(dev: Plan) -> None:
    vm = of_type(dev, INSTANCE)["cn-dev-gpu-0"]
    assert vm["serviceAccount"] == {
        "email": "cn-dev-vm@my-circularnet-dev.iam.gserviceaccount.com",
        "scopes": ["cloud-platform"],
    }


def test_vm_boots_the_deep_learning_image_from_a_disk_of_its_own(dev: Plan) -> None:
    vm = of_type(dev, INSTANCE)["cn-dev-gpu-0"]
    disk = of_type(dev, DISK)["cn-dev-gpu-0"]
    assert disk["image"] == "projects/deeplearning-platform-release/global/images/family/common-cu124-ubuntu-2204-nvidia-550"
    assert (disk["size"], disk["type"], disk["labels"]["managed-by"]) == (300, "pd-balanced", "cnctl")
    # the VM's name and zone; attached, never deleted by GCE with the VM (Pulumi owns it)
    assert (disk["name"], disk["zone"]) == (vm["name"], vm["zone"])
    assert vm["bootDisk"] == {"source": f"https://www.googleapis.com/compute/v1/projects/my-circularnet-dev/zones/"
                                        f"{vm['zone']}/disks/{vm['name']}", "autoDelete": False}
    assert "initializeParams" not in vm["bootDisk"]  # its size would be ForceNew: a bigger disk, a new VM


def test_a_vm_and_its_disk_are_protected_alike_and_replaced_create_first() -> None:
    prod = plan_stack("prod")
    for index in range(2):
        vm = prod.options[(INSTANCE, f"cn-prod-gpu-{index}")]
        assert prod.options[(DISK, f"cn-prod-gpu-{index}")] == vm
        assert vm["deleteBeforeReplace"] is False


def test_startup_script_is_the_metadata_key(dev: Plan) -> None:
    vm = of_type(dev, INSTANCE)["cn-dev-gpu-0"]
    # metadata_startup_script would replace the VM (and its disk) on every change.
    assert "metadataStartupScript" not in vm
    assert vm["metadata"]["startup-script"].startswith("#!/bin/bash\n")
    assert "/etc/circularnet" in vm["metadata"]["startup-script"]


def test_secure_boot_on_and_os_login_off_follow_the_stack(tmp_path: Path) -> None:
    def change(config: dict[str, Any]) -> None:
        config["circularnet:security"] = {"secureBoot": "off", "osLogin": False, "blockProjectSshKeys": False}

    plan = plan_stack(stack_variant(tmp_path, change))
    vm = of_type(plan, INSTANCE)["cn-dev-gpu-0"]
    assert vm["shieldedInstanceConfig"]["enableSecureBoot"] is False
    assert vm["metadata"]["enable-oslogin"] == "FALSE"
    assert vm["metadata"]["block-project-ssh-keys"] == "FALSE"


def test_no_compute_section_means_no_vms(tmp_path: Path) -> None:
    plan = plan_stack(stack_variant(tmp_path, lambda c: c.pop("circularnet:compute")))
    assert of_type(plan, INSTANCE) == {}
    assert plan.outputs["vms"] == []
    assert of_type(plan, BUCKET)  # the rest of the cloud layer stays


def test_no_gcp_section_means_no_cloud_layer(tmp_path: Path) -> None:
    def change(config: dict[str, Any]) -> None:
        del config["circularnet:gcp"], config["circularnet:compute"]
        config["circularnet:storage"]["endpoint"] = "https://s3.plant.local:9000"  # where the data goes instead

    plan = plan_stack(stack_variant(tmp_path, change, name="onprem"))
    assert plan.resources == () and plan.outputs == {} and plan.violations == ()


# --- network ------------------------------------------------------------------------------------


def test_custom_vpc_private_subnet_and_nat(dev: Plan) -> None:
    assert one(dev, "gcp:compute/network:Network")["autoCreateSubnetworks"] is False
    subnet = one(dev, "gcp:compute/subnetwork:Subnetwork")
    assert subnet["ipCidrRange"] == "10.20.0.0/24" and subnet["region"] == "us-central1"
    assert subnet["privateIpGoogleAccess"] is True
    assert one(dev, "gcp:compute/router:Router")["region"] == "us-central1"
    nat = one(dev, "gcp:compute/routerNat:RouterNat")
    assert nat["router"] == "cn-dev-router" and nat["natIpAllocateOption"] == "AUTO_ONLY"
    assert nat["subnetworks"] == [{"name": subnet_id(dev), "sourceIpRangesToNats": ["ALL_IP_RANGES"]}]


def test_ssh_only_from_iap_and_no_inference_rule_without_cidrs(dev: Plan) -> None:
    firewalls = of_type(dev, FIREWALL)
    assert sorted(firewalls) == ["cn-dev-allow-iap-ssh"]  # dev lists no inference CIDRs: no rule
    ssh = firewalls["cn-dev-allow-iap-ssh"]
    assert ssh["direction"] == "INGRESS"
    assert ssh["sourceRanges"] == ["35.235.240.0/20"] == [catalog().gcp.iap_ssh_range]
    assert ssh["allows"] == [{"protocol": "tcp", "ports": ["22"]}]
    assert ssh["targetTags"] == ["cn-dev-gpu-vm"]


def test_inference_ports_only_from_listed_cidrs(prod: Plan) -> None:
    rule = of_type(prod, FIREWALL)["cn-prod-allow-inference"]
    assert rule["sourceRanges"] == ["10.40.0.0/16"]
    assert rule["allows"] == [{"protocol": "tcp", "ports": ["8000", "8001", "8002"]}]
    assert rule["targetTags"] == ["cn-prod-gpu-vm"]


def test_no_firewall_opens_to_anywhere(dev: Plan, prod: Plan) -> None:
    for plan in (dev, prod):
        for fw in of_type(plan, FIREWALL).values():
            assert not {"0.0.0.0/0", "::/0"} & set(fw["sourceRanges"])


# --- storage ------------------------------------------------------------------------------------


def test_three_private_buckets(dev: Plan, prod: Plan) -> None:
    for plan in (dev, prod):
        buckets = of_type(plan, BUCKET)
        assert sorted(buckets) == [f"cn-{plan.stack}-images", f"cn-{plan.stack}-models", f"cn-{plan.stack}-results"]
        for bucket in buckets.values():
            assert bucket["publicAccessPrevention"] == "enforced"
            assert bucket["uniformBucketLevelAccess"] is True
            assert bucket["location"] == ("US-CENTRAL1" if plan.stack == "dev" else "EUROPE-WEST4")


def test_versioning_on_models_only_and_image_lifecycle(dev: Plan) -> None:
    buckets = of_type(dev, BUCKET)
    assert buckets["cn-dev-models"]["versioning"] == {"enabled": True}
    assert "versioning" not in buckets["cn-dev-images"] and "versioning" not in buckets["cn-dev-results"]
    assert buckets["cn-dev-images"]["lifecycleRules"] == [{"action": {"type": "Delete"}, "condition": {"age": 14}}]
    assert "lifecycleRules" not in buckets["cn-dev-results"] and "lifecycleRules" not in buckets["cn-dev-models"]


def test_force_destroy_only_outside_prod(dev: Plan, prod: Plan) -> None:
    assert all(b["forceDestroy"] is True for b in of_type(dev, BUCKET).values())
    assert all(b["forceDestroy"] is False for b in of_type(prod, BUCKET).values())


def test_cmek_when_the_stack_names_a_key(dev: Plan, prod: Plan) -> None:
    key = "projects/my-circularnet-prod/locations/europe-west4/keyRings/circularnet/cryptoKeys/storage"
    assert all(b["encryption"] == {"defaultKmsKeyName": key} for b in of_type(prod, BUCKET).values())
    assert all("encryption" not in b for b in of_type(dev, BUCKET).values())


# --- analytics ----------------------------------------------------------------------------------


def test_dataset_in_the_stack_region(dev: Plan, prod: Plan) -> None:
    assert one(dev, "gcp:bigquery/dataset:Dataset")["location"] == "us-central1"
    assert one(prod, "gcp:bigquery/dataset:Dataset")["location"] == "europe-west4"


def test_one_table_per_generation_all_nullable(dev: Plan) -> None:
    tables = of_type(dev, "gcp:bigquery/table:Table")
    assert sorted(tables) == ["cn-dev-table-detections_detr", "cn-dev-table-detections_tf"]
    for generation, spec in catalog().models.generations.items():
        table = tables[f"cn-dev-table-detections_{generation}"]
        expected = [{"name": f.name, "type": f.type, "mode": "NULLABLE"} for f in spec.bigquery_schema]
        assert json.loads(table["schema"]) == expected
        assert table["timePartitioning"] == {"type": "DAY"}  # no field: ingestion-time partitioning
        assert table["datasetId"] == "circularnet_dev" and table["tableId"] == f"detections_{generation}"


def test_detr_model_switches_the_table_schema(tmp_path: Path) -> None:
    def change(config: dict[str, Any]) -> None:
        config["circularnet:model"]["key"] = "CircularNet_model_v2"
        config["circularnet:inference"]["images"] = {"server": "nvcr.io/nvidia/tritonserver:25.05-py3"}

    plan = plan_stack(stack_variant(tmp_path, change))
    assert plan.outputs["tableId"] == "detections_detr"
    table = of_type(plan, "gcp:bigquery/table:Table")["cn-dev-table-detections_detr"]
    names = [f["name"] for f in json.loads(table["schema"])]
    assert names[-3:] == ["detected_classes", "detected_classes_names", "detected_colors"]


def test_deletion_protection_prod_vs_dev(dev: Plan, prod: Plan) -> None:
    assert all(t["deletionProtection"] is True for t in of_type(prod, "gcp:bigquery/table:Table").values())
    assert all(t["deletionProtection"] is False for t in of_type(dev, "gcp:bigquery/table:Table").values())
    assert one(prod, "gcp:bigquery/dataset:Dataset")["deleteContentsOnDestroy"] is False
    assert one(dev, "gcp:bigquery/dataset:Dataset")["deleteContentsOnDestroy"] is True


# --- identity -----------------------------------------------------------------------------------


def grants(plan: Plan) -> set[tuple[str, str, str]]:
    """(role, member, scope) of every grant in the plan."""
    return plan_grants(plan, IAM_TYPES)


def test_every_grant_exactly(dev: Plan) -> None:
    vm = "serviceAccount:cn-dev-vm@my-circularnet-dev.iam.gserviceaccount.com"
    edge = "serviceAccount:cn-dev-edge@my-circularnet-dev.iam.gserviceaccount.com"
    load = "serviceAccount:cn-dev-load@my-circularnet-dev.iam.gserviceaccount.com"
    agent = f"serviceAccount:service-{AGENT_NUMBER}@gcp-sa-bigquerydatatransfer.iam.gserviceaccount.com"
    assert grants(dev) == {
        # the VMs upload like any host, read frames and model archives; no BigQuery
        ("roles/storage.objectCreator", vm, "bucket:my-circularnet-dev-images"),
        ("roles/storage.objectViewer", vm, "bucket:my-circularnet-dev-images"),
        ("roles/storage.objectCreator", vm, "bucket:my-circularnet-dev-results"),
        ("roles/storage.objectViewer", vm, "bucket:my-circularnet-dev-models"),
        ("roles/logging.logWriter", vm, "project:my-circularnet-dev"),
        ("roles/monitoring.metricWriter", vm, "project:my-circularnet-dev"),
        # devices only add objects
        ("roles/storage.objectCreator", edge, "bucket:my-circularnet-dev-images"),
        ("roles/storage.objectCreator", edge, "bucket:my-circularnet-dev-results"),
        # the transfer reads the results bucket and alone writes the dataset
        ("roles/storage.objectViewer", load, "bucket:my-circularnet-dev-results"),
        ("WRITER", load, "datasetId:circularnet_dev"),  # dataEditor, as the dataset's access entry names it
        ("projects/my-circularnet-dev/roles/cn_dev_load_dataset", load, "datasetId:circularnet_dev"),
        ("roles/bigquery.jobUser", load, "project:my-circularnet-dev"),
        # the Data Transfer Service's agent may mint the transfer account's tokens, and no other's
        (
            "roles/iam.serviceAccountTokenCreator",
            agent,
            "serviceAccountId:projects/my-circularnet-dev/serviceAccounts/cn-dev-load@my-circularnet-dev.iam.gserviceaccount.com",
        ),
    }


def test_no_bigquery_role_or_object_deletion_for_hosts(dev: Plan, prod: Plan) -> None:
    hosts = {"cn-{}-vm", "cn-{}-edge"}
    for plan in (dev, prod):
        members = {f"serviceAccount:{h.format(plan.stack)}@{plan.outputs['project']}.iam.gserviceaccount.com" for h in hosts}
        for role, member, _ in grants(plan):
            if member in members:
                assert not role.startswith("roles/bigquery."), (role, member)
                assert role in {"roles/storage.objectCreator", "roles/storage.objectViewer",
                                "roles/logging.logWriter", "roles/monitoring.metricWriter"}, (role, member)


def test_no_primitive_or_project_wide_storage_roles(dev: Plan, prod: Plan) -> None:
    for plan in (dev, prod):
        for role, member, scope in grants(plan):
            assert role not in {"roles/owner", "roles/editor", "roles/viewer"}
            assert not (scope.startswith("project:") and role.startswith("roles/storage."))
            assert not member.endswith("-compute@developer.gserviceaccount.com")


def test_dedicated_accounts_and_no_keys(dev: Plan) -> None:
    accounts = of_type(dev, "gcp:serviceaccount/account:Account")
    assert {a["accountId"] for a in accounts.values()} == {"cn-dev-vm", "cn-dev-edge", "cn-dev-load"}
    assert not [r for r in dev.resources if r.type == "gcp:serviceaccount/key:Key"]


# --- labels -------------------------------------------------------------------------------------


def test_labels_on_every_labellable_resource(prod: Plan) -> None:
    expected = {
        "app": "circularnet",
        "cost-center": "recycling",
        "environment": "prod",
        "managed-by": "cnctl",
    }
    labelled = [
        r
        for r in prod.resources
        if r.type in {INSTANCE, BUCKET, "gcp:bigquery/dataset:Dataset", "gcp:bigquery/table:Table"}
    ]
    assert len(labelled) == 2 + 3 + 1 + 2
    # buckets also say what they hold (the guardrails keep the models bucket unwritable by hosts)
    assert all(r.inputs["labels"] == (
        {**expected, "contents": r.name.removeprefix("cn-prod-")} if r.type == BUCKET else expected
    ) for r in labelled)
    assert {r.inputs["labels"].get("contents") for r in labelled} == {None, "images", "results", "models"}


def test_plans_are_deterministic_and_sorted(dev: Plan) -> None:
    keys = [(r.type, r.name) for r in dev.resources]
    assert keys == sorted(keys)
    assert plan_stack("dev").render_json() == dev.render_json()
