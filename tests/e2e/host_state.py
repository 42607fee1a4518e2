"""What the model, inference and verify layers leave on a sandbox host, and what the site saw of it, read for
the e2e tests: the pinned version's marker, the staging directory, the artifact server's request log and the
host's health report. One copy, shared by the layer tests (test_layers, test_model_layer, test_verify_layer,
test_rollout)."""

from __future__ import annotations

import json
import shlex
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import cnhost
from cnctl.sandbox import fleet as sandbox
from cnctl.sandbox.instance import Instance
from tests.e2e.fleet_helpers import SESSION_NET

MODEL = "/opt/circularnet/models/circularnet"
STAGING = "/var/lib/circularnet/staging"
HEALTH_HELPER = "/usr/local/lib/circularnet/cnhost/health_report.py"
HEALTH_REPORT = "/var/lib/circularnet/health.json"
# The model and inference layers' files (deploy/model.py, deploy/inference.py and their roles), for snapshots.
MODEL_FILES = (
    "/usr/local/lib/circularnet", "/usr/local/lib/circularnet/cnhost", "/usr/local/lib/circularnet/cnhost/model_sync.py",
    STAGING, "/opt/circularnet",
    "/opt/circularnet/models", MODEL, f"{MODEL}/config.pbtxt", f"{MODEL}/1", f"{MODEL}/1/model.py",
    f"{MODEL}/1/.cnctl-config.pbtxt", "/etc/circularnet/triton", "/etc/circularnet/triton/config.pbtxt",
    f"{MODEL}/.cnctl-served.json", "/usr/local/lib/circularnet/cnhost/model_serve.py",
    "/etc/systemd/system/circularnet-triton.service",
)
# The session site's artifact server (models, wheelhouse), as hosts reach it.
SITE = f"http://{SESSION_NET}2:8080"


def site_sha256(archive: str, attempts: int = 3) -> str:
    """The sha256 the site publishes for one of its model archives. Asked up to `attempts` times: a test's set-up
    read, which once timed out right after three fresh hosts booted (a clean-clone run; cause not found), so a
    stall there is retried and named instead of failing the rollout test before it starts."""
    url = f"{SITE}/artifacts/models/{archive}.sha256"
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                return resp.read().decode().split()[0]
        except (TimeoutError, urllib.error.URLError) as exc:
            if attempt == attempts:
                raise AssertionError(f"the site's artifact server did not answer {url} {attempts} times: {exc}") from exc
            print(f"site_sha256: {url} attempt {attempt}: {exc}; asking again")
    raise AssertionError("unreachable")


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
    result = host.ssh(f"sudo {shlex.join(cnhost.argv('health_report'))} --read-only", timeout=180)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return json.loads(result.stdout.splitlines()[-1])


# --- the pipeline layer (deploy/pipeline.py, roles/pipeline) -----------------------------------------------------

PIPELINE_DATA = "/var/lib/circularnet/pipeline"
PIPELINE_STATE = f"{PIPELINE_DATA}/state"
# The pipeline layer's files, for the parity snapshots (the venv's files are pip's; capture is the Jetsons').
PIPELINE_FILES = (
    "/etc/circularnet/pipeline.json", "/etc/circularnet/pipeline", "/opt/circularnet/pipeline",
    "/opt/circularnet/pipeline/requirements.txt", "/opt/circularnet/pipeline/archives", "/opt/circularnet/pipeline/client",
    "/usr/local/lib/circularnet/cnhost/capture.py", "/usr/local/lib/circularnet/cnhost/pipeline_run.py",
    "/usr/local/lib/circularnet/cnhost/uploader.py", PIPELINE_DATA, f"{PIPELINE_DATA}/frames", f"{PIPELINE_DATA}/work",
    f"{PIPELINE_DATA}/queue", PIPELINE_STATE, "/etc/systemd/system/circularnet-pipeline.service",
    "/etc/systemd/system/circularnet-pipeline.timer", "/etc/systemd/system/circularnet-upload.service",
)
CAPTURE_FILES = ("/etc/systemd/system/circularnet-capture.service",)
# The session site's GCS emulator and the local stack's results bucket.
GCS = f"http://{SESSION_NET}2:9023"
RESULTS_BUCKET = "sandbox-results"
# The TF generation's detections columns (catalog models.yaml), which every NDJSON row carries exactly.
TF_COLUMNS = {"particle", "source_name", "image_name", "detection_scores", "creation_time", "bbox_0", "bbox_1", "bbox_2",
              "bbox_3", "detection_classes", "detection_classes_names"}


