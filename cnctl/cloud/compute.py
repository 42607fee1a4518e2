"""The GPU inference VMs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
from pulumi_gcp import compute

from cnctl.catalog import GcpFacts
from cnctl.cloud.base import Component, Naming
from cnctl.config.schema import Compute as ComputeConfig
from cnctl.config.schema import Security


@dataclass(frozen=True)
class Placement:
    """Where VM `index` runs, and the zones to move it to when its zone has no GPUs left."""

    index: int
    zones: tuple[str, ...]

    @classmethod
    def of(cls, index: int, zones: Sequence[str]) -> Placement:
        """VM i starts in zones[i % n]; the others follow in stack order (the fallback list)."""
        start = index % len(zones)
        return cls(index, tuple(zones[start:]) + tuple(zones[:start]))

    @property
    def zone(self) -> str:
        return self.zones[0]


def _flag(on: bool) -> str:
    return "TRUE" if on else "FALSE"


class GpuVms(Component):
    """Ensures `compute.instances` GPU VMs: private, shielded, OS Login only, on a dedicated account.

    - No external IP (no access config): reach them through IAP (`gcloud compute ssh --tunnel-through-iap`).
    - GPUs cannot live-migrate: host maintenance TERMINATEs the VM; a standard VM restarts by itself,
      a Spot VM is stopped when preempted and started by the next `pulumi up` or an operator.
    - On N1 the GPUs are attached (`guestAccelerators`); on G2/A2/A3 they come with the machine type.
    - Shielded VM: vTPM and integrity monitoring always; Secure Boot as the stack says, where "auto"
      follows the image family (the Deep Learning VM images load unsigned driver modules).
    - OS Login and blocked project-wide SSH keys: access is IAM-granted and audited, per VM.
    - Zones stock out of GPUs (ZONE_RESOURCE_POOL_EXHAUSTED). Pulumi cannot retry a create in another
      zone, so each VM records its ordered fallback zones in the `cnctl-zones` metadata key and
      docs/cloud.md says how to move it.
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
        opts: pulumi.ResourceOptions | None = None,
        requires: Sequence[pulumi.Resource] = (),
    ) -> None:
        super().__init__("GpuVms", names("gpu-vms"), opts, requires)
        family = facts.machine_families[config.machine_type.split("-", 1)[0]]
        image = facts.images.families[config.image_family]
        secure_boot = image.secure_boot if security.secure_boot == "auto" else security.secure_boot == "on"

        self.placements = [Placement.of(i, zones) for i in range(config.instances)]
        self.instances = [
            compute.Instance(
                names("gpu", str(p.index)),
                compute.InstanceArgs(
                    name=names("gpu", str(p.index)),
                    zone=p.zone,
                    machine_type=config.machine_type,
                    guest_accelerators=(
                        [compute.InstanceGuestAcceleratorArgs(type=config.gpu.type, count=config.gpu.count)]
                        if family.attached
                        else None
                    ),
                    scheduling=_scheduling(config.spot),
                    shielded_instance_config=compute.InstanceShieldedInstanceConfigArgs(
                        enable_vtpm=True, enable_integrity_monitoring=True, enable_secure_boot=secure_boot
                    ),
                    boot_disk=compute.InstanceBootDiskArgs(
                        auto_delete=True,
                        initialize_params=compute.InstanceBootDiskInitializeParamsArgs(
                            image=f"projects/{facts.images.project}/global/images/family/{config.image_family}",
                            size=config.disk_size_gb,
                            type=config.disk_type,
                            labels=dict(names.labels),
                        ),
                    ),
                    # No access_configs: no external IP. Egress goes through Cloud NAT.
                    network_interfaces=[compute.InstanceNetworkInterfaceArgs(subnetwork=subnet.id)],
                    service_account=compute.InstanceServiceAccountArgs(
                        email=service_account_email,
                        # The account's IAM grants are the real limit; the broad scope avoids a second,
                        # coarser permission system that would have to be kept in sync with them.
                        scopes=["cloud-platform"],
                    ),
                    metadata={
                        "enable-oslogin": _flag(security.os_login),
                        "block-project-ssh-keys": _flag(security.block_project_ssh_keys),
                        "cnctl-zones": ",".join(p.zones),
                        # The metadata key, not `metadata_startup_script`: that one forces a new VM
                        # (and a new boot disk) on every change, this one updates in place.
                        "startup-script": startup_script,
                    },
                    tags=[network_tag],
                    labels=dict(names.labels),
                    # Machine type, account and scheduling changes need a stopped VM.
                    allow_stopping_for_update=True,
                ),
                opts=self.child(),
            )
            for p in self.placements
        ]
        self.register_outputs({"names": [vm.name for vm in self.instances]})


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
