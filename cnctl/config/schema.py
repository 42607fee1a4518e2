"""The typed model of one environment: the `circularnet:` keys of `stacks/Pulumi.<env>.yaml`.

Keys are camelCase in YAML (Pulumi's convention) and snake_case in Python. Field validators here
check the syntax of single values; rules that relate several fields or the catalog live in
`checks.py`, so that every problem is reported at the path of the field the user must change.
"""

from __future__ import annotations

import typing
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from cnctl.config.values import (
    ONE_LINE_RULE,
    ArchiveUrl,
    BigQueryId,
    BucketName,
    CatalogKey,
    Cidr,
    ControllerPath,
    DevicePath,
    Directory,
    DriverBranch,
    EmailAddress,
    EndpointUrl,
    GpuType,
    HostAddress,
    HostName,
    ImageFamily,
    ImageRef,
    InterfaceName,
    IpAddress,
    JetPackVersion,
    KmsKeyName,
    Labels,
    MachineType,
    MirrorUrl,
    Port,
    ProjectId,
    Region,
    RtspUrl,
    Sha256,
    SignerIdentity,
    SshPublicKey,
    StorageLocation,
    SubscriptionName,
    Zone,
    control_characters_in,
    describe_character,
)

# The error type of a string holding a control character; its context says where below the field (`at`: list
# indices, mapping keys) and which string, so the loader names the exact path and shows the value escaped.
CONTROL_CHARACTER = "control_character"


def _holds_model(annotation: Any) -> bool:
    """Does a field of this type take a model (or models in a list/mapping)? Those check their own strings."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_holds_model(arg) for arg in typing.get_args(annotation))


@cache
def _field_holds_model(model: type[BaseModel], name: str) -> bool:
    return _holds_model(model.model_fields[name].annotation)


class Section(BaseModel):
    """A block of the stack file: camelCase keys, unknown keys are errors (they are typos), and no string in it
    (values, list items, mapping keys) holds a control character: the one rule every field obeys, new ones
    included, before its own type's rules. No field of the stack is free text that never reaches a sink."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    @field_validator("*", mode="before")
    @classmethod
    def _one_line_of_text(cls, value: Any, info: ValidationInfo) -> Any:
        nested = info.field_name is not None and _field_holds_model(cls, info.field_name)
        for where, text, char in control_characters_in(value, into_containers=not nested):
            raise PydanticCustomError(
                CONTROL_CHARACTER, "holds the control character {char}; {rule}",
                {"char": describe_character(char), "rule": ONE_LINE_RULE, "at": where, "text": text},
            )
        return value


# --- cloud -----------------------------------------------------------------------------------


class Gcp(Section):
    """Where the cloud layer lives. Absent: the stack has no cloud layer (sites and servers only)."""

    project: ProjectId
    region: Region
    zones: list[Zone] = Field(min_length=1, description="ordered: GPU VMs fall back to the next zone")
    labels: Labels = Field(default_factory=dict)


class Network(Section):
    subnet_cidr: Cidr = "10.20.0.0/24"
    inference_allowed_cidrs: list[Cidr] = Field(
        default_factory=list, description="sources allowed to reach the inference ports; none by default"
    )


class Buckets(Section):
    images: BucketName
    results: BucketName
    models: BucketName


class Storage(Section):
    kind: Literal["gcs", "s3"] = "gcs"
    endpoint: EndpointUrl | None = Field(None, description="emulator or on-site S3 URL; None means the provider's own")
    location: StorageLocation | None = Field(
        None, description="the buckets' Cloud Storage location (a region, dual-region or multi-region of catalog/gcp.yaml); "
        "default: the stack's region (gcp.region). With a `gcp` section only that region: BigQuery's transfers load "
        "the results bucket only from the dataset's region"
    )
    buckets: Buckets
    image_retention_days: int = Field(30, ge=1, le=3650)
    kms_key_name: KmsKeyName | None = None
    credentials_file: ControllerPath | None = Field(
        None,
        description="on the machine that deploys: the uploader's credentials (GCS: a service-account key JSON; S3: "
        "a JSON {accessKeyId, secretAccessKey}), copied to each edge device and server as a 0600 file of the "
        "pipeline's user; never in the repo. None: the host's own identity (a GCE VM's service account), or "
        "anonymous access to an emulator",
    )


