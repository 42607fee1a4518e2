"""Pull mode on a sandbox server (issue 12): deployed once by push, then its SSH closed, it converges from the
bundle `cnctl bundle publish` puts in the site's emulated bucket, applied by its own timer, and refuses a
tampered one, staying as it was.

Everything is real but the bucket (the site's GCS emulator, a labelled stand-in for Cloud Storage): the signed
bundle, the pull layer in its venv, the systemd timer, pyinfra @local on the host. The host is looked at
without SSH, through its namespaces (host_state.inside).
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cnctl.sandbox import fleet as sandbox
from tests.e2e.fleet_helpers import BIN, REPO, SESSION_NET, what_changed
from tests.e2e.host_state import GCS, RESULTS_BUCKET, inside
from tests.unit.bundle_helpers import keypair

pytestmark = pytest.mark.fleet

DEPLOY_TIMEOUT_S = 1800
APPLY_WAIT_S = 900  # the timer's period (30 s) and delay, then pyinfra @local over every layer
POLL_SECONDS = 30
MODELS_BUCKET = "sandbox-models"
STATE = "/var/lib/circularnet/pull"


@pytest.fixture(scope="module")
def session_stack(sandbox_stack: Callable[[str], Path]) -> Path:
    return sandbox_stack(SESSION_NET)


def pull_stack(base: Path, host: sandbox.FreshHost, public_key: str, key: Path, folder: Path) -> Path:
    """The session's stack with a bundle section and the fresh host listed as a pull-mode canary server."""
    document = yaml.safe_load(base.read_text())
    config = document["config"]
    config["circularnet:bundle"] = {"signers": [{"identity": "release@plant", "publicKey": public_key}],
                                    "signingKey": str(key), "pollSeconds": POLL_SECONDS}
    servers = config["circularnet:fleets"]["servers"]
    entry = {**servers[0], "name": host.state.name, "address": host.state.address, "mode": "pull", "channel": "canary"}
    servers.append(entry)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "Pulumi.local.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def set_batch_frames(stack: Path, frames: int) -> None:
    document = yaml.safe_load(stack.read_text())
    document["config"].setdefault("circularnet:pipeline", {})["batchFrames"] = frames
    stack.write_text(yaml.safe_dump(document))


def cnctl(*args: str, env: dict[str, str], timeout: float = DEPLOY_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "cnctl"), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def host_json(host: sandbox.FreshHost, path: str) -> dict[str, Any]:
    done = inside(host, f"cat {path}")
    return json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else {}


def ssh_port_open(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=5):
            return True
    except OSError:
        return False


