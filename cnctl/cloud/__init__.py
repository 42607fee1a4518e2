"""The Google Cloud layer: one ComponentResource per concern, composed by `build`.

`__main__.py` calls `build(from_pulumi_config())`; the offline plan (cnctl.plan) runs that same
program on Pulumi's mock engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_gcp.provider import Provider, ProviderArgs

from cnctl.catalog import catalog
from cnctl.cloud.analytics import Analytics
from cnctl.cloud.base import Naming
from cnctl.cloud.compute import GpuVms
from cnctl.cloud.group import GpuWorkerGroup
from cnctl.cloud.identity import EDGE_PULLER, EDGE_UPLOADER, GROUP_WORKER, INFERENCE_VM, Identity
from cnctl.cloud.looker import looker_studio_url
from cnctl.cloud.monitoring import Monitoring, Watched, one_of
from cnctl.cloud.network import Network
from cnctl.cloud.ops_agent import job_name
from cnctl.cloud.queue import WorkQueue
from cnctl.cloud.services import Services
from cnctl.cloud.startup import render_startup_script
from cnctl.cloud.storage import Storage
from cnctl.cloud.transfer import DetectionsTransfer
from cnctl.config.schema import Gcp, StackConfig

__all__ = ["CloudLayer", "build"]


@dataclass(frozen=True)
class CloudLayer:
    """The components of one stack's cloud layer, for callers that want more than the stack outputs."""

    provider: Provider
    services: Services
    network: Network
    storage: Storage
    analytics: Analytics
    identity: Identity
    transfer: DetectionsTransfer
    vms: GpuVms | None
    monitoring: Monitoring
    # compute.mode group: the images queue and the autoscaled workers that drain it
    queue: WorkQueue | None = None
    workers: GpuWorkerGroup | None = None


def build(cfg: StackConfig) -> CloudLayer | None:
    """Declare the stack's Google Cloud resources and export its outputs.

    A stack without a `gcp` section (sites and servers only) has no cloud layer: nothing is
    declared and nothing is exported.
    """
    if cfg.gcp is None or cfg.dataset_location is None:
        return None
    gcp, dataset_location = cfg.gcp, cfg.dataset_location
    facts = catalog().gcp
    models = catalog().models
    names = Naming.of(cfg)

    # Explicit, from the stack file: never the ambient gcloud project or GOOGLE_* environment.
    provider = Provider(names("gcp"), ProviderArgs(project=gcp.project, region=gcp.region))
    on_gcp = pulumi.ResourceOptions(providers=[provider])

    group = cfg.compute.worker_group if cfg.compute is not None else None
    # The queue's API only where a group uses it: a stack of fixed VMs enables exactly what it did before.
    apis_needed = [*facts.services, *(facts.group_services if group is not None else [])]
    services = Services(names, gcp.project, apis_needed, opts=on_gcp)
    apis = [services]
    network = Network(
        names, gcp.region, cfg.network, cfg.inference.ports, facts.iap_ssh_range, opts=on_gcp, requires=apis
    )
    # Data (objects, queued messages) is never force-destroyed in prod, even if a prod stack turns deletion
    # protection off.
    protect_data = cfg.is_prod or cfg.deletion_protection
    storage = Storage(
        names,
        cfg.storage,
        location=cfg.bucket_location or gcp.region.upper(),
        protect_data=protect_data,
        opts=on_gcp,
        requires=apis,
    )
    analytics = Analytics(
        names,
        cfg.analytics,
        location=dataset_location,
        generations={name: gen.bigquery_schema for name, gen in models.generations.items()},
        active=models.models[cfg.model.key].generation,
        deletion_protection=cfg.deletion_protection,
        opts=on_gcp,
        requires=apis,
    )
    pulling = any(entry.mode == "pull" for entry in (*cfg.fleets.edge, *cfg.fleets.servers))
    identity = Identity(
        names, gcp.project, storage.buckets, GROUP_WORKER if group is not None else INFERENCE_VM,
        edge_grants=EDGE_PULLER if pulling else EDGE_UPLOADER, opts=on_gcp, requires=apis
    )
    # Devices and VMs only add objects to the results bucket; this transfer loads them into BigQuery.
    transfer = DetectionsTransfer(
        names,
        gcp.project,
        location=dataset_location,
        results=storage.buckets["results"],
        dataset=analytics.dataset,
        tables=analytics.tables,
        minutes=cfg.analytics.load_every_minutes,
        opts=on_gcp,
        requires=apis,
    )
    vms = queue = workers = None
    if cfg.compute is not None and group is not None:
        queue = WorkQueue(
            names,
            gcp.project,
            images=storage.buckets["images"],
            image_retention_days=cfg.storage.image_retention_days,
            worker_email=identity.inference.email,
            group=group,
            kms_key_name=cfg.storage.kms_key_name,
            protect_data=protect_data,
            opts=on_gcp,
            requires=apis,
        )
        workers = GpuWorkerGroup(
            names,
            gcp.region,
            gcp.zones,
            cfg.compute,
            group,
            cfg.security,
            facts,
            network=network.vpc,
            subnet=network.subnet,
            network_tag=network.vm_tag,
            # Triton's HTTP port, as the stack (inference.ports) sets it for every host
            health_port=cfg.inference.ports.http,
            service_account_email=identity.inference.email,
            # with a `bundle` section, the workers apply the stack's bundle at boot (pull mode)
            startup_script=render_startup_script(cfg, workers=True),
            subscription=queue.subscription.name,
            runtime=cfg.inference.runtime,
            opts=on_gcp,
            requires=apis,
        )
    elif cfg.compute is not None:
        vms = GpuVms(
            names,
            gcp.zones,
            cfg.compute,
            cfg.security,
            facts,
            subnet=network.subnet,
            network_tag=network.vm_tag,
            service_account_email=identity.inference.email,
            startup_script=render_startup_script(cfg),
            deletion_protection=cfg.deletion_protection,
            opts=on_gcp,
            requires=apis,
        )

    watched: dict[str, pulumi.Input[str]] = {
        "configs": pulumi.Output.all(*(config.name for config in transfer.configs.values())).apply(
            lambda found: one_of([name.rsplit("/", 1)[-1] for name in found])
        ),
        # the scrape job of the VMs' Ops Agent (cnctl/cloud/ops_agent.py) and the label their GPUs are found by
        "node_job": job_name(cfg.environment),
        "environment": cfg.environment,
    }
    if queue is not None and workers is not None:
        watched.update(subscription=queue.subscription.name, dead_letters=queue.dead_letter_subscription.name,
                       group=workers.manager.name, workers=workers.manager.base_instance_name)
    monitoring = Monitoring(
        names,
        cfg.monitoring,
        Watched(queue=queue is not None, group_min=group.min if group is not None else None,
                group_max=group.max if group is not None else None, hosts=cfg.compute is not None),
        watched,
        opts=on_gcp,
        requires=apis,
    )
    layer = CloudLayer(
        provider, services, network, storage, analytics, identity, transfer, vms, monitoring, queue, workers
    )
    _export(gcp, layer)
    return layer


