"""Guardrails: security rules every planned resource must pass, whatever the stack file says.

The schema checks what a stack file *says*; these rules check what the program *declares*, as the
Pulumi engine receives it (type token + inputs with camelCase keys). So they also catch a bug in
the cloud layer, and the Pulumi policy pack (`policy/`) runs these same functions: each rule is a
plain function over (type token, inputs, Context) returning a message or None. Rules are judged by
meaning, not spelling: source ranges by the addresses they cover, ports by the numbers a rule opens.

Most rules need only the resource. A few (`Rule.stack_wide`) also need what the whole stack says,
gathered once by `Context.of`: whether it is production (the `environment` label cnctl puts on every
labelled resource), whether it uses CMEK anywhere, which accounts BigQuery Data Transfers run as and
which buckets they read, which accounts can add objects to a bucket (uploaders: their credentials sit on
devices), and which custom roles the stack declares with BigQuery permissions; for compute.mode group also
the ports its health checks probe, the topics bucket notifications and dead letters go to, the accounts
VMs and templates run as (the workers), and the buckets hosts install from (`contents: models`).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cnctl.catalog import catalog

INSTANCE = "gcp:compute/instance:Instance"
DISK = "gcp:compute/disk:Disk"
INSTANCE_TEMPLATE = "gcp:compute/instanceTemplate:InstanceTemplate"
FIREWALL = "gcp:compute/firewall:Firewall"
BUCKET = "gcp:storage/bucket:Bucket"
DATASET = "gcp:bigquery/dataset:Dataset"
TABLE = "gcp:bigquery/table:Table"
SUBNETWORK = "gcp:compute/subnetwork:Subnetwork"
TRANSFER = "gcp:bigquery/dataTransferConfig:DataTransferConfig"
CUSTOM_ROLE = "gcp:projects/iAMCustomRole:IAMCustomRole"
# One entry of a dataset's access list: a grant like an IAM member, though its token does not say IAM.
DATASET_ACCESS = "gcp:bigquery/datasetAccess:DatasetAccess"
BUCKET_IAM_PREFIX = "gcp:storage/bucketIAM"
PROJECT_METADATA = ("gcp:compute/projectMetadata:ProjectMetadata", "gcp:compute/projectMetadataItem:ProjectMetadataItem")
PROJECT_IAM = ("gcp:projects/iAMMember:IAMMember", "gcp:projects/iAMBinding:IAMBinding")
VM_TYPES = (INSTANCE, INSTANCE_TEMPLATE)
AUTOSCALERS = ("gcp:compute/regionAutoscaler:RegionAutoscaler", "gcp:compute/autoscaler:Autoscaler")
HEALTH_CHECKS = ("gcp:compute/healthCheck:HealthCheck", "gcp:compute/regionHealthCheck:RegionHealthCheck")
HEALTH_CHECK_KINDS = ("httpHealthCheck", "httpsHealthCheck", "http2HealthCheck", "tcpHealthCheck", "sslHealthCheck",
                      "grpcHealthCheck")
NOTIFICATION = "gcp:storage/notification:Notification"
SUBSCRIPTION = "gcp:pubsub/subscription:Subscription"
TOPIC = "gcp:pubsub/topic:Topic"
TOPIC_IAM_PREFIX = "gcp:pubsub/topicIAM"
SUBSCRIPTION_IAM_PREFIX = "gcp:pubsub/subscriptionIAM"
PUBLISHER = "roles/pubsub.publisher"
SUBSCRIBER = "roles/pubsub.subscriber"
# Cloud Storage's service agent (it publishes a bucket's notifications) and Pub/Sub's (it dead-letters).
STORAGE_AGENT = re.compile(r"^serviceAccount:service-[0-9]+@gs-project-accounts\.iam\.gserviceaccount\.com$")
PUBSUB_AGENT = re.compile(r"^serviceAccount:service-[0-9]+@gcp-sa-pubsub\.iam\.gserviceaccount\.com$")
# The `contents` label cnctl puts on each bucket (cnctl/cloud/storage.py); hosts install what these hold
# (model archives, pull-mode bundles), so no device or worker identity may write them.
CONTENTS_LABEL = "contents"
ARTIFACT_CONTENTS = frozenset({"models"})
LABELLED = (INSTANCE, DISK, BUCKET, DATASET, TABLE)
ALERT_POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"
NOTIFICATION_CHANNEL = "gcp:monitoring/notificationChannel:NotificationChannel"
UPTIME_CHECK = "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig"
# Cloud Monitoring's resources take their labels as `userLabels` (a channel's `labels` configure where it sends).
USER_LABELLED = (ALERT_POLICY, NOTIFICATION_CHANNEL)
# The checkers of a private uptime check: Google's, inside the VPC (through Service Directory), not the internet's.
PRIVATE_CHECKERS = "VPC_CHECKERS"

PRIMITIVE_ROLES = frozenset({"roles/owner", "roles/editor", "roles/viewer"})
# A dataset access entry names a predefined role by its basic dataset role, which is the same grant
# (https://cloud.google.com/bigquery/docs/access-control-basic-roles#dataset-basic-roles).
DATASET_BASIC_ROLES = {
    "OWNER": "roles/bigquery.dataOwner", "WRITER": "roles/bigquery.dataEditor", "READER": "roles/bigquery.dataViewer",
}
# A dataset access entry names its member by kind; the IAM member each kind is.
ACCESS_ENTRY_MEMBERS = {"groupByEmail": "group:", "domain": "domain:", "specialGroup": "specialGroup:"}
ANYWHERE = frozenset({"0.0.0.0/0", "::/0"})
DEFAULT_COMPUTE_SA_SUFFIX = "-compute@developer.gserviceaccount.com"
REQUIRED_LABELS = ("environment", "managed-by")
PRODUCTION_ENVIRONMENTS = frozenset({"prod"})  # the stacks cnctl marks production (StackConfig.is_prod)
# Roles that can write BigQuery data (append, delete or rewrite detection rows) wherever they are granted;
# a custom role declared in the stack counts when its permissions include one of BIGQUERY_WRITES.
DETECTION_WRITERS = frozenset({"roles/bigquery.dataEditor", "roles/bigquery.dataOwner", "roles/bigquery.admin"})
BIGQUERY_WRITES = frozenset({
    "bigquery.tables.updateData", "bigquery.tables.update", "bigquery.tables.delete", "bigquery.tables.create",
    "bigquery.datasets.update", "bigquery.datasets.delete",
})
# Bucket roles that can add objects (an account holding one is an uploader) ...
OBJECT_CREATORS = frozenset({
    "roles/storage.objectCreator", "roles/storage.objectUser", "roles/storage.objectAdmin", "roles/storage.admin",
    "roles/storage.legacyBucketWriter", "roles/storage.legacyBucketOwner",
})
# ... and those that can also overwrite or delete them (objects are written once; lifecycle rules expire them).
OBJECT_REWRITERS = OBJECT_CREATORS - {"roles/storage.objectCreator"} | {"roles/storage.legacyObjectOwner"}
TRANSFER_READ_ROLE = "roles/storage.objectViewer"
# Roles that let a member act as a service account (mint its tokens, attach it, make its keys).
IMPERSONATION_ROLES = frozenset({
    "roles/iam.serviceAccountTokenCreator", "roles/iam.serviceAccountUser", "roles/iam.serviceAccountKeyAdmin",
})
# A Google-managed service agent: service-<project number>@gcp-sa-<service>.iam.gserviceaccount.com
SERVICE_AGENT = re.compile(r"^serviceAccount:service-[0-9]+@gcp-sa-[a-z0-9-]+\.iam\.gserviceaccount\.com$")
SSH_PORT = 22
# Addresses no packet from the internet comes from: what is left of 0.0.0.0/0 and 2000::/3 is "the internet".
NOT_INTERNET_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
              "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
              "224.0.0.0/4", "240.0.0.0/4")
)
INTERNET_V6 = ipaddress.IPv6Network("2000::/3")

Inputs = Mapping[str, Any]


class PlannedResource(Protocol):
    @property
    def type(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def inputs(self) -> Inputs: ...


@dataclass(frozen=True)
class Context:
    """What the whole stack says that a stack-wide rule needs beside the one resource it judges."""

    production: bool = False
    cmek: bool = False  # some bucket, dataset or disk names a KMS key: then all of them must
    # `serviceAccount:<email>` each BigQuery Data Transfer runs as -> the buckets its transfers read
    transfer_sources: Mapping[str, frozenset[str]] = field(default_factory=dict)
    uploaders: frozenset[str] = field(default_factory=frozenset)  # members that can add objects to a bucket
    # full names (`projects/<p>/roles/<id>`) of custom roles the stack declares with BigQuery permissions,
    # and of those among them that can write BigQuery data
    bigquery_custom_roles: frozenset[str] = field(default_factory=frozenset)
    writer_custom_roles: frozenset[str] = field(default_factory=frozenset)
    # ports the stack's health checks probe; topics bucket notifications publish to; dead-letter topics
    health_ports: frozenset[int] = field(default_factory=frozenset)
    notification_topics: frozenset[str] = field(default_factory=frozenset)
    dead_letter_topics: frozenset[str] = field(default_factory=frozenset)
    # `serviceAccount:<email>` attached to VMs or instance templates: the workers' identities
    vm_accounts: frozenset[str] = field(default_factory=frozenset)
    # names of the buckets hosts install from, and the identities of hosts (VMs, and uploaders to other buckets)
    artifact_buckets: frozenset[str] = field(default_factory=frozenset)
    host_identities: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(cls, resources: Iterable[tuple[str, Inputs]]) -> Context:
        """Gather the context from (type token, inputs) pairs: the plan's resources or a policy pack's."""
        production = cmek = False
        sources: dict[str, set[str]] = {}
        uploaders: set[str] = set()
        bigquery_roles: set[str] = set()
        writer_roles: set[str] = set()
        health_ports: set[int] = set()
        notified: set[str] = set()
        dead: set[str] = set()
        vm_accounts: set[str] = set()
        artifacts: set[str] = set()
        creators: dict[str, set[str]] = {}  # bucket -> members that can add objects to it
        for type_, inputs in resources:
            labels = inputs.get("labels") or {}
            production = production or labels.get("environment") in PRODUCTION_ENVIRONMENTS
            cmek = cmek or _kms_key(type_, inputs) is not None
            if type_ == TRANSFER and isinstance(email := inputs.get("serviceAccountName"), str):
                bucket = _gcs_bucket((inputs.get("params") or {}).get("data_path_template"))
                sources.setdefault(f"serviceAccount:{email}", set()).update([bucket] if bucket else [])
            if type_.startswith(BUCKET_IAM_PREFIX) and set(_roles(type_, inputs)) & OBJECT_CREATORS:
                uploaders.update(_members(inputs))
                creators.setdefault(_bucket_of(inputs), set()).update(_members(inputs))
            if type_ in HEALTH_CHECKS:
                health_ports.update(int(p) for kind in HEALTH_CHECK_KINDS
                                    if isinstance(p := (inputs.get(kind) or {}).get("port"), (int, float)))
            if type_ == NOTIFICATION and inputs.get("topic"):
                notified.add(_topic_name(inputs["topic"]))
            if type_ == SUBSCRIPTION and (inputs.get("deadLetterPolicy") or {}).get("deadLetterTopic"):
                dead.add(_topic_name(inputs["deadLetterPolicy"]["deadLetterTopic"]))
            if type_ in VM_TYPES and isinstance(email := (inputs.get("serviceAccount") or {}).get("email"), str):
                vm_accounts.add(f"serviceAccount:{email}")
            if type_ == BUCKET and (inputs.get("labels") or {}).get(CONTENTS_LABEL) in ARTIFACT_CONTENTS:
                artifacts.add(str(inputs.get("name")))
            if type_ == CUSTOM_ROLE:
                permissions = {str(p) for p in inputs.get("permissions") or []}
                name = f"projects/{inputs.get('project')}/roles/{inputs.get('roleId')}"
                if any(p.startswith("bigquery.") for p in permissions):
                    bigquery_roles.add(name)
                if permissions & BIGQUERY_WRITES:
                    writer_roles.add(name)
        return cls(
            production,
            cmek,
            {member: frozenset(buckets) for member, buckets in sources.items()},
            frozenset(uploaders),
            frozenset(bigquery_roles),
            frozenset(writer_roles),
            frozenset(health_ports),
            frozenset(notified),
            frozenset(dead),
            frozenset(vm_accounts),
            frozenset(artifacts),
            # a host is a VM, or whatever uploads to a bucket hosts do not install from (a device's credentials)
            frozenset(vm_accounts | {m for bucket, ms in creators.items() if bucket not in artifacts for m in ms}),
        )


NO_CONTEXT = Context()
Check = Callable[[str, Inputs, Context], "str | None"]


@dataclass(frozen=True)
class Rule:
    """A guardrail: id and description come from the check function's name and docstring.

    `stack_wide`: the check reads the Context (the policy pack then runs it as a stack policy).
    """

    id: str
    description: str
    check: Check
    stack_wide: bool = False

    @classmethod
    def of(cls, check: Check, *, stack_wide: bool = False) -> Rule:
        doc = (check.__doc__ or "").strip().splitlines()
        return cls(check.__name__.replace("_", "-"), doc[0] if doc else check.__name__, check, stack_wide)


@dataclass(frozen=True)
class Violation:
    rule: str
    resource: str
    message: str


# --- the rules ----------------------------------------------------------------------------------


def no_external_ip(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """VMs have no external IP: no access config on any network interface."""
    if type_ not in VM_TYPES:
        return None
    for i, nic in enumerate(inputs.get("networkInterfaces") or []):
        if nic.get("accessConfigs") or nic.get("ipv6AccessConfigs"):
            return f"network interface {i} has an access config (an external IP); reach VMs through IAP"
    return None


def no_open_ingress(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """No firewall allows ingress from the internet (by the addresses its source ranges cover together)."""
    if not _allows_ingress(type_, inputs):
        return None
    sources = [str(s) for s in inputs.get("sourceRanges") or []]
    if ANYWHERE.intersection(sources):
        return f"allows ingress from {', '.join(sorted(ANYWHERE.intersection(sources)))}; list the sources that need it"
    if not sources and not inputs.get("sourceTags") and not inputs.get("sourceServiceAccounts"):
        return "allows ingress with no source, which Google Cloud treats as 0.0.0.0/0"
    for version, internet in ((4, _internet_v4()), (6, [INTERNET_V6])):
        nets = [n for n in _networks(sources) if n is not None and n.version == version]
        if nets and not _subtract(internet, nets):
            return f"allows ingress from {', '.join(sources)}, which together cover the internet; list the sources that need it"
    return None


def ssh_only_from_iap(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """SSH (tcp:22) is opened to Identity-Aware Proxy's range only, whatever else the rule opens."""
    if not _allows_ingress(type_, inputs) or not any(_opens(allow, SSH_PORT) for allow in inputs["allows"]):
        return None
    iap = ipaddress.ip_network(catalog().gcp.iap_ssh_range)
    sources = [str(s) for s in inputs.get("sourceRanges") or []]
    outside = [s for s, n in zip(sources, _networks(sources, keep_invalid=True), strict=True) if n is None or not n.subnet_of(iap)]  # type: ignore[arg-type]
    if outside or not sources or inputs.get("sourceTags") or inputs.get("sourceServiceAccounts"):
        given = ", ".join(outside) or "sources other than ranges"
        return f"opens tcp:{SSH_PORT} to {given}; SSH comes through IAP ({iap}) only"
    return None


