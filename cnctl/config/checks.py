"""Rules that relate several fields of a stack, or a field and the catalog.

Each rule is a small function that yields `Problem`s at the path of the field to change. They run
after the schema has accepted the syntax, so they may trust types.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Callable, Iterator

from cnctl.catalog import Catalog, catalog
from cnctl.config.bundle_checks import PLACEHOLDER_RULES
from cnctl.config.bundle_checks import RULES as BUNDLE_RULES
from cnctl.config.errors import Problem
from cnctl.config.gcp_checks import RULES as GCP_RULES
from cnctl.config.group_checks import RULES as GROUP_RULES
from cnctl.config.monitoring_checks import RULES as MONITORING_RULES
from cnctl.config.pipeline_checks import RULES as PIPELINE_RULES
from cnctl.config.schema import Host, StackConfig
from cnctl.config.values import repeated

Rule = Callable[[StackConfig, Catalog], Iterator[Problem]]

LOCAL = "local"  # the one stack that may hold a sandbox section and stand-ins
MAX_LABELS = 64
CNCTL_LABELS = ("environment", "managed-by")  # set on every resource by cnctl.cloud
SSH_PORT = 22  # sshd on the GPU VMs
PRIVATE_V6 = ipaddress.ip_network("fc00::/7")  # unique local addresses (RFC 4193)


def region_exists(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """gcp.region is a Compute Engine region (catalog/gcp.yaml), not only region-shaped."""
    if cfg.gcp is not None and cfg.gcp.region not in cat.gcp.regions:
        close = difflib.get_close_matches(cfg.gcp.region, cat.gcp.regions, n=3)
        hint = f"did you mean {' or '.join(close)}?" if close else "see catalog/gcp.yaml for the list"
        yield Problem("gcp.region", cfg.gcp.region, f"is not a Compute Engine region; {hint}")


def zones_in_region(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """Every zone lies in gcp.region and exists there (us-central1-d does not), once each."""
    if cfg.gcp is None:
        return
    known = cat.gcp.zones(cfg.gcp.region)
    for i, zone in enumerate(cfg.gcp.zones):
        if zone.rsplit("-", 1)[0] != cfg.gcp.region:
            yield Problem(f"gcp.zones[{i}]", zone, f"is not in region {cfg.gcp.region}; use {cfg.gcp.region}-a, -b, ...")
        elif known and zone not in known:
            yield Problem(f"gcp.zones[{i}]", zone, f"does not exist; the zones of {cfg.gcp.region}: {', '.join(known)}")
    for path, zone, _, _ in repeated((f"gcp.zones[{i}]", zone) for i, zone in enumerate(cfg.gcp.zones)):
        yield Problem(path, zone, "is listed twice")


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
    if isinstance(offered, list):  # attached GPUs: any listed count, on a machine type that exists
        if family.shapes and machine not in family.shapes:
            yield Problem("compute.machineType", machine, f"is not a {family_name} machine type; use one of: {', '.join(family.shapes)}")
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
    if entry.standin and (cfg.sandbox is None or cfg.environment != LOCAL):
        yield Problem("model.key", cfg.model.key, f"is a sandbox stand-in; only the {LOCAL} stack (with a `sandbox` section) may deploy it")
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


def _hosts(cfg: StackConfig) -> list[tuple[str, Host]]:
    """Every fleet host with the path of its entry."""
    hosts: list[tuple[str, Host]] = [(f"fleets.edge[{i}]", h) for i, h in enumerate(cfg.fleets.edge)]
    return hosts + [(f"fleets.servers[{i}]", h) for i, h in enumerate(cfg.fleets.servers)]


def _unroutable(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    return net.is_loopback or net.is_link_local or net.is_multicast or net.is_unspecified or net.is_reserved or (
        net.version == 4 and net.subnet_of(ipaddress.ip_network("0.0.0.0/8"))  # type: ignore[arg-type]
    )


def host_names_unique(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    for path, name, first, _ in repeated((f"{path}.name", host.name) for path, host in _hosts(cfg)):
        yield Problem(path, name, f"is already used by {first.removesuffix('.name')}")


def buckets_distinct(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    buckets = cfg.storage.buckets
    roles = ((f"storage.buckets.{role}", getattr(buckets, role)) for role in ("images", "results", "models"))
    for path, name, first, _ in repeated(roles):
        yield Problem(path, name, f"is the same bucket as {first}")


def subnet_private(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """The VPC subnet (and the sandbox's site network) lie in a range Google Cloud accepts for subnets and
    that is private: RFC 1918 or 100.64.0.0/10. Python's `is_private` would also pass loopback and
    link-local, which no subnet may use."""
    allowed = [ipaddress.ip_network(r) for r in cat.gcp.subnet_ranges]
    low, high = cat.gcp.subnet_prefix
    subnets = [("network.subnetCidr", cfg.network.subnet_cidr)]
    if cfg.sandbox is not None:
        subnets.append(("sandbox.subnet", cfg.sandbox.subnet))
    for path, cidr in subnets:
        net = ipaddress.ip_network(cidr)
        if net.version != 4 or not any(net.subnet_of(r) for r in allowed):  # type: ignore[arg-type]
            ranges = ", ".join(cat.gcp.subnet_ranges)
            yield Problem(path, cidr, f"must be a private range inside one of {ranges}")
        elif path == "network.subnetCidr" and not low <= net.prefixlen <= high:
            yield Problem(path, cidr, f"has a /{net.prefixlen} prefix; Google Cloud subnets are /{low} to /{high}")


def sources_routable(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """Allowed sources are ranges a packet can come from: not loopback, link-local, multicast or 0.0.0.0/8."""
    for i, cidr in enumerate(cfg.network.inference_allowed_cidrs):
        net = ipaddress.ip_network(cidr)
        if net.prefixlen and _unroutable(net):
            yield Problem(f"network.inferenceAllowedCidrs[{i}]", cidr, "is not routable (loopback, link-local, multicast or reserved); list the clients' range")


def host_addresses_usable(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """Each fleet host has its own address, however written (`10.50.1.21` and `::ffff:10.50.1.21`, or DNS names
    differing in case or a trailing dot, are one host), and one a deploy can reach: never loopback, multicast or
    0.0.0.0, and link-local only as IPv6 with the interface it is reached through (fe80::1%eth0)."""
    addresses = [(f"{path}.address", host.address) for path, host in _hosts(cfg)]
    for path, address, first, written in repeated(addresses):
        spelled = "" if address == written else f" (written {written!r} there)"
        yield Problem(path, address, f"is already the address of {first.removesuffix('.address')}{spelled}; each host has its own")
    for path, written in addresses:
        try:
            ip = ipaddress.ip_address(written)
        except ValueError:
            continue
        zoned = isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None
        if ip.is_loopback or ip.is_unspecified or ip.is_multicast or (ip.is_link_local and not zoned):
            yield Problem(path, written, "is not a host on the network (loopback, multicast, 0.0.0.0, or link-local without "
                          "the interface it is reached through, like fe80::1%eth0)")


def ports_distinct(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """No two services on one port: Triton's HTTP, gRPC and metrics ports, node-exporter's, the site's Prometheus and
    Alertmanager, and each host's SSH port."""
    ports = cfg.inference.ports
    taken: dict[int, str] = {}
    services = [(f"inference.ports.{name}", getattr(ports, name)) for name in ("http", "grpc", "metrics")]
    site = [("monitoring.prometheusPort", cfg.monitoring.prometheus_port),
            ("monitoring.alertmanagerPort", cfg.monitoring.alertmanager_port)] if cfg.monitoring.server else []
    for path, port in [*services, ("monitoring.nodeExporterPort", cfg.monitoring.node_exporter_port), *site]:
        if port in taken:
            yield Problem(path, port, f"is already {taken[port]}; give each service its own port")
        elif port == SSH_PORT and cfg.compute is not None:
            yield Problem(path, port, "is SSH's port on the GPU VMs (reached through IAP only); use another")
        taken.setdefault(port, path)
    for path, host in _hosts(cfg):
        if host.ssh_port in taken:
            yield Problem(f"{path}.sshPort", host.ssh_port, f"is {taken[host.ssh_port]}'s port; use another")


def labels_fit(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """At most 64 labels per resource, and cnctl adds its own to every one."""
    if cfg.gcp is not None and len(cfg.gcp.labels) > MAX_LABELS - len(CNCTL_LABELS):
        limit = MAX_LABELS - len(CNCTL_LABELS)
        yield Problem("gcp.labels", None, f"has {len(cfg.gcp.labels)} labels; at most {limit} (Google Cloud's 64 minus cnctl's {len(CNCTL_LABELS)})")


def sandbox_only_local(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """A `sandbox` section (stand-in packages, emulators, a local fleet) belongs to the local stack only."""
    if cfg.sandbox is not None and cfg.environment != LOCAL:
        yield Problem("sandbox", "…", f"only the {LOCAL} stack may have a sandbox section; remove it from stack {cfg.environment}")


def site_apt_has_key(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """A site repository is only trusted through its own key (signed-by): one without the other is half a source."""
    mirrors = cfg.mirrors
    if mirrors.site_apt is not None and mirrors.site_apt_key is None:
        yield Problem("mirrors.siteAptKey", None, "must name the signing key of mirrors.siteApt (an armored .asc URL)")
    if mirrors.site_apt is None and mirrors.site_apt_key is not None:
        yield Problem("mirrors.siteApt", None, "must name the site repository mirrors.siteAptKey signs, or drop the key")


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


def _private(address: ipaddress.IPv4Address | ipaddress.IPv6Address, cat: Catalog) -> bool:
    """A private address: in the private IPv4 ranges of the catalog (RFC 1918, 100.64.0.0/10), or an IPv6 ULA."""
    if isinstance(address, ipaddress.IPv6Address):
        return address in PRIVATE_V6
    return any(address in ipaddress.ip_network(r) for r in cat.gcp.subnet_ranges)


def bind_address_private(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """Triton listens on loopback or a private address; every interface (0.0.0.0, ::) only by explicit opt-in.

    Triton's HTTP API loads and unloads models without authentication: a public or link-local bind address
    exposes it, and 0.0.0.0 exposes it on every interface of every host (a plant's uplink too), so that needs
    `inference.bindAllInterfaces: true`, which means exactly that and nothing else.
    """
    inference = cfg.inference
    address = ipaddress.ip_address(inference.bind_address)
    if address.is_unspecified and not inference.bind_all_interfaces:
        yield Problem("inference.bindAddress", inference.bind_address,
                      "listens on every interface of every host; bind 127.0.0.1, a private address, or the private "
                      "interface (inference.bindInterface), or opt in with inference.bindAllInterfaces: true")
    elif not address.is_unspecified and inference.bind_all_interfaces:
        yield Problem("inference.bindAllInterfaces", True, f"is only for bindAddress 0.0.0.0 or ::, and bindAddress is "
                      f"{inference.bind_address}; remove bindAllInterfaces or set bindAddress: 0.0.0.0")
    elif not address.is_unspecified and not address.is_loopback and not _private(address, cat):
        yield Problem("inference.bindAddress", inference.bind_address,
                      "is neither loopback nor a private address (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7); "
                      "bind 127.0.0.1, a private address of the hosts, or inference.bindInterface")


def all_interfaces_need_an_allow_list(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """bindAllInterfaces binds every interface, so nothing else may narrow it: not bindInterface (which would
    bind one), and on GPU VMs the firewall's allow-list must name who Triton is for (for Google's health checks
    alone, bindInterface: ens4 is the narrower choice)."""
    if not cfg.inference.bind_all_interfaces:
        return
    if cfg.inference.bind_interface is not None:
        yield Problem("inference.bindInterface", cfg.inference.bind_interface,
                      "binds one interface, and inference.bindAllInterfaces says every one; keep one of them")
    if cfg.compute is not None and not cfg.network.inference_allowed_cidrs:
        yield Problem("network.inferenceAllowedCidrs", None,
                      "must list the clients allowed to reach Triton when inference.bindAllInterfaces opens every "
                      "interface of the GPU VMs; for health checks alone, bind inference.bindInterface: ens4 instead")


def storage_location_exists(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """storage.location is a Cloud Storage location of the catalog: a region, dual-region or multi-region."""
    location, known = cfg.storage.location, cat.gcp.bucket_locations()
    if location is None or not known or location.upper() in known:
        return
    close = difflib.get_close_matches(location.upper(), known, n=3)
    places = cat.gcp.storage_locations
    assert places is not None  # known is empty without them
    listed = f"multi-regions {', '.join(places.multi_regions)}; dual-regions {', '.join(places.dual_regions)}; or a region"
    hint = f"did you mean {' or '.join(close)}?" if close else f"use one of the {listed} like US-CENTRAL1"
    yield Problem("storage.location", location, f"is not a Cloud Storage location (catalog/gcp.yaml); {hint}")


def labels_not_reserved(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """cnctl sets `environment` and `managed-by` on every resource; a stack must not claim them."""
    if cfg.gcp is None:
        return
    for key in CNCTL_LABELS:
        if key in cfg.gcp.labels:
            yield Problem(f"gcp.labels.{key}", cfg.gcp.labels[key], "is set by cnctl on every resource; remove it")


def storage_matches_the_cloud_layer(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """Hosts upload where the stack's data goes: its own Cloud Storage buckets, or a store it names.

    With `gcp`, the cloud layer creates Cloud Storage buckets and loads the results bucket into BigQuery:
    hosts that upload to an S3 store would never reach them (an endpoint stays possible: a Private Service
    Connect endpoint for Cloud Storage, say). Without `gcp`, nothing creates buckets or an identity for
    them: the hosts need the store's address (an on-site S3 store, an emulator) or, for Google's or
    Amazon's own service, the credentials of whoever owns the buckets.
    """
    storage = cfg.storage
    if cfg.gcp is not None and storage.kind != "gcs":
        yield Problem("storage.kind", storage.kind, "must be gcs in a stack with a `gcp` section: the cloud layer "
                      "creates Cloud Storage buckets and loads its results bucket into BigQuery")
    elif cfg.gcp is None and storage.endpoint is None and storage.credentials_file is None:
        service = "Google Cloud Storage" if storage.kind == "gcs" else "Amazon S3"
        yield Problem("storage.endpoint", None, f"must name the site's object store (e.g. an on-site S3 endpoint): this "
                      f"stack has no `gcp` section, so nothing creates buckets or an identity for {service}; to upload "
                      "to another stack's buckets there, give storage.credentialsFile instead")


RULES: tuple[Rule, ...] = (
    region_exists,
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
    sources_routable,
    host_addresses_usable,
    ports_distinct,
    labels_fit,
    sandbox_only_local,
    site_apt_has_key,
    inference_image_serves_model,
    inference_reachable_where_allowed,
    bind_address_private,
    all_interfaces_need_an_allow_list,
    storage_location_exists,
    labels_not_reserved,
    storage_matches_the_cloud_layer,
    *GCP_RULES,
    *GROUP_RULES,
    *PIPELINE_RULES,
    *BUNDLE_RULES,
    *MONITORING_RULES,
)


def check(cfg: StackConfig, cat: Catalog | None = None) -> list[Problem]:
    """Every cross-field problem of a schema-valid stack, in rule order."""
    cat = cat or catalog()
    return [problem for rule in RULES for problem in rule(cfg, cat)]


def placeholders(cfg: StackConfig, cat: Catalog | None = None) -> list[Problem]:
    """The example stacks' placeholders `cfg` still holds (PLACEHOLDER_RULES), each at its field.

    Not part of `check`: an example plans as shipped (`cnctl plan`, `pulumi preview`), as one with the model's
    all-zero sha256 does. What would create something from the stack refuses them: `cnctl validate`, `cnctl up`
    and the Pulumi program under `pulumi up` (`cnctl.config.loader.parse(refuse_placeholders=True)`).
    """
    cat = cat or catalog()
    return [problem for rule in PLACEHOLDER_RULES for problem in rule(cfg, cat)]
