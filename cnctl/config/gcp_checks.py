"""Rules that check a stack against what Google Cloud accepts, from the catalog's data.

Each rule yields a `Problem` at the field the user must change, before `pulumi up` would fail
half-way (or worse, succeed with something unintended). GOOD / BAD, with the catalog as it is:

| rule                     | GOOD                                       | BAD (field named)                              |
|--------------------------|--------------------------------------------|------------------------------------------------|
| boot_disk_fits_family    | n1 + pd-balanced; a3 + hyperdisk-balanced  | n1 + hyperdisk-balanced; g2 + pd-standard      |
| nic_fits_family          | a3 + auto/GVNIC; n1 + VIRTIO_NET           | a3 + VIRTIO_NET (compute.nicType)              |
| spot_only_shapes_are_spot| a3-highgpu-1g + spot: true                 | a3-highgpu-1g + spot: false (compute.spot)     |
| placement_per_vm         | 2 VMs, 2 placements in gcp.region          | 2 VMs, 1 placement; a zone of another region   |
| placement_when_several   | 1 VM; 2 VMs, 1 zone; 2 VMs + placement     | 2 VMs, 2+ zones, no placement (compute.placement) |
| kms_keys_where_data_is   | bucket EUROPE-WEST4 + key europe-west4     | bucket EUROPE-WEST4 + key us-central1          |
| results_beside_dataset   | europe-west4 + location unset, EUROPE-WEST4 | europe-west4 + EU, EUR4 (storage.location)     |
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from cnctl.catalog import Catalog
from cnctl.config.errors import Problem
from cnctl.config.schema import StackConfig

Rule = Callable[[StackConfig, Catalog], Iterator[Problem]]

def machine_family(machine_type: str) -> str:
    """`g2-standard-8` -> `g2`: the family every per-family fact in catalog/gcp.yaml is keyed by."""
    return machine_type.split("-", 1)[0]


def kms_location(key_name: str) -> str:
    """`projects/p/locations/europe-west4/keyRings/r/cryptoKeys/k` -> `europe-west4` (syntax checked by the schema)."""
    return key_name.split("/")[3]


def boot_disk_fits_family(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """The boot disk type is one the machine family accepts (no Hyperdisk on N1, no pd-standard on G2)."""
    if cfg.compute is None:
        return
    family = machine_family(cfg.compute.machine_type)
    constraints = cat.gcp.family_constraints.get(family)
    if constraints is None:
        return  # an unknown family is gpu_fits_machine's problem, reported at compute.machineType
    if cfg.compute.disk_type not in constraints.boot_disk_types:
        allowed = ", ".join(constraints.boot_disk_types)
        yield Problem("compute.diskType", cfg.compute.disk_type, f"is not a boot disk type {family} VMs accept; use one of: {allowed}")


def nic_fits_family(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """gVNIC where the family requires it, and only on an image that supports it."""
    if cfg.compute is None:
        return
    family = machine_family(cfg.compute.machine_type)
    constraints = cat.gcp.family_constraints.get(family)
    image = cat.gcp.images.families.get(cfg.compute.image_family)
    if constraints is not None and constraints.nic == "GVNIC" and cfg.compute.nic_type == "VIRTIO_NET":
        yield Problem("compute.nicType", "VIRTIO_NET", f"{family} VMs require gVNIC; use auto or GVNIC")
    if image is not None and not image.gvnic and (cfg.compute.nic_type == "GVNIC" or (
        cfg.compute.nic_type == "auto" and constraints is not None and constraints.nic == "GVNIC"
    )):
        yield Problem("compute.imageFamily", cfg.compute.image_family, "does not support gVNIC, which this VM needs")


def spot_only_shapes_are_spot(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """Shapes sold only as Spot VMs (a3-highgpu-1g/2g/4g) must be declared Spot."""
    if cfg.compute is not None and not cfg.compute.spot and cfg.compute.machine_type in cat.gcp.spot_only_shapes:
        yield Problem("compute.spot", False, f"{cfg.compute.machine_type} is sold only as a Spot VM; set spot: true")


def placement_per_vm(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """An explicit placement names one zone per VM, each in the stack's region."""
    if cfg.compute is None or cfg.gcp is None or not cfg.compute.placement or cfg.compute.mode == "group":
        return  # a group places nothing per VM: group_checks names placement as out of place there
    placement, count = cfg.compute.placement, cfg.compute.instances
    if len(placement) != count:
        yield Problem(
            "compute.placement", f"{len(placement)} entries",
            f"must list one zone per VM: compute.instances is {count}",
        )
    for i, vm in enumerate(placement):
        if vm.zone.rsplit("-", 1)[0] != cfg.gcp.region:
            yield Problem(f"compute.placement[{i}].zone", vm.zone, f"is not in region {cfg.gcp.region}")


