"""A stack is checked against what Google Cloud accepts (cnctl/config/gcp_checks.py), field by field.

Each case changes a copy of an example stack the way a user would and expects exactly the problem
at the field to change; the examples themselves must stay clean.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cnctl.catalog import catalog
from cnctl.config import StackConfigError, stack_path
from cnctl.config.gcp_checks import kms_keys_where_data_is, transfer_can_load
from cnctl.config.loader import parse
from cnctl.config.schema import StackConfig
from cnctl.paths import REPO_ROOT

Raw = dict[str, Any]


def raw(stack: str) -> Raw:
    """The `circularnet:` sections of an example stack, as `load_stack` hands them to `parse`."""
    config = yaml.safe_load(stack_path(stack).read_text())["config"]
    return {key.split(":", 1)[1]: value for key, value in config.items() if key.startswith("circularnet:")}


DEV, PROD = raw("dev"), raw("prod")


def problems(base: Raw, change: Callable[[Raw], None], environment: str = "variant") -> list[str]:
    """The one-line problems of `base` changed by `change` (empty: the stack is accepted)."""
    sections = copy.deepcopy(base)
    change(sections)
    try:
        parse(sections, environment=environment, source="variant")
    except StackConfigError as exc:
        return [str(p) for p in exc.problems]
    return []


def compute(**values: Any) -> Callable[[Raw], None]:
    return lambda s: s["compute"].update(values)


def test_example_stacks_are_accepted() -> None:
    assert problems(DEV, lambda s: None) == [] and problems(PROD, lambda s: None) == []


# --- disk types per machine family ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "change", "expected"),
    [
        (DEV, compute(diskType="hyperdisk-balanced"), "compute.diskType: 'hyperdisk-balanced' is not a boot disk type n1 VMs accept; use one of: pd-standard, pd-balanced, pd-ssd"),
        (PROD, compute(diskType="pd-standard"), "compute.diskType: 'pd-standard' is not a boot disk type g2 VMs accept; use one of: pd-balanced, pd-ssd"),
        (PROD, compute(machineType="a2-highgpu-1g", gpu={"type": "nvidia-tesla-a100", "count": 1}, diskType="hyperdisk-balanced"),
         "compute.diskType: 'hyperdisk-balanced' is not a boot disk type a2 VMs accept; use one of: pd-standard, pd-balanced, pd-ssd"),
    ],
    ids=["hyperdisk-on-n1", "pd-standard-on-g2", "hyperdisk-on-a2"],
)
def test_boot_disk_type_the_family_refuses(base: Raw, change: Callable[[Raw], None], expected: str) -> None:
    assert problems(base, change) == [expected]


@pytest.mark.parametrize("family", sorted(catalog().gcp.family_constraints))
def test_every_listed_boot_disk_type_is_accepted(family: str) -> None:
    shapes = {
        "n1": ("n1-standard-8", {"type": "nvidia-tesla-t4", "count": 1}),
        "g2": ("g2-standard-8", {"type": "nvidia-l4", "count": 1}),
        "a2": ("a2-highgpu-1g", {"type": "nvidia-tesla-a100", "count": 1}),
        "a3": ("a3-highgpu-8g", {"type": "nvidia-h100-80gb", "count": 8}),
    }
    machine, gpu = shapes[family]
    for disk in catalog().gcp.family_constraints[family].boot_disk_types:
        assert problems(PROD, compute(machineType=machine, gpu=gpu, diskType=disk)) == [], (family, disk)


# --- gVNIC and Spot-only shapes -------------------------------------------------------------------

A3 = {"machineType": "a3-highgpu-8g", "gpu": {"type": "nvidia-h100-80gb", "count": 8}}


def test_a3_refuses_virtio_and_takes_gvnic_by_default() -> None:
    assert problems(PROD, compute(**A3, nicType="VIRTIO_NET")) == [
        "compute.nicType: 'VIRTIO_NET' a3 VMs require gVNIC; use auto or GVNIC"
    ]
    assert problems(PROD, compute(**A3)) == [] and problems(PROD, compute(**A3, nicType="GVNIC")) == []
    assert problems(DEV, compute(nicType="VIRTIO_NET")) == []  # n1 takes either


def test_unknown_nic_type_is_a_schema_error() -> None:
    [problem] = problems(DEV, compute(nicType="gvnic"))
    assert problem.startswith("compute.nicType: 'gvnic'") and "'GVNIC'" in problem


@pytest.mark.parametrize("shape", catalog().gcp.spot_only_shapes)
def test_spot_only_shapes_must_be_spot(shape: str) -> None:
    count = int(shape.rsplit("-", 1)[1].rstrip("g"))
    gpu = {"type": "nvidia-h100-80gb", "count": count}
    assert problems(PROD, compute(machineType=shape, gpu=gpu, spot=False)) == [
        f"compute.spot: False {shape} is sold only as a Spot VM; set spot: true"
    ]
    assert problems(PROD, compute(machineType=shape, gpu=gpu, spot=True)) == []


# --- placement --------------------------------------------------------------------------------------


def test_placement_one_zone_per_vm_in_the_region() -> None:
    assert problems(PROD, compute(placement=[{"zone": "europe-west4-a"}])) == [
        "compute.placement: '1 entries' must list one zone per VM: compute.instances is 2"
    ]
    assert problems(PROD, compute(placement=[{"zone": "europe-west4-a"}, {"zone": "us-central1-a"}])) == [
        "compute.placement[1].zone: 'us-central1-a' is not in region europe-west4"
    ]
    [typo] = problems(PROD, compute(placement=[{"zone": "europe-west4-a"}, {"zone": "europe-west4-b", "allowReplce": True}]))
    assert typo.startswith("compute.placement[1].allowReplce: is not a known key (a typo?); known keys here: zone, allowReplace")


def unplaced(instances: int = 2, zones: tuple[str, ...] = ("europe-west4-a", "europe-west4-b", "europe-west4-c")
             ) -> Callable[[Raw], None]:
    """The prod stack without compute.placement, with `instances` VMs over `zones`."""
    def change(s: Raw) -> None:
        s["compute"].pop("placement")
        s["compute"]["instances"] = instances
        s["gcp"]["zones"] = list(zones)

    return change


# (id, the change of the prod stack, the problem; None: accepted) -- issue 21, item 15
WITHOUT_PLACEMENT: list[tuple[str, Callable[[Raw], None], str | None]] = [
    ("two-vms-three-zones", unplaced(), "compute.placement: must give each of the 2 VMs its zone"),
    ("four-vms-two-zones", unplaced(4, ("europe-west4-a", "europe-west4-b")),
     "compute.placement: must give each of the 4 VMs its zone"),
    ("one-vm-three-zones", unplaced(1), None),
    ("two-vms-one-zone", unplaced(2, ("europe-west4-b",)), None),
    ("no-vm", unplaced(0), None),
    ("two-vms-placed", lambda s: None, None),
]


@pytest.mark.parametrize(("change", "line"), [c[1:] for c in WITHOUT_PLACEMENT], ids=[c[0] for c in WITHOUT_PLACEMENT])
def test_several_vms_over_several_zones_need_a_placement(change: Callable[[Raw], None], line: str | None) -> None:
    """By position (VM i in gcp.zones[i % n]) a reorder of gcp.zones would replace VMs: refused at load."""
    found = problems(PROD, change)
    if line is None:
        assert found == []
    else:
        [problem] = found
        assert problem.startswith(line) and "a reorder of gcp.zones would replace VMs" in problem, problem
        assert "the stack's `vms` output, or `cnctl plan`" in problem


# --- CMEK key locations and the bucket location ---------------------------------------------------

KEY = "projects/my-circularnet-prod/locations/{}/keyRings/circularnet/cryptoKeys/data"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s["storage"].update(kmsKeyName=KEY.format("us-central1")),
         f"storage.kmsKeyName: '{KEY.format('us-central1')}' is in us-central1; a key for the buckets' location EUROPE-WEST4 must be in location europe-west4"),
        (lambda s: s["analytics"].update(kmsKeyName=KEY.format("global")),
         f"analytics.kmsKeyName: '{KEY.format('global')}' is in global; a key for the dataset's location europe-west4 must be in location europe-west4"),
        (lambda s: s["compute"].update(kmsKeyName=KEY.format("europe-west1")),
         f"compute.kmsKeyName: '{KEY.format('europe-west1')}' is in europe-west1; a key for the disks' region europe-west4 must be in location europe-west4"),
    ],
    ids=["bucket-key-elsewhere", "dataset-key-global", "disk-key-other-region"],
)
def test_cmek_key_must_live_where_the_data_is(change: Callable[[Raw], None], expected: str) -> None:
    assert problems(PROD, change) == [expected]


def test_cmek_keys_in_place_are_accepted() -> None:
    def change(s: Raw) -> None:
        s["storage"].update(location="europe-west4", kmsKeyName=KEY.format("europe-west4"))
        s["analytics"]["kmsKeyName"] = KEY.format("europe-west4")
        s["compute"]["kmsKeyName"] = KEY.format("europe-west4")

    assert problems(PROD, change) == []


@pytest.mark.parametrize(("location", "kms"), [("EU", "europe"), ("EUR4", "eur4"), ("nam4", "nam4"),
                                               ("US-EAST1", "us-east1")])
def test_a_bucket_key_lives_in_its_locations_kms_location(location: str, kms: str) -> None:
    """Cloud KMS names a multi-region's or dual-region's location its own way (EU: europe). Such a bucket location
    is refused for the transfers' sake (results_beside_dataset), so the rule is applied to the model directly."""
    sections = copy.deepcopy(PROD)
    sections["storage"].update(location=location, kmsKeyName=KEY.format("europe-west4"))
    cfg = StackConfig.model_validate({**sections, "environment": "prod"})
    [problem] = [str(p) for p in kms_keys_where_data_is(cfg, catalog())]
    assert problem.endswith(f"a key for the buckets' location {location} must be in location {kms}")
    sections["storage"]["kmsKeyName"] = KEY.format(kms)
    assert list(kms_keys_where_data_is(StackConfig.model_validate({**sections, "environment": "prod"}), catalog())) == []