class Analytics(Section):
    dataset: BigQueryId = "circularnet"
    table: BigQueryId = "detections"
    kms_key_name: KmsKeyName | None = Field(None, description="CMEK for the dataset's tables; in the dataset's region")
    load_every_minutes: int = Field(
        15,
        ge=15,
        le=1440,
        description="how often the BigQuery Data Transfer loads new results from the results bucket "
        "(15 minutes is the shortest interval Cloud Storage transfers allow)",
    )

    def table_of(self, generation: str) -> str:
        """`detections_tf`: the table of one client generation (generations differ in columns, each keeps its own)."""
        return f"{self.table}_{generation}"


class GpuSpec(Section):
    type: GpuType = "nvidia-tesla-t4"
    count: int = Field(1, ge=1, le=16)


class VmPlacement(Section):
    """Where one GPU VM runs: moving it after a stock-out changes this entry, and that VM only."""

    zone: Zone
    allow_replace: bool = Field(
        False, description="lift Pulumi's protect on this VM, so that a planned replacement may apply (docs/cloud.md)"
    )


class WorkerGroup(Section):
    """The autoscaled GPU workers of `compute.mode: group` (cnctl/cloud/group.py, docs/cloud.md).

    Bounds Google Cloud or Pub/Sub impose are rules (cnctl/config/group_checks.py), so a wrong value is
    reported at its field with the allowed range and the reason, not as a bare type error.
    """

    min: int = Field(1, description="workers always running; 0 lets a batch site scale to nothing when the queue is empty")
    max: int = Field(2, description="at most this many workers, whatever the backlog")
    images_per_worker: int = Field(
        50, description="the autoscaler's target: one worker per this many undelivered images in the queue"
    )
    max_delivery_attempts: int = Field(
        5, description="deliveries of one image before Pub/Sub moves it to the dead-letter topic (Pub/Sub: 5-100)"
    )
    ack_deadline_seconds: int = Field(
        120, description="how long a worker holds an image before Pub/Sub redelivers it (Pub/Sub: 10-600); "
        "workers extend it during long inference"
    )
    initial_delay_seconds: int | None = Field(
        None, description="autohealing waits this long after a worker boots before its health counts (Compute Engine: "
        "0-3600); default: the boot steps' estimate with a margin (driver, bundle, image, model: cnctl/cloud/group.py). "
        "Set it to what a first real boot took (docs/cloud.md, \"First real apply\")"
    )


class Compute(Section):
    machine_type: MachineType = "n1-standard-8"
    gpu: GpuSpec = Field(default_factory=GpuSpec)
    image_family: ImageFamily = "common-cu124-ubuntu-2204-nvidia-550"
    disk_size_gb: int = Field(300, ge=50, le=65536)
    disk_type: Literal["pd-balanced", "pd-ssd", "pd-standard", "hyperdisk-balanced"] = "pd-balanced"
    spot: bool = False
    instances: int = Field(1, ge=0, le=100)
    placement: list[VmPlacement] = Field(
        default_factory=list, description="one entry per VM, in order; required with several VMs over several zones "
        "(else a reorder of gcp.zones would move VMs); without it VM i runs in gcp.zones[i % len(zones)]"
    )
    nic_type: Literal["auto", "GVNIC", "VIRTIO_NET"] = Field("auto", description="auto: GVNIC where the family needs it")
    kms_key_name: KmsKeyName | None = Field(None, description="CMEK for the boot disks; in the stack's region")
    mode: Literal["vms", "group"] = Field(
        "vms",
        description="vms: compute.instances fixed VMs, configured by push; group: a regional managed instance group "
        "autoscaled on the images queue (compute.group)",
    )
    group: WorkerGroup | None = Field(None, description="the worker group's sizes and queue (compute.mode: group)")

    @property
    def worker_group(self) -> WorkerGroup | None:
        """The group's settings in mode group (its defaults when `group` is not written); None in mode vms."""
        if self.mode != "group":
            return None
        return self.group if self.group is not None else WorkerGroup()


# --- model, inference, pipeline --------------------------------------------------------------


class Model(Section):
    key: CatalogKey = Field(description="the model's key in the model catalog (catalog/models.yaml)")
    version: int = Field(1, ge=1)
    url: ArchiveUrl | None = Field(None, description="mirror of the archive; default: the catalog's upstream URL")
    sha256: Sha256 | None = None
    keep: int = Field(2, ge=1, le=20, description="versions each host keeps in its model repository (rollback needs 2)")


