"""The pipeline's uploader (cnhost/uploader.py) against real stores on loopback: the GCS emulator and moto's S3.

Both kinds: a drain sends results and images to their buckets under their queue names and empties the queue;
a store that is down loses nothing and recovers without a duplicate; an object that already landed is counted,
not stored twice (and, after a mid-way failure, not sent twice); the same name with other content is kept and
reported; a missing bucket is named. Then the queue's budget, temp files, credentials that others could read,
SIGTERM during `run`, and a full disk under the state file.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cnctl.sandbox.relay import free_port
from cnctl.sandbox.site import emulators
from cnhost import uploader

SCRIPT = Path(uploader.__file__)
KINDS = ("gcs", "s3")
DAY = "20260301"
# S3 without a credentials file: boto3's default chain (moto takes any key)
ENV = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}


def _wait_until_serving(url: str, proc: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The GCS emulator and moto's S3 server as processes on free loopback ports; stopped by their PIDs."""
    data = tmp_path_factory.mktemp("gcs")
    gcs_port, s3_port = free_port(), free_port()
    procs = [
        subprocess.Popen(emulators.gcs_argv("127.0.0.1", gcs_port), env={**os.environ, **emulators.gcs_env(data)},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True),
        subprocess.Popen(emulators.moto_argv("127.0.0.1", s3_port), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True),
    ]
    try:
        urls = {"gcs": f"http://127.0.0.1:{gcs_port}", "s3": f"http://127.0.0.1:{s3_port}"}
        for url, proc in zip(emulators.health_urls(urls["gcs"], urls["s3"]), procs):
            _wait_until_serving(url, proc)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


class Store:
    """The test's own view of one store: make buckets, put and list objects."""

    def __init__(self, kind: str, endpoint: str) -> None:
        self.kind, self.endpoint = kind, endpoint
        if kind == "gcs":
            warnings.filterwarnings("ignore", category=FutureWarning)
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import storage

            self.client: Any = storage.Client(project="cnctl", credentials=AnonymousCredentials(),
                                              client_options={"api_endpoint": endpoint})
        else:
            import boto3  # type: ignore[import-untyped, unused-ignore]

            self.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                       aws_access_key_id="test", aws_secret_access_key="test")

    def make_bucket(self, name: str) -> None:
        if self.kind == "gcs":
            self.client.create_bucket(name)
        else:
            self.client.create_bucket(Bucket=name)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        if self.kind == "gcs":
            self.client.bucket(bucket).blob(key).upload_from_string(data)
        else:
            self.client.put_object(Bucket=bucket, Key=key, Body=data)

    def objects(self, bucket: str) -> dict[str, bytes]:
        if self.kind == "gcs":
            return {b.name: b.download_as_bytes() for b in self.client.list_blobs(bucket)}
        listed = self.client.list_objects_v2(Bucket=bucket).get("Contents", [])
        return {o["Key"]: self.client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


@dataclass
class Host:
    """One host's queue, state and settings, for one store."""

    root: Path
    kind: str
    endpoint: str
    buckets: dict[str, str]
    store: Store | None = None

    @property
    def queue(self) -> Path:
        return self.root / "queue"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def settings(self, **override: Any) -> Path:
        storage = {"kind": self.kind, "endpoint": self.endpoint, "project": None, "buckets": self.buckets,
                   "credentials": None}
        storage.update(override.pop("storage", {}))
        data = {"host": "belt-1", "generation": "tf", "queue": str(self.queue), "state": str(self.state),
                "storage": storage, "queue_budget_mib": 64, "retry": {"min_seconds": 0.1, "max_seconds": 0.3},
                "poll_seconds": 0.1, **override}
        path = self.root / "pipeline.json"
        path.write_text(json.dumps(data))
        return path

    def enqueue(self, role: str, name: str, data: bytes, age: float = 0.0) -> Path:
        """A queued file as the pipeline runner leaves it; `age` seconds older than now."""
        key = f"detections/tf/belt-1/{DAY}/{name}" if role == "results" else f"frames/belt-1/{DAY}/{name}"
        path = self.queue / role / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        when = time.time() - age
        os.utime(path, (when, when))
        return path

    def queued(self) -> dict[str, bytes]:
        return {p.relative_to(self.queue).as_posix(): p.read_bytes()
                for p in sorted(self.queue.rglob("*")) if p.is_file()}

    def upload_state(self) -> dict[str, Any]:
        return json.loads((self.state / "upload.json").read_text())

    def run(self, mode: str = "drain", config: Path | None = None, cli: bool = False) -> tuple[int, dict[str, Any], str]:
        """(exit code, drain's JSON line, stderr) of the script: as a process (`cli`), else in this one (the
        cloud libraries are imported once, not per run)."""
        argv = [mode, "--config", str(config or self.settings())]
        if cli:
            done = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, check=False,
                                  timeout=60, env=ENV)
            code, stdout, stderr = done.returncode, done.stdout, done.stderr
        else:
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = uploader.main(argv)
            stdout, stderr = out.getvalue(), err.getvalue()
        assert "Traceback" not in stderr, stderr
        return code, json.loads(stdout) if mode == "drain" and stdout.strip() else {}, stderr


