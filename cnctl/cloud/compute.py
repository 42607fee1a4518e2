"""The GPU inference VMs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
from pulumi_gcp import compute

from cnctl.catalog import FamilyConstraints, GcpFacts
from cnctl.cloud.base import Component, Naming
from cnctl.config.schema import Compute as ComputeConfig
from cnctl.config.schema import Security


@dataclass(frozen=True)
class Placement:
    """Where VM `index` runs, the zones to move it to on a stock-out, and whether it may be replaced.

    An explicit `compute.placement[index]` wins: then the zone is an input of that VM only, and
    reordering `gcp.zones` or moving another VM never touches it (the prod example's way, and what
    docs/cloud.md asks for with several VMs). Without one, VM i starts in zones[i % n], so a reorder
    of `gcp.zones` may move it. The fallbacks are stack outputs, never VM inputs.
    """

    index: int
    zone: str
    fallbacks: tuple[str, ...]
    allow_replace: bool = False

    @classmethod
    def of(cls, index: int, config: ComputeConfig, zones: Sequence[str]) -> Placement:
        """The VM's own placement entry, else the default spread over `zones`."""
        explicit = config.placement[index] if index < len(config.placement) else None
        zone = explicit.zone if explicit is not None else zones[index % len(zones)]
        # The fallbacks: the stack's zones in order, starting after this VM's own.
        start = zones.index(zone) + 1 if zone in zones else 0
        fallbacks = tuple(z for z in (*zones[start:], *zones[:start]) if z != zone)
        return cls(index, zone, fallbacks, explicit.allow_replace if explicit is not None else False)


def revision(config: ComputeConfig, attached_gpus: bool, nic_type: str | None) -> str:
    """Four hex digits that change exactly when a change makes GCE replace a VM in the same zone.

    The inputs hashed are the replace-on-change inputs of the VM and its boot disk other than the zone
    (catalog/gcp.yaml `replacements`): boot image, disk type and key, Spot or standard, attached GPUs,
    vNIC type. The disk's size is not one: a bigger disk is resized in place (`GpuVms`). The VM's name
    (and its disk's) carries them, so a replacement creates the new VM under a new name while the old
    one still runs (instance names are unique per zone; a zone move keeps the name). A fixed name
    would make Pulumi delete the old VM first (pulumi-terraform #465).
    """
    shape = {
        "image": config.image_family,
        "diskType": config.disk_type,
        "diskKey": config.kms_key_name,
        "spot": config.spot,
        "gpus": [config.gpu.type, config.gpu.count] if attached_gpus else None,
        "nic": nic_type,
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:4]


def nic_type(config: ComputeConfig, constraints: FamilyConstraints) -> str | None:
    """The vNIC the stack asks for; `auto` is gVNIC where the family requires it, GCE's default elsewhere."""
    if config.nic_type != "auto":
        return config.nic_type
    return "GVNIC" if constraints.nic == "GVNIC" else None


def _flag(on: bool) -> str:
    return "TRUE" if on else "FALSE"


@dataclass(frozen=True)
class VmSpec:
    """What every GPU VM of a stack is, a fixed VM (`GpuVms`) or a group's worker (`cnctl.cloud.group`).

    One copy of the machine, GPUs, image, Shielded VM, vNIC and metadata, so that a worker of a
    group is exactly the VM the stack would otherwise create (and passes the same guardrails).
    """

    machine_type: str
    gpus: tuple[str, int] | None  # attached GPUs (N1); None: they come with the machine type
    image: str
    secure_boot: bool
    nic: str | None
    metadata: dict[str, str]
    revision: str

    @classmethod
    def of(cls, config: ComputeConfig, security: Security, facts: GcpFacts, startup_script: str) -> VmSpec:
        family_name = config.machine_type.split("-", 1)[0]
        family = facts.machine_families[family_name]
        image = facts.images.families[config.image_family]
        nic = nic_type(config, facts.family_constraints[family_name])
        return cls(
            machine_type=config.machine_type,
            gpus=(config.gpu.type, config.gpu.count) if family.attached else None,
            image=f"projects/{facts.images.project}/global/images/family/{config.image_family}",
            secure_boot=image.secure_boot if security.secure_boot == "auto" else security.secure_boot == "on",
            nic=nic,
            metadata={
                # The image family's first-boot needs (the DLVM driver installer switch).
                **image.metadata,
                "enable-oslogin": _flag(security.os_login),
                "block-project-ssh-keys": _flag(security.block_project_ssh_keys),
                # The metadata key, not `metadata_startup_script`: that one forces a new VM
                # (and a new boot disk) on every change, this one updates in place.
                "startup-script": startup_script,
            },
            revision=revision(config, family.attached, nic),
        )


