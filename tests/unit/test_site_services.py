"""Site services as processes: start (idempotent), emulators answer real clients, stop kills only its own PIDs.

Runs in this machine's namespace (netns=None) on 127.0.0.1 with free ports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from cnctl.sandbox.relay import free_port
from cnctl.sandbox.site import SiteEndpoints, processes, start_site_services, stop_site_services


@pytest.fixture(scope="module")
def site(site_content, tmp_path_factory):
    """Started site services (once for this module); stopped afterwards and checked to leave no process behind."""
    state = tmp_path_factory.mktemp("site") / "state"
    ports = {"http_port": free_port(), "gcs_port": free_port(), "s3_port": free_port()}
    endpoints = start_site_services(None, "127.0.0.1", state, site_content.site_dir.parent, buckets=["cnctl-test"],
                                    **ports)
    started = processes.records(state / "site")
    try:
        yield endpoints, state, ports, started
    finally:
        stop_site_services(state)
        for rec in started:
            assert not processes.is_running(rec), f"{rec.name} survived stop_site_services"


def test_endpoints_round_trip_json(site):
    endpoints, state, _, _ = site
    assert SiteEndpoints.from_json(json.loads(json.dumps(endpoints.to_json()))) == endpoints
    assert SiteEndpoints.from_json(json.loads((state / "site/endpoints.json").read_text())) == endpoints
    assert endpoints.apt_url.endswith("/apt/") and endpoints.apt_keyring.is_file()


def test_start_is_idempotent(site, site_content):
    endpoints, state, ports, started = site
    again = start_site_services(None, "127.0.0.1", state, site_content.site_dir.parent, **ports)
    assert again == endpoints
    assert [r.pid for r in processes.records(state / "site")] == [r.pid for r in started]


def test_services_answer(site, site_content):
    endpoints, state, _, _ = site
    with urllib.request.urlopen(endpoints.apt_url + "InRelease", timeout=10) as resp:
        assert resp.read() == (site_content.apt_dir / "InRelease").read_bytes()
    with urllib.request.urlopen(endpoints.artifacts_url + site_content.model_url_path, timeout=10) as resp:
        assert resp.read() == site_content.model_archive.read_bytes()
    with urllib.request.urlopen(endpoints.faults_url, timeout=10) as resp:
        assert json.loads(resp.read()) == {"faults": []}
    assert (state / "site/artifacts-requests.log").read_text().count("\n") >= 3


def test_gcs_emulator_upload_download(site, monkeypatch):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    endpoints, state, _, _ = site
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoints.gcs_url)
    client = storage.Client(project="cnctl-sandbox", credentials=AnonymousCredentials())
    blob = client.bucket("cnctl-test").blob("results/frame_20250101_12000000.json")
    blob.upload_from_string(b'{"particles": 3}', content_type="application/json")
    assert client.bucket("cnctl-test").blob("results/frame_20250101_12000000.json").download_as_bytes() == \
        b'{"particles": 3}'
    assert any((state / "site/gcs").rglob("*")), "the emulator keeps objects under the state dir"


def test_moto_s3_upload_download(site):
    import boto3  # type: ignore[import-untyped, unused-ignore]

    endpoints, _, _, _ = site
    s3 = boto3.client("s3", endpoint_url=endpoints.s3_url, region_name="us-east-1",
                      aws_access_key_id="sandbox", aws_secret_access_key="sandbox")
    s3.put_object(Bucket="cnctl-test", Key="images/a.jpg", Body=b"\xff\xd8jpeg")
    assert s3.get_object(Bucket="cnctl-test", Key="images/a.jpg")["Body"].read() == b"\xff\xd8jpeg"


def test_stop_kills_only_recorded_processes(site_content, tmp_path):
    """A pidfile naming a stranger (same PID, other start time) must not get it killed."""
    stranger = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        state = tmp_path / "state"
        (state / "site").mkdir(parents=True)
        fake = processes.ProcessRecord("impostor", stranger.pid, 1, ["sleep", "30"])
        (state / "site/impostor.pid").write_text(json.dumps(fake.__dict__))
        stop_site_services(state)
        assert stranger.poll() is None, "stop_site_services killed a process it did not start"
        assert not (state / "site/impostor.pid").exists()
    finally:
        os.killpg(stranger.pid, signal.SIGKILL)
        stranger.wait()


def test_start_refuses_without_content(tmp_path):
    with pytest.raises(RuntimeError, match="build_site_content"):
        start_site_services(None, "127.0.0.1", tmp_path / "state", tmp_path / "empty-cache",
                            http_port=free_port(), gcs_port=free_port(), s3_port=free_port())


def test_cache_inside_repo_is_refused():
    from cnctl.sandbox.site import build_site_content

    with pytest.raises(ValueError, match="outside the repository"):
        build_site_content(Path(__file__).parent / "cache", progress=lambda _: None)


def test_failed_start_leaves_nothing_running(site_content, tmp_path):
    """A start that fails half-way (here: S3 refuses a 2-character bucket name) stops what it started."""
    state = tmp_path / "state"
    with pytest.raises(RuntimeError, match="could not create buckets"):
        start_site_services(None, "127.0.0.1", state, site_content.site_dir.parent, buckets=["b1"],
                            http_port=free_port(), gcs_port=free_port(), s3_port=free_port())
    assert processes.records(state / "site") == []