def _new_host(root: Path, kind: str, endpoint: str, make_buckets: bool = True) -> Host:
    tag = uuid.uuid4().hex[:10]
    host = Host(root, kind, endpoint, {"results": f"cn-results-{tag}", "images": f"cn-images-{tag}"})
    host.store = Store(kind, endpoint)
    if make_buckets:
        for bucket in host.buckets.values():
            host.store.make_bucket(bucket)
    return host


@pytest.fixture(autouse=True)
def _s3_default_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)


@pytest.fixture(params=KINDS)
def host(request: pytest.FixtureRequest, endpoints: dict[str, str], tmp_path: Path) -> Host:
    return _new_host(tmp_path, request.param, endpoints[request.param])


def ndjson(n: int) -> bytes:
    row = {"particle": n, "detection_scores": 0.91, "class_name": "PET_bottle", "bbox": [12, 40, 300, 410],
           "image_name": f"belt1_{DAY}_1200{n:04d}.jpg", "color": "transparent", "timestamp": 1772366400 + n}
    return (json.dumps(row) + "\n").encode() * 3


def closed_port_settings(host: Host) -> Path:
    return host.settings(storage={"endpoint": f"http://127.0.0.1:{free_port()}"})


# --- the happy path -----------------------------------------------------------------------------------------


def test_drain_sends_results_and_images_to_their_buckets_and_empties_the_queue(host: Host) -> None:
    assert host.store is not None
    results = {f"b{n}.ndjson": ndjson(n) for n in range(3)}
    images = {f"belt1_{DAY}_1200000{n}.jpg": b"\xff\xd8" + os.urandom(2000) for n in range(2)}
    for age, (name, data) in enumerate(results.items()):
        host.enqueue("results", name, data, age=10 - age)
    for name, data in images.items():
        host.enqueue("images", name, data)
    # files being written (dot names, also a dot directory) are never read
    (host.queue / "results" / ".b9.ndjson.tmp").write_bytes(b"{")
    (host.queue / "images" / ".incoming").mkdir()
    (host.queue / "images" / ".incoming" / "x.jpg").write_bytes(b"partial")

    code, out, err = host.run(cli=True)
    assert code == 0, err
    assert host.store.objects(host.buckets["results"]) == {f"detections/tf/belt-1/{DAY}/{k}": v
                                                           for k, v in results.items()}
    assert host.store.objects(host.buckets["images"]) == {f"frames/belt-1/{DAY}/{k}": v for k, v in images.items()}
    assert host.queued() == {"results/.b9.ndjson.tmp": b"{", "images/.incoming/x.jpg": b"partial"}
    total = sum(map(len, results.values())) + sum(map(len, images.values()))
    assert (out["result"], out["uploaded_files"], out["uploaded_bytes"], out["queue_files"]) == ("ok", 5, total, 0)
    state = host.upload_state()
    assert set(state) == set(uploader.STATE_KEYS)
    assert {k: state[k] for k in ("queue_files", "queue_bytes", "uploaded_files", "uploaded_bytes",
                                  "already_present", "last_error", "failing_since", "dropped_files")} == \
        {"queue_files": 0, "queue_bytes": 0, "uploaded_files": 5, "uploaded_bytes": total, "already_present": 0,
         "last_error": None, "failing_since": None, "dropped_files": 0}
    assert state["last_success"] and abs(state["updated"] - time.time()) < 60
    assert (host.state / "upload.json").stat().st_mode & 0o777 == 0o644

    # counters are cumulative across restarts; `status` prints the state
    host.enqueue("results", "b3.ndjson", ndjson(3))
    assert host.run()[0] == 0
    assert host.upload_state()["uploaded_files"] == 6
    out_status = io.StringIO()
    with contextlib.redirect_stdout(out_status):
        assert uploader.main(["status", "--config", str(host.settings())]) == 0
    assert json.loads(out_status.getvalue())["uploaded_files"] == 6