class GpuVms(Component):
    """Ensures `compute.instances` GPU VMs: private, shielded, OS Login only, on a dedicated account.

    - No external IP (no access config): reach them through IAP (`gcloud compute ssh --tunnel-through-iap`).
    - GPUs cannot live-migrate: host maintenance TERMINATEs the VM; a standard VM restarts by itself.
      A Spot VM is stopped when preempted; `desired_status` RUNNING makes the next
      `pulumi up --refresh` start it again (the refresh reads the stopped state, the update starts it).
    - On N1 the GPUs are attached (`guestAccelerators`); on G2/A2/A3 they come with the machine type.
    - Shielded VM: vTPM and integrity monitoring always; Secure Boot as the stack says, where "auto"
      follows the image family (the Deep Learning VM images load unsigned driver modules).
    - OS Login and blocked project-wide SSH keys: access is IAM-granted and audited, per VM.
    - No accidental loss: with deletion protection (on in prod) a VM carries GCE's
      `deletion_protection` and Pulumi's `protect`; its placement's `allowReplace` lifts `protect`
      only (GCE's flag stays, the production guardrail wants it; docs/cloud.md says how to replace).
      Replacements create first: the name carries the replace-forcing inputs (`revision`), and
      `delete_before_replace=False` overrides Pulumi's delete-first default for named resources.
    - The boot disk is a resource of its own (`compute.Disk`, the VM's name, attached as its boot disk):
      a bigger `compute.diskSizeGb` grows it in place, where the Instance's own `initializeParams.size`
      would replace the VM (ForceNew in the provider; GoogleCloudPlatform/magic-modules#13502). The
      image's guest environment grows the root filesystem at the next boot. A smaller size replaces
      the disk and the VM (GCE cannot shrink a disk): `cnctl plan-diff` flags it.
    - Zones stock out of GPUs (ZONE_RESOURCE_POOL_EXHAUSTED). Pulumi cannot retry a create in another
      zone, so each VM's zone is its own placement entry and docs/cloud.md says how to move one VM.
    """

    def __init__(
        self,
        names: Naming,
        zones: Sequence[str],
        config: ComputeConfig,
        security: Security,
        facts: GcpFacts,
        subnet: compute.Subnetwork,
        network_tag: str,
        service_account_email: pulumi.Input[str],
        startup_script: str,
        deletion_protection: bool,
        opts: pulumi.ResourceOptions | None = None,
        requires: Sequence[pulumi.Resource] = (),
    ) -> None:
        super().__init__("GpuVms", names("gpu-vms"), opts, requires)
        spec = VmSpec.of(config, security, facts, startup_script)
        rev = spec.revision

        self.placements = [Placement.of(i, config, zones) for i in range(config.instances)]
        self.instances = []
        self.disks = []
        for p in self.placements:
            protected = deletion_protection and not p.allow_replace
            keep = pulumi.ResourceOptions.merge(
                self.child(), pulumi.ResourceOptions(protect=protected, delete_before_replace=False)
            )
            disk = compute.Disk(
                names("gpu", str(p.index)),  # the VM's own name: `plan-diff --allow-replace` names both
                compute.DiskArgs(
                    name=names("gpu", str(p.index), rev),
                    zone=p.zone,
                    image=spec.image,
                    size=config.disk_size_gb,
                    type=config.disk_type,
                    disk_encryption_key=(
                        compute.DiskDiskEncryptionKeyArgs(kms_key_self_link=config.kms_key_name)
                        if config.kms_key_name
                        else None
                    ),
                    labels=dict(names.labels),
                ),
                opts=keep,
            )
            self.disks.append(disk)
            self.instances.append(
                compute.Instance(
                    names("gpu", str(p.index)),
                    compute.InstanceArgs(
                        name=names("gpu", str(p.index), rev),
                        zone=p.zone,
                        machine_type=config.machine_type,
                        guest_accelerators=(
                            [compute.InstanceGuestAcceleratorArgs(type=spec.gpus[0], count=spec.gpus[1])]
                            if spec.gpus
                            else None
                        ),
                        scheduling=_scheduling(config.spot),
                        shielded_instance_config=compute.InstanceShieldedInstanceConfigArgs(
                            enable_vtpm=True, enable_integrity_monitoring=True, enable_secure_boot=spec.secure_boot
                        ),
                        # The stack's disk: the VM never deletes it (Pulumi does, after the VM, on a replacement).
                        boot_disk=compute.InstanceBootDiskArgs(
                            source=disk.self_link, auto_delete=False, kms_key_self_link=config.kms_key_name
                        ),
                        # No access_configs: no external IP. Egress goes through Cloud NAT.
                        network_interfaces=[compute.InstanceNetworkInterfaceArgs(subnetwork=subnet.id, nic_type=spec.nic)],
                        service_account=compute.InstanceServiceAccountArgs(
                            email=service_account_email,
                            # The account's IAM grants are the real limit; the broad scope avoids a second,
                            # coarser permission system that would have to be kept in sync with them.
                            scopes=["cloud-platform"],
                        ),
                        metadata=dict(spec.metadata),
                        tags=[network_tag],
                        labels=dict(names.labels),
                        # Machine type, account and scheduling changes need a stopped VM.
                        allow_stopping_for_update=True,
                        deletion_protection=deletion_protection,
                        desired_status="RUNNING",
                    ),
                    opts=keep,
                )
            )
        self.register_outputs({"names": [vm.name for vm in self.instances], "disks": [d.name for d in self.disks]})


def _scheduling(spot: bool) -> compute.InstanceSchedulingArgs:
    if spot:
        return compute.InstanceSchedulingArgs(
            on_host_maintenance="TERMINATE",
            provisioning_model="SPOT",
            preemptible=True,
            automatic_restart=False,
            # STOP keeps the boot disk (the model repository, the host layers' work); DELETE would not.
            instance_termination_action="STOP",
        )
    return compute.InstanceSchedulingArgs(
        on_host_maintenance="TERMINATE",
        provisioning_model="STANDARD",
        preemptible=False,
        automatic_restart=True,
    )
