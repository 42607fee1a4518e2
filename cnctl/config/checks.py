"""Rules that relate several fields of a stack, or a field and the catalog.

Each rule is a small function that yields `Problem`s at the path of the field to change. They run
after the schema has accepted the syntax, so they may trust types.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator

from cnctl.catalog import Catalog, catalog
from cnctl.config.errors import Problem
from cnctl.config.schema import Host, StackConfig

Rule = Callable[[StackConfig, Catalog], Iterator[Problem]]


def zones_in_region(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    if cfg.gcp is None:
        return
    for i, zone in enumerate(cfg.gcp.zones):
        if zone.rsplit("-", 1)[0] != cfg.gcp.region:
            yield Problem(f"gcp.zones[{i}]", zone, f"is not in region {cfg.gcp.region}; use {cfg.gcp.region}-a, -b, ...")
    seen: set[str] = set()
    for i, zone in enumerate(cfg.gcp.zones):
        if zone in seen:
            yield Problem(f"gcp.zones[{i}]", zone, "is listed twice")
        seen.add(zone)


def compute_needs_gcp(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    if cfg.compute is not None and cfg.gcp is None:
        yield Problem("compute", "…", "GPU VMs need a `gcp` section (project, region, zones)")


def gpu_fits_machine(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """The GPU type and count must be one the machine family offers (catalog/gcp.yaml)."""
    if cfg.compute is None:
        return
    machine = cfg.compute.machine_type
    gpu = cfg.compute.gpu
    family_name = machine.split("-", 1)[0]
    family = cat.gcp.machine_families.get(family_name)
    if family is None:
        known = ", ".join(sorted(cat.gcp.machine_families))
        yield Problem("compute.machineType", machine, f"is not a GPU machine family; use one of: {known}")
        return
    offered = family.gpus.get(gpu.type)
    if offered is None:
        allowed = ", ".join(sorted(family.gpus))
        yield Problem("compute.gpu.type", gpu.type, f"is not available on {family_name} machine types; allowed: {allowed}")
        return
    if isinstance(offered, list):  # attached GPUs: any listed count
        if gpu.count not in offered:
            yield Problem("compute.gpu.count", gpu.count, f"{gpu.type} attaches in counts {offered}")
        return
    if machine not in offered:
        shapes = ", ".join(offered)
        yield Problem("compute.machineType", machine, f"is not a {gpu.type} shape; use one of: {shapes}")
    elif offered[machine] != gpu.count:
        yield Problem("compute.gpu.count", gpu.count, f"{machine} comes with exactly {offered[machine]} GPU(s)")


def image_family_known(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    if cfg.compute is None:
        return
    families = cat.gcp.images.families
    if cfg.compute.image_family not in families:
        yield Problem("compute.imageFamily", cfg.compute.image_family, f"is not a known driver image; use one of: {', '.join(families)}")
    elif cfg.security.secure_boot == "on" and not families[cfg.compute.image_family].secure_boot:
        yield Problem("security.secureBoot", "on", f"image family {cfg.compute.image_family} builds unsigned driver modules; use auto or off")


def model_in_catalog(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    entry = cat.models.models.get(cfg.model.key)
    if entry is None:
        yield Problem("model.key", cfg.model.key, f"is not in the model catalog; known: {', '.join(cat.models.models)}")
        return
    if entry.standin and cfg.sandbox is None:
        yield Problem("model.key", cfg.model.key, "is a sandbox stand-in; only a stack with a `sandbox` section may deploy it")
    if not entry.standin and cfg.model.sha256 is None:
        yield Problem("model.sha256", None, "must pin the archive's sha256 (upstream publishes none); run `cnctl model pin`")
    if entry.url is None and cfg.model.url is None:
        yield Problem("model.url", None, "this model has no upstream archive; give the URL it is served from")


def jetpack_in_matrix(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    known = [rel.jetpack for rel in cat.platforms.jetson.releases]
    for i, dev in enumerate(cfg.fleets.edge):
        if dev.jetpack not in known:
            yield Problem(f"fleets.edge[{i}].jetpack", dev.jetpack, f"is not in the platform matrix; supported: {', '.join(known)}")


def driver_branch_in_matrix(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    known = [d.branch for d in cat.platforms.servers.driver_branches]
    for i, srv in enumerate(cfg.fleets.servers):
        if srv.driver_branch not in known:
            yield Problem(f"fleets.servers[{i}].driverBranch", srv.driver_branch, f"is not in the platform matrix; supported: {', '.join(known)}")


def host_names_unique(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    seen: dict[str, str] = {}
    hosts: list[tuple[str, Host]] = [(f"fleets.edge[{i}]", h) for i, h in enumerate(cfg.fleets.edge)]
    hosts += [(f"fleets.servers[{i}]", h) for i, h in enumerate(cfg.fleets.servers)]
    for path, host in hosts:
        if host.name in seen:
            yield Problem(f"{path}.name", host.name, f"is already used by {seen[host.name]}")
        else:
            seen[host.name] = path


def buckets_distinct(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    buckets = cfg.storage.buckets
    seen: dict[str, str] = {}
    for role in ("images", "results", "models"):
        name = getattr(buckets, role)
        if name in seen:
            yield Problem(f"storage.buckets.{role}", name, f"is the same bucket as storage.buckets.{seen[name]}")
        seen.setdefault(name, role)


def subnet_private(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """The VPC subnet is a private range; who may reach it is the firewall's (and the plan guardrails') job."""
    subnet = ipaddress.ip_network(cfg.network.subnet_cidr)
    if not subnet.is_private:
        yield Problem("network.subnetCidr", cfg.network.subnet_cidr, "must be a private range (RFC 1918)")


def inference_image_serves_model(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """A TF SavedModel needs a Triton image that still has the TF backend (≤ 25.02)."""
    entry = cat.models.models.get(cfg.model.key)
    image = cfg.inference.images.get("server")
    if entry is None or image is None or entry.requires_backend != "tensorflow":
        return
    known = cat.platforms.servers.triton(image)
    if known is not None and not known.tensorflow_backend:
        yield Problem("inference.images.server", image, f"has no TensorFlow backend, which {cfg.model.key} needs; use a ≤ 25.02 image")


def inference_reachable_where_allowed(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """Allowing sources to the inference ports means nothing while Triton listens on loopback only."""
    loopback = ipaddress.ip_address(cfg.inference.bind_address).is_loopback
    if cfg.network.inference_allowed_cidrs and loopback and cfg.inference.bind_interface is None:
        yield Problem(
            "inference.bindInterface", None,
            "must name the private interface Triton listens on (e.g. ens4) when network.inferenceAllowedCidrs "
            "lets clients in; with loopback only, the firewall rule would open nothing",
        )


def labels_not_reserved(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """cnctl sets `environment` and `managed-by` on every resource; a stack must not claim them."""
    if cfg.gcp is None:
        return
    for key in ("environment", "managed-by"):
        if key in cfg.gcp.labels:
            yield Problem(f"gcp.labels.{key}", cfg.gcp.labels[key], "is set by cnctl on every resource; remove it")


RULES: tuple[Rule, ...] = (
    zones_in_region,
    compute_needs_gcp,
    gpu_fits_machine,
    image_family_known,
    model_in_catalog,
    jetpack_in_matrix,
    driver_branch_in_matrix,
    host_names_unique,
    buckets_distinct,
    subnet_private,
    inference_image_serves_model,
    inference_reachable_where_allowed,
    labels_not_reserved,
)


def check(cfg: StackConfig, cat: Catalog | None = None) -> list[Problem]:
    """Every cross-field problem of a schema-valid stack, in rule order."""
    cat = cat or catalog()
    return [problem for rule in RULES for problem in rule(cfg, cat)]