def test_s3_keys_come_from_a_0600_credentials_file(endpoints: dict[str, str], tmp_path: Path) -> None:
    host = _new_host(tmp_path, "s3", endpoints["s3"])
    creds = tmp_path / "credentials.json"
    creds.write_text(json.dumps({"accessKeyId": "site-key", "secretAccessKey": "site-secret"}))
    creds.chmod(0o600)
    host.enqueue("results", "b0.ndjson", ndjson(0))
    code, out, err = host.run(config=host.settings(storage={"credentials": str(creds)}))
    assert (code, out["uploaded_files"]) == (0, 1), err


# --- faults ---------------------------------------------------------------------------------------------------


def test_a_store_that_is_down_loses_nothing_then_recovers_without_a_duplicate(host: Host) -> None:
    assert host.store is not None
    for n in range(4):
        host.enqueue("results", f"b{n}.ndjson", ndjson(n), age=10 - n)
    host.enqueue("images", f"belt1_{DAY}_12000000.jpg", b"\xff\xd8jpeg")
    before = host.queued()

    code, out, err = host.run(config=closed_port_settings(host), cli=True)
    assert code == 1
    assert "unreachable (Connection refused)" in err and len(err.strip().splitlines()) <= 2, err
    assert host.queued() == before
    state = host.upload_state()
    assert state["failing_since"] and "unreachable" in state["last_error"]
    assert (state["queue_files"], state["uploaded_files"], out["queue_files"]) == (5, 0, 5)

    code, out, err = host.run()
    assert code == 0, err
    assert len(host.store.objects(host.buckets["results"])) == 4
    assert len(host.store.objects(host.buckets["images"])) == 1
    assert host.queued() == {}
    state = host.upload_state()
    assert (state["failing_since"], state["last_error"], state["uploaded_files"]) == (None, None, 5)


def test_an_object_that_already_landed_is_counted_and_not_stored_twice(host: Host) -> None:
    """A retry after the store kept the object but its answer was lost: no second object, no error. The file
    whose attempt failed mid-way (named in .upload-attempt) is asked for first: its bytes are not sent again."""
    assert host.store is not None
    landed = {"b0.ndjson": ndjson(0), "b1.ndjson": ndjson(1)}
    for age, (name, data) in enumerate(landed.items()):
        host.enqueue("results", name, data, age=10 - age)
        host.store.put(host.buckets["results"], f"detections/tf/belt-1/{DAY}/{name}", data)
    host.enqueue("results", "b2.ndjson", ndjson(2))
    host.state.mkdir(parents=True)
    (host.state / uploader.ATTEMPT_FILE).write_text(f"results/detections/tf/belt-1/{DAY}/b1.ndjson\n")

    code, out, err = host.run()
    assert code == 0, err
    objects = host.store.objects(host.buckets["results"])
    assert len(objects) == 3 and objects[f"detections/tf/belt-1/{DAY}/b0.ndjson"] == ndjson(0)
    assert (out["uploaded_files"], out["already_present"]) == (1, 2)
    # the GCS emulator ignores create-only writes, so every file is looked up first: nothing is sent twice.
    # S3 (moto) honours If-None-Match: b0 is sent and refused (412), b1 is looked up first (its attempt failed)
    resent = len(ndjson(0)) if host.kind == "s3" else 0
    assert (out["sent_bytes"], out["resent_bytes"]) == (len(ndjson(2)) + resent, resent)
    state = host.upload_state()
    assert (state["already_present"], state["uploaded_files"], state["last_error"]) == (2, 1, None)
    assert not (host.state / uploader.ATTEMPT_FILE).exists()


def test_the_same_name_with_other_content_is_kept_and_reported(host: Host) -> None:
    assert host.store is not None
    key = f"detections/tf/belt-1/{DAY}/b0.ndjson"
    host.store.put(host.buckets["results"], key, b'{"someone": "else"}\n')
    host.enqueue("results", "b0.ndjson", ndjson(0), age=10)
    host.enqueue("results", "b1.ndjson", ndjson(1))

    code, out, err = host.run()
    assert code == 1
    assert "CONFLICT" in err and key in err, err
    assert host.store.objects(host.buckets["results"])[key] == b'{"someone": "else"}\n'  # not overwritten
    assert host.queued() == {f"results/{key}": ndjson(0)}  # kept; the rest of the queue went on
    state = host.upload_state()
    assert (state["uploaded_files"], state["already_present"], state["queue_files"]) == (1, 0, 1)
    assert key in state["last_error"] and state["failing_since"] is None
    assert out["result"] == "pending"