class InferencePorts(Section):
    http: Port = 8000
    grpc: Port = 8001
    metrics: Port = 8002


class Inference(Section):
    runtime: Literal["container", "native"] = "container"
    images: dict[Literal["server", "jetson"], ImageRef] = Field(
        default_factory=dict, description="override the platform matrix's Triton image per platform"
    )
    bind_address: IpAddress = Field(
        "127.0.0.1",
        description="the one address Triton listens on: loopback, or a private address of the host (RFC 1918, "
        "100.64.0.0/10, fc00::/7); 0.0.0.0 or :: (every interface) only with bindAllInterfaces",
    )
    bind_all_interfaces: bool = Field(
        False,
        description="the explicit opt-in for bindAddress 0.0.0.0 or ::: Triton (whose HTTP API loads and unloads "
        "models, unauthenticated) then answers on every interface of every host, so the network around each host "
        "must be its allow-list; a stack with GPU VMs must list their clients in network.inferenceAllowedCidrs",
    )
    bind_interface: InterfaceName | None = Field(
        None,
        description="a named private interface (e.g. ens4 on GCE) whose address Triton binds; overrides bindAddress",
    )
    ports: InferencePorts = Field(default_factory=InferencePorts)


class Pipeline(Section):
    """The client pipeline on every edge device and server: frames in, detections out, uploaded."""

    score_threshold: float = Field(0.4, gt=0, lt=1)
    search_range_x: int = Field(150, ge=0)
    search_range_y: int = Field(20, ge=0)
    memory: int = Field(20, ge=0)
    tracking_visualization: bool = False
    cropped_objects: bool = False
    client: CatalogKey | None = Field(
        None, description="the client's catalog key (catalog/pipeline.yaml `clients`); default: the model generation's"
    )
    client_url: ArchiveUrl | None = Field(None, description="mirror of the client archive; default: the catalog's URL")
    client_sha256: Sha256 | None = Field(None, description="the client archive's sha256; default: the catalog's pin")
    interval_seconds: int = Field(10, ge=1, le=86400, description="the pipeline timer: a run this long after the last ended")
    batch_frames: int = Field(64, ge=1, le=10000, description="frames one pipeline run takes from the spool at most")
    upload_images: bool = Field(False, description="upload the frames too (to storage.buckets.images), not only results")
    queue_budget_mib: int = Field(
        1024, ge=1, le=1048576,
        description="disk the upload queue may use on a host; past it the oldest queued files are dropped and counted",
    )
    input: Literal["spool", "bucket"] | None = Field(
        None,
        description="where servers and cloud VMs take frames from (edge devices always read their camera): spool, a "
        "local directory; bucket, the images bucket's new objects through its Pub/Sub subscription (each consumed "
        "once, cnhost/bucket_worker.py). Default: bucket for the workers of compute.mode group, else spool",
    )
    subscription: SubscriptionName | None = Field(
        None,
        description="the subscription bucket input pulls from (OBJECT_FINALIZE notifications of storage.buckets.images); "
        "default: the cloud layer's cn-<env>-images-work with compute.mode group",
    )
    max_messages: int = Field(
        64, ge=1, le=1000,
        description="bucket input: images a worker holds at once (Pub/Sub flow control); one client run takes them",
    )


# --- fleets ----------------------------------------------------------------------------------


class Camera(Section):
    """The belt camera of an edge device: where frames come from and where they are spooled for the pipeline."""

    source: Literal["v4l2", "rtsp", "replay"] = Field(
        "v4l2", description="v4l2: a USB/CSI camera device; rtsp: a network camera; replay: recorded footage"
    )
    device: DevicePath = Field("/dev/video0", description="the V4L2 device (source v4l2)")
    url: RtspUrl | None = Field(None, description="the camera's stream (source rtsp), without credentials")
    replay_url: ArchiveUrl | None = Field(None, description="a zip of JPEG frames replayed in name order (source replay)")
    replay_sha256: Sha256 | None = Field(None, description="the replay archive's sha256")
    replay_loop: bool = Field(False, description="replay the footage forever; false: once (a restart does not replay it)")
    frame_prefix: str = Field("frame", pattern=r"^[A-Za-z0-9-]+$")
    capture_dir: Directory = "/var/lib/circularnet/pipeline/frames"
    fps: int = Field(30, ge=1, le=240)
    spool_budget_mib: int = Field(
        2048, ge=1, le=1048576, description="disk the frame spool may use; past it the oldest frames are dropped and counted"
    )


