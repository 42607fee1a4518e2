"""The pipeline layer under an outage of the store, on a fresh sandbox server (every layer converged first).

Replayed frames reaching the emulated bucket with upstream naming, and parity between the engines:
tests/e2e/test_layers.py. Here: the results bucket's endpoint unreachable from the host (a blackhole route to
the site in the host's own network namespace, which the test created): batches keep being made and queue up
on the host's disk, the report names the failing uploads; the queue survives a reboot of the host; once the
endpoint is back the queue drains, one object per batch and no duplicate, and the report is healthy again.
And the on-premise shape: an S3-compatible store at the site (moto), with credentials from the deploying
machine landing as a 0600 file of the pipeline's user.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
import yaml

from cnctl.sandbox import fleet as sandbox
from tests.e2e.fleet_helpers import BIN, REPO, SESSION_NET, what_changed
from tests.e2e.host_state import feed_frames, health_report, pipeline_state, results

pytestmark = pytest.mark.fleet

DEPLOY_TIMEOUT_S = 1800
WAIT_S = 300  # a batch through the server's CPU Triton, and the uploader's backoff after the outage
SITE = f"{SESSION_NET}2"


@pytest.fixture(scope="module")
def session_stack(sandbox_stack: Callable[[str], Path]) -> Path:
    """The local stack on the session's subnet (the fresh server takes its first server entry's settings)."""
    return sandbox_stack(SESSION_NET)


def deploy(env: dict[str, str]) -> None:
    result = subprocess.run([str(BIN / "cnctl"), "deploy", "--stack", env["CNCTL_STACK"], "--engine", "pyinfra"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=DEPLOY_TIMEOUT_S, check=False)
    assert result.returncode == 0, f"{what_changed(result.stdout)}\n{(result.stdout + result.stderr)[-6000:]}"


def until(what: str, check: Callable[[], bool], host: sandbox.FreshHost, timeout: float = WAIT_S) -> None:
    """Poll `check` every 2 s until it holds, else fail naming `what` with the pipeline's journal."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(2)
    journal = host.ssh("sudo journalctl -u circularnet-pipeline -u circularnet-upload --no-pager | tail -25").stdout
    raise AssertionError(f"{host.state.name}: {what} within {timeout:.0f} s\n{journal}")


def site_route(host: sandbox.FreshHost, action: str) -> None:
    """Add or delete a blackhole route to the site in the host's network namespace: the store is unreachable."""
    subprocess.run(["ip", "netns", "exec", host.state.netns, "ip", "route", action, "blackhole", f"{SITE}/32"],
                   check=True, capture_output=True, timeout=30)


def queued(host: sandbox.FreshHost) -> list[str]:
    result = host.ssh("sudo find /var/lib/circularnet/pipeline/queue -type f -not -name '.*' -printf '%P\\n'")
    return sorted(result.stdout.split())


def test_an_outage_of_the_store_spanning_a_reboot_loses_nothing_and_duplicates_nothing(
        boot_fresh: Callable[..., sandbox.FreshHost], view: Callable[..., dict[str, str]]) -> None:
    host = boot_fresh("server")
    deploy(view([host]))
    name = host.state.name

    feed_frames(host, "out", 0, 0)  # the footage on the host before the site is cut off
    site_route(host, "add")
    try:
        first = feed_frames(host, "out", 0, 4)
        until("the first batch queued", lambda: len(queued(host)) == 1, host)
        until("the uploads reported failing", lambda: pipeline_state(host, "upload.json").get("failing_since") is not None,
              host)
        second = feed_frames(host, "out", 4, 3)
        until("the second batch queued", lambda: len(queued(host)) == 2, host)
        batches = [f"{first[0]}--{first[-1]}", f"{second[0]}--{second[-1]}"]
        assert [q.rsplit("/", 1)[1] for q in queued(host)] == [f"{b}.ndjson" for b in batches]
        assert results(host, "out") == {}

        # the queue is on disk: a reboot keeps it, and the uploader goes on failing after it
        booted = host.ssh("ps -o lstart= -p 1").stdout
        host.ssh("sudo systemctl reboot", timeout=30)
        until("the host back after its reboot", lambda: host.ssh("ps -o lstart= -p 1", timeout=30).stdout not in ("", booted)
              and host.ssh("systemctl is-system-running --wait", timeout=120).stdout.strip() in ("running", "degraded"),
              host)
        until("the uploader running again", lambda: host.ssh("systemctl is-active circularnet-upload").stdout.strip()
              == "active", host)
        assert [q.rsplit("/", 1)[1] for q in queued(host)] == [f"{b}.ndjson" for b in batches]
    finally:
        site_route(host, "delete")

    until("the queue drained", lambda: queued(host) == [] and pipeline_state(host, "upload.json").get("queue_files") == 0,
          host)
    objects = results(host, "out")
    assert sorted(objects) == sorted(f"detections/tf/{name}/20261129/{b}.ndjson" for b in batches)
    rows = [json.loads(line) for body in objects.values() for line in body.decode().splitlines()]
    assert {row["image_name"] for row in rows} == {f"{stem}.jpg" for stem in first + second}
    upload = pipeline_state(host, "upload.json")
    assert (upload["uploaded_files"], upload["dropped_files"], upload["failing_since"]) == (2, 0, None), upload
    report = health_report(host)
    assert report["healthy"], report["problems"]
    assert (report["pipeline"]["queue_files"], report["pipeline"]["batches"]) == (0, 2), report["pipeline"]


def test_an_on_site_s3_store_gets_the_results_with_credentials_only_the_pipeline_reads(
        boot_fresh: Callable[..., sandbox.FreshHost], view: Callable[..., dict[str, str]], session_stack: Path,
        tmp_path: Path) -> None:
    """The on-premise shape (stacks/Pulumi.onprem.yaml): storage.kind s3 at the site's S3 endpoint (moto), the
    uploader's credentials a file on the deploying machine, landing 0600 and the pipeline user's."""
    credentials = tmp_path / "s3.json"
    credentials.write_text(json.dumps({"accessKeyId": "cnctl-sandbox", "secretAccessKey": "not-a-secret"}))
    credentials.chmod(0o600)
    document = yaml.safe_load(session_stack.read_text())
    document["config"]["circularnet:storage"].update(kind="s3", endpoint=f"http://{SITE}:5000",
                                                     credentialsFile=str(credentials))
    stack = tmp_path / "Pulumi.local.yaml"
    stack.write_text(yaml.safe_dump(document, sort_keys=False))

    host = boot_fresh("server")
    deploy({**view([host]), "CNCTL_STACK": str(stack)})
    assert host.ssh("sudo stat -c '%a %U' /etc/circularnet/pipeline/credentials.json").stdout.split() == [
        "600", "circularnet-pipeline"]
    frames = feed_frames(host, "s3", 0, 3)
    until("the batch uploaded", lambda: pipeline_state(host, "upload.json").get("uploaded_files", 0) >= 1, host)
    s3 = boto3.client("s3", endpoint_url=f"http://{SITE}:5000", aws_access_key_id="cnctl-sandbox",
                      aws_secret_access_key="not-a-secret", region_name="us-east-1")
    listed = s3.list_objects_v2(Bucket="sandbox-results", Prefix=f"detections/tf/{host.state.name}/")
    assert [o["Key"] for o in listed.get("Contents", [])] == [
        f"detections/tf/{host.state.name}/20261129/{frames[0]}--{frames[-1]}.ndjson"]