def test_malformed_key_is_a_schema_error_at_its_field() -> None:
    [problem] = problems(PROD, lambda s: s["analytics"].update(kmsKeyName="europe-west4/circularnet/data"))
    assert problem == (
        "analytics.kmsKeyName: 'europe-west4/circularnet/data' is not a valid Cloud KMS key "
        "(projects/P/locations/L/keyRings/R/cryptoKeys/K)"
    )


def test_bucket_location_defaults_to_the_stack_region() -> None:
    sections = copy.deepcopy(PROD)
    sections["storage"].pop("location", None)
    assert parse(sections, environment="prod", source="x").bucket_location == "EUROPE-WEST4"
    sections["storage"]["location"] = "europe-west4"
    assert parse(sections, environment="prod", source="x").bucket_location == "europe-west4"


# --- the results bucket beside the dataset (issue 21, item 3) -------------------------------------

# (dataset location, bucket location, can a Cloud Storage transfer load it): Google's colocation rule for a dataset
# in a region, the only kind the cloud layer creates (https://cloud.google.com/bigquery/docs/dts-locations)
TRANSFER_LOCATIONS = [
    ("europe-west4", "EUROPE-WEST4", True),  # the same region, as each service writes it
    ("europe-west4", "europe-west4", True),
    ("us-central1", "US-CENTRAL1", True),
    ("europe-west4", "EU", False),  # the multi-region that contains it
    ("europe-west4", "EUR4", False),  # a dual-region that contains it
    ("us-central1", "NAM4", False),
    ("us-central1", "US", False),
    ("europe-west4", "EUROPE-WEST1", False),  # another region
    ("us-central1", "US-EAST1", False),
    ("asia-northeast1", "ASIA1", False),
]
TRANSFER_IDS = [f"{dataset}<-{bucket}" for dataset, bucket, _ in TRANSFER_LOCATIONS]