class Host(Section):
    name: HostName
    address: HostAddress
    ssh_user: str = Field("circularnet", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    ssh_port: Port = 22
    site: str = Field("default", pattern=r"^[a-z0-9-]+$")
    reboot: Literal["allowed", "never"] = Field(
        "never",
        description="allowed: a first driver install that needs a reboot reboots the host; never: the host "
        "ends 'reboot pending' (reported) and a run after the reboot continues",
    )
    inference_runtime: Literal["container", "native"] | None = Field(
        None, description="this host's Triton runtime, overriding inference.runtime (e.g. native on a CPU-only box)"
    )
    pipeline_input: Literal["spool", "bucket"] | None = Field(
        None, description="a server's frame source, overriding pipeline.input (edge devices read their camera)"
    )
    mode: Literal["push", "pull"] = Field(
        "push",
        description="push: configured over SSH by `cnctl deploy`; pull: configures itself from the stack's signed "
        "bundle (a systemd timer runs the host layers with pyinfra's @local connector), no inbound SSH needed "
        "after the first deploy (docs/pull-mode.md)",
    )
    channel: Literal["canary", "stable"] | None = Field(
        None, description="the bundle channel a pull-mode host follows (default stable; canary hosts get a bundle first)"
    )


class EdgeDevice(Host):
    jetpack: JetPackVersion = "6.0"
    camera: Camera = Field(default_factory=Camera)
    nvpmodel: int | None = Field(
        None, ge=0, le=15, description="nvpmodel power mode id (board-specific: 0 is MAXN on AGX Orin); None keeps the board's"
    )
    jetson_clocks: bool = Field(False, description="pin clocks to the power mode's maximum at every boot (jetson_clocks unit)")


class Server(Host):
    driver_branch: DriverBranch = "550"


class Fleets(Section):
    edge: list[EdgeDevice] = Field(default_factory=list)
    servers: list[Server] = Field(default_factory=list)
    file: ControllerPath | None = Field(
        None,
        description="a fleet file (JSON) that another tool writes: the edge devices and servers it lists are this "
        "stack's, each with the settings of its entry here of the same name (else of its group's first entry), "
        "reached as the file says (address, SSH user, port, key, known_hosts). The local stack's is the one "
        "`cnctl sandbox up` writes; CNCTL_FLEET_FILE names another copy for one run (docs/fleet-files.md)",
    )


# --- mirrors -----------------------------------------------------------------------------------

class Mirrors(Section):
    """Site mirrors for air-gapped plants: each replaces the base URL of one upstream source of the
    platform matrix (keys and repositories alike; apt still checks the upstream signatures)."""

    jetson_apt: MirrorUrl | None = Field(None, description="replaces https://repo.download.nvidia.com/jetson")
    cuda_apt: MirrorUrl | None = Field(None, description="replaces https://developer.download.nvidia.com/compute/cuda/repos")
    container_toolkit_apt: MirrorUrl | None = Field(
        None, description="replaces https://nvidia.github.io/libnvidia-container"
    )
    docker_apt: MirrorUrl | None = Field(None, description="replaces https://download.docker.com/linux")
    ops_agent_apt: MirrorUrl | None = Field(
        None, description="replaces https://packages.cloud.google.com/apt for the cloud VMs' Ops Agent (key and repository)"
    )
    registry: MirrorUrl | None = Field(None, description="a Docker Hub pull-through mirror (daemon.json registry-mirrors)")
    site_apt: MirrorUrl | None = Field(
        None,
        description="a flat, signed site repository (`deb <url> /`) carrying every package the host layers install "
        "(NVIDIA's, Docker's and the distribution's): when set, it replaces the upstream repositories",
    )
    site_apt_key: MirrorUrl | None = Field(None, description="the site repository's signing key (armored); needed with siteApt")
    python_index: MirrorUrl | None = Field(
        None, description="a PEP 503 simple index (e.g. a devpi or Artifactory mirror) replacing https://pypi.org/simple "
        "for the wheels the native inference runtime installs (each pinned by sha256 all the same)"
    )


# --- container engine -------------------------------------------------------------------------


class Container(Section):
    """The Docker engine every host runs (the container layer); which packages each engine is, is matrix data."""

    engine: Literal["docker-ce", "docker.io"] = Field(
        "docker-ce", description="docker-ce: Docker's own apt repository; docker.io: the distribution's package"
    )
    data_root: str = Field(
        "/var/lib/docker", pattern=r"^/[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", description="daemon.json data-root (absolute)"
    )
    log_max_size: str = Field("10m", pattern=r"^[1-9][0-9]{0,5}[kmg]$", description="json-file log rotation size")
    log_max_files: int = Field(3, ge=1, le=100, description="json-file log files kept per container")


class Smtp(Section):
    """The plant's mail relay for the site's alerts."""

    smarthost: HostAddress
    port: Port = 587
    sender: EmailAddress = Field(description="the From: address of every alert mail")
    username: str | None = Field(None, pattern=r"^[A-Za-z0-9@._+-]{1,128}$")
    password_file: ControllerPath | None = Field(
        None, description="on the machine that deploys: the relay's password (its first line), with `username`"
    )
    require_tls: bool = True


class Webhook(Section):
    """An HTTP endpoint the site's Alertmanager posts alerts to (Alertmanager's webhook JSON)."""

    url: EndpointUrl
    token_file: ControllerPath | None = Field(
        None, description="on the machine that deploys: a bearer token (its first line) sent with each post"
    )


class Monitoring(Section):
    """What watches the stack: every host's exporters (the monitoring layer), the cloud layer's alert policies
    (cnctl/cloud/monitoring.py) and who they notify."""

    emails: list[EmailAddress] = Field(
        default_factory=list, description="who the cloud alert policies notify (a Cloud Monitoring e-mail channel each)"
    )
    backlog_age_seconds: int = Field(
        900, ge=60, le=86400, description="compute.mode group: an image waiting longer than this raises an alert"
    )
    node_exporter_port: Port = Field(
        9100, description="every host's node-exporter (the monitoring layer), on the address Triton binds"
    )
    server: HostName | None = Field(
        None,
        description="the `fleets.servers` entry that runs the site's Prometheus and Alertmanager (the monitoring "
        "layer, docs/monitoring.md); it scrapes itself and every push host whose exporters listen on a reachable "
        "address, the others run Prometheus in agent mode and remote-write to it. None: no site monitoring",
    )
    interface: InterfaceName | None = Field(
        None,
        description="with `server`: the named interface of the monitoring server whose address Prometheus and "
        "Alertmanager listen on (the one the fleet reaches it by; never every address)",
    )
    prometheus_port: Port = Field(9090, description="the site's Prometheus (UI, API, remote-write receiver)")
    alertmanager_port: Port = Field(9093, description="the site's Alertmanager (UI, API)")
    password_file: ControllerPath | None = Field(
        None,
        description="with `server`, on the machine that deploys: the password (its first line) of user "
        "`circularnet`, which Prometheus and Alertmanager require (basic auth over every page, the API and the "
        "remote-write receiver); the agents send it. Never in the repo",
    )
    retention_days: int = Field(30, ge=1, le=3650, description="how long the site's Prometheus keeps samples")
    smtp: Smtp | None = Field(None, description="the mail relay the site's Alertmanager sends `emails` through")
    webhooks: list[Webhook] = Field(default_factory=list, description="where else the site's Alertmanager posts alerts")


# --- security and sandbox --------------------------------------------------------------------


class Security(Section):
    os_login: bool = True
    block_project_ssh_keys: bool = True
    secure_boot: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: on where the image family supports it (catalog/gcp.yaml)"
    )
    deletion_protection: bool | None = Field(None, description="default: on in prod, off elsewhere")


