"""The pipeline layer in both engines (deploy/pipeline.py, roles/pipeline): the same templates rendered to the
same bytes, units systemd accepts silently and services hardened to an exposure of at most 3.0, settings
every script reads, the refusals as data, role inputs stopped by argument_specs naming them, and the wiring."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import cnhost
from cnctl.config import load_stack
from cnctl.hostvars import host_vars
from cnhost import bucket_worker, pipeline_run
from deploy.rules import checks
from deploy.rules import pipeline as pipeline_rules
from deploy.steps import role_data
from tests.unit.render_parity import by_ansible, by_pyinfra, render
from tests.unit.test_layers_roles import assert_bad_inputs_named

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TEMPLATES = REPO / "templates"
ROLE = REPO / "roles" / "pipeline"
MAX_EXPOSURE = 3.0
UNITS = ("systemd/circularnet-capture.service.j2", "systemd/circularnet-pipeline.service.j2",
         "systemd/circularnet-pipeline.timer.j2", "systemd/circularnet-upload.service.j2",
         "systemd/circularnet-worker.service.j2")
SUBSCRIPTION = "projects/circularnet-dev/subscriptions/cn-dev-images-work"


def _wants(group: str = "edge", **overrides: Any) -> dict[str, Any]:
    cfg = load_stack("local")
    entry = cfg.fleets.servers[0] if group == "servers" else cfg.fleets.edge[0]
    wants = host_vars(cfg, group, entry)  # type: ignore[arg-type]
    wants.setdefault("cn_pipeline_client_sha256", None)
    return {**wants, "cn_pipeline_client_url": wants["cn_pipeline_client_url"] or "http://site/client.zip",
            "cn_pipeline_client_sha256": wants["cn_pipeline_client_sha256"] or "c" * 64,
            "cn_pipeline_client_wheels": wants["cn_pipeline_client_wheels"] or [], **overrides}


def _camera(source: str, **fields: Any) -> dict[str, Any]:
    base = {"source": source, "device": "/dev/video0", "url": None, "replay_url": None, "replay_sha256": None,
            "replay_loop": False,
            "prefix": "belt1", "spool": "/var/lib/circularnet/pipeline/frames", "fps": 30, "spool_budget_mib": 2048}
    if source == "replay":
        base.update(replay_url="http://site/footage.zip", replay_sha256="f" * 64)
    if source == "rtsp":
        base.update(url="rtsp://cam-1.plant.local/stream1")
    return {**base, **fields}


def _bucket_wants() -> dict[str, Any]:
    """A server whose input is the images bucket (pipeline.input: bucket)."""
    return _wants("servers", cn_pipeline_input="bucket", cn_pipeline_subscription=SUBSCRIPTION)


def _unit_vars(camera: dict[str, Any] | None, address: str = "127.0.0.1") -> dict[str, Any]:
    return pipeline_rules.unit_variables(_wants(cn_camera=camera), role_data("pipeline"), address)


def _upstream_wants(**overrides: Any) -> dict[str, Any]:
    """A server running upstream's TF client (catalog `clients.tf`), its wheels the catalog's client_tf set."""
    local = load_stack("local")
    cfg = local.model_copy(update={"pipeline": local.pipeline.model_copy(update={"client": "tf"})})
    wants = host_vars(cfg, "servers", cfg.fleets.servers[0])
    return {**wants, "cn_pipeline_client_url": "http://site/models-0123abc.zip", "cn_pipeline_client_sha256": "d" * 64,
            **overrides}


# (template, variables): every template of the layer, with the values real hosts give
RENDERINGS: list[tuple[str, dict[str, Any]]] = [
    *((src, {"unit": _unit_vars(_camera("v4l2"))}) for src in UNITS),
    ("systemd/circularnet-capture.service.j2", {"unit": _unit_vars(_camera("rtsp"))}),
    ("systemd/circularnet-capture.service.j2", {"unit": _unit_vars(_camera("replay", spool="/data/frames"))}),
    ("systemd/circularnet-pipeline.service.j2", {"unit": _unit_vars(None, "10.20.0.5")}),
    ("pipeline/pipeline.json.j2", {"pipeline_config": pipeline_rules.settings(_wants(cn_camera=_camera("replay")),
                                                                          role_data("pipeline"), "127.0.0.1")}),
    ("pipeline/pipeline.json.j2", {"pipeline_config": pipeline_rules.settings(_wants("servers"), role_data("pipeline"),
                                                                          "0.0.0.0")}),
    ("pipeline/pipeline.json.j2", {"pipeline_config": pipeline_rules.settings(_bucket_wants(), role_data("pipeline"),
                                                                          "10.20.0.5")}),
    ("systemd/circularnet-worker.service.j2", {"unit": pipeline_rules.unit_variables(_bucket_wants(), role_data("pipeline"),
                                                                               "10.20.0.5")}),
    ("triton/requirements.txt.j2", {"wheels": [{"name": "boto3", "version": "1.35.0", "sha256": ["a" * 64, "b" * 64]}]}),
    ("triton/requirements.txt.j2", {"wheels": []}),  # sources.txt of a client that pins no source archive
    ("pipeline/pipeline.json.j2", {"pipeline_config": pipeline_rules.settings(_upstream_wants(), role_data("pipeline"),
                                                                          "10.20.0.5")}),
]


def test_pyinfra_and_ansible_render_the_layers_templates_to_the_same_bytes(tmp_path: Path) -> None:
    assert by_pyinfra(RENDERINGS) == by_ansible(RENDERINGS, tmp_path)


def test_both_engines_render_the_same_templates() -> None:
    by_pyinfra = set(re.findall(r'"([a-z]+/[a-z.-]+\.j2)"', (REPO / "deploy" / "pipeline.py").read_text()))
    tasks = (ROLE / "tasks" / "main.yml").read_text()
    by_ansible = set(re.findall(r'_templates_dir \}\}/([a-z]+/[a-z.-]+\.j2)"', tasks))
    by_ansible |= {f"systemd/circularnet-pipeline.{kind}.j2" for kind in ("service", "timer")
                   if "/systemd/circularnet-pipeline.{{ item }}.j2" in tasks}
    assert by_pyinfra == by_ansible == {src for src, _ in RENDERINGS}


def test_the_settings_are_what_each_script_reads(tmp_path: Path) -> None:
    settings = json.loads(render("pipeline/pipeline.json.j2", pipeline_config=pipeline_rules.settings(
        _wants(cn_camera=_camera("replay")), role_data("pipeline"), "0.0.0.0")))
    assert set(pipeline_run.REQUIRED) <= set(settings)
    assert settings["triton_url"] == "http://127.0.0.1:8000"  # Triton bound to every address: reached on loopback
    assert settings["capture"]["replay_archive"].endswith(f"/archives/replay-{'f' * 16}.zip")
    pin = load_stack("local").pipeline.client_sha256 or "c" * 64
    assert settings["client"]["dir"].endswith(f"/client/{pin[:16]}") and settings["client"]["flags"][0] == "--model=circularnet"
    assert settings["storage"] == {"kind": "gcs", "endpoint": "http://172.31.254.2:9023", "project": None,
                                   "buckets": {"results": "sandbox-results", "images": "sandbox-images"}, "credentials": None}
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(settings))
    assert pipeline_run.load(str(path))["host"] == "belt-1-orin"
    server = pipeline_rules.settings(_wants("servers"), role_data("pipeline"), "127.0.0.1")
    assert server["capture"] is None and server["spool"] == "/var/lib/circularnet/pipeline/frames"
    assert (server["input"], server["worker"], settings["input"]) == ("spool", None, "camera")


def test_bucket_input_gives_the_worker_its_settings_wheels_and_unit_in_place_of_the_timer(tmp_path: Path) -> None:
    data = role_data("pipeline")
    config = json.loads(render("pipeline/pipeline.json.j2", pipeline_config=pipeline_rules.settings(
        _bucket_wants(), data, "127.0.0.1")))
    assert config["input"] == "bucket"
    assert config["worker"] == {"subscription": SUBSCRIPTION, "max_messages": 64, "max_lease_seconds": 1800,
                                "lease_extension_seconds": 60, "batch_seconds": 2, "stop_seconds": 20}
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(config))
    assert bucket_worker.load_settings(path)["worker"]["subscription"] == SUBSCRIPTION  # what the worker reads
    names = {w["name"] for w in pipeline_rules.wheels(_bucket_wants())}
    assert {"google-cloud-pubsub", "grpcio", "google-cloud-storage"} <= names
    assert "grpcio" not in {w["name"] for w in pipeline_rules.wheels(_wants("servers"))}  # spool and edge: no grpc
    assert "grpcio" not in {w["name"] for w in pipeline_rules.wheels(_wants())}
    assert pipeline_rules.units(data, None, "bucket") == ["circularnet-worker.service", "circularnet-upload.service"]
    assert pipeline_rules.units(data, None, "spool") == ["circularnet-pipeline.timer", "circularnet-upload.service"]
    assert "bucket_worker.py" in cnhost.FILES  # the package every layer ships whole


SPOT_NOTICE_S = 30  # a Spot VM's preemption notice to the hard stop (https://cloud.google.com/compute/docs/instances/spot)


def test_the_workers_stop_fits_a_spot_vms_preemption_notice(tmp_path: Path) -> None:
    """One budget: the worker's settings and its unit's TimeoutStopSec come from pipeline_worker_stop_seconds; the
    unit gives SIGTERM to the worker alone (its client of the batch in hand runs on) and kills all inside 30 s."""
    data = role_data("pipeline")
    config = pipeline_rules.settings(_bucket_wants(), data, "10.20.0.5")
    path = tmp_path / "pipeline.json"
    path.write_text(render("pipeline/pipeline.json.j2", pipeline_config=config))
    budget = bucket_worker.load_settings(path)["worker"]["stop_seconds"]
    unit = render("systemd/circularnet-worker.service.j2",
                  unit=pipeline_rules.unit_variables(_bucket_wants(), data, "10.20.0.5"))
    [timeout] = re.findall(r"^TimeoutStopSec=(\d+)$", unit, re.MULTILINE)
    assert budget == data["pipeline_worker_stop_seconds"] > bucket_worker.STOP_SETTLE_SECONDS
    assert budget < int(timeout) < SPOT_NOTICE_S
    assert "\nKillMode=mixed\n" in unit


def test_upstream_tf_client_runs_through_the_adapter_with_the_tables_columns_and_triton_grpc() -> None:
    wants = _upstream_wants()
    assert wants["cn_pipeline_client_contract"] == "upstream" and wants["cn_pipeline_client_wheels"]
    assert checks.pipeline_problem(GOOD, wants) == ""  # pinned archive + pinned wheels: no longer refused
    settings = pipeline_rules.settings(wants, role_data("pipeline"), "10.20.0.5")
    client = settings["client"]
    assert client["contract"] == "upstream" and client["entry"].endswith("/client/inference_pipeline.py")
    assert [c["name"] for c in client["columns"]][:3] == ["particle", "source_name", "image_name"]
    assert settings["triton_grpc"] == "10.20.0.5:8001"  # a private bind: upstream's localhost:8001 re-pointed
    assert "client_adapter.py" in cnhost.FILES


SDIST = {"name": "trackpy", "version": "0.7", "sha256": ["7" * 64], "sdist": True}
BUILD_TOOLS = [{"name": "setuptools", "version": "80.9.0", "sha256": ["5" * 64]},
               {"name": "wheel", "version": "0.45.1", "sha256": ["6" * 64]}]


def test_a_pinned_source_archive_is_built_after_the_wheels_with_the_venvs_own_build_tools() -> None:
    data, venv = role_data("pipeline"), "/opt/circularnet/pipeline/venv"
    wants = _wants("servers", cn_pipeline_client_wheels=[*BUILD_TOOLS, SDIST])
    assert SDIST not in pipeline_rules.prebuilt(wants) and pipeline_rules.sources(wants) == [SDIST]
    assert BUILD_TOOLS[0] in pipeline_rules.prebuilt(wants)
    first, then = pipeline_rules.install_command(venv, data, wants).split(" && ")
    assert first.endswith(f"--requirement {data['pipeline_requirements']}") and "--no-build-isolation" not in first
    assert then.endswith(f"--no-build-isolation --requirement {data['pipeline_sources_requirements']}")
    assert "--require-hashes" in then and "--no-deps" in then  # the sdist's hash checked, nothing resolved
    assert " && " not in pipeline_rules.install_command(venv, data, _wants("servers"))  # no source archive: one step
    rendered = render("triton/requirements.txt.j2", wheels=pipeline_rules.sources(wants))
    assert f"trackpy==0.7 \\\n    --hash=sha256:{'7' * 64}" in rendered


# --- the units: systemd-analyze on this machine ---------------------------------------------------------------


def _write_units(tmp_path: Path, camera: dict[str, Any] | None) -> list[Path]:
    variables = {"unit": {**_unit_vars(camera), "python": sys.executable, "helper_dir": str(REPO / "deploy")}}
    written = []
    for src in UNITS:
        if camera is None and "capture" in src:
            continue
        path = tmp_path / Path(src).name.removesuffix(".j2")
        path.write_text(render(src, **variables).replace("/usr/bin/python3", sys.executable))
        written.append(path)
    return written


def _exposure(unit: Path) -> float:
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)], capture_output=True, text=True,
                            check=False, timeout=60)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    return float(found.group(1))


@pytest.mark.parametrize("source", ["v4l2", "rtsp", "replay"])
def test_the_units_verify_silently_and_are_hardened(tmp_path: Path, source: str) -> None:
    units = _write_units(tmp_path, _camera(source))
    result = subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True, check=False,
                            timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    for unit in units:
        if unit.suffix == ".service":  # every service, the bucket worker's too
            assert _exposure(unit) <= MAX_EXPOSURE, unit.name
            assert "User=circularnet-pipeline\n" in unit.read_text()
    capture = (tmp_path / "circularnet-capture.service").read_text()
    assert ("DeviceAllow=/dev/video0 rw\n" in capture) == (source == "v4l2")
    assert ("IPAddressDeny=any\n" in capture) == (source != "rtsp")


def test_the_pipeline_reaches_triton_only(tmp_path: Path) -> None:
    text = render("systemd/circularnet-pipeline.service.j2", unit=_unit_vars(None, "10.20.0.5"))
    assert "IPAddressDeny=any\nIPAddressAllow=localhost 10.20.0.5\n" in text


# --- refusals as data ---------------------------------------------------------------------------------------------

GOOD = {"python": "3.11", "credentials": None}


@pytest.mark.parametrize(("found", "overrides", "named"), [
    (GOOD, {"cn_pipeline_client_sha256": None}, "pipeline.clientSha256"),
    (GOOD, {"cn_pipeline_client_url": None}, "pipeline.clientUrl"),
    (GOOD, {"cn_pipeline_client_wheels": None}, "no pinned requirements"),
    ({**GOOD, "python": "3.8"}, {}, "this host has 3.8"),
    ({**GOOD, "python": None}, {}, "no python3"),
    (GOOD, {"cn_storage_credentials_file": "/keys/s3.json"}, "does not exist on the deploying machine"),
    ({**GOOD, "credentials": {"exists": True, "mode": 0o644}}, {"cn_storage_credentials_file": "/keys/s3.json"},
     "chmod 600 /keys/s3.json"),
    (GOOD, {"cn_camera": _camera("replay", replay_sha256=None)}, "replaySha256"),
])
def test_a_host_that_cannot_run_the_pipeline_is_refused_naming_the_fix(found, overrides, named) -> None:
    problem = checks.pipeline_problem(found, _wants(**overrides))
    assert problem.startswith("belt-1-orin: ") and named in problem


def test_a_host_that_can_run_it_is_not_refused() -> None:
    assert checks.pipeline_problem(GOOD, _wants()) == ""
    assert checks.pipeline_problem({**GOOD, "credentials": {"exists": True, "mode": 0o600}},
                                   _wants(cn_storage_credentials_file="/keys/s3.json")) == ""


def test_the_credentials_are_read_for_their_mode_only(tmp_path: Path) -> None:
    key = tmp_path / "s3.json"
    assert pipeline_rules.credentials_found(str(key)) == {"exists": False, "mode": 0}
    key.write_text("{}")
    key.chmod(0o640)
    assert pipeline_rules.credentials_found(str(key)) == {"exists": True, "mode": 0o640}
    assert pipeline_rules.credentials_found(None) is None


# --- the role's inputs, and the wiring -----------------------------------------------------------------------------


def test_a_bad_role_variable_is_stopped_by_argument_specs_naming_it(tmp_path: Path) -> None:
    bad = [("cn_storage_kind", "azure"), ("cn_pipeline_batch_frames", "many"), ("cn_pipeline_interval", "soon"),
           ("cn_pipeline_input", "pubsub"), ("pipeline_worker_lease_extension_seconds", "a minute"),
           ("pipeline_client_timeout", "long"), ("cn_host", None)]
    assert_bad_inputs_named("pipeline", tmp_path, _wants(), _wants("servers"), bad)


def test_the_roles_host_variables_are_the_ones_cnctl_hostvars_gives() -> None:
    options = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    declared = {name for name in options if name.startswith("cn_")}
    for group in ("servers", "edge"):
        assert declared <= set(_wants(group)), (group, sorted(declared - set(_wants(group))))
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert {name for name in options if not name.startswith("cn_")} == set(defaults)