def results(host: sandbox.FreshHost, batch_prefix: str) -> dict[str, bytes]:
    """{object name: content} of the host's detections in the emulated results bucket whose batches' frames are
    named `<batch_prefix>_...`: fresh hosts of earlier tests had the same names, and the bucket is the session's."""
    prefix = urllib.parse.quote(f"detections/tf/{host.state.name}/", safe="")
    with urllib.request.urlopen(f"{GCS}/storage/v1/b/{RESULTS_BUCKET}/o?prefix={prefix}", timeout=30) as resp:
        items = json.loads(resp.read()).get("items", [])
    found = {}
    for item in items:
        if not item["name"].rsplit("/", 1)[1].startswith(f"{batch_prefix}_"):
            continue
        name = urllib.parse.quote(item["name"], safe="")
        with urllib.request.urlopen(f"{GCS}/storage/v1/b/{RESULTS_BUCKET}/o/{name}?alt=media", timeout=30) as resp:
            found[item["name"]] = resp.read()
    return found


def pipeline_state(host: sandbox.FreshHost, name: str) -> dict[str, Any]:
    """One of the pipeline's state files (capture.json, pipeline.json, upload.json); {} before it exists."""
    result = host.ssh(f"sudo cat {PIPELINE_STATE}/{name}")
    return json.loads(result.stdout) if result.returncode == 0 and result.stdout.strip() else {}


# Frames from the site's replay footage written into a host's spool as the pipeline's user would receive them
# from a camera on a server (no capture service there): upstream names, written then renamed.
FEED = """
import os, sys, urllib.request, zipfile
site, prefix, start, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
kept = "/var/lib/circularnet/pipeline/.feed-footage.zip"  # fetched once: later feeds need no site
if not os.path.exists(kept):
    with urllib.request.urlopen(site + "/artifacts/footage/belt-replay.zip", timeout=60) as resp:
        open(kept + ".tmp", "wb").write(resp.read())
    os.rename(kept + ".tmp", kept)
archive = zipfile.ZipFile(kept)
names = sorted(n for n in archive.namelist() if n.endswith(".jpg"))
for i in range(start, start + count):
    tmp = "/var/lib/circularnet/pipeline/frames/.feed.tmp"
    with open(tmp, "wb") as out:
        out.write(archive.read(names[i % len(names)]))
    os.rename(tmp, "/var/lib/circularnet/pipeline/frames/%s_20261129_%08d.jpg" % (prefix, 12000000 + i))
"""


def feed_frames(host: sandbox.FreshHost, prefix: str, start: int, count: int) -> list[str]:
    """`count` footage frames into the host's spool, named `<prefix>_20261129_<HHMMSSxx>.jpg`; their stems. The
    footage is fetched from the site once per host (`count` 0 only fetches it)."""
    result = host.ssh(f"sudo -u circularnet-pipeline python3 - {SITE} {prefix} {start} {count}", input=FEED, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return [f"{prefix}_20261129_{12000000 + i:08d}" for i in range(start, start + count)]


def init_pid(host: sandbox.FreshHost) -> str:
    """The PID (on this machine) of the host's systemd: below its supervisor and systemd-nspawn."""
    pids = [str(host.state.pid)]
    for _ in range(4):  # supervisor -> systemd-nspawn -> the host's PID 1
        children = [c for p in pids for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        init = [c for c in children if Path(f"/proc/{c}/comm").read_text().strip() == "systemd"]
        if init:
            return init[0]
        pids = children
    raise AssertionError(f"no systemd below PID {host.state.pid}")


def inside(host: sandbox.FreshHost, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`command` (sh) as root in the host's namespaces, without SSH: for hosts whose SSH the test closed."""
    argv = ["nsenter", "-t", init_pid(host), "-m", "-u", "-i", "-n", "-p", "--", "sh", "-c", command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
