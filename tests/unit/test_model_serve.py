"""cnhost/model_serve.py against a real Triton (the CPU build from the wheelhouse) and the STAND-IN archives.

The repository is laid out as model_sync.py leaves it (versions with their pin marker and config); the script
then switches what Triton serves: the first version, v1 -> v2 under a client loop with no failed request, a
version Triton refuses (the old one keeps serving, its config is back on disk, the host fails with Triton's
words), a rollback to the version served before the pin, and a restart after a run killed halfway (the
unit's `load` serves the recorded version, not the half-switched one).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections import Counter
from pathlib import Path

import pytest

import cnhost
from cnctl.sandbox.relay import free_port
from cnctl.sandbox.site import triton
from cnhost import model_serve, model_sync
from tests.unit.test_site_triton import _stop_group, _up

MODEL = "circularnet"
SCRIPT = Path(model_serve.__file__)


def place(archive: Path, repo: Path, version: int) -> None:
    """Version `version` of the archive as model_sync.py installs it: content, config, marker."""
    work = repo.parent / f"unpack-{version}"
    shutil.rmtree(work, ignore_errors=True)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(work)
    target = repo / MODEL / str(version)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(work / MODEL / "1"), target)
    shutil.copyfile(work / MODEL / "config.pbtxt", target / model_sync.VERSION_CONFIG)
    (target / model_sync.MARKER).write_text(json.dumps({"name": MODEL, "version": version, "sha256": "0" * 64}))
    shutil.rmtree(work)


def run(base: str, repo: Path, mode: str, *extra: str) -> tuple[int, dict]:
    args = [sys.executable, str(SCRIPT), mode, "--url", base, "--name", MODEL, "--timeout", "60"]
    if mode != "probe":
        args += ["--repository", str(repo)]
    proc = subprocess.run([*args, *extra], capture_output=True, text=True, timeout=120, check=False)
    return proc.returncode, cnhost.answer(proc.stdout) or {}


class Triton:
    """One tritonserver on loopback in explicit mode, startable again (a unit restart)."""

    def __init__(self, install: triton.TritonInstall, repo: Path, log: Path) -> None:
        self.install, self.repo, self.log = install, repo, log
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.install.command(self.repo, self.port, exit_timeout=1),
                                         env={**os.environ, **self.install.env}, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 60
        while not _up(self.base):
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "tritonserver did not come up in 60 s"
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc)
            self.proc = None


@pytest.fixture(scope="module")
def server(site_content, tmp_path_factory):
    work = tmp_path_factory.mktemp("serve")
    repo = work / "repo"
    for version, variant in ((1, ""), (2, "v2"), (3, "broken")):
        place(site_content.models[variant].path, repo, version)
    srv = Triton(triton.unpack(site_content.wheelhouse_dir, work / "triton"), repo, work / "tritonserver.log")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def served_record(repo: Path) -> dict:
    return json.loads((repo / MODEL / model_sync.SERVED).read_text())


def test_the_scripts_share_their_file_names() -> None:
    assert (model_serve.MARKER, model_serve.VERSION_CONFIG, model_serve.SERVED) == \
        (model_sync.MARKER, model_sync.VERSION_CONFIG, model_sync.SERVED)


@pytest.mark.parametrize(("text", "expected"), [
    ('name: "m"\nversion_policy: { latest: { num_versions: 2 } }\nmax_batch_size: 0\n', 'name: "m"\n\nmax_batch_size: 0\n'),
    ('name: "m"\nversion_policy {\n  specific { versions: [1, 2] }\n}\n', 'name: "m"\n\n'),
    ('name: "m"\nmax_batch_size: 0\n', 'name: "m"\nmax_batch_size: 0\n'),
])
def test_an_archives_own_version_policy_gives_way_to_the_served_version(text: str, expected: str) -> None:
    assert model_serve.without_version_policy(text) == expected


def test_switches_serve_each_version_without_a_failed_request_and_a_refused_one_keeps_the_old(server: Triton) -> None:
    repo, base = server.repo, server.base
    # the first version: served, recorded, probed; a second run changes nothing
    code, out = run(base, repo, "serve", "--version", "1")
    assert (code, out["changed"]) == (0, True), out
    assert "versions: [ 1 ]" in (repo / MODEL / "config.pbtxt").read_text()
    assert served_record(repo)["version"] == 1
    assert run(base, repo, "serve", "--version", "1")[1]["changed"] is False
    assert run(base, repo, "check", "--version", "1")[1]["result"] == "ok"
    assert run(base, repo, "check", "--version", "2")[1]["result"] == "pending"
    code, probe = run(base, repo, "probe")
    assert (code, probe["model_version"], probe["detections"]) == (0, "1", 1), probe  # the card's red square
    assert probe["outputs"]["detection_boxes"] == [1, 100, 4] and probe["outputs"]["num_detections"] == [1]

    # v1 -> v2 while a client sends requests: none fails, both answered, v2 after
    answers: Counter[str] = Counter()
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            _, body = run(base, repo, "probe")
            answers[body.get("model_version") or f"failed: {body['message']}"] += 1

    client = threading.Thread(target=loop)
    client.start()
    try:
        time.sleep(1.5)
        code, out = run(base, repo, "serve", "--version", "2")
        time.sleep(1.5)
    finally:
        stop.set()
        client.join(timeout=60)
    assert code == 0 and out["message"] == f"{MODEL} version 2 serving (was 1)", out
    assert not [a for a in answers if a.startswith("failed")], answers
    assert answers["2"] > 0
    assert served_record(repo)["history"] == [1]
    status = run(base, repo, "status")[1]
    assert {key: status[key] for key in ("result", "served", "ready", "loaded")} == \
        {"result": "ok", "served": 2, "ready": True, "loaded": [2]}

    # version 3 refuses to load: Triton's own words, v2 still serving, its config back on disk, record unchanged
    config_v2 = (repo / MODEL / "config.pbtxt").read_bytes()
    code, out = run(base, repo, "serve", "--version", "3")
    assert code == model_serve.EXIT["load"] and "refuses to load" in out["message"], out
    assert run(base, repo, "probe")[1]["model_version"] == "2"
    assert (repo / MODEL / "config.pbtxt").read_bytes() == config_v2
    assert served_record(repo)["version"] == 2

    # rollback: --previous serves the version served before the pin, and stays there
    code, out = run(base, repo, "serve", "--version", "2", "--previous")
    assert (code, out["changed"]) == (0, True) and run(base, repo, "probe")[1]["model_version"] == "1", out
    assert run(base, repo, "serve", "--version", "2", "--previous")[1]["changed"] is False
    assert served_record(repo)["history"] == [2]


def test_a_restart_after_a_run_killed_halfway_serves_the_recorded_version(server: Triton) -> None:
    repo, base = server.repo, server.base
    assert run(base, repo, "serve", "--version", "2")[0] == 0
    # a run killed after writing the config of a version that does not load, before asking Triton
    (repo / MODEL / "config.pbtxt").write_bytes(model_serve.config_for(
        model_serve.parse(["load", "--url", base, "--name", MODEL, "--repository", str(repo)]), 3))
    server.stop()
    server.start()
    code, out = run(base, repo, "load")  # the unit's ExecStartPost
    assert (code, out["message"]) == (0, f"{MODEL} version 2 loaded"), out
    assert "versions: [ 2 ]" in (repo / MODEL / "config.pbtxt").read_text()
    assert run(base, repo, "probe")[1]["model_version"] == "2"


def test_nothing_recorded_and_bad_arguments(server: Triton, tmp_path: Path) -> None:
    code, out = run(server.base, tmp_path, "load")
    assert (code, out["changed"]) == (0, False) and "no version" in out["message"]
    code, out = run(server.base, tmp_path, "serve", "--version", "2", "--previous")
    assert code == model_serve.EXIT["missing"] and "nothing to roll back to" in out["message"]
    code, out = run(server.base, tmp_path, "serve", "--version", "7")
    assert code == model_serve.EXIT["missing"] and "is not in" in out["message"]
    code, out = run("ftp://x", tmp_path, "serve")
    assert code == 2 and "--url" in out["message"] and "--version" in out["message"]
    code, out = run("http://127.0.0.1:1", tmp_path, "status")
    assert code == model_serve.EXIT["triton"] and out["live"] is False and "journalctl" in out["message"]
