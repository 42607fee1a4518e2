"""The catalogs: platform matrix, model catalog and Google Cloud facts, loaded from the YAML beside this file.

The YAML files are the one copy of each fact; this module only gives them types so that code reads
`catalog().platforms.jetson.release("6.0").l4t` instead of walking dictionaries.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

CATALOG_DIR = Path(__file__).parent


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- platform matrix -------------------------------------------------------------------------


class OsRelease(_Data):
    id: str
    version: str
    codename: str
    repo_distro: str | None = None


class JetsonApt(_Data):
    base_url: str
    key_url: str
    components: list[str]


class JetsonRelease(_Data):
    jetpack: str
    l4t: str
    gcid: str
    build_date: str
    apt_release: str
    packages: dict[str, str]
    cuda: str
    nvcc: str
    cudnn: str
    tensorrt: str
    driver: str
    triton_image: str
    verified: bool

    def nv_tegra_release(self) -> str:
        """`/etc/nv_tegra_release` exactly as L4T r36 writes it on an Orin (t234, out-of-tree modules)."""
        major, _, revision = self.l4t.partition(".")
        return (
            f"# R{major} (release), REVISION: {revision}, GCID: {self.gcid}, BOARD: generic, EABI: aarch64, "
            f"DATE: {self.build_date}\n"
            "# KERNEL_VARIANT: oot\n"
            "TARGET_USERSPACE_LIB_DIR=nvidia\n"
            "TARGET_USERSPACE_LIB_DIR_PATH=usr/lib/aarch64-linux-gnu/nvidia\n"
        )


class JetsonMatrix(_Data):
    soc: str
    os: OsRelease
    apt: JetsonApt
    releases: list[JetsonRelease]

    def release(self, jetpack: str) -> JetsonRelease:
        for rel in self.releases:
            if rel.jetpack == jetpack:
                return rel
        raise KeyError(jetpack)

    def by_l4t(self, l4t: str) -> JetsonRelease | None:
        return next((rel for rel in self.releases if rel.l4t == l4t), None)


class CudaRepo(_Data):
    base_url: str
    keyring_package: str
    keyring_version: str
    keyring_file: str


class DriverBranch(_Data):
    branch: str
    version: str
    max_cuda: str
    packages: list[str]


class CudaToolkit(_Data):
    cuda: str
    package: str
    version: str
    nvcc: str


class TritonImage(_Data):
    image: str
    triton: str
    cuda: str
    tensorflow_backend: bool


class Gpu(_Data):
    name: str
    accelerator: str
    arch: str
    memory_mib: int
    min_branch: str


class ServerMatrix(_Data):
    os: list[OsRelease]
    cuda_repo: CudaRepo
    driver_branches: list[DriverBranch]
    cuda_toolkits: list[CudaToolkit]
    triton_images: list[TritonImage]
    gpus: list[Gpu]

    def driver(self, branch: str) -> DriverBranch:
        return next(d for d in self.driver_branches if d.branch == branch)

    def triton(self, image: str) -> TritonImage | None:
        return next((t for t in self.triton_images if t.image == image), None)


class ContainerToolkit(_Data):
    version: str
    packages: list[str]
    key_url: str
    repo_url: str


class DockerPins(_Data):
    upstream_version: str
    containerd_version: str
    packages: list[str]
    base_url: str

    def apt_version(self, os: OsRelease) -> str:
        """Docker CE's apt version string for one OS, e.g. `5:27.5.1-1~ubuntu.22.04~jammy`."""
        return f"5:{self.upstream_version}-1~{os.id}.{os.version}~{os.codename}"


class DistributionDocker(_Data):
    """The distribution's own Docker engine (`docker.io`): its packages, pinned per OS release (codename ->
    package -> apt version or glob), since each release ships its own upstream version."""

    packages: list[str]
    releases: dict[str, dict[str, str]]
    verified: dict[str, bool]


class ContainerMatrix(_Data):
    nvidia_container_toolkit: ContainerToolkit
    docker: DockerPins
    docker_io: DistributionDocker


