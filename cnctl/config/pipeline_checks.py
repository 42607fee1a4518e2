"""Rules that relate the pipeline's fields to each other, to the fleets' cameras and to the catalog.

Each yields a `Problem` at the field the user must change. GOOD / BAD, with the catalog as it is:

| rule                     | GOOD                                          | BAD (field named)                                 |
|--------------------------|-----------------------------------------------|---------------------------------------------------|
| client_in_catalog        | client unset (the model's generation); tf     | client: tf2 (pipeline.client)                     |
| client_fits_model        | TF model + tf client                          | TF model + detr client (pipeline.client)          |
| standin_client_local     | sandbox_standin in the local stack            | sandbox_standin in dev (pipeline.client)          |
| camera_source_complete   | rtsp + url; replay + replayUrl + replaySha256 | rtsp without url; replay without replaySha256     |
| camera_fields_used       | v4l2 with device only                         | v4l2 with url (fleets.edge[i].camera.url)         |
| input_not_on_edge        | edge device without pipelineInput             | edge pipelineInput: bucket (fleets.edge[i].pipelineInput) |
| bucket_input_on_gcs      | input bucket + storage.kind gcs               | input bucket + kind s3 (pipeline.input, or the server's pipelineInput) |
| bucket_input_subscribed  | input bucket + subscription (or compute.mode group) | input bucket, no subscription (pipeline.subscription) |
| subscription_in_project  | subscription id + gcp; projects/P/subscriptions/S | subscription id, no gcp section (pipeline.subscription) |
| subscription_used        | subscription + a host with bucket input       | subscription, every host on spool (pipeline.subscription) |

Bucket input (cnhost/bucket_worker.py) reads the OBJECT_FINALIZE notifications of storage.buckets.images, a Cloud
Storage bucket, through one Pub/Sub subscription; edge devices always read their camera.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from cnctl.catalog import Catalog
from cnctl.config.errors import Problem
from cnctl.config.schema import StackConfig

Rule = Callable[[StackConfig, Catalog], Iterator[Problem]]

LOCAL = "local"  # the one stack that may run stand-ins (as checks.LOCAL)
# Which camera fields each source reads: a field set for another source is a mistake (a copied entry).
_SOURCE_FIELDS = {"v4l2": ("device",), "rtsp": ("url",), "replay": ("replay_url", "replay_sha256")}
_CAMEL = {"device": "device", "url": "url", "replay_url": "replayUrl", "replay_sha256": "replaySha256"}


def _client_key(cfg: StackConfig, cat: Catalog) -> str | None:
    model = cat.models.models.get(cfg.model.key)
    return cfg.pipeline.client or (model.generation if model else None)


def client_in_catalog(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """pipeline.client names a client of catalog/pipeline.yaml."""
    key = _client_key(cfg, cat)
    if key is not None and key not in cat.pipeline.clients:
        yield Problem("pipeline.client", key, f"is not in the pipeline catalog; known: {', '.join(cat.pipeline.clients)}")


def client_fits_model(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """The client speaks the model's generation (flags, tensors, detections table)."""
    model = cat.models.models.get(cfg.model.key)
    client = cat.pipeline.clients.get(_client_key(cfg, cat) or "")
    if model is not None and client is not None and client.generation != model.generation:
        fitting = [k for k, c in cat.pipeline.clients.items() if c.generation == model.generation and not c.standin]
        yield Problem("pipeline.client", cfg.pipeline.client,
                      f"is a {client.generation} client but model {cfg.model.key} is {model.generation}; "
                      f"use {' or '.join(fitting) or 'a client of that generation'}")


