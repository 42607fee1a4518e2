"""A real Triton (CPU build, from the wheelhouse's nvidia-pytriton) loads and serves the STAND-IN model.

This is the path a sandbox host takes: unpack the wheel, put the python-backend stub and numpy next to the
python backend, unzip the model archive into a repository, start tritonserver in explicit model-control mode,
load through the repository API, infer over HTTP. Bounded waits; the server runs in its own process group and
is killed by that group id; nothing outlives the test module.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cnctl.catalog import catalog
from cnctl.sandbox.relay import free_port
from cnctl.sandbox.site import triton

MODEL = "circularnet"
SIDE = 1024


def call(url: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 30) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def image_with_patch() -> bytes:
    """A grey 1024x1024 RGB image with one red 200x200 patch at rows 300-499, columns 600-799."""
    img = bytearray(b"\x28" * (SIDE * SIDE * 3))
    patch = bytes((200, 30, 30)) * 200
    for row in range(300, 500):
        start = (row * SIDE + 600) * 3
        img[start:start + len(patch)] = patch
    return bytes(img)


def infer(base: str, pixels: bytes) -> dict:
    """One inference through the binary tensor extension; outputs come back as JSON."""
    entry = catalog().models.models["sandbox_standin"]
    header = json.dumps({
        "inputs": [{"name": entry.input.name, "datatype": entry.input.datatype, "shape": entry.input.shape,
                    "parameters": {"binary_data_size": len(pixels)}}],
        "outputs": [{"name": name, "parameters": {"binary_data": False}} for name in entry.outputs],
    }).encode()
    headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
    status, body = call(f"{base}/v2/models/{MODEL}/infer", header + pixels, headers)
    assert status == 200, body[:500]
    return {out["name"]: out for out in json.loads(body)["outputs"]}


def install_archive(archive: Path, repo: Path) -> None:
    """Replace the repository's model with the archive's (what the host's model layer does, minus safety)."""
    shutil.rmtree(repo / MODEL, ignore_errors=True)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(repo)


@pytest.fixture(scope="module")
def server(site_content, tmp_path_factory):
    with triton_server(site_content, tmp_path_factory.mktemp("triton")) as served:
        yield served


@contextlib.contextmanager
def triton_server(site_content, work: Path) -> Iterator[tuple[str, Path, Path]]:
    """A real CPU tritonserver from the site's wheelhouse serving the stand-in model's repository (explicit model
    control: nothing loaded yet) while the block runs -> (base URL, repository, work dir); its group stopped after."""
    install = triton.unpack(site_content.wheelhouse_dir, work / "triton")
    repo = work / "repo"
    repo.mkdir()
    install_archive(site_content.model_archive, repo)
    port = free_port()
    log = open(work / "tritonserver.log", "wb")  # noqa: SIM115 - it outlives this block: closed in `finally`
    proc = subprocess.Popen(install.command(repo, port, exit_timeout=1), env={**os.environ, **install.env}, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _up(base):
            assert proc.poll() is None, (work / "tritonserver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "tritonserver did not come up in 60 s"
            time.sleep(0.2)
        yield base, repo, work
    finally:
        _stop_group(proc)
        log.close()


def _up(base: str) -> bool:
    try:
        urllib.request.urlopen(f"{base}/v2/health/live", timeout=2).close()
        return True
    except OSError:
        return False


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (server + python stubs), then SIGKILL; assert nothing is left."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes of group {proc.pid} outlived tritonserver")


def load(base: str) -> tuple[int, bytes]:
    return call(f"{base}/v2/repository/models/{MODEL}/load", b"")


def test_stand_in_model_loads_and_answers_with_the_catalog_outputs(server):
    base, _, _ = server
    status, body = load(base)
    assert status == 200, body
    index = json.loads(call(f"{base}/v2/repository/index", b"{}")[1])
    assert {"name": MODEL, "version": "1", "state": "READY"} in [
        {k: m.get(k) for k in ("name", "version", "state")} for m in index]
    entry = catalog().models.models["sandbox_standin"]
    meta = json.loads(call(f"{base}/v2/models/{MODEL}")[1])
    assert meta["platform"] == "python"
    assert meta["inputs"] == [{"name": entry.input.name, "datatype": entry.input.datatype, "shape": entry.input.shape}]
    assert [o["name"] for o in meta["outputs"]] == entry.outputs

    out = infer(base, image_with_patch())
    assert set(out) == set(entry.outputs)
    assert out["num_detections"]["data"] == [1]
    ymin, xmin, ymax, xmax = out["detection_boxes"]["data"][:4]
    assert ymin <= 400 <= ymax and xmin <= 650 <= xmax  # the box sits on the red patch
    assert 0.5 < out["detection_scores"]["data"][0] < 1 and out["detection_scores"]["data"][1] == 0
    assert 1 <= out["detection_classes"]["data"][0] <= entry.labels
    assert out["detection_masks"]["shape"] == [1, 100, 28, 28]
    assert out["image_info"]["data"][:2] == [SIDE, SIDE]
    assert infer(base, image_with_patch()) == out  # deterministic
    assert infer(base, b"\x28" * (SIDE * SIDE * 3))["num_detections"]["data"] == [0]


def test_failed_reload_keeps_serving_and_v2_rolls_out(server, site_content):
    base, repo, _ = server
    assert load(base)[0] == 200
    before = infer(base, image_with_patch())["detection_classes"]["data"][0]

    install_archive(site_content.models["broken"].path, repo)
    status, body = load(base)
    assert status == 400 and b"refuses to load" in body
    assert infer(base, image_with_patch())["detection_classes"]["data"][0] == before  # old version still serves

    install_archive(site_content.models["v2"].path, repo)
    assert load(base)[0] == 200
    after = infer(base, image_with_patch())["detection_classes"]["data"][0]
    assert after == before % catalog().models.models["sandbox_standin"].labels + 1