def test_a_missing_bucket_is_named_with_the_fix(endpoints: dict[str, str], tmp_path: Path) -> None:
    for kind in KINDS:
        host = _new_host(tmp_path / kind, kind, endpoints[kind], make_buckets=False)
        host.enqueue("results", "b0.ndjson", ndjson(0))
        code, _, err = host.run()
        assert code == 1
        assert f"bucket {host.buckets['results']} does not exist" in err and "storage.buckets.results" in err, err
        assert host.upload_state()["last_error"].startswith(f"bucket {host.buckets['results']} does not exist")
        assert len(host.queued()) == 1


def test_past_the_budget_the_oldest_files_are_dropped_and_counted(endpoints: dict[str, str], tmp_path: Path) -> None:
    host = _new_host(tmp_path, "s3", endpoints["s3"], make_buckets=False)
    blob = os.urandom(300 * 1024)
    for n in range(5):  # 1.5 MiB against a 1 MiB budget: the two oldest go
        host.enqueue("images", f"belt1_{DAY}_1200000{n}.jpg", blob, age=100 - n)
    host.enqueue("results", ".b9.ndjson.tmp", b"{")  # a file being written is not the queue's to drop
    code, out, err = host.run(config=host.settings(queue_budget_mib=1, storage={"endpoint": f"http://127.0.0.1:"
                                                                               f"{free_port()}"}))
    assert code == 1
    assert "budget" in err and "dropped the 2 oldest files" in err, err
    kept = sorted(k.rsplit("/", 1)[1] for k in host.queued())
    assert kept == [".b9.ndjson.tmp"] + [f"belt1_{DAY}_1200000{n}.jpg" for n in (2, 3, 4)]
    state = host.upload_state()
    assert (state["dropped_files"], state["dropped_bytes"], state["queue_files"]) == (2, 2 * len(blob), 3)
    assert (out["dropped_files"], out["dropped_bytes"]) == (2, 2 * len(blob))


@pytest.mark.parametrize("mode", [0o640, 0o604])
def test_credentials_that_others_could_read_are_refused(endpoints: dict[str, str], tmp_path: Path, mode: int) -> None:
    host = _new_host(tmp_path, "s3", endpoints["s3"], make_buckets=False)
    creds = tmp_path / "credentials.json"
    creds.write_text(json.dumps({"accessKeyId": "k", "secretAccessKey": "s"}))
    creds.chmod(mode)
    host.enqueue("results", "b0.ndjson", ndjson(0))
    code, out, err = host.run(config=host.settings(storage={"credentials": str(creds)}), cli=True)
    assert code == 2 and out == {}
    assert f"mode {mode:04o}" in err and f"chmod 600 {creds}" in err, err
    assert len(host.queued()) == 1 and not (host.state / "upload.json").exists()


def test_bad_settings_exit_2_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.json"
    config.write_text(json.dumps({"queue": "/q", "state": "/s", "storage": {"kind": "ftp", "buckets": {}}}))
    done = subprocess.run([sys.executable, str(SCRIPT), "drain", "--config", str(config)], capture_output=True,
                          text=True, check=False, timeout=60)
    assert done.returncode == 2
    assert "storage.kind is 'ftp'" in done.stderr and "storage.buckets.images is missing" in done.stderr


# --- the service ----------------------------------------------------------------------------------------------