class PinnedWheel(_Data):
    """One wheel of a pip install with --require-hashes: the sha256 of each file PyPI has for its platforms."""

    name: str
    version: str
    triton: str | None = None
    sha256: list[str]
    # A source archive, not a wheel: for a pure-Python package PyPI has no usable wheel of (trackpy). Its hash
    # pins the sdist; the host builds it after the wheels, with the set's own pinned setuptools and wheel
    # (`--no-build-isolation`), so no unpinned build tool is ever fetched.
    sdist: bool = False


class NativeTriton(_Data):
    """Triton from a wheel in a venv on the host (the `native` inference runtime)."""

    packages: list[PinnedWheel]
    pythons: list[str]


class PlatformMatrix(_Data):
    jetson: JetsonMatrix
    servers: ServerMatrix
    container: ContainerMatrix
    native_triton: NativeTriton


# --- model catalog ---------------------------------------------------------------------------

BigQueryType = Literal["INTEGER", "STRING", "FLOAT"]


class BigQueryField(_Data):
    name: str
    type: BigQueryType


class Generation(_Data):
    description: str
    flags: dict[str, str]
    bigquery_schema: list[BigQueryField]


class TensorSpec(_Data):
    name: str
    datatype: str
    shape: list[int]


class CatalogModel(_Data):
    description: str
    generation: str
    format: Literal["tf_savedmodel", "onnx", "python"]
    triton_platform: str
    requires_backend: str
    url: str | None
    sha256: str | None
    input: TensorSpec
    outputs: list[str]
    labels: int
    standin: bool
    # The name Triton serves it under (its repository folder; an archive's own config.pbtxt names it too).
    served_name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,128}$")


class ModelCatalog(_Data):
    generations: dict[str, Generation]
    models: dict[str, CatalogModel]


# --- pipeline catalog ------------------------------------------------------------------------


class Client(_Data):
    """A CircularNet client archive the pipeline runs (catalog/pipeline.yaml)."""

    description: str
    generation: str
    url: str | None
    sha256: str | None
    # The client's script, relative to the unpacked archive or to its one top-level directory (GitHub's
    # archives put everything under `<repo>-<commit>/`).
    entry: str = Field(pattern=r"^[A-Za-z0-9_./-]{1,200}$")
    # The wheels the client needs beside the uploader's: a list, or the name of a pinned set of this catalog
    # (`client_tf`, written by tools/pin_wheels.py); None, or a set still empty: not pinned (the layer refuses).
    requirements: list[PinnedWheel] | str | None
    # How the runner talks to it. `ndjson`: the client writes `<out>/detections.ndjson` itself (the stand-in,
    # any client written for this toolkit). `upstream`: upstream's client, which reads and writes gs:// with
    # gsutil and appends to BigQuery, run through cnhost/client_adapter.py (local batch in, NDJSON rows out).
    contract: Literal["ndjson", "upstream"] = "ndjson"
    standin: bool


class Uploader(_Data):
    """The wheels of the pipeline's venv: the uploader's libraries and every dependency, pinned by hash."""

    pythons: list[str]
    packages: list[PinnedWheel]


# The pinned sets a client's `requirements` may name (each a field of PipelineCatalog).
CLIENT_WHEEL_SETS = ("client_tf",)


