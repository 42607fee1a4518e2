"""Guardrails: security rules every planned resource must pass, whatever the stack file says.

The schema checks what a stack file *says*; these rules check what the program *declares*, as the
Pulumi engine receives it (type token + inputs with camelCase keys). So they also catch a bug in
the cloud layer, and they can be reused unchanged by a Pulumi policy pack (each rule is a plain
function over (type token, inputs) returning a message or None).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cnctl.catalog import catalog

INSTANCE = "gcp:compute/instance:Instance"
INSTANCE_TEMPLATE = "gcp:compute/instanceTemplate:InstanceTemplate"
FIREWALL = "gcp:compute/firewall:Firewall"
BUCKET = "gcp:storage/bucket:Bucket"
DATASET = "gcp:bigquery/dataset:Dataset"
TABLE = "gcp:bigquery/table:Table"
PROJECT_IAM = ("gcp:projects/iAMMember:IAMMember", "gcp:projects/iAMBinding:IAMBinding")
VM_TYPES = (INSTANCE, INSTANCE_TEMPLATE)
LABELLED = (INSTANCE, BUCKET, DATASET, TABLE)

PRIMITIVE_ROLES = frozenset({"roles/owner", "roles/editor", "roles/viewer"})
ANYWHERE = frozenset({"0.0.0.0/0", "::/0"})
DEFAULT_COMPUTE_SA_SUFFIX = "-compute@developer.gserviceaccount.com"
REQUIRED_LABELS = ("environment", "managed-by")

Inputs = Mapping[str, Any]
Check = Callable[[str, Inputs], "str | None"]


class PlannedResource(Protocol):
    @property
    def type(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def inputs(self) -> Inputs: ...


@dataclass(frozen=True)
class Rule:
    """A guardrail: id and description come from the check function's name and docstring."""

    id: str
    description: str
    check: Check

    @classmethod
    def of(cls, check: Check) -> Rule:
        doc = (check.__doc__ or "").strip().splitlines()
        return cls(check.__name__.replace("_", "-"), doc[0] if doc else check.__name__, check)


@dataclass(frozen=True)
class Violation:
    rule: str
    resource: str
    message: str


# --- the rules ----------------------------------------------------------------------------------


def no_external_ip(type_: str, inputs: Inputs) -> str | None:
    """VMs have no external IP: no access config on any network interface."""
    if type_ not in VM_TYPES:
        return None
    for i, nic in enumerate(inputs.get("networkInterfaces") or []):
        if nic.get("accessConfigs") or nic.get("ipv6AccessConfigs"):
            return f"network interface {i} has an access config (an external IP); reach VMs through IAP"
    return None


def no_open_ingress(type_: str, inputs: Inputs) -> str | None:
    """No firewall allows ingress from anywhere (0.0.0.0/0 or ::/0)."""
    if type_ != FIREWALL or inputs.get("direction", "INGRESS") != "INGRESS" or not inputs.get("allows"):
        return None
    sources = inputs.get("sourceRanges") or []
    if ANYWHERE.intersection(sources):
        return f"allows ingress from {', '.join(sorted(ANYWHERE.intersection(sources)))}; list the sources that need it"
    if not sources and not inputs.get("sourceTags") and not inputs.get("sourceServiceAccounts"):
        return "allows ingress with no source, which Google Cloud treats as 0.0.0.0/0"
    return None


def buckets_private(type_: str, inputs: Inputs) -> str | None:
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


def no_default_compute_service_account(type_: str, inputs: Inputs) -> str | None:
    """VMs run as a dedicated service account, never the default compute one (nor is it granted roles)."""
    if type_ in VM_TYPES:
        account = inputs.get("serviceAccount")
        if account is None:
            return None  # no account at all: nothing to misuse
        email = account.get("email") or "default"
        if email == "default" or email.endswith(DEFAULT_COMPUTE_SA_SUFFIX):
            return f"runs as the default compute service account ({email}); attach a dedicated one"
        return None
    member = inputs.get("member")
    members = [member] if isinstance(member, str) else list(inputs.get("members") or [])
    for m in members:
        if isinstance(m, str) and m.endswith(DEFAULT_COMPUTE_SA_SUFFIX):
            return f"grants {inputs.get('role')} to the default compute service account"
    return None


