"""cnhost/bucket_worker.py against a real Pub/Sub server and a real GCS server on loopback: Google's Pub/Sub
emulator (google-cloud-cli-pubsub-emulator, Java) and the GCS emulator the uploader's tests use.

Each test has its own topic, subscription and buckets; the worker runs as its own process (as systemd runs it),
with a small client standing in for CircularNet's that writes one NDJSON row per frame, fails, or holds until
the test lets it go. What is proven: a message is acknowledged only once its image's result object is in the
results bucket; a worker killed (SIGKILL, with its client, its disk deleted as a VM's boot disk is) before the
write, between the write and the ack, or right after its acks loses nothing: the redeliveries go to a second
worker and every image's object is in the bucket exactly once; a store that cannot be reached nacks and acks
nothing; a name holding other bytes is a conflict said in one line; SIGTERM finishes the batch in hand within the
stop budget (or stops the client and nacks it) and exits 0; a batch that keeps failing is nacked until Pub/Sub's
own dead-letter policy moves the message; other events and non-images are acknowledged and skipped; bad settings
exit 2 with one clear line. Under CI=true a missing emulator fails the tests, never skips them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# the tests' own pulls ask the emulator with return_immediately (deprecated, still served): no wait when empty
pytestmark = pytest.mark.filterwarnings("ignore:The return_immediately flag is deprecated:DeprecationWarning")

from cnctl.sandbox.relay import Relay, free_port
from cnctl.sandbox.site import emulators
from cnhost import bucket_worker
from tests.unit.test_uploader import _wait_until_serving

SCRIPT = Path(bucket_worker.__file__)
EMULATOR = Path("/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator")
PROJECT = "cnctl-test"
# A stopped worker gives its messages back once its stream is closed, but the emulator keeps delivering to a
# closed streaming pull for a while, so a message given back may go to it, lapse, and go again before a pull
# sees it. Measured with the client library alone (stream 2 messages, cancel, ModifyAckDeadline 0, pull): 14 of
# 16 back at once, one after 10 s, one after 120 s; this test's stop: 10 to 100 s. What the tests prove is that
# none is acknowledged or lost; real Pub/Sub closes the stream at once.
GIVEN_BACK_S = 240
DAY = "20261129"

CLIENT = r'''
import argparse, json, os, pathlib, sys, time
p = argparse.ArgumentParser()
p.add_argument("--input_directory"); p.add_argument("--output_directory")
a = p.parse_args()
control = pathlib.Path(os.environ["WORKER_TEST_CONTROL"])
runs = control / "runs"
run = int(runs.read_text() or 0) + 1 if runs.exists() else 1
runs.write_text(str(run))
(control / "running").write_text(a.input_directory)
deadline = time.monotonic() + 60
hold = control / "hold"  # this run waits while it exists and names fewer runs to let through (empty: none)
while hold.exists() and run > int(hold.read_text().strip() or 0) and time.monotonic() < deadline:
    time.sleep(0.05)
if (control / "fail").exists():
    sys.exit("Triton answered 500")
with open(os.path.join(a.output_directory, "detections.ndjson"), "w") as out:
    for name in sorted(os.listdir(a.input_directory)):
        out.write(json.dumps({"image_name": name, "detection_scores": 0.9}) + "\n")
'''


@contextlib.contextmanager
def pubsub_emulator() -> Iterator[str]:
    """Google's Pub/Sub emulator on a free loopback port (host:port) while the block runs; stopped by its PID."""
    port = free_port()
    proc = subprocess.Popen([str(EMULATOR), "--host=127.0.0.1", f"--port={port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the Pub/Sub emulator exited with {proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the Pub/Sub emulator did not listen within 60 s") from None
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        os.kill(proc.pid, signal.SIGTERM)  # the launcher execs java: this PID is the emulator
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.fixture(scope="module")
def pubsub() -> Iterator[str]:
    """The emulator for this module's tests; a missing one fails with its fix, as the fleet's tools do."""
    if not EMULATOR.exists():
        message = f"{EMULATOR} is missing: `python3 cnctl/sandbox/prereqs.py ensure` installs google-cloud-cli-pubsub-emulator"
        pytest.fail(message, pytrace=False)
    with pubsub_emulator() as address:
        yield address


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with gcs_emulator(tmp_path_factory.mktemp("gcs")) as url:
        yield url


@contextlib.contextmanager
def gcs_emulator(data: Path) -> Iterator[str]:
    """The GCS emulator the uploader's tests use, on a free loopback port while the block runs -> its URL."""
    port = free_port()
    proc = subprocess.Popen(emulators.gcs_argv("127.0.0.1", port), env={**os.environ, **emulators.gcs_env(data)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(f"{url}/storage/v1/b?project=cnctl-sandbox", proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class HoldingProxy(Relay):
    """The GCS emulator through a relay. While `hold` is set, the answer to a request that wrote a result (its
    upload body names a `detections/` object) is kept back: the object is in the bucket, the worker has not heard
    so. `down()`: nothing listens and every connection is cut."""

    def __init__(self, upstream: str) -> None:
        super().__init__(int(upstream.rsplit(":", 1)[1]))
        self.hold = threading.Event()

    def passing(self, data: bytes, upward: bool, flow: dict[str, Any]) -> bool:
        if upward and b'"detections/' in data:
            flow["wrote"] = True  # this connection carried a result's upload
        while not upward and flow.get("wrote") and self.hold.is_set() and not self.closed.is_set():
            time.sleep(0.05)
        return True


@pytest.fixture
def proxy(gcs: str) -> Iterator[HoldingProxy]:
    made = HoldingProxy(gcs)
    made.up()
    try:
        yield made
    finally:
        made.down()


def _wait(what: str, check: Callable[[], Any], seconds: float = 40) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {seconds} s")


class Site:
    """One test's bucket, topic and subscription (and a dead-letter topic when asked), and its workers."""

    def __init__(self, root: Path, pubsub: str, gcs: str, dead_letter_after: int | None = None) -> None:
        warnings.filterwarnings("ignore", category=FutureWarning)
        os.environ["PUBSUB_EMULATOR_HOST"] = pubsub  # this process's clients; the workers get it in their env
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import pubsub_v1, storage

        self.root, self.pubsub, self.gcs = root, pubsub, gcs
        tag = uuid.uuid4().hex[:8]
        self.bucket = f"images-{tag}"
        self.results_bucket = f"results-{tag}"
        self.storage = storage.Client(project=PROJECT, credentials=AnonymousCredentials(),
                                      client_options={"api_endpoint": gcs})
        self.storage.create_bucket(self.bucket)
        self.storage.create_bucket(self.results_bucket)
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()
        self.topic = self.publisher.topic_path(PROJECT, f"images-{tag}")
        self.publisher.create_topic(name=self.topic)
        self.subscription = self.subscriber.subscription_path(PROJECT, f"work-{tag}")
        request: dict[str, Any] = {"name": self.subscription, "topic": self.topic, "ack_deadline_seconds": 10}
        self.dead_letters = None
        if dead_letter_after:
            dead_topic = self.publisher.topic_path(PROJECT, f"dead-{tag}")
            self.publisher.create_topic(name=dead_topic)
            self.dead_letters = self.subscriber.subscription_path(PROJECT, f"dead-{tag}")
            self.subscriber.create_subscription(name=self.dead_letters, topic=dead_topic)
            request["dead_letter_policy"] = {"dead_letter_topic": dead_topic, "max_delivery_attempts": dead_letter_after}
        self.subscriber.create_subscription(request=request)
        self.control = root / "control"
        self.control.mkdir()
        client = root / "client"
        client.mkdir()
        (client / "inference_pipeline.py").write_text(CLIENT)
        self.procs: list[subprocess.Popen] = []

    # -- the bucket's side

    def image(self, name: str, event: str = "OBJECT_FINALIZE", bucket: str | None = None) -> None:
        """Store the object (for a finalize) and publish its notification as Cloud Storage would."""
        generation = "0"
        if event == "OBJECT_FINALIZE" and bucket is None:
            blob = self.storage.bucket(self.bucket).blob(name)
            blob.upload_from_string(b"\xff\xd8 frame " + name.encode() + b" \xff\xd9", content_type="image/jpeg")
            generation = str(blob.generation)
        self.notify(name, generation, event, bucket)

    def notify(self, name: str, generation: str, event: str = "OBJECT_FINALIZE", bucket: str | None = None) -> None:
        payload = json.dumps({"name": name, "bucket": bucket or self.bucket, "generation": generation}).encode()
        self.publisher.publish(self.topic, payload, eventType=event, bucketId=bucket or self.bucket, objectId=name,
                               objectGeneration=generation, payloadFormat="JSON_API_V1").result(timeout=10)

    def generation(self, name: str) -> str:
        return str(self.storage.bucket(self.bucket).get_blob(name).generation)

    def pending(self, subscription: str | None = None, seconds: float = 1, count: int = 1) -> list[Any]:
        """Messages pulls get within `seconds`, until `count` of them (acknowledged here, so each test reads its
        own once): given back together, they may still come back one by one."""
        sub = subscription or self.subscription
        deadline, got = time.monotonic() + seconds, list[Any]()
        while time.monotonic() < deadline and len(got) < count:
            found = self.subscriber.pull(request={"subscription": sub, "max_messages": 10, "return_immediately": True},
                                         timeout=5).received_messages
            if found:
                self.subscriber.acknowledge(subscription=sub, ack_ids=[m.ack_id for m in found])
            got += found
            time.sleep(0 if found else 0.1)
        return got

    # -- a worker

    def settings(self, name: str, endpoint: str | None = None, worker: dict[str, Any] | None = None,
                 **override: Any) -> Path:
        """A worker's pipeline.json: `endpoint` another way to the store (a proxy), `worker` settings over the
        test's (the whole `worker` object when given in `override`)."""
        worker = worker or {}
        home = self.root / name
        values: dict[str, Any] = {
            "host": name, "generation": "tf", "input": "bucket",
            "spool": str(home / "frames"), "work": str(home / "work"), "queue": str(home / "queue"),
            "state": str(home / "state"), "triton_url": "http://127.0.0.1:8000", "batch_frames": 4,
            "client": {"python": sys.executable, "dir": str(self.root / "client"), "entry": "inference_pipeline.py",
                       "flags": []},
            "worker": {"subscription": self.subscription, "max_messages": 4, "max_lease_seconds": 60,
                       "lease_extension_seconds": 10, "batch_seconds": 0.3},
            "storage": {"kind": "gcs", "endpoint": self.gcs, "project": None, "credentials": None,
                        "buckets": {"results": self.results_bucket, "images": self.bucket}},
        }
        values.update(override)
        values["worker"] = values["worker"] and {**values["worker"], **worker}
        if endpoint:
            values["storage"] = {**values["storage"], "endpoint": endpoint}
        home.mkdir(exist_ok=True)
        path = home / "pipeline.json"
        path.write_text(json.dumps(values))
        return path

    def start(self, name: str, endpoint: str | None = None, **worker: Any) -> subprocess.Popen:
        config = self.settings(name, endpoint, worker)
        proc = subprocess.Popen([sys.executable, str(SCRIPT), "run", "--config", str(config)],
                                env={**os.environ, "PUBSUB_EMULATOR_HOST": self.pubsub,
                                     "WORKER_TEST_CONTROL": str(self.control)},
                                stdout=subprocess.DEVNULL, stderr=open(self.root / f"{name}.log", "wb"),  # noqa: SIM115
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def client_frames(self) -> int:
        """Frames of the batch the (last) client run was given; 0 before any run."""
        running = self.control / "running"
        return len(list(Path(running.read_text()).iterdir())) if running.exists() else 0

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text()

    def state(self, name: str) -> dict[str, Any]:
        try:
            return json.loads((self.root / name / "state" / "worker.json").read_text())
        except (OSError, ValueError):
            return {}

    def results(self) -> dict[str, list[dict[str, Any]]]:
        """The results bucket: each object's rows by name (read by name: the emulator's media link names the
        address the object was written through, perhaps a proxy gone since)."""
        bucket = self.storage.bucket(self.results_bucket)
        names = [blob.name for blob in self.storage.list_blobs(self.results_bucket) if blob.name.startswith("detections/")]
        return {name: [json.loads(line) for line in bucket.blob(name).download_as_bytes().decode().splitlines()]
                for name in names}

    def queued(self, name: str) -> list[Path]:
        """What a worker left in its local upload queue (it writes none: results go to the bucket)."""
        return sorted(p for p in (self.root / name / "queue").rglob("*") if p.is_file())

    def lose_disk(self, name: str) -> None:
        """The worker's data directory gone, as a VM's boot disk on preemption, scale-in or autohealing."""
        shutil.rmtree(self.root / name)

    def stop(self, proc: subprocess.Popen) -> int:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        return proc.wait(30)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.subscriber.close()


@pytest.fixture
def site(tmp_path: Path, pubsub: str, gcs: str) -> Iterator[Site]:
    made = Site(tmp_path, pubsub, gcs)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def site_with_dead_letters(tmp_path: Path, pubsub: str, gcs: str) -> Iterator[Site]:
    """A subscription whose dead-letter policy moves a message after 5 deliveries (Pub/Sub's smallest)."""
    made = Site(tmp_path, pubsub, gcs, dead_letter_after=5)
    try:
        yield made
    finally:
        made.close()


def frame(i: int) -> str:
    return f"belt1_{DAY}_{120000 + i:06d}{i:02d}.jpg"


def result_of(i: int) -> str:
    stem = frame(i)[:-4]
    return f"detections/tf/belt1/{DAY}/{stem}--{stem}.ndjson"


def row_of(i: int) -> list[dict[str, Any]]:
    return [{"image_name": frame(i), "detection_scores": 0.9}]


# --- the semantics ------------------------------------------------------------------------------------------


def test_a_message_is_acknowledged_only_after_its_result_is_in_the_results_bucket(site: Site) -> None:
    (site.control / "hold").touch()
    worker = site.start("gpu-1")
    site.image(f"belt-1/{DAY}/{frame(1)}")
    _wait("the client runs over the image", (site.control / "running").exists)
    held = site.state("gpu-1")
    assert (held["received"], held["acked"], site.results()) == (1, 0, {})  # leased, not acknowledged
    (site.control / "hold").unlink()
    done = _wait("the message is acknowledged", lambda: site.state("gpu-1")["acked"] == 1 and site.state("gpu-1"))
    assert site.results() == {result_of(1): row_of(1)}  # in the bucket by the time of the ack
    assert (done["images"], done["rows"], done["batches"], done["uploaded"], done["last_error"]) == (1, 1, 1, 1, None)
    assert site.stop(worker) == 0  # SIGTERM nacks what is held: had it not been acknowledged, a pull would get it
    assert site.pending() == [] and site.queued("gpu-1") == []  # nothing waits on the worker's disk
    log = site.log("gpu-1")
    assert f"1 rows in gs://{site.results_bucket} (1 written, 0 already there), 1 messages acknowledged" in log
    assert "Traceback" not in log


def test_a_worker_killed_mid_image_loses_nothing(site: Site) -> None:
    (site.control / "hold").touch()
    first = site.start("gpu-1")
    site.image(f"belt-1/{DAY}/{frame(2)}")
    _wait("the first worker's client runs", (site.control / "running").exists)
    # Right after delivery a message has the stream's ack deadline (the library opens it with 60 s); its first
    # lease extension (within lease_extension_seconds, 10 here) shortens it, so a kill after that comes back fast.
    time.sleep(10)
    assert site.state("gpu-1")["acked"] == 0
    os.killpg(first.pid, signal.SIGKILL)  # the worker and its client, as a lost VM
    first.wait(10)
    (site.control / "hold").unlink()
    assert site.results() == {}  # killed before its result: nothing written
    second = site.start("gpu-2")  # gets the message once the dead worker's lease lapses (the ack deadline)
    # Measured alone: redelivered 6-25 s after the kill (the 10 s lease, then the emulator's own sweep); on a
    # loaded 2-core machine past 40 s once. The bound is for a hang, not a rate.
    _wait("the second worker writes the result and acknowledges", lambda: site.state("gpu-2").get("acked") == 1,
          seconds=120)
    assert site.results() == {result_of(2): row_of(2)}
    assert site.stop(second) == 0
    assert site.pending() == []
    # a restart of the killed worker cleans what it left (the message came back elsewhere)
    assert list((site.root / "gpu-1" / "work").iterdir())
    restarted = site.start("gpu-1")
    _wait("the restarted worker cleans its leftovers", lambda: "removed 1 frames and batches" in site.log("gpu-1"))
    assert site.stop(restarted) == 0 and not list((site.root / "gpu-1" / "work").iterdir())


def test_a_worker_killed_between_the_write_and_the_ack_loses_nothing_and_stores_each_image_once(
        site: Site, proxy: HoldingProxy) -> None:
    proxy.hold.set()  # the writes land in the bucket; their answers never reach the first worker
    first = site.start("gpu-1", endpoint=proxy.url)
    for i in (11, 12):
        site.image(f"belt-1/{DAY}/{frame(i)}")
    _wait("both results are in the bucket", lambda: len(site.results()) == 2)
    time.sleep(10)  # past the first lease extension (10 s here): the killed worker's leases lapse fast
    assert site.state("gpu-1")["acked"] == 0  # written, not confirmed: nothing acknowledged
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    site.lose_disk("gpu-1")
    proxy.down()
    second = site.start("gpu-2")  # the redeliveries: the same names, found there with the same bytes
    state = _wait("the second worker settles both", lambda: site.state("gpu-2").get("acked") == 2 and site.state("gpu-2"),
                  seconds=120)
    assert (state["already_present"], state["uploaded"], state["failed_uploads"]) == (2, 0, 0)
    assert site.results() == {result_of(11): row_of(11), result_of(12): row_of(12)}
    assert site.stop(second) == 0 and site.pending() == []


def test_a_worker_killed_right_after_its_acks_with_its_disk_gone_loses_nothing(site: Site) -> None:
    """What lost results when the worker acknowledged rows still in its local queue: the VM goes with its disk
    right after the acks. Now an acknowledged image's object is in the bucket; what was in flight comes back."""
    (site.control / "hold").write_text("0")  # every client run waits
    first = site.start("gpu-1", max_messages=8, batch_seconds=1.0)
    for i in range(21, 25):
        site.image(f"belt-1/{DAY}/{frame(i)}")
    _wait("the first batch's client runs", (site.control / "running").exists)
    for i in range(25, 29):
        site.image(f"belt-1/{DAY}/{frame(i)}")
    _wait("all eight are delivered", lambda: site.state("gpu-1").get("received") == 8)
    time.sleep(10)  # past the first lease extension: the second batch's messages come back fast after the kill
    (site.control / "hold").write_text("1")  # the first run goes on, the next waits
    acked = _wait("the first acknowledgements", lambda: site.state("gpu-1").get("acked"), seconds=60)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    stored = set(site.results())
    assert len(stored) >= acked, f"{acked} messages acknowledged, only {len(stored)} results stored"
    site.lose_disk("gpu-1")
    (site.control / "hold").unlink()
    second = site.start("gpu-2", max_messages=8, batch_seconds=1.0)
    everything = {result_of(i): row_of(i) for i in range(21, 29)}
    _wait("every image's result in the bucket", lambda: site.results() == everything, seconds=120)
    _wait("the second worker writes the rest", lambda: site.state("gpu-2").get("uploaded", 0) >= 8 - len(stored))
    assert site.state("gpu-2")["uploaded"] == 8 - len(stored)  # each image written once, by one worker or the other
    assert site.stop(second) == 0


def test_a_store_that_cannot_be_reached_nacks_the_batch_and_acknowledges_nothing(site: Site, proxy: HoldingProxy) -> None:
    (site.control / "hold").touch()
    worker = site.start("gpu-1", endpoint=proxy.url)
    for i in (31, 32):
        site.image(f"belt-1/{DAY}/{frame(i)}")
    _wait("the client runs over the batch", (site.control / "running").exists)
    proxy.down()  # the store is gone before the results are written
    (site.control / "hold").unlink()
    state = _wait("the failed writes", lambda: site.state("gpu-1").get("failed_uploads", 0) >= 2 and site.state("gpu-1"))
    assert (state["acked"], state["uploaded"], site.results()) == (0, 0, {})
    assert "results not stored" in state["last_error"] and "unreachable" in state["last_error"]
    proxy.up()  # back: the nacked messages come again at once and their results land
    _wait("both results once the store is back", lambda: len(site.results()) == 2, seconds=60)
    _wait("both acknowledged", lambda: site.state("gpu-1")["acked"] == 2)
    assert site.stop(worker) == 0 and site.pending() == []
    assert "2 of 2 results not stored" in site.log("gpu-1")


def test_a_name_holding_other_bytes_is_the_images_earlier_result_kept_said_and_acked(site: Site) -> None:
    """A redelivered image may share its batch with other images than the first time, and a GPU's floats can
    differ in the last digits with that: its result's name then holds other bytes. The image has its result;
    nacking would loop it to the dead letters. The stored one is kept, the line says so, the message is acked."""
    earlier = {**row_of(41)[0], "score": 0.123456789}
    site.storage.bucket(site.results_bucket).blob(result_of(41)).upload_from_string(json.dumps(earlier) + "\n")
    worker = site.start("gpu-1")
    site.image(f"belt-1/{DAY}/{frame(41)}")
    state = _wait("the image settled", lambda: site.state("gpu-1").get("acked") and site.state("gpu-1"))
    assert (state["acked"], state["nacked"], state["uploaded"], state["already_present"], state["failed_uploads"]) == (
        1, 0, 0, 1, 0)
    assert site.results() == {result_of(41): [earlier]}  # left as it was
    assert site.stop(worker) == 0
    [line] = [line for line in site.log("gpu-1").splitlines() if "with other content" in line][:1]
    assert f"gs://{site.results_bucket}/{result_of(41)}" in line and "kept it" in line
    assert site.pending(seconds=5) == []  # not given back (the counters say so): no loop to the dead letters


def test_sigterm_mid_batch_finishes_it_within_the_stop_budget_and_exits_0(site: Site) -> None:
    (site.control / "hold").touch()
    worker = site.start("gpu-1", batch_seconds=2.0)  # both images in one batch
    for i in (51, 52):
        site.image(f"belt-1/{DAY}/{frame(i)}")
    _wait("the client runs over both", lambda: site.client_frames() == 2)
    os.kill(worker.pid, signal.SIGTERM)  # the worker alone (the unit's KillMode=mixed): its client runs on
    site.image(f"belt-1/{DAY}/{frame(53)}")  # arrives while stopping: not taken
    _wait("the late image is turned away", lambda: "received" in site.state("gpu-1")
          and site.state("gpu-1")["received"] >= 3)
    (site.control / "hold").unlink()
    assert worker.wait(20) == 0
    state = site.state("gpu-1")
    assert (state["acked"], state["uploaded"], state["images"]) == (2, 2, 2)
    assert site.results() == {result_of(51): row_of(51), result_of(52): row_of(52)}
    [late] = site.pending(seconds=GIVEN_BACK_S)  # given back, so on the subscription again, not lost
    assert late.message.attributes["objectId"].endswith(frame(53))


def test_sigterm_past_the_stop_budget_stops_the_client_nacks_the_batch_and_exits_0(site: Site) -> None:
    (site.control / "hold").touch()  # the client would run for a minute
    worker = site.start("gpu-1", stop_seconds=6, batch_seconds=2.0)  # the client stops when 5 s of it are left
    for i in (61, 62):
        site.image(f"belt-1/{DAY}/{frame(i)}")
    _wait("the client runs over both", lambda: site.client_frames() == 2)
    asked = time.monotonic()
    os.kill(worker.pid, signal.SIGTERM)
    assert worker.wait(20) == 0
    assert time.monotonic() - asked < 6 + 5  # within the budget and the unit's margin (TimeoutStopSec)
    state = site.state("gpu-1")
    assert (state["acked"], state["nacked"], site.results()) == (0, 2, {})
    assert "the client was stopped: the worker is stopping" in state["last_error"]
    back = site.pending(seconds=GIVEN_BACK_S, count=2)  # given back: on the subscription again
    assert sorted(m.message.attributes["objectId"] for m in back) == [f"belt-1/{DAY}/{frame(i)}" for i in (61, 62)]


def test_a_batch_that_keeps_failing_is_nacked_until_pubsub_dead_letters_it(site_with_dead_letters: Site) -> None:
    site = site_with_dead_letters
    (site.control / "fail").touch()
    worker = site.start("gpu-1")
    site.image(f"belt-1/{DAY}/{frame(3)}")
    assert site.dead_letters is not None
    [dead] = _wait("the message reaches the dead-letter topic", lambda: site.pending(site.dead_letters, 1), 60)
    assert dead.message.attributes["objectId"] == f"belt-1/{DAY}/{frame(3)}"
    state = _wait("the fifth failure is recorded", lambda: site.state("gpu-1")["failed_batches"] >= 5 and site.state("gpu-1"))
    assert (state["failed_batches"], state["nacked"], state["acked"], state["last_delivery_attempt"]) == (5, 5, 0, 5)
    assert "Triton answered 500" in state["last_error"] and site.results() == {}
    assert site.stop(worker) == 0
    assert site.pending() == []  # dead-lettered: no longer on the work subscription
    assert "delivery attempt 5" in site.log("gpu-1")


def test_other_events_and_objects_are_acknowledged_and_skipped(site: Site) -> None:
    worker = site.start("gpu-1")
    site.image(f"belt-1/{DAY}/{frame(4)}", event="OBJECT_DELETE")
    site.image("belt-1/notes.txt")
    site.image(f"belt-1/{DAY}/{frame(5)}", bucket="another-bucket")
    _wait("three skips", lambda: site.state("gpu-1").get("skipped") == 3)
    assert site.stop(worker) == 0
    assert site.pending() == [] and site.results() == {}
    state = site.state("gpu-1")
    assert (state["acked"], state["batches"], state["images"]) == (3, 0, 0)
    log = site.log("gpu-1")
    assert "(event OBJECT_DELETE)" in log and "(not a JPEG image)" in log and "(not the images bucket" in log


def test_a_redelivered_image_yields_the_same_result_name_once_and_a_deleted_one_is_gone(site: Site) -> None:
    worker = site.start("gpu-1")
    name = f"belt-1/{DAY}/{frame(6)}"
    site.image(name)
    _wait("the first result", lambda: site.state("gpu-1").get("acked") == 1)
    generation = site.generation(name)
    site.notify(name, generation)  # the same notification again, as after a lost ack
    _wait("the redelivery is settled", lambda: site.state("gpu-1").get("acked") == 2)
    assert site.results() == {result_of(6): row_of(6)}
    assert (site.state("gpu-1")["uploaded"], site.state("gpu-1")["already_present"]) == (1, 1)
    site.storage.bucket(site.bucket).blob(name).delete()
    site.notify(name, generation)  # a late redelivery of an image deleted meanwhile
    _wait("the gone image", lambda: site.state("gpu-1").get("gone") == 1)
    assert site.stop(worker) == 0 and site.pending() == []
    assert site.state("gpu-1")["images"] == 2 and len(site.results()) == 1


def test_a_missing_subscription_exits_2_naming_it(site: Site) -> None:
    path = site.settings("gpu-1", worker={"subscription": f"projects/{PROJECT}/subscriptions/nobody", "max_messages": 1})
    done = subprocess.run([sys.executable, str(SCRIPT), "run", "--config", str(path)], capture_output=True, text=True,
                          env={**os.environ, "PUBSUB_EMULATOR_HOST": site.pubsub}, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert f"projects/{PROJECT}/subscriptions/nobody does not exist or this identity may not pull" in done.stderr


# --- settings, names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "phrase"), [
    ({"input": "spool"}, "input is 'spool', not 'bucket'"),
    ({"worker": None}, "worker.subscription is missing: set pipeline.subscription"),
    ({"storage": {"kind": "s3", "buckets": {"images": "x", "results": "y"}}}, "storage.kind is 's3'"),
    ({"worker": {"subscription": "s", "max_messages": 0}}, "worker.max_messages >= 1"),
])
def test_bad_settings_exit_2_with_one_clear_line(tmp_path: Path, change: dict[str, Any], phrase: str) -> None:
    settings = {"host": "gpu-1", "generation": "tf", "input": "bucket", "spool": "s", "work": "w", "queue": "q",
                "state": str(tmp_path), "client": {}, "triton_url": "http://127.0.0.1:8000", "batch_frames": 4,
                "worker": {"subscription": "projects/p/subscriptions/s"},
                "storage": {"kind": "gcs", "buckets": {"images": "i", "results": "r"}}, **change}
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(settings))
    done = subprocess.run([sys.executable, str(SCRIPT), "run", "--config", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"worker: {path}: ") and phrase in line


def test_an_images_result_is_named_by_the_image_alone_as_its_queue_file_was_sent() -> None:
    # the upload queue's `results/<key>` went to the results bucket as <key>: the same objects as before
    assert bucket_worker.result_key("belt1_20261129_12000001.jpg", "tf") == (
        "detections/tf/belt1/20261129/belt1_20261129_12000001--belt1_20261129_12000001.ndjson")
    assert bucket_worker.result_key("IMG_0001.jpg", "detr").startswith("detections/detr/bucket/")


def test_rows_of_another_image_fail_the_batch(tmp_path: Path) -> None:
    results = tmp_path / "detections.ndjson"
    results.write_text('{"image_name": "a.jpg"}\n{"image_name": "z.jpg"}\n')
    with pytest.raises(ValueError, match="'z.jpg' is no image of the batch"):
        bucket_worker.split_rows(results, ["a.jpg", "b.jpg"])
    results.write_text('{"image_name": "a.jpg"}\n')
    assert bucket_worker.split_rows(results, ["a.jpg", "b.jpg"]) == {"a.jpg": ['{"image_name": "a.jpg"}'], "b.jpg": []}


def test_the_health_report_judges_a_bucket_input_host_by_its_worker() -> None:
    from cnhost import health_report

    now = time.time()
    active = {"rc": 0, "stdout": "active\n", "stderr": ""}
    seen: dict[str, Any] = {"settings": {"input": "bucket", "work": "/w", "storage": {"buckets": {"results": "r"}}}, "capture": None,
            "pipeline": {}, "upload": {"queue_files": 0},
            "worker": {"updated": now, "started": now - 4000, "last_ok": now - 3600, "batches": 7, "rows": 70,
                       "images": 12, "skipped": 1, "acked": 13, "nacked": 2, "failed_batches": 1,
                       "uploaded": 11, "already_present": 1, "failed_uploads": 2,
                       "last_error": "batch a--b: the client exited 1: Triton answered 500"},
            "units": {"circularnet-worker.service": active, "circularnet-upload.service": active}}
    summary, problems = health_report.judge_pipeline(seen, now, {"pipeline_settings": "/etc/x",
                                                                 "pipeline_stale_seconds": 900})
    assert summary is not None
    assert (summary["batches"], summary["rows"], summary["images"], summary["acked"], summary["nacked"]) == (7, 70, 12, 13, 2)
    assert (summary["uploaded"], summary["already_present"], summary["failed_uploads"]) == (11, 1, 2)
    assert problems == [("the bucket worker fails: batch a--b: the client exited 1: Triton answered 500; its images go "
                         "back to the subscription (see `journalctl -u circularnet-worker`)")]
    seen["worker"] = {**seen["worker"], "last_ok": now, "last_error": None}
    assert health_report.judge_pipeline(seen, now, {"pipeline_settings": "/etc/x", "pipeline_stale_seconds": 900})[1] == []
