"""What the model, inference and verify layers leave on a sandbox host, and what the site saw of it, read for
the e2e tests: the pinned version's marker, the staging directory, the artifact server's request log and the
host's health report. One copy, shared by the layer tests (test_layers, test_model_layer, test_verify_layer,
test_rollout)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from cnctl.sandbox import fleet as sandbox
from cnctl.sandbox.instance import Instance
from tests.e2e.fleet_helpers import SESSION_NET

MODEL = "/opt/circularnet/models/circularnet"
STAGING = "/var/lib/circularnet/staging"
HEALTH_HELPER = "/usr/local/lib/circularnet/health_report.py"
HEALTH_REPORT = "/var/lib/circularnet/health.json"
# The model and inference layers' files (deploy/model.py, deploy/inference.py and their roles), for snapshots.
MODEL_FILES = (
    "/usr/local/lib/circularnet", "/usr/local/lib/circularnet/model_sync.py", STAGING, "/opt/circularnet",
    "/opt/circularnet/models", MODEL, f"{MODEL}/config.pbtxt", f"{MODEL}/1", f"{MODEL}/1/model.py",
    f"{MODEL}/1/.cnctl-config.pbtxt", "/etc/circularnet/triton", "/etc/circularnet/triton/config.pbtxt",
    f"{MODEL}/.cnctl-served.json", "/usr/local/lib/circularnet/model_serve.py",
    "/etc/systemd/system/circularnet-triton.service",
)
# The session site's artifact server (models, wheelhouse), as hosts reach it.
SITE = f"http://{SESSION_NET}2:8080"


def site_sha256(archive: str) -> str:
    """The sha256 the site publishes for one of its model archives."""
    with urllib.request.urlopen(f"{SITE}/artifacts/models/{archive}.sha256", timeout=30) as resp:
        return resp.read().decode().split()[0]


def request_log(fleet_instance: Instance) -> list[dict[str, Any]]:
    """The artifact server's request log of the session's site, one record per request."""
    log = Path(fleet_instance.state_dir) / "site" / "artifacts-requests.log"
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def requests_from(fleet_instance: Instance, host: sandbox.FreshHost, since: int = 0) -> list[dict[str, Any]]:
    """The log records for model archives sent by `host` after the first `since` records (fresh hosts of
    earlier tests had the same addresses)."""
    return [r for r in request_log(fleet_instance)[since:]
            if r.get("client") == host.state.address and r.get("path", "").startswith("/artifacts/models/")]


def marker(host: sandbox.FreshHost, version: int) -> dict[str, Any]:
    """The model layer's record of an installed version (.cnctl-pin.json)."""
    result = host.ssh(f"sudo cat {MODEL}/{version}/.cnctl-pin.json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def staging_entries(host: sandbox.FreshHost) -> list[str]:
    return host.ssh(f"sudo ls -A {STAGING}").stdout.split()


def health_report(host: sandbox.FreshHost) -> dict[str, Any]:
    """The host's health report, computed now (read-only), as the deploy user through sudo."""
    result = host.ssh(f"sudo python3 {HEALTH_HELPER} --read-only", timeout=180)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return json.loads(result.stdout.splitlines()[-1])
