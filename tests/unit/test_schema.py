"""The stack schema: every example stack loads, and bad input is rejected at the right field path."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from cnctl.config import StackConfigError, load_stack
from cnctl.paths import STACKS_DIR


def _key(*fields: bytes) -> str:
    """An OpenSSH public key line from its wire fields (type name first)."""
    blob = b"".join(len(f).to_bytes(4, "big") + f for f in fields)
    return f"{fields[0].decode()} {base64.b64encode(blob).decode()}"


ED25519 = _key(b"ssh-ed25519", bytes(range(32)))
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
    ("inference.ports.grpc", 8000, "inference.ports.grpc", "is already inference.ports.http"),
    ("monitoring.nodeExporterPort", 8002, "monitoring.nodeExporterPort", "is already inference.ports.metrics"),
    ("monitoring.nodeExporterPort", 0, "monitoring.nodeExporterPort", "greater than or equal to 1"),
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
    # --- issue 20: each value the narrowest thing its field means ---
    # no control character anywhere (every field: test_schema_text.py), shown escaped
    ("fleets.edge[0].site", "plant-a\nExecStartPre=+/bin/sh", "fleets.edge[0].site", "U+000A (newline)"),
    ("gcp.labels", {"team": "ops\x1b[2J"}, "gcp.labels.team", "U+001B (ESC)"),
    ("gcp.zones", ["us-central1-a", "us-central1-b\u2028"], "gcp.zones[1]", "U+2028 (LINE SEPARATOR)"),
    ("analytics.table", "detections\u202egnp.", "analytics.table", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
    ("compute.machineType", "n1-standard-8\x00", "compute.machineType", "U+0000 (NUL)"),
    ("model.key", "Jan2025_ver2_merged_1024_1024\x85", "model.key", "U+0085"),
    ("inference.images", {"server\t": "nvcr.io/nvidia/tritonserver:24.03-py3"}, "inference.images.server\\t", "U+0009 (tab)"),
    # addresses: a zone id only of interface-name characters on a link-local address; no IPv4-mapped form
    ("inference.bindAddress", "::1%$(touch /tmp/pwned)", "inference.bindAddress", "zone id"),
    ("inference.bindAddress", "fe80::1%eth0", "inference.bindAddress", "zone id"),
    ("fleets.edge[0].address", "fe80::1%{{ lookup('pipe', 'id') }}", "fleets.edge[0].address", "not an interface name"),
    ("fleets.edge[0].address", "fe80::1%eth0;reboot", "fleets.edge[0].address", "not an interface name"),
    ("fleets.edge[0].address", "fe80::1%averyveryverylongname", "fleets.edge[0].address", "1-15"),
    ("fleets.edge[0].address", "2001:db8::21%eth0", "fleets.edge[0].address", "only a link-local address"),
    ("fleets.edge[0].address", "::ffff:10.50.1.21", "fleets.edge[0].address", "write the IPv4 form 10.50.1.21"),
    ("fleets.edge[0].address", "fe80::21", "fleets.edge[0].address", "link-local without the interface"),
    ("inference.bindAddress", "::ffff:127.0.0.1", "inference.bindAddress", "write the IPv4 form 127.0.0.1"),
    ("network.inferenceAllowedCidrs", ["fe80::%eth0/64"], "network.inferenceAllowedCidrs[0]", "zone id"),
    ("network.inferenceAllowedCidrs", ["::ffff:10.40.0.0/112"], "network.inferenceAllowedCidrs[0]", "IPv4-mapped"),
    # the same host written twice: compared in canonical form
    ("fleets.servers", [{"name": "gpu-1", "address": "::FFFF:10.50.1.21"}], "fleets.servers[0].address", "IPv4-mapped"),
    ("fleets", {"edge": [{"name": "belt-1", "address": "fd00::21"}], "servers": [{"name": "gpu-1", "address": "FD00:0:0::21"}]},
     "fleets.servers[0].address", "already the address of fleets.edge[0] (written 'fd00::21' there)"),
    ("fleets", {"edge": [{"name": "belt-1", "address": "orin-1.plant-a.example"}],
                "servers": [{"name": "gpu-1", "address": "ORIN-1.Plant-A.example."}]},
     "fleets.servers[0].address", "already the address of fleets.edge[0]"),
    # Triton binds loopback or a private address; every interface only by explicit opt-in
    ("inference.bindAddress", "0.0.0.0", "inference.bindAddress", "bindAllInterfaces: true"),
    ("inference.bindAddress", "::", "inference.bindAddress", "bindAllInterfaces: true"),
    ("inference.bindAddress", "8.8.8.8", "inference.bindAddress", "neither loopback nor a private address"),
    ("inference.bindAddress", "169.254.10.1", "inference.bindAddress", "neither loopback nor a private address"),
    ("inference.bindAddress", "2001:db8::5", "inference.bindAddress", "neither loopback nor a private address"),
    ("inference", {"bindAddress": "127.0.0.1", "bindAllInterfaces": True}, "inference.bindAllInterfaces",
     "only for bindAddress 0.0.0.0"),
    ("inference", {"bindAddress": "0.0.0.0", "bindAllInterfaces": True}, "network.inferenceAllowedCidrs",
     "must list the clients"),
    ("inference", {"bindAddress": "0.0.0.0", "bindAllInterfaces": True, "bindInterface": "ens4"},
     "inference.bindInterface", "keep one of them"),
    ("inference.bindAllInterfaces", "yes please", "inference.bindAllInterfaces", "valid boolean"),
    # URLs: RFC 3986, no credentials, no template syntax, one parser for every kind
    ("fleets.edge[0].camera", {"source": "rtsp", "url": "rtsp://{{ lookup('pipe', 'id') }}/stream"},
     "fleets.edge[0].camera.url", "template or shell syntax"),
    ("fleets.edge[0].camera", {"source": "rtsp", "url": "rtsp://admin:secret@10.50.1.40/stream"},
     "fleets.edge[0].camera.url", "credentials"),
    ("fleets.edge[0].camera", {"source": "rtsp", "url": "rtsp://cam.plant/s{% raw %}"}, "fleets.edge[0].camera.url",
     "template or shell syntax"),
    ("model.url", "https://mirror.example/${HOME}/m.zip", "model.url", "template or shell syntax"),
    ("model.url", "https://mirror.example/$(id)/m.zip", "model.url", "template or shell syntax"),
    ("model.url", "https://mirror.example/`id`.zip", "model.url", "template or shell syntax"),
    ("model.url", "https://mirror.example/m.zip#sha", "model.url", "fragment"),
    ("model.url", "https://release@mirror.example/m.zip", "model.url", "credentials"),
    ("model.url", "https://mirror.example/a b.zip", "model.url", "RFC 3986"),
    ("model.url", "https://mirror.example/m\u00e9.zip", "model.url", "RFC 3986"),
    ("storage.endpoint", "https://s3.example:99999", "storage.endpoint", "port"),
    ("storage.endpoint", "https://[fe80::1%eth0]:9000", "storage.endpoint", "%XX"),
    ("storage.endpoint", "https://[::ffff:10.0.0.2]:9000", "storage.endpoint", "IPv4 form 10.0.0.2"),
    ("storage.endpoint", "HTTPS://s3.example", "storage.endpoint", "endpoint URL"),
    ("mirrors.cudaApt", "https://mirror.example/cuda?x=1", "mirrors.cudaApt", "query"),
    ("mirrors.registry", "https://mirror.example/%0d%0aX-Injected:1", "mirrors.registry", "percent-encodes a control"),
    ("mirrors.siteApt", "https://mirror.example/%zz", "mirrors.siteApt", "%XX"),
    ("pipeline.clientUrl", "gs://Bad_Bucket/client.zip", "pipeline.clientUrl", "bucket name"),
    # SSH public keys: parsed as keys of their type, with a one-line comment of a conservative charset
    ("bundle", {"signers": [{"identity": "release@plant", "publicKey": f"{ED25519} ok\nCNCTL_ALLOWED_SIGNERS\nreboot"}]},
     "bundle.signers[0].publicKey", "U+000A (newline)"),
    ("bundle", {"signers": [{"identity": "release@plant", "publicKey": f"{ED25519} $(reboot)"}]},
     "bundle.signers[0].publicKey", "has a comment that is not one short line"),
    ("bundle", {"signers": [{"identity": "release@plant", "publicKey": f"{ED25519} {'x' * 129}"}]},
     "bundle.signers[0].publicKey", "at most 128"),
    ("bundle", {"signers": [{"identity": "release@plant", "publicKey": ED25519.replace("ssh-ed25519", "ssh-rsa")}]},
     "bundle.signers[0].publicKey", "not a ssh-rsa key"),
    ("bundle", {"signers": [{"identity": "release@plant", "publicKey": ED25519[:-8]}]},
     "bundle.signers[0].publicKey", "ssh-ed25519"),
    ("bundle", {"signers": [{"identity": "release@plant", "publicKey": _key(b"ssh-ed25519", b"\x01" * 31)}]},
     "bundle.signers[0].publicKey", "not a whole ssh-ed25519 key"),
    ("bundle", {"signers": [{"identity": "release@plant", "publicKey": _key(b"ssh-rsa", b"\x01\x00\x01", b"\x7f" * 128)}]},
     "bundle.signers[0].publicKey", "at least 2048 bits"),
    ("bundle", {"signers": [{"identity": "release@plant", "publicKey": ED25519},
                            {"identity": "Release@Plant", "publicKey": _key(b"ssh-ed25519", b"\x02" * 32)}]},
     "bundle.signers[1].identity", "listed twice (first at bundle.signers[0])"),
    # names with explicit character sets, and catalog values named with the allowed ones
    ("compute.machineType", "n1-standard-8; reboot", "compute.machineType", "machine type like n1-standard-8"),
    ("compute.imageFamily", "../common-cu124", "compute.imageFamily", "image family"),
    ("compute.gpu.type", "nvidia tesla t4", "compute.gpu.type", "GPU type"),
    ("model.key", "../../etc/passwd", "model.key", "catalog key"),
    ("pipeline.client", "tf;id", "pipeline.client", "catalog key"),
    ("pipeline.client", "tf3", "pipeline.client", "known: tf, detr"),
    ("fleets.edge[0].jetpack", "6.0 ", "fleets.edge[0].jetpack", "JetPack version"),
    ("fleets.edge[0].jetpack", "6.0.0.1", "fleets.edge[0].jetpack", "JetPack version"),
    ("fleets.servers", [{"name": "gpu-1", "address": "192.0.2.30", "driverBranch": "550-open"}],
     "fleets.servers[0].driverBranch", "driver branch"),
    ("storage.location", "MARS-CENTRAL1", "storage.location", "not a Cloud Storage location"),
    ("storage.location", "NAM5", "storage.location", "did you mean NAM4"),
    ("storage.location", "us central1", "storage.location", "Cloud Storage location like US-CENTRAL1"),
    ("storage.location", "europe-west99", "storage.location", "EUROPE-WEST9"),
]


@pytest.mark.parametrize(("field", "value", "path", "phrase"), INVALID, ids=[f"{c[0]}={c[1]!r}" for c in INVALID])
def test_invalid_stack_is_rejected_at_the_field(tmp_path: Path, field: str, value: Any, path: str, phrase: str) -> None:
    document = _dev()
    _set(document, field, copy.deepcopy(value))
    with pytest.raises(StackConfigError) as caught:
        load_stack(str(_write(tmp_path, document)))
    lines = [str(p) for p in caught.value.problems]
    assert any(line.startswith(f"{path}:") and phrase in line for line in lines), lines


# (field set in the dev stack, a value that is what the field means and must keep loading)
VALID: list[tuple[str, Any]] = [
    ("fleets.edge[0].address", "fe80::21%eth0"),  # link-local, reached through the controller's eth0
    ("fleets.edge[0].address", "fe80::21%enp3s0.100"),
    ("fleets.edge[0].address", "2001:db8:50::21"),
    ("fleets.edge[0].address", "fd00:50::21"),
    ("fleets.edge[0].address", "orin-1.plant-a.example"),
    ("fleets.edge[0].address", "ORIN-1.Plant-A.example."),
    ("fleets.edge[0].address", "orin1"),
    ("fleets", {"edge": [{"name": "belt-1", "address": "10.50.1.21"}], "servers": [{"name": "gpu-1", "address": "10.50.1.22"}]}),
    ("inference.bindAddress", "::1"),
    ("inference.bindAddress", "10.50.1.5"),
    ("inference.bindAddress", "100.64.0.5"),
    ("inference.bindAddress", "fd12:3456::5"),
    ("inference", {"bindAddress": "0.0.0.0", "bindAllInterfaces": True}),
    ("network.inferenceAllowedCidrs", ["10.40.0.0/16", "fd00:40::/48"]),
    ("storage.location", "US-CENTRAL1"),  # the stack's region, beside the dataset (others: test_gcp_checks.py)
    ("storage.location", "us-central1"),
    ("model.url", "https://mirror.example:8443/models/Jan2025%20v2.zip?raw=1"),
    ("model.url", "http://[fd00::2]:8080/artifacts/m.zip"),
    ("model.url", "https://[fe80::1%25eth0]/m.zip"),
    ("model.url", "gs://my-circularnet-dev-models/archives/m.zip"),
    ("fleets.edge[0].camera", {"source": "rtsp", "url": "rtsp://10.50.1.40:554/Streaming/Channels/101?transportmode=unicast"}),
    ("fleets.edge[0].camera", {"source": "rtsp", "url": "rtsps://cam-1.plant-a.example/live"}),
    ("mirrors", {"cudaApt": "https://mirror.plant.local/nvidia/cuda", "registry": "https://172.31.254.2:5001"}),
    ("storage.endpoint", "https://s3.plant-a.example:9000/"),
    ("bundle", {"signers": [{"identity": "release@plant", "publicKey": f"{ED25519} release@plant 2025-01"}]}),
    ("bundle", {"signers": [{"identity": "release@plant", "publicKey": ED25519}]}),
    ("bundle", {"signers": [{"identity": "release@plant", "publicKey": _key(b"ssh-rsa", b"\x01\x00\x01", b"\x00\xc1" + b"\x01" * 255)}]}),
    ("bundle", {"signers": [{"identity": "release@plant", "publicKey": _key(
        b"ecdsa-sha2-nistp256", b"nistp256", b"\x04" + b"\x01" * 64)}]}),
    ("fleets.edge[0].jetpack", "6.2"),
    ("fleets.servers", [{"name": "gpu-1", "address": "10.50.1.30", "driverBranch": "570"}]),
    ("compute.machineType", "n1-highmem-8"),
]


# What a case above needs beside it: every interface only with the clients the VMs' firewall lets in; allowed
# clients only with Triton on a private interface.
ALSO: dict[str, tuple[str, Any]] = {
    "inference": ("network.inferenceAllowedCidrs", ["10.40.0.0/16"]),
    "network.inferenceAllowedCidrs": ("inference.bindInterface", "ens4"),
}


@pytest.mark.parametrize(("field", "value"), VALID, ids=[f"{c[0]}={c[1]!r}" for c in VALID])
def test_what_the_field_means_still_loads(tmp_path: Path, field: str, value: Any) -> None:
    document = _dev()
    _set(document, field, copy.deepcopy(value))
    if field in ALSO:
        _set(document, *ALSO[field])
    load_stack(str(_write(tmp_path, document)))


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
    assert "known stacks there: " in str(caught.value) and "dev" in str(caught.value)


def test_not_yaml_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text("config: [unclosed\n")
    with pytest.raises(StackConfigError, match="not valid YAML"):
        load_stack(str(path))
