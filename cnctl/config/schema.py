"""The typed model of one environment: the `circularnet:` keys of `stacks/Pulumi.<env>.yaml`.

Keys are camelCase in YAML (Pulumi's convention) and snake_case in Python. Field validators here
check the syntax of single values; rules that relate several fields or the catalog live in
`checks.py`, so that every problem is reported at the path of the field the user must change.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import urllib.parse
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# --- value syntax ----------------------------------------------------------------------------

_PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
_ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
_BUCKET_CHARS = re.compile(r"^[a-z0-9._-]+$")
# "close misspellings such as g00gle" are refused too: read digits as the letters they imitate
_DIGIT_LOOKALIKES = str.maketrans("013", "ole")
_DNS_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_TEMPLATE = re.compile(r"\{\{|\}\}|\{%|\$\{")
_SAFE_PATH = re.compile(r"^[A-Za-z0-9/._-]+$")
_BQ_ID = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DEVICE = re.compile(r"^/dev/[A-Za-z0-9/_-]+$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_HOST_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_IMAGE = re.compile(r"^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+:[A-Za-z0-9._-]+$")
# A Pub/Sub subscription: its id (3-255 chars, a letter first), or its full path in another project.
_SUBSCRIPTION = re.compile(r"^(projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/subscriptions/)?[A-Za-z][A-Za-z0-9._~+%-]{2,254}$")
# An allowed_signers principal (ssh-keygen(1) ALLOWED SIGNERS): no wildcard, comma, quote or space, which that
# file would read as patterns or separators.
_SIGNER_IDENTITY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9@._+-]{0,127}$")
_SSH_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                  "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com", "ssh-rsa")
_KMS_KEY = re.compile(r"^projects/[a-z0-9-]+/locations/[a-z0-9-]+/keyRings/[A-Za-z0-9_-]+/cryptoKeys/[A-Za-z0-9_-]+$")


def _matches(pattern: re.Pattern[str], what: str):
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid {what}")
        return value

    return check


def _bucket_name(value: str) -> str:
    """Cloud Storage's naming rules (cloud.google.com/storage/docs/buckets#naming), all of them."""
    dotted = "." in value
    if not _BUCKET_CHARS.fullmatch(value) or not value[0].isalnum() or not value[-1].isalnum():
        raise ValueError(f"{value!r} is not a valid bucket name (a-z 0-9 . _ -, starting and ending with a letter or digit)")
    if not 3 <= len(value) <= (222 if dotted else 63):
        raise ValueError(f"{value!r} is not a valid bucket name: 3-63 characters (222 with dots), not {len(value)}")
    if dotted and any(not 1 <= len(part) <= 63 or part[0] == "-" or part[-1] == "-" for part in value.split(".")):
        raise ValueError(f"{value!r} is not a valid bucket name: each dot-separated part is 1-63 characters, no - at its ends")
    look_alike = value.translate(_DIGIT_LOOKALIKES)
    if look_alike.startswith("goog") or "google" in look_alike:
        raise ValueError(f"{value!r} is not allowed: bucket names may not start with 'goog' or contain 'google' (or look-alikes)")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return value
    raise ValueError(f"{value!r} is not allowed: a bucket name may not be an IP address")


def _url(*schemes: str):
    """A URL with one of `schemes`, a host, and no credentials or template syntax in it."""

    def check(value: str) -> str:
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in schemes or not parts.netloc:
            raise ValueError(f"{value!r} is not a URL like {schemes[0]}://host/path (schemes: {', '.join(schemes)})")
        if parts.username or parts.password:
            raise ValueError(f"{value!r} carries credentials; keep them out of the stack file")
        if _TEMPLATE.search(value) or any(ch.isspace() for ch in value):
            raise ValueError(f"{value!r} is not a URL: no spaces or template syntax")
        host = parts.hostname or ""
        if parts.scheme in ("http", "https") and not _is_address_or_dns(host):
            raise ValueError(f"{value!r} has no valid host ({host!r})")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number in 0-65535
        except ValueError:
            raise ValueError(f"{value!r} has an invalid port") from None
        return value

    return check