class PipelineCatalog(_Data):
    clients: dict[str, Client] = Field(default_factory=dict)
    uploader: Uploader = Field(default_factory=lambda: Uploader(pythons=[], packages=[]))
    # The bucket worker's wheels (google-cloud-pubsub) beyond the uploader's: only hosts with bucket input.
    worker: Uploader = Field(default_factory=lambda: Uploader(pythons=[], packages=[]))
    # The pull agent's wheels (pyinfra, pydantic, PyYAML at uv.lock's versions) beyond the uploader's: the pull
    # layer's venv on pull-mode hosts. Defaults to none so that a revision from before pull mode still loads.
    agent: Uploader = Field(default_factory=lambda: Uploader(pythons=[], packages=[]))
    # The TF generation's upstream client's wheels beyond the uploader's (TensorFlow, OpenCV, trackpy, ...).
    client_tf: Uploader = Field(default_factory=lambda: Uploader(pythons=[], packages=[]))

    @model_validator(mode="after")
    def _named_sets_exist(self) -> PipelineCatalog:
        for key, client in self.clients.items():
            if isinstance(client.requirements, str) and client.requirements not in CLIENT_WHEEL_SETS:
                raise ValueError(f"clients.{key}.requirements names {client.requirements!r}, not one of the "
                                 f"clients' pinned sets ({', '.join(CLIENT_WHEEL_SETS)})")
        return self

    def client_wheels(self, key: str) -> list[PinnedWheel] | None:
        """The pinned wheels client `key` needs beside the uploader's; None while they are not pinned."""
        client = self.clients.get(key)
        if client is None or client.requirements is None:
            return None
        if isinstance(client.requirements, str):
            return list(getattr(self, client.requirements).packages) or None
        return list(client.requirements)


# --- Google Cloud facts ----------------------------------------------------------------------


class MachineFamily(_Data):
    attached: bool
    # attached families: accelerator -> allowed counts; fixed families: accelerator -> {shape: count}
    gpus: dict[str, list[int] | dict[str, int]]
    # attached families: the machine types GPUs attach to (fixed families: the shapes under `gpus`)
    shapes: list[str] = []

    def machine_types(self) -> list[str]:
        """Every machine type of this family that can run a GPU."""
        fixed = [shape for offered in self.gpus.values() if isinstance(offered, dict) for shape in offered]
        return self.shapes + fixed


class ImageFamily(_Data):
    driver_branch: str
    cuda: str
    secure_boot: bool
    gvnic: bool = False
    # instance metadata the family needs on first boot (the DLVM driver installer's switch)
    metadata: dict[str, str] = {}


class Images(_Data):
    project: str
    families: dict[str, ImageFamily]


class FamilyConstraints(_Data):
    """What Compute Engine accepts on one GPU machine family beyond its GPUs."""

    boot_disk_types: list[str]
    nic: Literal["any", "GVNIC"]


class ReplacedWhen(_Data):
    """Inputs whose change replaces a resource only while another input has one value (a provider CustomizeDiff)."""

    input: str
    equals: str
    paths: list[str]


class Replacement(_Data):
    """How the provider diffs one resource type: the inputs whose change replaces it (its ForceNew fields),
    and the list inputs it keeps as sets, whose order is no change."""

    paths: list[str]
    stateful: bool = False
    schema_input: str | None = None  # a BigQuery schema input: replaced only by a non-additive change
    sets: list[str] = []  # list inputs the provider's schema declares TypeSet: compared as sets
    grow_only: list[str] = []  # numbers updated in place when they grow: a smaller one replaces
    when: list[ReplacedWhen] = []
    # what a replacement does beyond the resource itself, and the safe way to make the change
    on_replace: str | None = None
    # the same for an update in place
    on_update: str | None = None


class StorageLocation(_Data):
    """A Cloud Storage multi-region or predefined dual-region: the regions it spans (dual) and its KMS location."""

    kms: str
    regions: list[str] = []


class StorageLocations(_Data):
    multi_regions: dict[str, StorageLocation]
    dual_regions: dict[str, StorageLocation]


class OpsAgent(_Data):
    """Google's Ops Agent from its signed apt repository (catalog gcp.yaml `ops_agent`): where it is, the key and the
    fingerprints that key must have, and the version pin."""

    base_url: str
    key_url: str
    # the primary keys' full fingerprints, upper-case hex, as gpg prints them (--with-colons, field 10)
    key_fingerprints: list[Annotated[str, Field(pattern=r"^[0-9A-F]{40}$")]] = Field(min_length=1)
    suite: str  # `{codename}`: the VM's distribution codename, known at boot
    component: str
    package: str
    version: str  # an apt version glob (`2.*`)
    current: str  # the newest version when the pin was last reviewed
    gpu_minimum: str  # the oldest version that collects GPU metrics on every 2.x after it

    @model_validator(mode="after")
    def _consistent(self) -> OpsAgent:
        if not self.key_url.startswith(self.base_url.rstrip("/") + "/"):
            raise ValueError(f"ops_agent.key_url {self.key_url} is not under base_url {self.base_url} (one mirror serves both)")
        if "{codename}" not in self.suite:
            raise ValueError("ops_agent.suite must name {codename}: the repository is per distribution")
        return self