def _wait_for(predicate: Any, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _uploaded(host: Host) -> int:
    try:
        return int(host.upload_state()["uploaded_files"])
    except (OSError, ValueError, KeyError):
        return 0


def test_run_sends_what_arrives_and_sigterm_finishes_the_file_then_exits_0(endpoints: dict[str, str],
                                                                           tmp_path: Path) -> None:
    host = _new_host(tmp_path, "s3", endpoints["s3"])
    assert host.store is not None
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "run", "--config", str(host.settings())],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        host.enqueue("results", "first.ndjson", ndjson(0))  # arrives while the service polls an empty queue
        _wait_for(lambda: _uploaded(host) == 1)
        sent = {f"b{n:03d}.ndjson": ndjson(n) * 20 for n in range(300)}
        for age, (name, data) in enumerate(sent.items()):
            host.enqueue("results", name, data, age=1000 - age)
        _wait_for(lambda: _uploaded(host) > 5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopped (SIGTERM)" in err, err
    # every file is either stored whole or still queued, never both, never neither
    objects = host.store.objects(host.buckets["results"])
    queued = {k.rsplit("/", 1)[1]: v for k, v in host.queued().items()}
    stored = {k.rsplit("/", 1)[1]: v for k, v in objects.items()}
    assert not set(stored) & set(queued)
    assert {**stored, **queued} == {"first.ndjson": ndjson(0), **sent}
    assert host.upload_state()["uploaded_files"] == len(stored)


def test_run_backs_off_while_the_store_is_down_and_sigterm_ends_the_wait(endpoints: dict[str, str],
                                                                        tmp_path: Path) -> None:
    host = _new_host(tmp_path, "gcs", endpoints["gcs"], make_buckets=False)
    host.enqueue("results", "b0.ndjson", ndjson(0))
    config = host.settings(retry={"min_seconds": 0.2, "max_seconds": 30},
                           storage={"endpoint": f"http://127.0.0.1:{free_port()}"})
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "run", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        _wait_for(lambda: (host.state / "upload.json").exists() and bool(host.upload_state()["failing_since"]))
        time.sleep(2)  # a few attempts: 0.2 s, then up to 0.4, 0.8, 1.6 ...
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        assert time.monotonic() - began < 3, "SIGTERM must end a backoff wait at once"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "Traceback" not in err, err
    retries = [line for line in err.splitlines() if "retry in" in line]
    assert 2 <= len(retries) <= 6, err  # backoff, not a busy loop
    assert all("unreachable (Connection refused)" in line for line in retries)
    assert len(host.queued()) == 1


# --- in-process: the state file on a full disk, error messages --------------------------------------------


def test_a_full_disk_does_not_stop_the_state_or_the_uploader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    state = uploader.State(tmp_path)
    state.data["uploaded_files"] = 3
    state.save()
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(uploader.os, "write", full)
    state.data["uploaded_files"] = 4
    state.save()
    state.save()
    monkeypatch.setattr(uploader.os, "write", real_write)
    err = capsys.readouterr().err
    assert err.count("disk full") == 1, err  # said once, not per file
    assert json.loads((tmp_path / "upload.json").read_text())["uploaded_files"] == 3  # the old state, whole
    assert [p.name for p in tmp_path.iterdir()] == ["upload.json"]  # no temp file left behind
    state.save()
    assert json.loads((tmp_path / "upload.json").read_text())["uploaded_files"] == 4
    assert uploader.State(tmp_path).data["uploaded_files"] == 4


def _settings(tmp_path: Path, kind: str, credentials: Path | None = None) -> uploader.Settings:
    return uploader.Settings(host="h", queue=tmp_path, state=tmp_path, kind=kind, endpoint=None, project=None,
                             buckets={"results": "res", "images": "img"}, credentials=credentials,
                             budget_bytes=1 << 20, retry_min=1, retry_max=2, poll=1)


def test_refused_credentials_are_named_with_the_fix(tmp_path: Path) -> None:
    import botocore.exceptions
    from google.api_core import exceptions as api

    s3 = uploader.S3Store(_settings(tmp_path, "s3"), {"accessKeyId": "k", "secretAccessKey": "s"})
    denied = botocore.exceptions.ClientError({"Error": {"Code": "InvalidAccessKeyId", "Message": "no"},
                                              "ResponseMetadata": {"HTTPStatusCode": 403}}, "PutObject")
    message = str(s3.failure(denied, "res", midway=True))
    assert "refused the credentials for bucket res (InvalidAccessKeyId)" in message
    gcs = uploader.GcsStore(_settings(tmp_path, "gcs", tmp_path / "key.json"), {})
    message = str(gcs.failure(api.Forbidden("caller lacks storage.objects.create"), "res", midway=True))
    assert "refused to let this identity write to bucket res" in message and "objectCreator" in message
    assert str(tmp_path / "key.json") in message


def test_object_names_and_order_come_from_the_queue(tmp_path: Path) -> None:
    (tmp_path / "results" / "a" / "b").mkdir(parents=True)
    (tmp_path / "images").mkdir()
    for name, age in (("results/a/b/new.ndjson", 1), ("results/a/b/old.ndjson", 9), ("images/x.jpg", 9),
                      ("images/.x.jpg.tmp", 20)):
        (tmp_path / name).write_bytes(b"1")
        os.utime(tmp_path / name, (time.time() - age, time.time() - age))
    os.utime(tmp_path / "images/x.jpg", (os.stat(tmp_path / "results/a/b/old.ndjson").st_atime,
                                         os.stat(tmp_path / "results/a/b/old.ndjson").st_mtime))
    labels = [i.label for i in uploader.scan(tmp_path)]
    assert labels == ["images/x.jpg", "results/a/b/old.ndjson", "results/a/b/new.ndjson"]
    assert base64.b64encode(uploader.md5_of(tmp_path / "images/x.jpg")).decode() == \
        base64.b64encode(hashlib.md5(b"1").digest()).decode()