def _export(gcp: Gcp, layer: CloudLayer) -> None:
    """Stack outputs: what the host inventory of cloud VMs and operators read (docs/cloud.md)."""
    table = layer.analytics.table
    pulumi.export("project", gcp.project)
    pulumi.export("region", gcp.region)
    pulumi.export("vms", _vm_outputs(layer.vms) if layer.vms is not None else [])
    pulumi.export("buckets", {role: bucket.name for role, bucket in layer.storage.buckets.items()})
    pulumi.export("datasetId", table.dataset_id)
    pulumi.export("tableId", table.table_id)
    pulumi.export("table", pulumi.Output.format("{0}.{1}.{2}", gcp.project, table.dataset_id, table.table_id))
    pulumi.export(
        "serviceAccounts",
        {
            "inference": layer.identity.inference.email,
            "uploader": layer.identity.uploader.email,
            "transfer": layer.transfer.account.email,
        },
    )
    pulumi.export("transfers", {gen: config.name for gen, config in layer.transfer.configs.items()})
    if layer.workers is not None and layer.queue is not None:
        # Only in compute.mode group, so a stack of fixed VMs exports what it always did. The workers
        # configure themselves (pull mode) and take their work from the subscription: no inventory.
        pulumi.export("workerGroup", _group_outputs(layer.workers, layer.queue, gcp))
    pulumi.export(
        "lookerStudioUrl",
        pulumi.Output.all(table.dataset_id, table.table_id).apply(lambda ids: looker_studio_url(gcp.project, *ids)),
    )


def _vm_outputs(vms: GpuVms) -> list[dict[str, object]]:
    """Per VM: where it is, how to reach it (internal IP, through IAP), where to move it on a stock-out."""
    return [
        {
            "name": vm.name,
            "zone": vm.zone,
            "internalIp": vm.network_interfaces.apply(lambda nics: nics[0].network_ip),
            "fallbackZones": list(placement.fallbacks),
        }
        for vm, placement in zip(vms.instances, vms.placements, strict=True)
    ]


def _group_outputs(workers: GpuWorkerGroup, queue: WorkQueue, gcp: Gcp) -> dict[str, object]:
    """The group and its queue: what an operator watches (`gcloud compute instance-groups managed ...`,
    `gcloud pubsub subscriptions pull <deadLetterSubscription>`) and the workers' pipeline subscribes to."""
    return {
        "name": workers.manager.name,
        "region": gcp.region,
        "zones": list(gcp.zones),
        "template": workers.template.name,
        "initialDelaySeconds": workers.initial_delay,
        "topic": queue.topic.name,
        "subscription": queue.subscription.name,
        "deadLetterTopic": queue.dead_letters.name,
        "deadLetterSubscription": queue.dead_letter_subscription.name,
    }
