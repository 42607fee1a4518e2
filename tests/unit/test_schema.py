"""The stack schema: every example stack loads, and bad input is rejected at the right field path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from cnctl.config import StackConfigError, load_stack
from cnctl.config.loader import STACKS_DIR

EXAMPLE_STACKS = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in STACKS_DIR.glob("Pulumi.*.yaml"))


def _dev() -> dict[str, Any]:
    """The dev example stack as a plain mapping, the base every invalid case mutates."""
    return yaml.safe_load((STACKS_DIR / "Pulumi.dev.yaml").read_text())


def _write(tmp_path: Path, document: dict[str, Any], env: str = "dev") -> Path:
    path = tmp_path / f"Pulumi.{env}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _set(document: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `circularnet:<section>.a.b[0].c` in a stack document; the value `DELETE` removes the key."""
    section, _, rest = dotted.partition(".")
    node: Any = document["config"]
    key: Any = f"circularnet:{section}"
    for part in rest.split(".") if rest else []:
        node = node[key] if isinstance(node, list) else node.setdefault(key, {})
        name, _, index = part.partition("[")
        if index:
            node = node[name]
            key = int(index.rstrip("]"))
        else:
            key = name
    if value == "DELETE":
        del node[key]
    else:
        node[key] = value


def test_every_example_stack_loads() -> None:
    assert {"dev", "prod"} <= set(EXAMPLE_STACKS)
    for name in EXAMPLE_STACKS:
        cfg = load_stack(name)
        assert cfg.environment == name


def test_defaults_are_secure() -> None:
    cfg = load_stack("dev")
    assert cfg.network.inference_allowed_cidrs == []
    assert cfg.inference.bind_address == "127.0.0.1"
    assert cfg.security.os_login and cfg.security.block_project_ssh_keys
    assert cfg.deletion_protection is False
    assert load_stack("prod").deletion_protection is True


# (field set in the dev stack, value, the path the error must name, a phrase the message must hold)
INVALID: list[tuple[str, Any, str, str]] = [
    ("gcp.project", "My_Project", "gcp.project", "GCP project id"),
    ("gcp.project", "abc", "gcp.project", "GCP project id"),
    ("gcp.region", "uscentral", "gcp.region", "GCP region"),
    ("gcp.zones", [], "gcp.zones", "at least 1"),
    ("gcp.zones", ["us-central1-a", "europe-west4-a"], "gcp.zones[1]", "not in region us-central1"),
    ("gcp.zones", ["us-central1-a", "us-central1-a"], "gcp.zones[1]", "listed twice"),
    ("gcp.zones", ["us-central1"], "gcp.zones[0]", "GCP zone"),
    ("gcp.labels", {"Team": "x"}, "gcp.labels", "label key"),
    ("gcp.labels", {"team": "Recycling Ops"}, "gcp.labels", "label value"),
    ("network.subnetCidr", "10.20.0.0/33", "network.subnetCidr", "CIDR"),
    ("network.subnetCidr", "10.20.0.1/24", "network.subnetCidr", "CIDR"),
    ("network.subnetCidr", "8.8.8.0/24", "network.subnetCidr", "private range"),
    ("network.inferenceAllowedCidrs", ["10.0.0.0/8", "nonsense"], "network.inferenceAllowedCidrs[1]", "CIDR"),
    ("storage.buckets.images", "UPPER-case", "storage.buckets.images", "bucket name"),
    ("storage.buckets.images", "ab", "storage.buckets.images", "bucket name"),
    ("storage.buckets.results", "google-results", "storage.buckets.results", "google"),
    ("storage.buckets.models", "goog-models", "storage.buckets.models", "goog"),
    ("storage.buckets.models", "192.168.1.10", "storage.buckets.models", "IP address"),
    ("storage.buckets.models", "my-circularnet-dev-images", "storage.buckets.models", "same bucket"),
    ("storage.imageRetentionDays", 0, "storage.imageRetentionDays", "greater than or equal to 1"),
    ("storage.kind", "azure", "storage.kind", "'gcs' or 's3'"),
    ("analytics.dataset", "circular-net", "analytics.dataset", "BigQuery id"),
    ("analytics.table", "detections table", "analytics.table", "BigQuery id"),
    ("compute.gpu.type", "nvidia-l4", "compute.gpu.type", "not available on n1"),
    ("compute.gpu.count", 3, "compute.gpu.count", "counts [1, 2, 4]"),
    ("compute.machineType", "e2-standard-8", "compute.machineType", "not a GPU machine family"),
    ("compute.imageFamily", "debian-12", "compute.imageFamily", "not a known driver image"),
    ("compute.diskType", "nvme", "compute.diskType", "pd-balanced"),
    ("compute.instances", -1, "compute.instances", "greater than or equal to 0"),
    ("model.key", "MaskRCNN_2023", "model.key", "not in the model catalog"),
    ("model.key", "sandbox_standin", "model.key", "stand-in"),
    ("model.sha256", "abc123", "model.sha256", "sha256"),
    ("model.sha256", "DELETE", "model.sha256", "must pin"),
    ("model.version", 0, "model.version", "greater than or equal to 1"),
    ("inference.bindAddress", "localhost:8000", "inference.bindAddress", "IP address"),
    ("inference.ports.http", 70000, "inference.ports.http", "less than or equal to 65535"),
    ("inference.runtime", "podman", "inference.runtime", "'container' or 'native'"),
    ("inference.images", {"server": "nvcr.io/nvidia/tritonserver:25.05-py3"}, "inference.images.server", "TensorFlow backend"),
    ("inference.images", {"server": "tritonserver"}, "inference.images.server", "container image"),
    ("pipeline.scoreThreshold", 1.5, "pipeline.scoreThreshold", "less than 1"),
    ("fleets.edge[0].jetpack", "5.1.2", "fleets.edge[0].jetpack", "not in the platform matrix"),
    ("fleets.edge[0].name", "Belt_1", "fleets.edge[0].name", "host name"),
    ("fleets.servers", [{"name": "belt-1-orin", "address": "192.0.2.30"}], "fleets.servers[0].name", "already used by fleets.edge[0]"),
    ("fleets.servers", [{"name": "gpu-1", "address": "192.0.2.30", "driverBranch": "470"}], "fleets.servers[0].driverBranch", "not in the platform matrix"),
    ("fleets.edge[0].sshUser", "Root User", "fleets.edge[0].sshUser", "pattern"),
    ("fleets.edge[0].camera.fps", 0, "fleets.edge[0].camera.fps", "greater than or equal to 1"),
    ("security.secureBoot", "on", "security.secureBoot", "unsigned driver modules"),
    ("security.secureBoot", "yes", "security.secureBoot", "'auto', 'on' or 'off'"),
    ("network.inferenceAllowedCidrs", ["10.40.0.0/16"], "inference.bindInterface", "open nothing"),
    ("gcp.labels", {"managed-by": "terraform"}, "gcp.labels.managed-by", "set by cnctl"),
    ("compute.gpuType", "nvidia-tesla-t4", "compute.gpuType", "known keys here: machineType, gpu"),
    ("storage.buckets.images", "DELETE", "storage.buckets.images", "is required"),
]