def placement_when_several(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """Several fixed VMs over several zones name each VM's zone. Without `compute.placement` VM i runs in
    gcp.zones[i % n] (cnctl/cloud/compute.py), so reordering gcp.zones (as a stock-out invites) moves VMs, and a
    VM's zone is an input whose change replaces it (boot disk and all). One VM, or one zone, has no order to lose."""
    if cfg.compute is None or cfg.gcp is None or cfg.compute.mode != "vms" or cfg.compute.placement:
        return
    count, zones = cfg.compute.instances, len(cfg.gcp.zones)
    if count > 1 and zones > 1:
        yield Problem("compute.placement", None,
                      f"must give each of the {count} VMs its zone (placement: [{{zone: ...}}, ...], one entry per VM) "
                      f"when gcp.zones lists {zones}: by position a reorder of gcp.zones would replace VMs; write the "
                      "zones they run in now (the stack's `vms` output, or `cnctl plan`)")


def kms_keys_where_data_is(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """A CMEK key lives where the data it encrypts lives (Cloud KMS refuses a key in another location)."""
    if cfg.gcp is None:
        return
    region = cfg.gcp.region
    bucket_location = cfg.bucket_location or region
    wanted = [
        ("storage.kmsKeyName", cfg.storage.kms_key_name, cat.gcp.kms_location(bucket_location),
         f"the buckets' location {bucket_location}"),
        ("analytics.kmsKeyName", cfg.analytics.kms_key_name, region, f"the dataset's location {region}"),
        ("compute.kmsKeyName", cfg.compute.kms_key_name if cfg.compute else None, region, f"the disks' region {region}"),
    ]
    for path, key, location, where in wanted:
        if key is not None and kms_location(key) != location:
            yield Problem(path, key, f"is in {kms_location(key)}; a key for {where} must be in location {location}")


def transfer_can_load(dataset_location: str, bucket_location: str) -> bool:
    """Can a BigQuery Data Transfer into a dataset in the region `dataset_location` load from a bucket in
    `bucket_location`? Google: "Transfers from Cloud Storage to BigQuery require that the Cloud Storage bucket be
    colocated with the BigQuery destination dataset"; a dataset in a region needs its bucket in that same region,
    so not in a multi-region or dual-region that contains it
    (https://cloud.google.com/bigquery/docs/dts-locations, "Colocation required"). The other half of that rule, a
    multi-region dataset reading buckets within it, does not arise: the cloud layer creates the dataset in
    gcp.region (`StackConfig.dataset_location`). Locations compare case-blind (BigQuery writes regions in lower
    case, Cloud Storage in upper case)."""
    return dataset_location.lower() == bucket_location.lower()


def results_beside_dataset(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """The buckets (the results bucket among them) are where the dataset is: elsewhere every transfer run fails,
    and nothing says so but the transfer's run history."""
    location, dataset = cfg.storage.location, cfg.dataset_location
    if location is None or dataset is None:
        return  # unset: the buckets are in the stack's region, beside the dataset
    if cat.gcp.bucket_locations() and location.upper() not in cat.gcp.bucket_locations():
        return  # not a Cloud Storage location at all: storage_location_exists says so
    if not transfer_can_load(dataset, location):
        yield Problem("storage.location", location,
                      f"is not where the BigQuery dataset is (gcp.region {dataset}): BigQuery Data Transfer loads "
                      f"the results bucket only from the dataset's own region; set storage.location: "
                      f"{dataset.upper()}, or remove it")


RULES: tuple[Rule, ...] = (
    boot_disk_fits_family,
    nic_fits_family,
    spot_only_shapes_are_spot,
    placement_per_vm,
    placement_when_several,
    kms_keys_where_data_is,
    results_beside_dataset,
)


def check_gcp(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """Every problem of a schema-valid stack against what Google Cloud accepts, in rule order."""
    for rule in RULES:
        yield from rule(cfg, cat)