def os_login_enforced(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """OS Login stays on and project-wide SSH keys stay blocked (on VMs and in project metadata)."""
    if type_ in VM_TYPES:
        metadata = inputs.get("metadata") or {}
        off = [key for key in ("enable-oslogin", "block-project-ssh-keys") if str(metadata.get(key, "")).upper() != "TRUE"]
        if off:
            return f"metadata does not set {' and '.join(off)} to TRUE; access goes through OS Login (IAM) only"
        if "ssh-keys" in metadata:
            return "metadata carries ssh-keys; access goes through OS Login (IAM) only"
        return None
    if type_ in PROJECT_METADATA:
        items = dict(inputs.get("metadata") or {})
        if "key" in inputs:
            items[str(inputs["key"])] = inputs.get("value")
        if "enable-oslogin" in items and str(items["enable-oslogin"]).upper() != "TRUE":
            return "turns OS Login off for the whole project"
        if "ssh-keys" in items:
            return "adds project-wide SSH keys, which every VM not blocking them accepts"
    return None


def buckets_private(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """Buckets enforce public access prevention and uniform bucket-level access."""
    if type_ != BUCKET:
        return None
    problems = []
    if inputs.get("publicAccessPrevention") != "enforced":
        problems.append(
            f"publicAccessPrevention is {inputs.get('publicAccessPrevention', 'unset (inherited)')!s}, not enforced"
        )
    if inputs.get("uniformBucketLevelAccess") is not True:
        problems.append("uniformBucketLevelAccess is not true (object ACLs stay possible)")
    return "; ".join(problems) or None


def no_default_compute_service_account(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """VMs run as a dedicated service account, never the default compute one (nor is it granted roles)."""
    if type_ in VM_TYPES:
        account = inputs.get("serviceAccount")
        if account is None:
            return None  # no account at all: nothing to misuse
        email = account.get("email") or "default"
        if email == "default" or email.endswith(DEFAULT_COMPUTE_SA_SUFFIX):
            return f"runs as the default compute service account ({email}); attach a dedicated one"
        return None
    for m in _members(inputs):
        if m.endswith(DEFAULT_COMPUTE_SA_SUFFIX):
            return f"grants {inputs.get('role')} to the default compute service account"
    return None


def no_primitive_roles(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """No IAM grant of a basic role (roles/owner, roles/editor, roles/viewer)."""
    roles = set(_roles(type_, inputs))
    found = sorted(roles & PRIMITIVE_ROLES)
    if found:
        return f"grants the basic role {', '.join(found)}; grant a predefined role on the narrowest scope"
    return None


def no_project_storage_roles(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """Storage roles are granted on buckets, never on the whole project."""
    if type_ not in PROJECT_IAM:
        return None
    role = inputs.get("role", "")
    if role.startswith("roles/storage."):
        return f"grants {role} on the project (every bucket in it); grant it on the bucket"
    return None


def gpu_vms_terminate_on_maintenance(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """GPU VMs set onHostMaintenance TERMINATE (GPUs cannot live-migrate)."""
    if type_ not in VM_TYPES or not _has_gpu(inputs):
        return None
    policy = (inputs.get("scheduling") or {}).get("onHostMaintenance")
    if policy != "TERMINATE":
        return f"a GPU VM with onHostMaintenance {policy or 'unset (MIGRATE)'}; set TERMINATE"
    return None


def shielded_vm(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """VMs are Shielded VMs with vTPM and integrity monitoring on."""
    if type_ not in VM_TYPES:
        return None
    shielded = inputs.get("shieldedInstanceConfig") or {}
    off = [key for key in ("enableVtpm", "enableIntegrityMonitoring") if shielded.get(key) is not True]
    return f"shieldedInstanceConfig does not set {' and '.join(off)} to true" if off else None


def dataset_location_set(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """BigQuery datasets name their location (BigQuery's default is the US multi-region)."""
    if type_ == DATASET and not inputs.get("location"):
        return "has no location, so BigQuery puts it in the US; set the stack's region"
    return None


def labels_present(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """Labellable resources (VMs, disks, buckets, datasets, tables, alert policies, channels) carry the environment and managed-by labels."""
    if type_ not in (*LABELLED, *USER_LABELLED):
        return None
    labels = inputs.get("userLabels" if type_ in USER_LABELLED else "labels") or {}
    missing = [key for key in REQUIRED_LABELS if not labels.get(key)]
    return f"has no {' or '.join(missing)} label" if missing else None


def no_uptime_checks_from_the_internet(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """No uptime check probes from Google's public checkers (what they reach answers the internet); VPC checkers only."""
    if type_ != UPTIME_CHECK or inputs.get("checkerType") == PRIVATE_CHECKERS:
        return None
    return (f"probes from Google's public uptime checkers (checkerType {inputs.get('checkerType') or 'unset'}), so what "
            "it checks must answer from the internet; watch Google's and the Ops Agent's metrics instead, or make it "
            f"a private uptime check (checkerType {PRIVATE_CHECKERS})")


def transfers_run_as_a_service_account(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """BigQuery Data Transfers run as a dedicated service account, never with their creator's credentials."""
    if type_ != TRANSFER:
        return None
    account = inputs.get("serviceAccountName")
    if not account:
        return "has no serviceAccountName, so it runs with the credentials of whoever created it; name its own account"
    if str(account).endswith(DEFAULT_COMPUTE_SA_SUFFIX):
        return f"runs as the default compute service account ({account}); name its own account"
    return None


def objects_never_overwritten_or_deleted(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """No bucket grant can overwrite or delete objects: uploads only create, readers only read."""
    if not type_.startswith(BUCKET_IAM_PREFIX):
        return None
    found = sorted(set(_roles(type_, inputs)) & OBJECT_REWRITERS)
    if found:
        return (f"grants {', '.join(found)}, which can overwrite or delete objects; uploads need "
                "roles/storage.objectCreator, reads roles/storage.objectViewer (lifecycle rules expire objects)")
    return None


def impersonation_only_for_service_agents(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """Only a Google service agent may act as a service account (token creator, user, key admin), on that account."""
    if not is_grant(type_):
        return None
    found = sorted(set(_roles(type_, inputs)) & IMPERSONATION_ROLES)
    if not found:
        return None
    if type_ in PROJECT_IAM:
        return f"grants {', '.join(found)} on the project (every service account in it); grant it on the one account"
    others = [m for m in _members(inputs) if not SERVICE_AGENT.fullmatch(m)]
    if others:
        return f"grants {', '.join(found)} to {', '.join(others)}; only a Google service agent may act as this account"
    return None


def autoscaler_min_not_above_max(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """Autoscalers keep 0 <= minReplicas <= maxReplicas and maxReplicas >= 1."""
    if type_ not in AUTOSCALERS:
        return None
    policy = inputs.get("autoscalingPolicy") or {}
    low, high = policy.get("minReplicas", 0), policy.get("maxReplicas")
    if not isinstance(high, (int, float)) or high < 1:
        return f"maxReplicas is {high}; a group that may never run a worker drains nothing (at least 1)"
    if not isinstance(low, (int, float)) or low < 0:
        return f"minReplicas is {low}; it is 0 or more"
    if low > high:
        return f"minReplicas {low:g} is more than maxReplicas {high:g}"
    return None


# --- stack-wide rules: they read the Context ------------------------------------------------------


def production_keeps_deletion_protection(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """In production, VMs and tables keep deletion protection, and buckets and datasets keep their data."""
    if not ctx.production:
        return None
    if type_ in (INSTANCE, TABLE) and inputs.get("deletionProtection") is not True:
        return "has deletion protection off in a production stack; keep security.deletionProtection on"
    if type_ == BUCKET and inputs.get("forceDestroy") is True:
        return "sets forceDestroy in a production stack (a destroy would delete every object)"
    if type_ == DATASET and inputs.get("deleteContentsOnDestroy") is True:
        return "sets deleteContentsOnDestroy in a production stack (a destroy would drop every table)"
    return None


def production_no_spot(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """In production, GPU VMs are standard VMs, never Spot or preemptible (they can vanish at any time)."""
    if not ctx.production or type_ not in VM_TYPES:
        return None
    scheduling = inputs.get("scheduling") or {}
    if scheduling.get("provisioningModel") == "SPOT" or scheduling.get("preemptible") is True:
        return "is a Spot/preemptible VM in a production stack; set compute.spot to false"
    return None


def detections_written_only_by_the_transfer(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """Only the BigQuery Data Transfer's account can write BigQuery data, on the dataset or table only."""
    if not is_grant(type_) or not type_.startswith(("gcp:bigquery/", "gcp:projects/")):
        return None
    roles = sorted(set(_roles(type_, inputs)) & (DETECTION_WRITERS | ctx.writer_custom_roles))
    if not roles:
        return None
    strangers = [m for m in _members(inputs) if m not in ctx.transfer_sources]
    if strangers:
        return (f"grants {', '.join(roles)} to {', '.join(strangers)}; only the transfer's account writes detections "
                "(hosts upload files, the BigQuery Data Transfer loads them)")
    if type_ in PROJECT_IAM:
        return f"grants {', '.join(roles)} on the whole project; grant the transfer's account the dataset only"
    return None


def uploaders_hold_no_bigquery_roles(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """An account that uploads to a bucket (devices, VMs) holds no BigQuery role at all."""
    if not is_grant(type_):
        return None
    roles = sorted(r for r in _roles(type_, inputs) if r.startswith("roles/bigquery.") or r in ctx.bigquery_custom_roles)
    uploaders = [m for m in _members(inputs) if m in ctx.uploaders]
    if roles and uploaders:
        return (f"grants {', '.join(roles)} to {', '.join(uploaders)}, which uploads to a bucket; an uploader's "
                "credentials sit on devices, so they reach no BigQuery data (the transfer loads the files)")
    return None


def transfer_reads_only_what_it_loads(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """A transfer's account only reads (objectViewer) the buckets its transfers load from, and no other bucket."""
    if not type_.startswith(BUCKET_IAM_PREFIX):
        return None
    bucket = _bucket_of(inputs)
    for member in (m for m in _members(inputs) if m in ctx.transfer_sources):
        other = sorted(set(_roles(type_, inputs)) - {TRANSFER_READ_ROLE})
        if other:
            return f"grants {', '.join(other)} to the transfer's account {member}; it only reads ({TRANSFER_READ_ROLE})"
        if bucket not in ctx.transfer_sources[member]:
            return f"lets the transfer's account {member} read bucket {bucket}, which none of its transfers loads from"
    return None


def cmek_everywhere(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """Where a stack uses a KMS key, buckets, datasets, disks, VM boot disks and Pub/Sub topics (the images
    queue's messages name the plant's images) all use one (CMEK covers all data)."""
    if ctx.cmek and type_ in (BUCKET, DATASET, TOPIC, DISK, *VM_TYPES) and _kms_key(type_, inputs) is None:
        return "is not encrypted with a KMS key while other data of this stack is (set the stack's kmsKeyName here too)"
    return None


def production_logs_traffic(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """In production, the subnet has VPC flow logs and every ingress rule logs its connections."""
    if not ctx.production:
        return None
    if type_ == SUBNETWORK and not inputs.get("logConfig"):
        return "has no VPC flow logs (logConfig) in a production stack"
    if _allows_ingress(type_, inputs) and not (inputs.get("logConfig") or {}).get("metadata"):
        return "does not log its connections (logConfig.metadata) in a production stack"
    return None


def health_checks_only_to_the_health_port(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """Google's health-check ranges get a rule of their own, opening only the ports the stack's health checks probe."""
    if not _allows_ingress(type_, inputs):
        return None
    ranges = [ipaddress.ip_network(r) for r in catalog().gcp.health_check_ranges]
    sources = [str(s) for s in inputs.get("sourceRanges") or []]
    nets = _networks(sources, keep_invalid=True)
    inside = [n is not None and any(n.version == r.version and n.subnet_of(r) for r in ranges) for n in nets]  # type: ignore[arg-type]
    if not any(inside):
        return None  # not a health-check rule (a wide range that happens to contain them is no_open_ingress's)
    outside = [s for s, ok in zip(sources, inside, strict=True) if not ok]
    if outside or inputs.get("sourceTags") or inputs.get("sourceServiceAccounts"):
        others = ", ".join(outside) or "source tags or service accounts"
        return f"lets Google's health-check ranges in together with {others}; give the health checks a rule of their own"
    if not ctx.health_ports:
        return "opens to Google's health-check ranges, but the stack declares no health check"
    wanted = ", ".join(f"tcp:{p}" for p in sorted(ctx.health_ports))
    for allow in inputs["allows"]:
        protocol = str(allow.get("protocol", "")).lower()
        ports = [str(p) for p in allow.get("ports") or []]
        opened = [p for p in ports if not (p.isdigit() and int(p) in ctx.health_ports)]
        if protocol not in ("tcp", "6") or not ports or opened:
            given = f"{protocol}:{','.join(ports) or 'every port'}"
            return f"opens {given} to Google's health-check ranges; only the health-check port ({wanted})"
    return None


def pubsub_least_privilege(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """Pub/Sub roles sit on one topic or subscription: Cloud Storage's agent publishes images, workers subscribe."""
    roles = sorted(r for r in _roles(type_, inputs) if r.startswith("roles/pubsub."))
    if not roles:
        return None
    if type_.startswith("gcp:projects/"):
        return f"grants {', '.join(roles)} on the whole project (every topic and subscription); grant it on the one"
    members = _members(inputs)
    if type_.startswith(TOPIC_IAM_PREFIX):
        topic = _topic_name(inputs.get("topic"))
        if set(roles) - {PUBLISHER}:
            return f"grants {', '.join(roles)} on topic {topic}; a topic grants publisher only (readers get a subscription)"
        if topic in ctx.notification_topics:
            strangers = [m for m in members if not STORAGE_AGENT.fullmatch(m)]
            who = "Cloud Storage's service agent (it publishes the bucket's notifications)"
        elif topic in ctx.dead_letter_topics:
            strangers = [m for m in members if not PUBSUB_AGENT.fullmatch(m)]
            who = "Pub/Sub's service agent (it dead-letters)"
        else:
            return None
        if strangers:
            return f"lets {', '.join(strangers)} publish on {topic}; only {who} may"
        return None
    if type_.startswith(SUBSCRIPTION_IAM_PREFIX):
        subscription = _topic_name(inputs.get("subscription"))
        if set(roles) - {SUBSCRIBER}:
            return f"grants {', '.join(roles)} on subscription {subscription}; a subscription grants subscriber only"
        strangers = [m for m in members if m not in ctx.vm_accounts and not PUBSUB_AGENT.fullmatch(m)]
        if strangers:
            return (f"lets {', '.join(strangers)} pull from {subscription}; only the workers' identity (and Pub/Sub's "
                    "agent, for dead letters) may")
    return None


def artifacts_not_writable_by_hosts(type_: str, inputs: Inputs, ctx: Context = NO_CONTEXT) -> str | None:
    """The bucket hosts install from (models, bundles) cannot be written by a device or worker identity."""
    if not type_.startswith(BUCKET_IAM_PREFIX):
        return None
    bucket = _bucket_of(inputs)
    roles = sorted(set(_roles(type_, inputs)) & OBJECT_CREATORS)
    if bucket not in ctx.artifact_buckets or not roles:
        return None
    hosts = [m for m in _members(inputs) if m in ctx.host_identities]
    if hosts:
        return (f"grants {', '.join(roles)} on {bucket}, which every host installs models and bundles from, to "
                f"{', '.join(hosts)}, a device or worker identity: one stolen device key could publish to the fleet; "
                "operators publish with their own identity")
    return None


RULES: tuple[Rule, ...] = tuple(
    Rule.of(check)
    for check in (
        no_external_ip,
        no_open_ingress,
        ssh_only_from_iap,
        os_login_enforced,
        buckets_private,
        no_default_compute_service_account,
        no_primitive_roles,
        no_project_storage_roles,
        gpu_vms_terminate_on_maintenance,
        shielded_vm,
        dataset_location_set,
        labels_present,
        transfers_run_as_a_service_account,
        objects_never_overwritten_or_deleted,
        impersonation_only_for_service_agents,
        autoscaler_min_not_above_max,
        no_uptime_checks_from_the_internet,
    )
) + tuple(
    Rule.of(check, stack_wide=True)
    for check in (
        production_keeps_deletion_protection,
        production_no_spot,
        detections_written_only_by_the_transfer,
        uploaders_hold_no_bigquery_roles,
        transfer_reads_only_what_it_loads,
        cmek_everywhere,
        production_logs_traffic,
        health_checks_only_to_the_health_port,
        pubsub_least_privilege,
        artifacts_not_writable_by_hosts,
    )
)


def evaluate(resources: Iterable[PlannedResource], rules: Iterable[Rule] = RULES) -> list[Violation]:
    """Every rule over every resource, in rule order then resource order (one Context for the stack)."""
    planned = list(resources)
    ctx = Context.of((res.type, res.inputs) for res in planned)
    return [
        Violation(rule.id, res.name, message)
        for rule in rules
        for res in planned
        if (message := rule.check(res.type, res.inputs, ctx)) is not None
    ]


# --- helpers ------------------------------------------------------------------------------------


def is_grant(type_: str) -> bool:
    """Whether a resource grants a role: an IAM member, binding or policy (not a custom role: it only defines
    one), or a dataset's access entry."""
    return ("IAM" in type_.upper() and type_ != CUSTOM_ROLE) or type_ == DATASET_ACCESS


def _roles(type_: str, inputs: Inputs) -> Iterable[str]:
    """Every role a grant gives: members, bindings and access entries carry `role`, policies `policyData`.

    An access entry's basic dataset role (`WRITER`) is read as the predefined role it is (dataEditor).
    """
    if not is_grant(type_):
        return
    if isinstance(role := inputs.get("role"), str):
        yield DATASET_BASIC_ROLES.get(role, role) if type_ == DATASET_ACCESS else role
    yield from (b.get("role", "") for b in _bindings(inputs))


def _members(inputs: Inputs) -> list[str]:
    """The members a grant gives to (`member`, `members`, a policy's bindings, or an access entry's member)."""
    if isinstance(inputs.get("member"), str):
        return [inputs["member"]]
    members = [m for m in inputs.get("members") or [] if isinstance(m, str)]
    members += [m for b in _bindings(inputs) for m in b.get("members", []) if isinstance(m, str)]
    return members + _access_entry_members(inputs)


def _access_entry_members(inputs: Inputs) -> list[str]:
    """A dataset access entry's member as an IAM member (`userByEmail`: a user or a service account; a special
    group as `specialGroup:<name>`)."""
    members = [str(inputs["iamMember"])] if isinstance(inputs.get("iamMember"), str) else []
    if isinstance(email := inputs.get("userByEmail"), str):
        members.append(f"{'serviceAccount' if email.endswith('.gserviceaccount.com') else 'user'}:{email}")
    members += [f"{kind}{inputs[key]}" for key, kind in ACCESS_ENTRY_MEMBERS.items() if isinstance(inputs.get(key), str)]
    return members


def _bindings(inputs: Inputs) -> list[dict]:
    """The bindings of an IAM policy resource's `policyData` (none when absent or unreadable)."""
    policy = inputs.get("policyData")
    if not isinstance(policy, str):
        return []
    try:
        bindings = json.loads(policy).get("bindings", [])
    except (ValueError, AttributeError):
        return []
    return [b for b in bindings if isinstance(b, dict)]


def _bucket_of(inputs: Inputs) -> str:
    """The bucket a bucket IAM resource grants on (`b/<name>` or `<name>`)."""
    return str(inputs.get("bucket", "")).removeprefix("b/")


def _topic_name(value: Any) -> str:
    """`projects/p/topics/t`, `//pubsub.googleapis.com/projects/p/topics/t` or `t` -> `t` (same for subscriptions)."""
    return str(value or "").rsplit("/", 1)[-1]


def _gcs_bucket(path: Any) -> str | None:
    """`gs://bucket/a/*.ndjson` -> `bucket`; None for anything else."""
    if not isinstance(path, str) or not path.startswith("gs://"):
        return None
    return path.removeprefix("gs://").split("/", 1)[0] or None


def _kms_key(type_: str, inputs: Inputs) -> str | None:
    """The KMS key a bucket, dataset, Pub/Sub topic, disk or VM boot disk is encrypted with, or None."""
    if type_ == BUCKET:
        return (inputs.get("encryption") or {}).get("defaultKmsKeyName")
    if type_ == DATASET:
        return (inputs.get("defaultEncryptionConfiguration") or {}).get("kmsKeyName")
    if type_ == TOPIC:
        return inputs.get("kmsKeyName")
    if type_ == DISK:
        return (inputs.get("diskEncryptionKey") or {}).get("kmsKeySelfLink")
    if type_ in VM_TYPES:
        disk = inputs.get("bootDisk") or (inputs.get("disks") or [{}])[0] or {}
        return disk.get("kmsKeySelfLink") or (disk.get("diskEncryptionKey") or {}).get("kmsKeySelfLink")
    return None


def _allows_ingress(type_: str, inputs: Inputs) -> bool:
    return type_ == FIREWALL and inputs.get("direction", "INGRESS") == "INGRESS" and bool(inputs.get("allows"))


def _opens(allow: Mapping[str, Any], port: int) -> bool:
    """Whether one `allows` entry lets TCP `port` through: protocol all/tcp, no ports = every port, ranges."""
    protocol = str(allow.get("protocol", "")).lower()
    if protocol in ("all", "-1"):
        return True
    if protocol not in ("tcp", "6"):
        return False
    ports = allow.get("ports") or []
    for spec in ports:
        low, _, high = str(spec).partition("-")
        try:
            if int(low) <= port <= int(high or low):
                return True
        except ValueError:
            return True  # a port spec we cannot read is not proof that SSH stays closed
    return not ports


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(sources: Iterable[str], *, keep_invalid: bool = False) -> list[Network | None]:
    """The source ranges as networks (host bits ignored, as Google Cloud does); invalid ones dropped or None."""
    out: list[Network | None] = []
    for source in sources:
        try:
            out.append(ipaddress.ip_network(source, strict=False))
        except ValueError:
            if keep_invalid:
                out.append(None)
    return out


def _internet_v4() -> list[Network]:
    """0.0.0.0/0 without the ranges no internet packet comes from."""
    return _subtract([ipaddress.IPv4Network("0.0.0.0/0")], NOT_INTERNET_V4)


def _subtract(blocks: Iterable[Network], removed: Iterable[Network | None]) -> list[Network]:
    """`blocks` minus every network in `removed`: what of them is left uncovered."""
    left = list(blocks)
    for net in removed:
        if net is None:
            continue
        nxt: list[Network] = []
        for block in left:
            if block.version != net.version or not block.overlaps(net):
                nxt.append(block)
            elif not block.subnet_of(net):  # type: ignore[arg-type]
                nxt.extend(block.address_exclude(net))  # type: ignore[arg-type]
        left = nxt
    return left


def _has_gpu(inputs: Inputs) -> bool:
    """GPUs attached (N1) or built into the machine type (G2/A2/A3, catalog/gcp.yaml)."""
    if inputs.get("guestAccelerators"):
        return True
    machine = str(inputs.get("machineType", "")).rsplit("/", 1)[-1]
    family = catalog().gcp.machine_families.get(machine.split("-", 1)[0])
    return family is not None and not family.attached