class OsName(Section):
    """An OS release as the platform matrix and /etc/os-release name it."""

    id: str = Field(pattern=r"^[a-z][a-z0-9.-]{0,31}$")
    version: str = Field(pattern=r"^[0-9][0-9.]{0,15}$")
    codename: str = Field(pattern=r"^[a-z]{1,32}$")


class Sandbox(Section):
    """Present only in the local stack: the virtual fleet and its site services."""

    subnet: Cidr = Field(
        "172.31.254.0/24",
        description="the site network; the machine takes its first address, the site services the second",
    )
    edge: int | None = Field(None, ge=0, le=8, description="edge hosts `sandbox up` boots; default: all of fleets.edge")
    servers: int | None = Field(
        None, ge=0, le=8, description="servers `sandbox up` boots; default: all of fleets.servers"
    )
    jetson_os: OsName | None = Field(
        None,
        description="the OS the sandbox's Jetson hosts run in place of L4T's (the platform matrix's); the "
        "platform layer accepts it as a declared substitution, and says so",
    )


# --- pull mode ----------------------------------------------------------------------------------


class BundleSigner(Section):
    """A key allowed to sign the stack's bundles: one line of the allowed_signers file hosts verify against."""

    identity: SignerIdentity
    public_key: SshPublicKey


class Bundle(Section):
    """Pull mode's signed bundle (cnctl/bundle, docs/pull-mode.md): who may sign it, and with which key this
    machine signs. Absent: the stack publishes no bundle (`cnctl bundle` says so)."""

    signers: list[BundleSigner] = Field(
        min_length=1, description="the public keys a host accepts a bundle from (identity + `ssh-keygen -y` line)"
    )
    signing_key: ControllerPath | None = Field(
        None,
        description="on the machine that publishes: the OpenSSH private key that signs (0600, never in the repo); "
        "its public key must be one of `signers`. None: give `cnctl bundle build|publish --key`",
    )
    poll_seconds: int = Field(
        300, ge=30, le=86400,
        description="how often a pull-mode host looks for a new bundle on its channel (its timer's period, seconds)",
    )