def _is_address_or_dns(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        labels = value.rstrip(".").split(".")
        # an all-digit last label is a mistyped IP address (999.1.1.1), never a DNS name
        return len(value) <= 253 and all(_DNS_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit()
    return True


def _host_address(value: str) -> str:
    if not _is_address_or_dns(value):
        raise ValueError(f"{value!r} is not an IP address or DNS name (letters, digits, - and dots; no templates)")
    return value


def _directory(value: str) -> str:
    """An absolute path a deploy can quote nowhere and still be safe: no shell metacharacters, no `..`."""
    if not value.startswith("/") or not _SAFE_PATH.fullmatch(value) or ".." in value.split("/"):
        raise ValueError(f"{value!r} is not an absolute directory of letters, digits, / . _ - (no .. or shell characters)")
    return value


def _rtsp_url(value: str) -> str:
    """rtsp:// or rtsps:// with a host; never credentials (a stack is committed: they go in the camera itself
    or a site proxy)."""
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("rtsp", "rtsps") or not parts.hostname:
        raise ValueError(f"{value!r} is not an rtsp:// or rtsps:// URL with a host")
    if parts.username or parts.password:
        raise ValueError("holds credentials (user:password@): a stack file is committed; give the camera a "
                         "credential-free stream URL on the plant network or a site RTSP proxy")
    return value


def _controller_path(value: str) -> str:
    """A file on the deploying machine: absolute or ~/..., never inside a committed directory by accident."""
    if not value.startswith(("/", "~/")) or not _SAFE_PATH.fullmatch(value.lstrip("~")):
        raise ValueError(f"{value!r} is not an absolute path or ~/path of letters, digits, / . _ - on the deploying machine")
    return value


def _ssh_public_key(value: str) -> str:
    """One OpenSSH public key line `<type> <base64> [comment]` (what `ssh-keygen -y -f KEY` prints), whose
    base64 blob really is a key of that type: a truncated or pasted-wrong key fails here, not at verification."""
    parts = value.strip().split(None, 2)
    if len(parts) < 2 or parts[0] not in _SSH_KEY_TYPES:
        raise ValueError(f"{value[:40]!r} is not an OpenSSH public key line '<type> <base64> [comment]' "
                         f"(types: {', '.join(_SSH_KEY_TYPES)}); paste the output of `ssh-keygen -y -f <key>`")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise ValueError(f"the {parts[0]} key's base64 is damaged; paste `ssh-keygen -y -f <key>` again") from None
    name = parts[0].encode()
    if blob[:4] != len(name).to_bytes(4, "big") or blob[4 : 4 + len(name)] != name:
        raise ValueError(f"the base64 is not a {parts[0]} key; paste `ssh-keygen -y -f <key>` again")
    return value.strip()


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR block like 10.20.0.0/24 ({exc})") from None
    return value


def _ip(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None
    return value


def _labels(value: dict[str, str]) -> dict[str, str]:
    for key, val in value.items():
        if not _LABEL_KEY.fullmatch(key):
            raise ValueError(f"label key {key!r} must be lowercase letters, digits, _ or -, starting with a letter")
        if not _LABEL_VALUE.fullmatch(val):
            raise ValueError(f"label value {val!r} (key {key!r}) must be lowercase letters, digits, _ or -")
    return value


ProjectId = Annotated[str, AfterValidator(_matches(_PROJECT_ID, "GCP project id (6-30 of a-z 0-9 -)"))]
Region = Annotated[str, AfterValidator(_matches(_REGION, "GCP region like us-central1"))]
Zone = Annotated[str, AfterValidator(_matches(_ZONE, "GCP zone like us-central1-a"))]
BucketName = Annotated[str, AfterValidator(_bucket_name)]
BigQueryId = Annotated[str, AfterValidator(_matches(_BQ_ID, "BigQuery id (letters, digits and _)"))]
Sha256 = Annotated[str, AfterValidator(_matches(_SHA256, "sha256 (64 lowercase hex digits)"))]
Cidr = Annotated[str, AfterValidator(_cidr)]
IpAddress = Annotated[str, AfterValidator(_ip)]
Labels = Annotated[dict[str, str], AfterValidator(_labels)]
HostName = Annotated[str, AfterValidator(_matches(_HOST_NAME, "host name (a-z 0-9 -, at most 63)"))]
ImageRef = Annotated[str, AfterValidator(_matches(_IMAGE, "container image reference registry/repo:tag"))]
Port = Annotated[int, Field(ge=1, le=65535)]
KmsKeyName = Annotated[
    str, AfterValidator(_matches(_KMS_KEY, "Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K)"))
]
EndpointUrl = Annotated[str, AfterValidator(_url("https", "http"))]
ArchiveUrl = Annotated[str, AfterValidator(_url("https", "http", "gs"))]
HostAddress = Annotated[str, AfterValidator(_host_address)]
Directory = Annotated[str, AfterValidator(_directory)]
DevicePath = Annotated[str, AfterValidator(_matches(_DEVICE, "device path like /dev/video0"))]
SubscriptionName = Annotated[
    str, AfterValidator(_matches(_SUBSCRIPTION, "Pub/Sub subscription id, or projects/P/subscriptions/S"))
]
RtspUrl = Annotated[str, AfterValidator(_rtsp_url)]
ControllerPath = Annotated[str, AfterValidator(_controller_path)]
SignerIdentity = Annotated[
    str, AfterValidator(_matches(_SIGNER_IDENTITY, "signer identity (letters, digits and @ . _ + -, e.g. release@plant)"))
]
SshPublicKey = Annotated[str, AfterValidator(_ssh_public_key)]


class Section(BaseModel):
    """A block of the stack file: camelCase keys, unknown keys are errors (they are typos)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


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
    location: str | None = Field(None, description="bucket location; default: the stack's region (gcp.region)")
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
    type: str = "nvidia-tesla-t4"
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
    initial_delay_seconds: int = Field(
        1200, description="autohealing waits this long after a worker boots before its health counts (driver install, "
        "model download, Triton start; Compute Engine: 0-3600)"
    )


class Compute(Section):
    machine_type: str = "n1-standard-8"
    gpu: GpuSpec = Field(default_factory=GpuSpec)
    image_family: str = "common-cu124-ubuntu-2204-nvidia-550"
    disk_size_gb: int = Field(300, ge=50, le=65536)
    disk_type: Literal["pd-balanced", "pd-ssd", "pd-standard", "hyperdisk-balanced"] = "pd-balanced"
    spot: bool = False
    instances: int = Field(1, ge=0, le=100)
    placement: list[VmPlacement] = Field(
        default_factory=list, description="one entry per VM, in order; default: VM i in gcp.zones[i % len(zones)]"
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
    key: str
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
    bind_address: IpAddress = "127.0.0.1"
    bind_interface: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9.-]{0,14}$",
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
    client: str | None = Field(
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
        "once, deploy/bucket_worker.py). Default: bucket for the workers of compute.mode group, else spool",
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
    jetpack: str = "6.0"
    camera: Camera = Field(default_factory=Camera)
    nvpmodel: int | None = Field(
        None, ge=0, le=15, description="nvpmodel power mode id (board-specific: 0 is MAXN on AGX Orin); None keeps the board's"
    )
    jetson_clocks: bool = Field(False, description="pin clocks to the power mode's maximum at every boot (jetson_clocks unit)")


class Server(Host):
    driver_branch: str = "550"


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

_MIRROR_URL = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._~%/+-]*)?$")
MirrorUrl = Annotated[str, AfterValidator(_matches(_MIRROR_URL, "mirror URL like https://mirror.plant.local/nvidia"))]


class Mirrors(Section):
    """Site mirrors for air-gapped plants: each replaces the base URL of one upstream source of the
    platform matrix (keys and repositories alike; apt still checks the upstream signatures)."""

    jetson_apt: MirrorUrl | None = Field(None, description="replaces https://repo.download.nvidia.com/jetson")
    cuda_apt: MirrorUrl | None = Field(None, description="replaces https://developer.download.nvidia.com/compute/cuda/repos")
    container_toolkit_apt: MirrorUrl | None = Field(
        None, description="replaces https://nvidia.github.io/libnvidia-container"
    )
    docker_apt: MirrorUrl | None = Field(None, description="replaces https://download.docker.com/linux")
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
    def bucket_location(self) -> str | None:
        """Where the buckets live: `storage.location`, else the stack's region (None: no cloud layer)."""
        if self.storage.location is not None:
            return self.storage.location
        return self.gcp.region.upper() if self.gcp is not None else None


# The top-level `circularnet:` keys a stack file may hold (`environment` comes from the file name).
SECTIONS: tuple[str, ...] = tuple(
    to_camel(name) for name in StackConfig.model_fields if name != "environment"
)