@pytest.mark.parametrize(("dataset", "bucket", "loads"), TRANSFER_LOCATIONS, ids=TRANSFER_IDS)
def test_a_transfer_loads_only_a_bucket_in_the_datasets_region(dataset: str, bucket: str, loads: bool) -> None:
    assert transfer_can_load(dataset, bucket) is loads


@pytest.mark.parametrize(("dataset", "bucket", "loads"), TRANSFER_LOCATIONS, ids=TRANSFER_IDS)
def test_a_bucket_location_the_transfer_cannot_load_is_refused_naming_both_fields(
        dataset: str, bucket: str, loads: bool) -> None:
    def change(s: Raw) -> None:  # the dev stack moved to the dataset's region, its buckets to `bucket`
        s["gcp"].update(region=dataset, zones=[f"{dataset}-b"])
        s["storage"]["location"] = bucket

    refused = (f"storage.location: {bucket!r} is not where the BigQuery dataset is (gcp.region {dataset}): BigQuery "
               f"Data Transfer loads the results bucket only from the dataset's own region; set storage.location: "
               f"{dataset.upper()}, or remove it")
    assert problems(DEV, change) == ([] if loads else [refused])


def test_an_unknown_bucket_location_is_named_once() -> None:
    [problem] = problems(DEV, lambda s: s["storage"].update(location="MARS-CENTRAL1"))
    assert problem.startswith("storage.location: 'MARS-CENTRAL1' is not a Cloud Storage location")


# --- through the CLI: one line, exit 2, nothing touched -------------------------------------------


def test_cli_names_the_field_and_exits_2(tmp_path: Path) -> None:
    text = stack_path("prod").read_text().replace("diskSizeGb: 300", "diskSizeGb: 300\n    diskType: pd-standard")
    bad = tmp_path / "Pulumi.prod.yaml"
    bad.write_text(text)
    result = subprocess.run(
        [str(REPO_ROOT / ".venv/bin/cnctl"), "validate", "--stack", str(bad)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"error: {bad}: 1 problem",
        "  - compute.diskType: 'pd-standard' is not a boot disk type g2 VMs accept; use one of: pd-balanced, pd-ssd",
    ]


# --- the catalog data these rules read ------------------------------------------------------------


def test_every_gpu_family_has_constraints_and_spot_only_shapes_exist() -> None:
    gcp = catalog().gcp
    assert set(gcp.family_constraints) == set(gcp.machine_families)
    shapes = {shape for fam in gcp.machine_families.values() if not fam.attached for gpus in fam.gpus.values()
              if isinstance(gpus, dict) for shape in gpus}
    assert set(gcp.spot_only_shapes) <= shapes
