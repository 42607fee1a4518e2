"""Rules of `compute.mode: group`: the autoscaled worker group and its images queue.

Each rule yields a `Problem` at the field to change, with the range Google Cloud or Pub/Sub accepts,
before `pulumi up` fails half-way through creating a queue and a group. GOOD / BAD:

| rule                              | GOOD                                    | BAD (field named)                                  |
|-----------------------------------|-----------------------------------------|----------------------------------------------------|
| group_only_in_group_mode          | mode group + group {...}; mode vms      | mode vms + group {...} (compute.group)             |
| vm_fields_not_in_group_mode       | mode group, no instances/placement      | mode group + instances: 2 (compute.instances)      |
| group_sizes                       | min 0, max 1; min 2, max 4              | min 3, max 2 (.min); max 0 (.max); min -1 (.min)   |
| images_per_worker_positive        | imagesPerWorker 1                       | imagesPerWorker 0                                  |
| delivery_attempts_in_pubsub_range | maxDeliveryAttempts 5, 100              | 4, 101 (Pub/Sub's dead-letter range is 5-100)      |
| ack_deadline_in_pubsub_range      | ackDeadlineSeconds 10, 600              | 9, 601                                             |
| initial_delay_in_range            | initialDelaySeconds 0, 3600             | -1, 3601                                           |
| health_check_reaches_triton       | mode group + bindInterface ens4         | mode group, Triton on 127.0.0.1 only               |
| workers_configure_from_a_bundle   | mode group + bundle.signers             | mode group, no bundle section (compute.mode)       |

A group also needs at least one zone: `gcp.zones` may not be empty (the schema) and the group spreads
over all of them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator

from cnctl.catalog import Catalog
from cnctl.config.errors import Problem
from cnctl.config.schema import StackConfig, WorkerGroup

Rule = Callable[[StackConfig, Catalog], Iterator[Problem]]

GROUP = "compute.group"
# Pub/Sub's limits (cloud.google.com/pubsub/docs/handling-failures, .../lease-management).
DELIVERY_ATTEMPTS = (5, 100)
ACK_DEADLINE_SECONDS = (10, 600)
# Compute Engine's limit on an autohealing policy's initial delay.
INITIAL_DELAY_SECONDS = (0, 3600)


def _group(cfg: StackConfig) -> WorkerGroup | None:
    return cfg.compute.worker_group if cfg.compute is not None else None


def group_only_in_group_mode(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """`compute.group` means nothing to fixed VMs: say so instead of ignoring it."""
    if cfg.compute is not None and cfg.compute.group is not None and cfg.compute.mode == "vms":
        yield Problem(GROUP, "…", "is set but compute.mode is vms; set compute.mode: group or remove it")


def vm_fields_not_in_group_mode(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """A group is sized by min/max and placed over gcp.zones: the fixed VMs' count and zones would be ignored."""
    if cfg.compute is None or cfg.compute.mode != "group":
        return
    if "instances" in cfg.compute.model_fields_set:
        yield Problem("compute.instances", cfg.compute.instances,
                      "is for compute.mode vms; a group's size is compute.group.min and compute.group.max")
    if cfg.compute.placement:
        yield Problem("compute.placement", "…",
                      "is for compute.mode vms; a group spreads its workers over gcp.zones (remove placement)")


def group_sizes(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """0 <= min <= max and max >= 1: a group that may never run a worker would drain nothing."""
    group = _group(cfg)
    if group is None:
        return
    if group.min < 0:
        yield Problem(f"{GROUP}.min", group.min, "must be 0 or more (0: no worker while the queue is empty)")
    if group.max < 1:
        yield Problem(f"{GROUP}.max", group.max, "must be at least 1: with no worker the images queue is never drained")
    elif group.min > group.max:
        yield Problem(f"{GROUP}.min", group.min, f"is more than compute.group.max ({group.max}); lower min or raise max")


def images_per_worker_positive(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    group = _group(cfg)
    if group is not None and group.images_per_worker < 1:
        yield Problem(f"{GROUP}.imagesPerWorker", group.images_per_worker,
                      "must be at least 1: the autoscaler runs one worker per this many waiting images")


def delivery_attempts_in_pubsub_range(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    group = _group(cfg)
    low, high = DELIVERY_ATTEMPTS
    if group is not None and not low <= group.max_delivery_attempts <= high:
        yield Problem(f"{GROUP}.maxDeliveryAttempts", group.max_delivery_attempts,
                      f"is outside {low}-{high}, the range Pub/Sub allows before dead-lettering a message")


def ack_deadline_in_pubsub_range(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    group = _group(cfg)
    low, high = ACK_DEADLINE_SECONDS
    if group is not None and not low <= group.ack_deadline_seconds <= high:
        yield Problem(f"{GROUP}.ackDeadlineSeconds", group.ack_deadline_seconds,
                      f"is outside {low}-{high} seconds, Pub/Sub's range (workers extend it during long inference)")


def initial_delay_in_range(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    group = _group(cfg)
    low, high = INITIAL_DELAY_SECONDS
    delay = group.initial_delay_seconds if group is not None else None
    if delay is not None and not low <= delay <= high:
        yield Problem(f"{GROUP}.initialDelaySeconds", delay,
                      f"is outside {low}-{high} seconds, what Compute Engine allows for autohealing's initial delay")


def health_check_reaches_triton(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """Google's health checks reach a worker on its private address: Triton on loopback only would fail every
    check, and autohealing would replace every worker forever."""
    if _group(cfg) is None:
        return
    if cfg.inference.bind_interface is None and ipaddress.ip_address(cfg.inference.bind_address).is_loopback:
        yield Problem(
            "inference.bindInterface", None,
            "must name the workers' private interface (ens4 on Compute Engine) in compute.mode group: Google's "
            "health checks reach Triton there, and with loopback only autohealing would replace every worker",
        )


def workers_configure_from_a_bundle(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """A group's workers configure themselves: their startup script applies the stack's signed bundle, and nothing
    pushes to them (they are in no inventory). Without a `bundle` section no worker would ever install Triton or
    the worker, fail every health check and be recreated by autohealing, while the autoscaler keeps up to `max` of
    them (and their GPUs) running and the images wait."""
    if _group(cfg) is not None and cfg.bundle is None:
        yield Problem(
            "compute.mode", "group",
            "needs the stack's bundle section (bundle.signers: the keys its bundles are signed with): the workers "
            "configure themselves from its stable channel at boot (docs/pull-mode.md); add it, or set compute.mode: vms",
        )


RULES: tuple[Rule, ...] = (
    group_only_in_group_mode,
    vm_fields_not_in_group_mode,
    group_sizes,
    images_per_worker_positive,
    delivery_attempts_in_pubsub_range,
    ack_deadline_in_pubsub_range,
    initial_delay_in_range,
    health_check_reaches_triton,
    workers_configure_from_a_bundle,
)
