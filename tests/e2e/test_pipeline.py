"""The pipeline layer under an outage of the store, on a fresh sandbox server (every layer converged first).

Replayed frames reaching the emulated bucket with upstream naming, and parity between the engines:
tests/e2e/test_layers.py. Here: the results bucket's endpoint unreachable from the host (a blackhole route to
the site in the host's own network namespace, which the test created): batches keep being made and queue up
on the host's disk, the report names the failing uploads; the queue survives a reboot of the host; once the
endpoint is back the queue drains, one object per batch and no duplicate, and the report is healthy again.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

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
        assert results(host) == {}

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
    objects = results(host)
    assert sorted(objects) == sorted(f"detections/tf/{name}/20261129/{b}.ndjson" for b in batches)
    rows = [json.loads(line) for body in objects.values() for line in body.decode().splitlines()]
    assert {row["image_name"] for row in rows} == {f"{stem}.jpg" for stem in first + second}
    upload = pipeline_state(host, "upload.json")
    assert (upload["uploaded_files"], upload["dropped_files"], upload["failing_since"]) == (2, 0, None), upload
    report = health_report(host)
    assert report["healthy"], report["problems"]
    assert (report["pipeline"]["queue_files"], report["pipeline"]["batches"]) == (0, 2), report["pipeline"]