def no_primitive_roles(type_: str, inputs: Inputs) -> str | None:
    """No IAM grant of a basic role (roles/owner, roles/editor, roles/viewer)."""
    roles = set(_roles(type_, inputs))
    found = sorted(roles & PRIMITIVE_ROLES)
    if found:
        return f"grants the basic role {', '.join(found)}; grant a predefined role on the narrowest scope"
    return None


def no_project_storage_roles(type_: str, inputs: Inputs) -> str | None:
    """Storage roles are granted on buckets, never on the whole project."""
    if type_ not in PROJECT_IAM:
        return None
    role = inputs.get("role", "")
    if role.startswith("roles/storage."):
        return f"grants {role} on the project (every bucket in it); grant it on the bucket"
    return None


def gpu_vms_terminate_on_maintenance(type_: str, inputs: Inputs) -> str | None:
    """GPU VMs set onHostMaintenance TERMINATE (GPUs cannot live-migrate)."""
    if type_ not in VM_TYPES or not _has_gpu(inputs):
        return None
    policy = (inputs.get("scheduling") or {}).get("onHostMaintenance")
    if policy != "TERMINATE":
        return f"a GPU VM with onHostMaintenance {policy or 'unset (MIGRATE)'}; set TERMINATE"
    return None


def shielded_vm(type_: str, inputs: Inputs) -> str | None:
    """VMs are Shielded VMs with vTPM and integrity monitoring on."""
    if type_ not in VM_TYPES:
        return None
    shielded = inputs.get("shieldedInstanceConfig") or {}
    off = [key for key in ("enableVtpm", "enableIntegrityMonitoring") if shielded.get(key) is not True]
    return f"shieldedInstanceConfig does not set {' and '.join(off)} to true" if off else None


def dataset_location_set(type_: str, inputs: Inputs) -> str | None:
    """BigQuery datasets name their location (BigQuery's default is the US multi-region)."""
    if type_ == DATASET and not inputs.get("location"):
        return "has no location, so BigQuery puts it in the US; set the stack's region"
    return None


def labels_present(type_: str, inputs: Inputs) -> str | None:
    """Labellable resources (VMs, buckets, datasets, tables) carry the environment and managed-by labels."""
    if type_ not in LABELLED:
        return None
    labels = inputs.get("labels") or {}
    missing = [key for key in REQUIRED_LABELS if not labels.get(key)]
    return f"has no {' or '.join(missing)} label" if missing else None


RULES: tuple[Rule, ...] = tuple(
    Rule.of(check)
    for check in (
        no_external_ip,
        no_open_ingress,
        buckets_private,
        no_default_compute_service_account,
        no_primitive_roles,
        no_project_storage_roles,
        gpu_vms_terminate_on_maintenance,
        shielded_vm,
        dataset_location_set,
        labels_present,
    )
)


def evaluate(resources: Iterable[PlannedResource], rules: Iterable[Rule] = RULES) -> list[Violation]:
    """Every rule over every resource, in rule order then resource order."""
    planned = list(resources)
    return [
        Violation(rule.id, res.name, message)
        for rule in rules
        for res in planned
        if (message := rule.check(res.type, res.inputs)) is not None
    ]


# --- helpers ------------------------------------------------------------------------------------


def _roles(type_: str, inputs: Inputs) -> Iterable[str]:
    """Every role an IAM resource grants: members and bindings carry `role`, policies `policyData`."""
    if "IAM" not in type_.upper():
        return
    if isinstance(inputs.get("role"), str):
        yield inputs["role"]
    policy = inputs.get("policyData")
    if isinstance(policy, str):
        try:
            bindings = json.loads(policy).get("bindings", [])
        except (ValueError, AttributeError):
            bindings = []
        yield from (b.get("role", "") for b in bindings if isinstance(b, dict))


def _has_gpu(inputs: Inputs) -> bool:
    """GPUs attached (N1) or built into the machine type (G2/A2/A3, catalog/gcp.yaml)."""
    if inputs.get("guestAccelerators"):
        return True
    machine = str(inputs.get("machineType", "")).rsplit("/", 1)[-1]
    family = catalog().gcp.machine_families.get(machine.split("-", 1)[0])
    return family is not None and not family.attached