def until(what: str, check: Callable[[], bool], host: sandbox.FreshHost, timeout: float = APPLY_WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(5)
    journal = inside(host, "journalctl -u circularnet-pull --no-pager | tail -40").stdout
    raise AssertionError(f"{host.state.name}: {what} within {timeout:.0f} s\n{journal}")


def reports(host: sandbox.FreshHost) -> list[dict[str, Any]]:
    """The host's pull reports in the site's emulated results bucket, oldest first."""
    prefix = urllib.parse.quote(f"pull-reports/local/{host.state.name}/", safe="")
    with urllib.request.urlopen(f"{GCS}/storage/v1/b/{RESULTS_BUCKET}/o?prefix={prefix}", timeout=30) as resp:
        items = sorted(item["name"] for item in json.loads(resp.read()).get("items", []))
    found = []
    for name in items:
        with urllib.request.urlopen(f"{GCS}/storage/v1/b/{RESULTS_BUCKET}/o/{urllib.parse.quote(name, safe='')}"
                                    "?alt=media", timeout=30) as resp:
            found.append(json.loads(resp.read()))
    return found


def put_object(name: str, body: bytes) -> None:
    url = (f"{GCS}/upload/storage/v1/b/{MODELS_BUCKET}/o?uploadType=media&name={urllib.parse.quote(name, safe='')}")
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(request, timeout=30):
        pass


def test_a_pull_host_with_ssh_closed_converges_from_its_bundle_and_refuses_a_tampered_one(
        boot_fresh: Callable[..., sandbox.FreshHost], view: Callable[..., dict[str, str]], session_stack: Path,
        tmp_path: Path) -> None:
    host = boot_fresh("server")
    key, public = keypair(tmp_path / "keys", "release")
    stack = pull_stack(session_stack, host, public, key, tmp_path / "stack")
    env = {**view([host]), "CNCTL_STACK": str(stack)}

    # 1. The first deploy, by push: every layer, the pull layer last (agent, config, timer).
    pushed = cnctl("deploy", "--stack", str(stack), "--engine", "pyinfra", env=env)
    assert pushed.returncode == 0, f"{what_changed(pushed.stdout)}\n{(pushed.stdout + pushed.stderr)[-6000:]}"
    assert inside(host, "systemctl is-enabled circularnet-pull.timer").stdout.strip() == "enabled"
    config = host_json(host, "/etc/circularnet/pull/agent.json")
    assert (config["host"], config["channel"], config["store"]["bundles"]) == (host.state.name, "canary", MODELS_BUCKET)
    before = host_json(host, "/etc/circularnet/pipeline.json")["batch_frames"]

    # 2. SSH closed for good: from here on the host is reached only through its bucket.
    closed = inside(host, "systemctl mask --now ssh.socket ssh.service 2>&1; systemctl is-active ssh.service ssh.socket")
    assert not ssh_port_open(host.state.address), closed.stdout

    # 3. A bundle with a change is published to the canary channel: the host's timer applies it.
    set_batch_frames(stack, before + 3)
    published = cnctl("bundle", "publish", "--stack", str(stack), env=env, timeout=300)
    assert published.returncode == 0, published.stdout + published.stderr
    version = json.loads(urllib.request.urlopen(
        f"{GCS}/storage/v1/b/{MODELS_BUCKET}/o/{urllib.parse.quote('bundles/local/channels/canary.json', safe='')}"
        "?alt=media", timeout=30).read())["version"]
    until(f"version {version} applied by the timer", lambda: host_json(host, f"{STATE}/applied.json").get("current") == version,
          host)
    assert host_json(host, "/etc/circularnet/pipeline.json")["batch_frames"] == before + 3
    assert not ssh_port_open(host.state.address)  # the apply did not open SSH again
    serving = inside(host, "systemctl is-active circularnet-triton circularnet-upload circularnet-pipeline.timer")
    assert serving.stdout.split() == ["active"] * 3, serving.stdout
    until("the applied report in the bucket", lambda: any(
        r["outcome"] == "applied" and r["current"] == version for r in reports(host)), host, timeout=120)

    # 4. A tampered bundle (another version whose archive a bucket writer re-signed with their own key) is
    #    refused: the host keeps the version it has, and nothing of the tampered one stays on it.
    set_batch_frames(stack, before + 5)
    signed = cnctl("bundle", "build", "--stack", str(stack), "--output", str(tmp_path / "built"), env=env, timeout=300)
    assert signed.returncode == 0, signed.stdout + signed.stderr
    built = next((tmp_path / "built").rglob("bundle.tar.gz"))
    tampered = built.parent.name
    intruder, _ = keypair(tmp_path / "intruder", "intruder")
    signature = subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(intruder), "-n", "circularnet-bundle:local"],
                               input=built.read_bytes(), capture_output=True, check=True).stdout
    put_object(f"bundles/local/{tampered}/bundle.tar.gz", built.read_bytes())
    put_object(f"bundles/local/{tampered}/bundle.tar.gz.sig", signature)
    pointer = {"channel": "canary", "format": 1, "published": "2026-11-30T00:00:00Z", "stack": "local",
               "sha256": hashlib.sha256(built.read_bytes()).hexdigest(), "version": tampered}
    put_object("bundles/local/channels/canary.json", json.dumps(pointer).encode())
    until(f"version {tampered} refused", lambda: host_json(host, f"{STATE}/report.json").get("version") == tampered,
          host, timeout=300)
    report = host_json(host, f"{STATE}/report.json")
    assert report["outcome"] == "refused" and "not by any key of bundle.signers" in report["message"], report
    assert host_json(host, f"{STATE}/applied.json")["current"] == version
    assert host_json(host, "/etc/circularnet/pipeline.json")["batch_frames"] == before + 3
    assert inside(host, f"ls -A {STATE}/bundles").stdout.split() == [version]
    assert inside(host, "systemctl is-failed circularnet-pull.service").stdout.strip() == "failed"  # seen by the verify layer