def standin_client_local(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """A stand-in client belongs to the sandbox only."""
    client = cat.pipeline.clients.get(_client_key(cfg, cat) or "")
    if client is not None and client.standin and (cfg.sandbox is None or cfg.environment != LOCAL):
        yield Problem("pipeline.client", cfg.pipeline.client,
                      f"is a sandbox stand-in; only the {LOCAL} stack (with a `sandbox` section) may run it")


def camera_source_complete(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """An rtsp camera names its stream; a replay names its archive and pins it."""
    for i, dev in enumerate(cfg.fleets.edge):
        cam, at = dev.camera, f"fleets.edge[{i}].camera"
        if cam.source == "rtsp" and cam.url is None:
            yield Problem(f"{at}.url", None, "source rtsp needs the camera's stream URL (rtsp://host/path)")
        if cam.source == "replay" and cam.replay_url is None:
            yield Problem(f"{at}.replayUrl", None, "source replay needs the URL of a zip of JPEG frames")
        if cam.source == "replay" and cam.replay_sha256 is None:
            yield Problem(f"{at}.replaySha256", None, "source replay needs the archive's sha256 (sha256sum <zip>)")


def camera_fields_used(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """A field another source reads is named, so a half-edited entry is not deployed as something else."""
    for i, dev in enumerate(cfg.fleets.edge):
        cam = dev.camera
        used = _SOURCE_FIELDS[cam.source]
        for source, fields in _SOURCE_FIELDS.items():
            for name in fields:
                if source != cam.source and name not in used and name != "device" and getattr(cam, name) is not None:
                    yield Problem(f"fleets.edge[{i}].camera.{_CAMEL[name]}", getattr(cam, name),
                                  f"is read only by source {source}; this camera's source is {cam.source}: remove it "
                                  f"or set source: {source}")


def _bucket_inputs(cfg: StackConfig) -> list[str]:
    """The field that puts each consumer of the images bucket on bucket input (a server's own pipelineInput,
    else pipeline.input, else compute.mode for the group's workers), once each, in stack order."""
    found: list[str] = []
    for i, srv in enumerate(cfg.fleets.servers):
        if cfg.pipeline_input(srv) == "bucket":
            found.append(f"fleets.servers[{i}].pipelineInput" if srv.pipeline_input else "pipeline.input")
    if cfg.compute is not None and cfg.gcp is not None and cfg.pipeline_input(None) == "bucket":
        found.append("pipeline.input" if cfg.pipeline.input else "compute.mode")
    return list(dict.fromkeys(found))


def input_not_on_edge(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """An edge device's frames come from its camera: an input of its own would be ignored, so it is named."""
    for i, dev in enumerate(cfg.fleets.edge):
        if dev.pipeline_input is not None:
            yield Problem(f"fleets.edge[{i}].pipelineInput", dev.pipeline_input,
                          "an edge device takes its frames from its camera (fleets.edge[i].camera); remove "
                          "pipelineInput: spool and bucket input are for servers and cloud VMs")


def bucket_input_on_gcs(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """Bucket input consumes Cloud Storage's notifications: an S3-compatible store sends none."""
    if cfg.storage.kind != "gcs":
        for at in _bucket_inputs(cfg):
            yield Problem(at, "bucket", f"bucket input reads Pub/Sub notifications of a Cloud Storage bucket, but "
                          f"storage.kind is {cfg.storage.kind}; use input spool (frames in a local directory) or "
                          "storage.kind gcs")


def bucket_input_subscribed(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """Bucket input pulls from one subscription: the stack's, or the cloud layer's in compute.mode group."""
    if _bucket_inputs(cfg) and cfg.work_subscription is None:
        yield Problem("pipeline.subscription", None,
                      "bucket input needs the Pub/Sub subscription of storage.buckets.images' OBJECT_FINALIZE "
                      "notifications: set pipeline.subscription (an id, or projects/P/subscriptions/S), or use "
                      "compute.mode group, whose queue the cloud layer creates")


def subscription_in_project(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """A subscription id is read in gcp.project; without a cloud layer it must name its project."""
    sub = cfg.pipeline.subscription
    if sub is not None and not sub.startswith("projects/") and cfg.gcp is None:
        yield Problem("pipeline.subscription", sub, "is an id but the stack has no gcp section to take the project "
                      f"from; write projects/<project>/subscriptions/{sub}")


def subscription_used(cfg: StackConfig, cat: Catalog) -> Iterator[Problem]:
    """A subscription nobody pulls from is a half-edited stack: say so rather than ignore it."""
    if cfg.pipeline.subscription is not None and not _bucket_inputs(cfg):
        yield Problem("pipeline.subscription", cfg.pipeline.subscription,
                      "is set but no server or cloud VM takes bucket input; set pipeline.input: bucket (or a "
                      "server's pipelineInput: bucket) or remove it")


RULES: tuple[Rule, ...] = (
    client_in_catalog,
    client_fits_model,
    standin_client_local,
    camera_source_complete,
    camera_fields_used,
    input_not_on_edge,
    bucket_input_on_gcs,
    bucket_input_subscribed,
    subscription_in_project,
    subscription_used,
)
