"""Stack outputs: what the host inventory and operators read after `pulumi up`."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pulumi
import pytest

from cnctl.cloud import build
from cnctl.cloud.looker import LINKING_API, looker_studio_url
from cnctl.config import load_stack
from cnctl.plan import Plan, plan_stack
from cnctl.plan.engine import in_fresh_runtime
from cnctl.plan.mocks import CloudMocks


@pytest.fixture(scope="module")
def prod() -> Plan:
    return plan_stack("prod")


def test_vm_outputs_name_zone_internal_ip_and_fallbacks(prod: Plan) -> None:
    vms = prod.outputs["vms"]
    # The name carries the VM's revision (cnctl.cloud.compute.revision): the same for both VMs.
    revisions = {vm["name"].rsplit("-", 1)[1] for vm in vms}
    assert len(revisions) == 1 and re.fullmatch(r"[0-9a-f]{4}", revisions.pop())
    assert [{**vm, "name": vm["name"].rsplit("-", 1)[0]} for vm in vms] == [
        {
            "name": "cn-prod-gpu-0",
            "zone": "europe-west4-a",
            "internalIp": "10.30.0.2",
            "fallbackZones": ["europe-west4-b", "europe-west4-c"],
        },
        {
            "name": "cn-prod-gpu-1",
            "zone": "europe-west4-b",
            "internalIp": "10.30.0.3",
            "fallbackZones": ["europe-west4-c", "europe-west4-a"],
        },
    ]


def test_data_and_identity_outputs(prod: Plan) -> None:
    out = prod.outputs
    assert out["project"] == "my-circularnet-prod" and out["region"] == "europe-west4"
    assert out["buckets"] == {
        "images": "my-circularnet-prod-images",
        "results": "my-circularnet-prod-results",
        "models": "my-circularnet-prod-models",
    }
    assert (out["datasetId"], out["tableId"], out["table"]) == (
        "circularnet",
        "detections_tf",
        "my-circularnet-prod.circularnet.detections_tf",
    )
    assert out["serviceAccounts"] == {
        "inference": "cn-prod-vm@my-circularnet-prod.iam.gserviceaccount.com",
        "uploader": "cn-prod-edge@my-circularnet-prod.iam.gserviceaccount.com",
        "transfer": "cn-prod-load@my-circularnet-prod.iam.gserviceaccount.com",
    }
    # one transfer per generation table, named as `bq show --transfer_config` takes them
    assert sorted(out["transfers"]) == ["detr", "tf"]
    assert all(re.fullmatch(r"projects/\d+/locations/europe-west4/transferConfigs/\w+", n) for n in out["transfers"].values())


def test_looker_studio_url_binds_the_table(prod: Plan) -> None:
    url = urlsplit(prod.outputs["lookerStudioUrl"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == LINKING_API
    assert dict(parse_qsl(url.query)) == {
        "ds.ds0.connector": "bigQuery",
        "ds.ds0.type": "TABLE",
        "ds.ds0.projectId": "my-circularnet-prod",
        "ds.ds0.datasetId": "circularnet",
        "ds.ds0.tableId": "detections_tf",
    }


def test_looker_studio_url_with_a_template_report() -> None:
    url = looker_studio_url("p-1", "d", "t", report_id="abc-123")
    assert url.startswith(f"{LINKING_API}?c.reportId=abc-123&ds.ds0.connector=bigQuery&ds.ds0.type=TABLE&")
    assert url.endswith("ds.ds0.projectId=p-1&ds.ds0.datasetId=d&ds.ds0.tableId=t")


def test_build_under_the_classic_pulumi_test_harness() -> None:
    """`set_mocks` + `@pulumi.runtime.test`, as Pulumi documents, in an update (not preview) run.

    Run in a fresh runtime (own thread, context copy, event loop), so this test leaves no Pulumi
    state behind for the other tests in the process.
    """
    seen: dict[str, Any] = {}

    @pulumi.runtime.test
    def check() -> pulumi.Output[None]:
        layer = build(load_stack("dev"))
        assert layer is not None and layer.vms is not None
        vm = layer.vms.instances[0]
        return pulumi.Output.all(
            vm.network_interfaces, vm.service_account, vm.scheduling, layer.identity.uploader.email
        ).apply(lambda values: seen.update(zip(("nics", "account", "scheduling", "uploader"), values)))

    def run(loop: object) -> None:
        pulumi.runtime.set_mocks(CloudMocks(), project="circularnet", stack="dev", preview=False)
        check()

    in_fresh_runtime(run)
    # Output.all hands nested output types over as dicts with snake_case keys.
    assert [nic["network_ip"] for nic in seen["nics"]] == ["10.20.0.2"]
    assert [nic.get("access_configs") for nic in seen["nics"]] == [None]
    assert seen["account"]["email"] == "cn-dev-vm@my-circularnet-dev.iam.gserviceaccount.com"
    assert seen["scheduling"]["on_host_maintenance"] == "TERMINATE"
    assert seen["uploader"] == "cn-dev-edge@my-circularnet-dev.iam.gserviceaccount.com"