@pytest.mark.parametrize(("field", "value", "path", "phrase"), INVALID, ids=[f"{c[0]}={c[1]!r}" for c in INVALID])
def test_invalid_stack_is_rejected_at_the_field(tmp_path: Path, field: str, value: Any, path: str, phrase: str) -> None:
    document = _dev()
    _set(document, field, copy.deepcopy(value))
    with pytest.raises(StackConfigError) as caught:
        load_stack(str(_write(tmp_path, document)))
    lines = [str(p) for p in caught.value.problems]
    assert any(line.startswith(f"{path}:") and phrase in line for line in lines), lines


def test_there_are_at_least_thirty_invalid_cases() -> None:
    assert len(INVALID) >= 30


def test_g2_shape_takes_its_own_gpu_count(tmp_path: Path) -> None:
    document = _dev()
    _set(document, "compute.machineType", "g2-standard-24")
    _set(document, "compute.gpu", {"type": "nvidia-l4", "count": 1})
    with pytest.raises(StackConfigError) as caught:
        load_stack(str(_write(tmp_path, document)))
    assert [p.path for p in caught.value.problems] == ["compute.gpu.count"]
    assert "exactly 2" in str(caught.value.problems[0])
    _set(document, "compute.gpu", {"type": "nvidia-l4", "count": 2})
    assert load_stack(str(_write(tmp_path, document))).compute.gpu.count == 2  # type: ignore[union-attr]


def test_every_problem_is_reported_not_only_the_first(tmp_path: Path) -> None:
    document = _dev()
    _set(document, "gcp.project", "X")
    _set(document, "model.sha256", "nothex")
    _set(document, "network.subnetCidr", "bad")
    with pytest.raises(StackConfigError) as caught:
        load_stack(str(_write(tmp_path, document)))
    assert {p.path for p in caught.value.problems} == {"gcp.project", "model.sha256", "network.subnetCidr"}


def test_unknown_section_is_named(tmp_path: Path) -> None:
    document = _dev()
    document["config"]["circularnet:computee"] = {}
    with pytest.raises(StackConfigError) as caught:
        load_stack(str(_write(tmp_path, document)))
    assert caught.value.problems[0].path == "circularnet:computee"
    assert "compute" in caught.value.problems[0].message


def test_missing_stack_names_the_known_ones() -> None:
    with pytest.raises(StackConfigError) as caught:
        load_stack("staging")
    assert "known stacks: " in str(caught.value) and "dev" in str(caught.value)


def test_not_yaml_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text("config: [unclosed\n")
    with pytest.raises(StackConfigError, match="not valid YAML"):
        load_stack(str(path))
