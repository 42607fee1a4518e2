"""The autoscaled GPU workers of `compute.mode: group`: a regional managed instance group over the stack's zones.

Where `GpuVms` (cnctl/cloud/compute.py) keeps a fixed number of named VMs configured by push, a group keeps
between `compute.group.min` and `max` identical workers, as many as the images queue needs, and replaces
one that stops answering. The workers are the same VMs (one `VmSpec`), built from an instance template.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import pulumi
from pulumi_gcp import compute

from cnctl.catalog import GcpFacts
from cnctl.cloud.base import Component, Naming
from cnctl.cloud.compute import VmSpec
from cnctl.cloud.queue import subscription_filter
from cnctl.cloud.startup import NVIDIA_ATTEMPTS, NVIDIA_WAIT_SECONDS
from cnctl.config.group_checks import INITIAL_DELAY_SECONDS
from cnctl.config.schema import Compute as ComputeConfig
from cnctl.config.schema import Security, WorkerGroup

# Triton's readiness endpoint (KServe v2 protocol): 200 once the server and its models can serve.
TRITON_READY = "/v2/health/ready"
# The Cloud Monitoring metric the autoscaler reads: images waiting in the work subscription.
BACKLOG_METRIC = "pubsub.googleapis.com/subscription/num_undelivered_messages"
# Health-check cadence: a worker is unhealthy after 3 failed checks 10 s apart (30 s), healthy after 2.
CHECK_INTERVAL, CHECK_TIMEOUT, HEALTHY_AFTER, UNHEALTHY_AFTER = 10, 5, 2, 3
# BALANCED: Compute Engine puts workers where the zones have GPUs, as evenly as it can; a zone out of
# GPU stock (ZONE_RESOURCE_POOL_EXHAUSTED) does not stop the group growing in the others.
TARGET_SHAPE = "BALANCED"

# What a new worker does between boot and Triton's first ready answer, in order (seconds): the startup
# script's bound on the image's first-boot driver install, the Ops Agent from Google's apt repository (a
# download, an index update and one package), then the pull agent's first bundle (packages, units), Triton's
# container image from its registry (the container runtime only), the model's download and load. Estimates, not
# measurements: a stack sets `compute.group.initialDelaySeconds` to what its first real boot took (docs/cloud.md,
# "First real apply").
BOOT_STEPS = {
    "driver": NVIDIA_ATTEMPTS * NVIDIA_WAIT_SECONDS,
    "ops_agent": 120,
    "bundle": 300,
    "image": 300,
    "model": 180,
}
BOOT_MARGIN = 1.25


def initial_delay(group: WorkerGroup, runtime: str) -> int:
    """Autohealing's initial delay: the stack's measured one, else the boot steps' sum with a margin, in whole
    minutes. Too short, and autohealing recreates every worker before it is ever ready (the group never serves
    and keeps paying for GPUs)."""
    if group.initial_delay_seconds is not None:
        return group.initial_delay_seconds
    steps = sum(seconds for step, seconds in BOOT_STEPS.items() if step != "image" or runtime == "container")
    return min(INITIAL_DELAY_SECONDS[1], math.ceil(steps * BOOT_MARGIN / 60) * 60)


def zone_set(zones: Sequence[str]) -> str:
    """Four hex digits naming the set of zones (order does not matter). A regional group's zones cannot change
    in place; carried in the group's name, a new zone set creates the new group before the old one goes
    (a fixed name would make Pulumi delete the old group, and every worker, first)."""
    return hashlib.sha256(",".join(sorted(set(zones))).encode()).hexdigest()[:4]


class GpuWorkerGroup(Component):
    """Ensures the worker template, the regional group with autohealing, its health-check firewall and autoscaler.

    - The template has every property of a fixed VM (`VmSpec`: GPU, Shielded VM, driver image, startup
      script, OS Login metadata), no access config (no external IP), the dedicated VM account, the
      stack's labels, and the VMs' network tag (IAP SSH) plus the workers' own (health checks only).
      Templates are immutable: `name_prefix` lets a changed one be created before the old one goes,
      and the group rolls onto it.
    - Regional, over every zone of `gcp.zones` (distribution policy zones), shape BALANCED. The group and
      its autoscaler are named by the zone set (`zone_set`): changing the set creates them anew before the
      old ones are deleted; reordering the zones changes nothing.
    - Autohealing: an HTTP check of Triton's readiness on its HTTP port (the stack's
      `inference.ports.http`); a worker that fails it after the initial delay (`initial_delay`) is recreated.
      Google's probes come from its health-check ranges, which one firewall rule lets in, to that
      port only and to the workers' tag only.
    - Autoscaled on the backlog: one worker per `imagesPerWorker` undelivered messages of the work
      subscription (single-instance assignment), between min and max (min 0: none while idle).
    - Rolling updates never go below the serving minimum: maxUnavailable 0, so no worker stops before its
      replacement runs; maxSurge is the number of zones, because a regional group's fixed surge must be 0
      or at least its zone count (Compute Engine refuses 1..zones-1), and 0 with maxUnavailable 0 would
      make no progress. Redistribution NONE: a BALANCED group may not move running workers between zones.
    """

    def __init__(
        self,
        names: Naming,
        region: str,
        zones: Sequence[str],
        config: ComputeConfig,
        group: WorkerGroup,
        security: Security,
        facts: GcpFacts,
        network: compute.Network,
        subnet: compute.Subnetwork,
        network_tag: str,
        health_port: int,
        service_account_email: pulumi.Input[str],
        startup_script: str,
        subscription: pulumi.Input[str],
        runtime: str,
        opts: pulumi.ResourceOptions | None = None,
        requires: Sequence[pulumi.Resource] = (),
    ) -> None:
        super().__init__("GpuWorkerGroup", names("gpu-workers"), opts, requires)
        spec = VmSpec.of(config, security, facts, startup_script)
        labels = dict(names.labels)
        self.initial_delay = delay = initial_delay(group, runtime)
        zones = sorted(set(zones))
        in_zones = zone_set(zones)
        # The tag the health-check rule targets: only the group's workers, not the fixed VMs.
        self.worker_tag = names("gpu-worker")

        self.template = compute.InstanceTemplate(
            names("worker-template"),
            compute.InstanceTemplateArgs(
                name_prefix=names("worker", spec.revision, ""),
                machine_type=spec.machine_type,
                guest_accelerators=(
                    [compute.InstanceTemplateGuestAcceleratorArgs(type=spec.gpus[0], count=spec.gpus[1])]
                    if spec.gpus
                    else None
                ),
                scheduling=_scheduling(config.spot),
                shielded_instance_config=compute.InstanceTemplateShieldedInstanceConfigArgs(
                    enable_vtpm=True, enable_integrity_monitoring=True, enable_secure_boot=spec.secure_boot
                ),
                disks=[
                    compute.InstanceTemplateDiskArgs(
                        boot=True,
                        auto_delete=True,
                        source_image=spec.image,
                        disk_size_gb=config.disk_size_gb,
                        disk_type=config.disk_type,
                        labels=labels,
                        disk_encryption_key=(
                            compute.InstanceTemplateDiskDiskEncryptionKeyArgs(kms_key_self_link=config.kms_key_name)
                            if config.kms_key_name
                            else None
                        ),
                    )
                ],
                # No access_configs: no external IP. Egress goes through Cloud NAT.
                network_interfaces=[compute.InstanceTemplateNetworkInterfaceArgs(subnetwork=subnet.id, nic_type=spec.nic)],
                service_account=compute.InstanceTemplateServiceAccountArgs(
                    email=service_account_email,
                    # As on the fixed VMs: the account's IAM grants are the real limit.
                    scopes=["cloud-platform"],
                ),
                metadata=dict(spec.metadata),
                tags=[network_tag, self.worker_tag],
                labels=labels,
            ),
            opts=self.child(),
        )
        self.health_check = compute.HealthCheck(
            names("triton-ready"),
            compute.HealthCheckArgs(
                name=names("triton-ready"),
                description="Triton readiness of a GPU worker (autohealing)",
                check_interval_sec=CHECK_INTERVAL,
                timeout_sec=CHECK_TIMEOUT,
                healthy_threshold=HEALTHY_AFTER,
                unhealthy_threshold=UNHEALTHY_AFTER,
                http_health_check=compute.HealthCheckHttpHealthCheckArgs(port=health_port, request_path=TRITON_READY),
            ),
            opts=self.child(),
        )
        self.firewall = compute.Firewall(
            names("allow-health-checks"),
            compute.FirewallArgs(
                name=names("allow-health-checks"),
                network=network.id,
                direction="INGRESS",
                allows=[compute.FirewallAllowArgs(protocol="tcp", ports=[str(health_port)])],
                source_ranges=list(facts.health_check_ranges),
                target_tags=[self.worker_tag],
                description="Google's health checks to Triton's HTTP port of the GPU workers only",
                # Every allowed connection is logged (guardrail production-logs-traffic).
                log_config=compute.FirewallLogConfigArgs(metadata="INCLUDE_ALL_METADATA"),
            ),
            opts=self.child(),
        )
        self.manager = compute.RegionInstanceGroupManager(
            names("gpu-workers"),
            compute.RegionInstanceGroupManagerArgs(
                name=names("gpu-workers", in_zones),
                region=region,
                base_instance_name=names("worker"),
                distribution_policy_zones=zones,
                distribution_policy_target_shape=TARGET_SHAPE,
                versions=[
                    compute.RegionInstanceGroupManagerVersionArgs(name="primary", instance_template=self.template.self_link)
                ],
                named_ports=[compute.RegionInstanceGroupManagerNamedPortArgs(name="triton-http", port=health_port)],
                auto_healing_policies=compute.RegionInstanceGroupManagerAutoHealingPoliciesArgs(
                    health_check=self.health_check.id, initial_delay_sec=delay
                ),
                update_policy=compute.RegionInstanceGroupManagerUpdatePolicyArgs(
                    type="PROACTIVE",
                    minimal_action="REPLACE",
                    max_unavailable_fixed=0,
                    max_surge_fixed=len(zones),
                    instance_redistribution_type="NONE",
                    replacement_method="SUBSTITUTE",
                ),
                # No target_size: the autoscaler owns the size. Do not wait for GPUs that may be out of stock.
                wait_for_instances=False,
            ),
            # The firewall first: a worker checked before Google's probes may reach it would be "unhealthy".
            # Named by the zone set, so a replacement creates the new group while the old one runs.
            opts=pulumi.ResourceOptions.merge(
                self.child(), pulumi.ResourceOptions(depends_on=[self.firewall], delete_before_replace=False)
            ),
        )
        self.autoscaler = compute.RegionAutoscaler(
            names("gpu-workers-scaler"),
            compute.RegionAutoscalerArgs(
                name=names("gpu-workers-scaler", in_zones),
                region=region,
                target=self.manager.id,
                autoscaling_policy=compute.RegionAutoscalerAutoscalingPolicyArgs(
                    min_replicas=group.min,
                    max_replicas=group.max,
                    mode="ON",
                    # A new worker gives no signal until its driver, model and Triton are up.
                    cooldown_period=delay,
                    metrics=[
                        compute.RegionAutoscalerAutoscalingPolicyMetricArgs(
                            name=BACKLOG_METRIC,
                            filter=pulumi.Output.from_input(subscription).apply(subscription_filter),
                            single_instance_assignment=group.images_per_worker,
                        )
                    ],
                ),
            ),
            opts=pulumi.ResourceOptions.merge(self.child(), pulumi.ResourceOptions(delete_before_replace=False)),
        )
        self.register_outputs(
            {"group": self.manager.name, "template": self.template.name, "healthCheck": self.health_check.name}
        )


def _scheduling(spot: bool) -> compute.InstanceTemplateSchedulingArgs:
    """As the fixed VMs' (GPUs cannot live-migrate), but a preempted Spot worker is deleted, not stopped:
    it holds no data (its images wait in the queue) and the group recreates it where there is capacity."""
    if spot:
        return compute.InstanceTemplateSchedulingArgs(
            on_host_maintenance="TERMINATE",
            provisioning_model="SPOT",
            preemptible=True,
            automatic_restart=False,
            instance_termination_action="DELETE",
        )
    return compute.InstanceTemplateSchedulingArgs(
        on_host_maintenance="TERMINATE", provisioning_model="STANDARD", preemptible=False, automatic_restart=True
    )