class GcpFacts(_Data):
    iap_ssh_range: str
    machine_families: dict[str, MachineFamily]
    images: Images
    services: list[str]
    # region -> its zone suffixes (`a`, `b`, ...): the places that exist
    regions: dict[str, list[str]]
    # IPv4 ranges a VPC subnet may use (GCP's valid subnet ranges, minus publicly routable ones)
    subnet_ranges: list[str]
    subnet_prefix: tuple[int, int]
    family_constraints: dict[str, FamilyConstraints]
    spot_only_shapes: list[str]
    replacements: dict[str, Replacement]
    # Where Google's health checks (and so autohealing) come from; a firewall rule must let them in.
    # Defaults to none so that a revision from before the worker group (plan-diff's base tree) still loads.
    health_check_ranges: list[str] = Field(default_factory=list)
    # APIs enabled only for a stack in compute.mode group (the images queue)
    group_services: list[str] = Field(default_factory=list)
    # Cloud Storage's multi- and dual-regions (its regions are `regions`, upper-case). None: a revision from
    # before the list (plan-diff's base tree), which checks no bucket location.
    storage_locations: StorageLocations | None = None
    # The Ops Agent every cloud VM installs. None: a revision from before it (plan-diff's base tree).
    ops_agent: OpsAgent | None = None

    def bucket_locations(self) -> list[str]:
        """Every Cloud Storage location, as Cloud Storage writes them: regions, dual-regions, multi-regions."""
        if self.storage_locations is None:
            return []
        places = self.storage_locations
        return [region.upper() for region in self.regions] + [*places.dual_regions, *places.multi_regions]

    def kms_location(self, bucket_location: str) -> str:
        """Where a CMEK key for buckets in `bucket_location` lives: `EUROPE-WEST4` -> `europe-west4`, `EU` ->
        `europe`, `NAM4` -> `nam4` (a location the catalog does not list: its lower-case name)."""
        upper = bucket_location.upper()
        places = self.storage_locations
        if places is not None and (found := places.multi_regions.get(upper) or places.dual_regions.get(upper)):
            return found.kms
        return bucket_location.lower()

    def zones(self, region: str) -> list[str]:
        """`us-central1` -> [`us-central1-a`, ...]; empty for a region that does not exist."""
        return [f"{region}-{suffix}" for suffix in self.regions.get(region, [])]


class Catalog(_Data):
    platforms: PlatformMatrix
    models: ModelCatalog
    gcp: GcpFacts
    # Optional so that a revision from before the pipeline catalog (plan-diff's base tree) still loads.
    pipeline: PipelineCatalog = Field(default_factory=PipelineCatalog)


def _load(directory: Path, name: str) -> dict:
    with (directory / name).open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def load_catalog(directory: Path) -> Catalog:
    """The catalogs of one directory (this one, or another revision's `cnctl/catalog`), type-checked."""
    return Catalog(
        platforms=PlatformMatrix.model_validate(_load(directory, "platforms.yaml")),
        models=ModelCatalog.model_validate(_load(directory, "models.yaml")),
        gcp=GcpFacts.model_validate(_load(directory, "gcp.yaml")),
        pipeline=PipelineCatalog.model_validate(_load(directory, "pipeline.yaml"))
        if (directory / "pipeline.yaml").is_file() else PipelineCatalog(),
    )


@cache
def catalog() -> Catalog:
    """The catalogs, parsed and type-checked once per process."""
    return load_catalog(CATALOG_DIR)
