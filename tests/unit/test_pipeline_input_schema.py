"""Where the pipeline takes its frames: `pipeline.input` (spool | bucket), `pipeline.subscription`, a server's
`pipelineInput`; the stack rules that refuse what cannot work (cnctl/config/pipeline_checks.py), each at the
field to change with the fix, and what every host is given (cnctl/hostvars.py)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from cnctl.config import StackConfigError, load_stack
from cnctl.hostvars import host_vars
from cnctl.paths import STACKS_DIR
from tests.unit.test_schema import _set, _write

SERVER = {"name": "gpu-1", "address": "192.0.2.30"}


def _stack(name: str = "dev") -> dict[str, Any]:
    return yaml.safe_load((STACKS_DIR / f"Pulumi.{name}.yaml").read_text())


def _load(tmp_path: Path, document: dict[str, Any], env: str = "dev"):
    return load_stack(str(_write(tmp_path, document, env)))


# (stack, fields set, the path the problem must name, a phrase of the fix)
BAD: list[tuple[str, dict[str, Any], str, str]] = [
    ("dev", {"fleets.edge[0].pipelineInput": "bucket"}, "fleets.edge[0].pipelineInput",
     "an edge device takes its frames from its camera"),
    ("dev", {"pipeline.input": "bucket"}, "pipeline.subscription", "set pipeline.subscription"),
    ("dev", {"fleets.servers": [{**SERVER, "pipelineInput": "bucket"}]}, "pipeline.subscription",
     "or use compute.mode group"),
    ("onprem", {"pipeline.input": "bucket", "pipeline.subscription": "projects/plant-one/subscriptions/images"},
     "pipeline.input", "storage.kind is s3; use input spool"),
    ("onprem", {"fleets.servers[0].pipelineInput": "bucket",
                "pipeline.subscription": "projects/plant-one/subscriptions/images"},
     "fleets.servers[0].pipelineInput", "storage.kind is s3"),
    ("onprem", {"pipeline.input": "bucket", "pipeline.subscription": "images-work"}, "pipeline.subscription",
     "write projects/<project>/subscriptions/images-work"),
    ("dev", {"pipeline.subscription": "images-work"}, "pipeline.subscription", "no server or cloud VM takes bucket input"),
    ("dev", {"pipeline.input": "bucket", "pipeline.subscription": "9-starts-with-a-digit"}, "pipeline.subscription",
     "Pub/Sub subscription id"),
    ("dev", {"pipeline.input": "pubsub"}, "pipeline.input", "'spool' or 'bucket'"),
    ("dev", {"pipeline.maxMessages": 0}, "pipeline.maxMessages", "greater than or equal to 1"),
]


@pytest.mark.parametrize(("stack", "fields", "path", "phrase"), BAD, ids=[f"{b[0]}:{b[2]}:{b[3][:24]}" for b in BAD])
def test_what_cannot_work_is_refused_at_the_field_with_the_fix(tmp_path: Path, stack: str, fields: dict[str, Any],
                                                               path: str, phrase: str) -> None:
    document = _stack(stack)
    for field, value in fields.items():
        _set(document, field, copy.deepcopy(value))
    with pytest.raises(StackConfigError) as caught:
        _load(tmp_path, document, stack)
    lines = [str(p) for p in caught.value.problems]
    assert any(line.startswith(f"{path}:") and phrase in line for line in lines), lines


def test_servers_and_vms_take_the_stacks_input_and_edge_devices_their_camera(tmp_path: Path) -> None:
    document = _stack("dev")
    _set(document, "pipeline.input", "bucket")
    _set(document, "pipeline.subscription", "images-work")
    _set(document, "fleets.servers", [SERVER, {"name": "gpu-2", "address": "192.0.2.31", "pipelineInput": "spool"}])
    cfg = _load(tmp_path, document)
    assert cfg.pipeline_input(cfg.fleets.edge[0]) == "camera"
    assert [cfg.pipeline_input(s) for s in cfg.fleets.servers] == ["bucket", "spool"]
    assert cfg.pipeline_input(None) == "bucket"  # the cloud VMs
    wants = host_vars(cfg, "servers", cfg.fleets.servers[0])
    assert wants["cn_pipeline_input"] == "bucket"
    assert wants["cn_pipeline_subscription"] == f"projects/{cfg.gcp.project}/subscriptions/images-work"
    assert wants["cn_pipeline_max_messages"] == 64
    assert {w["name"] for w in wants["cn_worker_wheels"]} >= {"google-cloud-pubsub", "grpcio"}
    assert host_vars(cfg, "edge", cfg.fleets.edge[0])["cn_pipeline_input"] == "camera"


def test_the_group_workers_take_the_bucket_by_default_from_the_cloud_layers_queue() -> None:
    cfg = load_stack("dev-group")
    assert cfg.pipeline_input(None) == "bucket" and cfg.work_subscription == "cn-dev-group-images-work"
    plain = load_stack("dev")
    assert plain.pipeline_input(None) == "spool" and plain.work_subscription is None
    assert load_stack("local").pipeline_input(load_stack("local").fleets.servers[0]) == "spool"


def test_a_full_subscription_path_needs_no_cloud_layer(tmp_path: Path) -> None:
    document = _stack("onprem")
    _set(document, "storage.kind", "gcs")
    _set(document, "storage.endpoint", "DELETE")
    _set(document, "storage.credentialsFile", "DELETE")
    _set(document, "pipeline.input", "bucket")
    _set(document, "pipeline.subscription", "projects/plant-one/subscriptions/images-work")
    try:
        cfg = _load(tmp_path, document, "onprem")
    except StackConfigError as exc:  # other rules of a gcs store without a cloud layer may speak; not ours
        assert not any(str(p).startswith(("pipeline.", "fleets.servers[0].pipelineInput")) for p in exc.problems), \
            [str(p) for p in exc.problems]
        return
    wants = host_vars(cfg, "servers", cfg.fleets.servers[0])
    assert wants["cn_pipeline_subscription"] == "projects/plant-one/subscriptions/images-work"
