"""The site's pipeline artifacts: the uploader's pinned wheels, the STAND-IN client, the replay footage.

* The uploader's pins (catalog pipeline.yaml) are a closed list: every dependency any pinned wheel declares
  for Linux on CPython 3.10/3.11 (x86_64, aarch64) is pinned too, at a version it accepts (read from the
  wheelhouse's own METADATA), and the wheelhouse serves them for both architectures to pip in hash mode.
* The client and footage archives are byte-for-byte reproducible and are what stacks/Pulumi.local.yaml pins.
* The footage's frames are real JPEG files.
* The STAND-IN client, run with the system python3 (or $CNCTL_TEST_CLIENT_PYTHON, e.g. a 3.10) and no
  site-packages against a real CPU Triton serving the STAND-IN model, writes NDJSON rows with exactly the TF
  generation's BigQuery columns and types, and fails with a clear message (exit 1, no file) when Triton is
  down or answers an error.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable, Collection, Mapping
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from PIL import Image

from cnctl.catalog import catalog
from cnctl.config import load_stack
from cnctl.sandbox.relay import free_port
from cnctl.sandbox.site import pipeline, recipe, triton, wheelhouse
from tests.unit.test_site_triton import load, server  # noqa: F401 - `server`: the shared Triton fixture

SITE_ARTIFACTS = "http://172.31.254.2:8080/artifacts/"
PY_TYPES = {"INTEGER": int, "FLOAT": float, "STRING": str}
SYSTEM_PYTHON = os.environ.get("CNCTL_TEST_CLIENT_PYTHON", "/usr/bin/python3")


def uploader_pins() -> dict[str, tuple[str, set[str]]]:
    return {str(canonicalize_name(p.name)): (p.version, set(p.sha256)) for p in catalog().pipeline.uploader.packages}


# --- the uploader's pins -------------------------------------------------------------------------


def test_uploader_pins_are_well_formed():
    uploader = catalog().pipeline.uploader
    assert uploader.pythons == ["3.10", "3.11"]
    names = [p.name for p in uploader.packages]
    assert {"google-cloud-storage", "boto3"} <= set(names)
    assert names == sorted(names) and len(set(map(canonicalize_name, names))) == len(names)
    hashes = [h for p in uploader.packages for h in p.sha256]
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes) and len(set(hashes)) == len(hashes)
    assert all(p.sha256 for p in uploader.packages)


def _environments() -> list[dict[str, str]]:
    """The hosts' marker environments; Marker.evaluate() takes the rest of one from this interpreter's."""
    envs: list[dict[str, str]] = []
    for python in catalog().pipeline.uploader.pythons:
        for machine in ("x86_64", "aarch64"):
            envs.append({"python_version": python, "python_full_version": f"{python}.0", "platform_machine": machine,
                         "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
                         "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""})
    return envs


def _metadata(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        return Parser().parsestr(zf.read(name).decode()).get_all("Requires-Dist") or []


def unpinned_requirements(pins: Mapping[str, tuple[str, Collection[str]]], wheels: Path, arch: str) -> list[str]:
    """What the wheels of `pins` ({name: (version, hashes)}) in the wheelhouse `wheels` require, for `arch`, on
    any host environment, that the pins do not satisfy: empty when the list is closed."""
    return unmet_requirements(
        pins, lambda name, version: _metadata(wheelhouse.wheel_for(wheels, f"{name.replace('-', '_')}-{version}", arch)))


def unmet_requirements(pins: Mapping[str, tuple[str, Collection[str]]], requires: Callable[[str, str], list[str]],
                       missing_ok: Collection[str] = ()) -> list[str]:
    """What `requires(name, version)` (a wheel's Requires-Dist lines) says each of `pins` needs, on any host
    environment, that the pins do not satisfy, except packages of `missing_ok`: empty when the list is closed.
    The metadata may come from the wheelhouse's wheels or from PyPI (tests whose wheels are too large to fetch)."""
    problems = []
    for name, (version, _) in sorted(pins.items()):
        for line in requires(name, version):
            req = Requirement(line)
            if not [env for env in _environments() if req.marker is None or req.marker.evaluate(env)]:
                continue
            dep = str(canonicalize_name(req.name))
            if dep in missing_ok:
                continue
            if dep not in pins:
                problems.append(f"{name} {version} needs {line!r}: not pinned")
            elif not req.specifier.contains(pins[dep][0], prereleases=True):
                problems.append(f"{name} {version} needs {line!r}: pinned {pins[dep][0]}")
    return problems


def test_uploader_pins_are_closed(site_content):
    """pip install --no-deps --require-hashes of the list installs everything the list needs, on every host."""
    problems = unpinned_requirements(uploader_pins(), site_content.wheelhouse_dir, "amd64")
    assert not problems, "\n".join(problems)


def test_wheelhouse_recipe_follows_the_pins(monkeypatch):
    """A changed pin (even only its hashes) rebuilds the wheelhouse, but not the registry's Triton images."""
    before, triton_before = recipe.digest(wheelhouse.recipe_inputs()), recipe.digest(wheelhouse.triton_recipe_inputs())
    pins = wheelhouse.pipeline_pins()
    changed = [pins[0].model_copy(update={"sha256": [*pins[0].sha256, "0" * 64]}), *pins[1:]]
    monkeypatch.setattr(wheelhouse, "pipeline_pins", lambda: changed)
    assert recipe.digest(wheelhouse.recipe_inputs()) != before
    assert recipe.digest(wheelhouse.triton_recipe_inputs()) == triton_before
    names = [r.split("==")[0] for r in wheelhouse.requirements()]
    assert names[:2] == [p.name for p in catalog().platforms.native_triton.packages]  # the catalog's, one copy


@pytest.mark.parametrize("sections", [("uploader",), ("uploader", "agent")], ids=["uploader", "pull-agent"])
def test_wheelhouse_serves_the_pinned_wheels_for_both_architectures(site_content, artifact_server, tmp_path, sections):
    """What a host does: pip in hash mode, no dependencies, from the site's PEP 503 index, per architecture: the
    uploader's venv, and a pull host's agent venv (the uploader's wheels and the agent's)."""
    wheelhouse.verify(site_content.wheelhouse_dir)  # every pinned file, both architectures, the catalog's sha256
    base, _ = artifact_server
    pins = {str(canonicalize_name(p.name)): (p.version, set(p.sha256))
            for section in sections for p in getattr(catalog().pipeline, section).packages}
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("".join(f"{name}=={version}" + "".join(f" --hash=sha256:{h}" for h in sorted(hashes)) + "\n"
                            for name, (version, hashes) in pins.items()))
    for arch, machine in wheelhouse.WHEEL_ARCH.items():
        dest = tmp_path / arch
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes", "-r", str(reqs),
               "--index-url", f"{base}/artifacts/wheelhouse/simple/", "--only-binary=:all:", "--dest", str(dest),
               "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "--isolated"]
        for plat in wheelhouse.PLATFORMS[arch]:
            cmd += ["--platform", plat]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        assert res.returncode == 0, res.stderr[-2000:]
        got = sorted(dest.glob("*.whl"))
        assert len(got) == len(pins)
        assert all(machine in w.name or w.name.endswith("-none-any.whl") for w in got)


# --- the archives and the local stack's pins ------------------------------------------------------


def _entries(data: bytes) -> list[zipfile.ZipInfo]:
    return zipfile.ZipFile(io.BytesIO(data)).infolist()


def test_archives_are_reproducible_and_pinned_by_the_local_stack(site_content):
    client, footage = pipeline.client_archive_bytes(), pipeline.footage_archive_bytes()
    # the cache's copies were built by another process, maybe on another day: the same bytes
    assert client == site_content.client.path.read_bytes()
    assert footage == site_content.footage.path.read_bytes()
    for data in (client, footage):
        infos = _entries(data)
        assert [i.filename for i in infos] == sorted(i.filename for i in infos)
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert [i.filename for i in _entries(client)] == ["inference_pipeline.py"]

    cfg = load_stack("local")
    client_sha, footage_sha = hashlib.sha256(client).hexdigest(), hashlib.sha256(footage).hexdigest()
    assert site_content.client.sha256 == client_sha and site_content.footage.sha256 == footage_sha
    assert cfg.pipeline.client == pipeline.CLIENT_KEY
    assert cfg.pipeline.client_url == SITE_ARTIFACTS + pipeline.CLIENT_ARCHIVE
    assert cfg.pipeline.client_sha256 == client_sha
    assert cfg.fleets and cfg.fleets.edge
    for dev in cfg.fleets.edge:
        cam = dev.camera
        assert (cam.source, cam.replay_url, cam.replay_sha256) == ("replay", SITE_ARTIFACTS + pipeline.FOOTAGE_ARCHIVE,
                                                                   footage_sha)
    assert pipeline.stack_drift(cfg, SITE_ARTIFACTS, site_content.client, site_content.footage) == []
    stale = [pipeline.Artifact(a.path, a.url_path, "0" * 64) for a in (site_content.client, site_content.footage)]
    drift = pipeline.stack_drift(cfg, SITE_ARTIFACTS, *stale)
    assert len(drift) == 1 + len(cfg.fleets.edge) and "pipeline.clientSha256" in drift[0]


def test_footage_frames_are_real_jpegs_in_upstream_naming(site_content):
    with zipfile.ZipFile(site_content.footage.path) as zf:
        names = zf.namelist()
        assert len(names) == pipeline.FRAMES and names == sorted(names)
        assert all(re.fullmatch(r"belt_\d{8}_\d{8}\.jpg", n) for n in names)
        assert names[:2] == ["belt_20260105_08000000.jpg", "belt_20260105_08000050.jpg"]  # 2 fps
        for n, name in enumerate(names):
            data = zf.read(name)
            assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
            image = Image.open(io.BytesIO(data))
            assert (image.format, image.size, image.mode) == ("JPEG", pipeline.FRAME_SIZE, "RGB")
            if n in (0, 17):  # decodes to what was drawn, within JPEG's loss
                decoded, drawn = image.tobytes(), pipeline.frame_pixels(n)
                assert sum(abs(a - b) for a, b in zip(decoded, drawn, strict=True)) / len(drawn) < 3


# --- the STAND-IN client --------------------------------------------------------------------------


def _client_module():
    spec = importlib.util.spec_from_file_location("standin_client", pipeline.CLIENT_SOURCE / "inference_pipeline.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_client_flags_names_and_tensor(tmp_path):
    source = (pipeline.CLIENT_SOURCE / "inference_pipeline.py").read_text()
    ast.parse(source, feature_version=(3, 10))  # the Jetsons' Ubuntu 22.04 has Python 3.10
    client = _client_module()
    base = ["--input_directory", str(tmp_path), "--output_directory", str(tmp_path / "out")]
    assert client.parse_args([*base, "--overwrite"]).overwrite is True
    assert client.parse_args([*base, "--overwrite=false", "--cropped_objects=true"]).overwrite is False
    assert client.parse_args([*base, "--nooverwrite"]).overwrite is False
    assert client.parse_args([*base, "--score=0.25", "--height=64", "--width=48"]).score == 0.25
    with pytest.raises(SystemExit):
        client.parse_args(["--input_directory", "gs://bucket/x", "--output_directory", str(tmp_path)])

    frame = tmp_path / "belt1_20260105_08001950.jpg"
    frame.write_bytes(b"\xff\xd8 not really \xff\xd9")
    assert client.creation_time(frame) == "2026-01-05 08:00:19.50"
    assert client.source_name(frame, tmp_path) == "belt1"
    other = tmp_path / "camera.jpg"
    other.write_bytes(b"x")
    os.utime(other, (1767600000.25, 1767600000.25))
    assert client.creation_time(other) == "2026-01-05 08:00:00.25"
    assert client.source_name(other, tmp_path) == tmp_path.name

    tensor = client.input_tensor(frame.read_bytes(), 64, 48)
    assert len(tensor) == 64 * 48 * 3 and tensor == client.input_tensor(frame.read_bytes(), 64, 48)
    assert client.input_tensor(b"", 8, 8) == bytes(8 * 8 * 3)


@pytest.fixture(scope="module")
def triton_server(server):  # noqa: F811 - the imported fixture, by name
    """test_site_triton's real CPU Triton, with the STAND-IN model loaded; its base URL."""
    base = server[0]
    status, body = load(base)
    assert status == 200, body
    return base


@pytest.fixture
def batch(site_content, tmp_path) -> tuple[Path, Path, Path]:
    """The unpacked client archive, a batch of 6 footage frames, and the output directory."""
    client_dir, frames = tmp_path / "client", tmp_path / "batch" / "frames"
    with zipfile.ZipFile(site_content.client.path) as zf:
        zf.extractall(client_dir)
    frames.mkdir(parents=True)
    with zipfile.ZipFile(site_content.footage.path) as zf:
        for name in zf.namelist()[:6]:
            (frames / name.replace("belt_", "belt1_")).write_bytes(zf.read(name))
    (frames / ".belt1_20260105_09000000.jpg.tmp").write_bytes(b"half a frame")  # the capture's, not ours
    return client_dir, frames, tmp_path / "batch" / "out"


def run_client(client_dir: Path, frames: Path, out: Path, triton_url: str, *extra: str) -> subprocess.CompletedProcess:
    """The client as the runner starts it, with the system python3 in isolated mode without site-packages."""
    entry = catalog().pipeline.clients[pipeline.CLIENT_KEY].entry
    cmd = [SYSTEM_PYTHON, "-I", "-S", str(client_dir / entry), "--model=circularnet", "--score=0.4", "--height=1024",
           "--width=1024", "--search_range_x=150", "--search_range_y=20", "--memory=20",
           "--tracking_visualization=false", "--cropped_objects=false", "--input_directory", str(frames),
           "--output_directory", str(out), *extra]
    env = {"PATH": triton.SYSTEM_PATH, "CIRCULARNET_TRITON_URL": triton_url}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)


def test_client_writes_rows_of_the_tf_bigquery_schema(triton_server, batch):
    client_dir, frames, out = batch
    res = run_client(client_dir, frames, out, triton_server)
    assert res.returncode == 0, res.stderr
    schema = catalog().models.generations["tf"].bigquery_schema
    rows = [json.loads(line) for line in (out / "detections.ndjson").read_text().splitlines()]
    assert rows, "the stand-in model found nothing in 6 frames"
    names = sorted(p.name for p in frames.iterdir() if not p.name.startswith("."))
    for n, row in enumerate(rows):
        assert list(row) == [col.name for col in schema]
        assert all(type(row[col.name]) is PY_TYPES[col.type] for col in schema), row
        assert row["particle"] == n and row["source_name"] == "belt1" and row["image_name"] in names
        assert re.fullmatch(r"2026-01-05 08:00:0\d\.\d\d", row["creation_time"])
        assert 0.4 <= row["detection_scores"] < 1
        assert 0 <= row["bbox_0"] < row["bbox_2"] <= 1024 and 0 <= row["bbox_1"] < row["bbox_3"] <= 1024
        assert 1 <= row["detection_classes"] <= catalog().models.models["sandbox_standin"].labels
        assert row["detection_classes_names"] == f"standin_{row['detection_classes']}"
    assert [r["image_name"] for r in rows] == sorted(r["image_name"] for r in rows)  # frames in name order
    assert f"{len(names)} frames, {len(rows)} detections" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["detections.ndjson"]

    first = (out / "detections.ndjson").read_bytes()
    (out / "detections.ndjson").write_text("kept\n")
    assert run_client(client_dir, frames, out, triton_server).returncode == 0
    assert (out / "detections.ndjson").read_text() == "kept\n"  # a finished batch is not redone
    assert run_client(client_dir, frames, out, triton_server, "--overwrite").returncode == 0
    assert (out / "detections.ndjson").read_bytes() == first  # deterministic

    strict = run_client(client_dir, frames, out, triton_server, "--overwrite", "--score=0.995")
    assert strict.returncode == 0 and (out / "detections.ndjson").read_text() == ""


def test_client_fails_clearly_when_triton_is_down_or_refuses(triton_server, batch):
    client_dir, frames, out = batch
    down = f"http://127.0.0.1:{free_port()}"
    res = run_client(client_dir, frames, out, down)
    assert res.returncode == 1
    assert f"Triton at {down} is unreachable" in res.stderr and "Traceback" not in res.stderr
    assert not out.exists() or not any(out.iterdir())

    res = run_client(client_dir, frames, out, triton_server, "--model=no_such_model")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert re.search(r"answered 4\d\d for model 'no_such_model': .*no_such_model", res.stderr), res.stderr
    assert not out.exists() or not any(out.iterdir())