# --- the environment -------------------------------------------------------------------------


class StackConfig(Section):
    """One environment, as `stacks/Pulumi.<env>.yaml` describes it."""

    environment: str = Field(pattern=r"^[a-z][a-z0-9-]{0,19}$")
    gcp: Gcp | None = None
    network: Network = Field(default_factory=Network)
    storage: Storage
    analytics: Analytics = Field(default_factory=Analytics)
    compute: Compute | None = None
    model: Model
    inference: Inference = Field(default_factory=Inference)
    pipeline: Pipeline = Field(default_factory=Pipeline)
    fleets: Fleets = Field(default_factory=Fleets)
    security: Security = Field(default_factory=Security)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    mirrors: Mirrors = Field(default_factory=Mirrors)
    container: Container = Field(default_factory=Container)
    sandbox: Sandbox | None = None
    bundle: Bundle | None = None

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"

    @property
    def deletion_protection(self) -> bool:
        if self.security.deletion_protection is None:
            return self.is_prod
        return self.security.deletion_protection

    @property
    def work_subscription(self) -> str | None:
        """The subscription bucket input pulls from: pipeline.subscription, else the one the cloud layer creates
        for compute.mode group (cnctl/cloud/queue.py names it cn-<env>-images-work), else None."""
        if self.pipeline.subscription is not None:
            return self.pipeline.subscription
        if self.compute is not None and self.compute.mode == "group":
            return f"cn-{self.environment}-images-work"
        return None

    def pipeline_input(self, host: Host | None = None) -> str:
        """camera (edge devices), or spool / bucket: a server's own pipelineInput, pipeline.input, else the default
        (bucket for the cloud VMs of compute.mode group, spool otherwise). `host` None: a cloud VM."""
        if isinstance(host, EdgeDevice):
            return "camera"
        chosen = (host.pipeline_input if host is not None else None) or self.pipeline.input
        if chosen is not None:
            return chosen
        group = host is None and self.compute is not None and self.compute.mode == "group"
        return "bucket" if group else "spool"

    @property
    def dataset_location(self) -> str | None:
        """Where the BigQuery dataset (and so its transfers) lives: the stack's region (None: no cloud layer)."""
        return self.gcp.region if self.gcp is not None else None

    @property
    def bucket_location(self) -> str | None:
        """Where the buckets live: `storage.location`, else the stack's region (None: no cloud layer)."""
        if self.storage.location is not None:
            return self.storage.location
        return self.gcp.region.upper() if self.gcp is not None else None


# The top-level `circularnet:` keys a stack file may hold (`environment` comes from the file name).
SECTIONS: tuple[str, ...] = tuple(
    to_camel(name) for name in StackConfig.model_fields if name != "environment"
)
