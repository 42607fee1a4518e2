#!/usr/bin/env python3
"""Consume the images bucket: each new image, once, through the CircularNet client into the upload queue.

Runs in the pipeline's venv (google-cloud-pubsub and google-cloud-storage: the catalog's `worker` and
`uploader` wheels) as circularnet-worker.service on servers and cloud VMs whose input is the bucket
(`pipeline.input: bucket`); it replaces the pipeline timer there, the uploader still sends the queue. Python 3.10+.

    bucket_worker.py run|status --config /etc/circularnet/pipeline.json

`run`, forever:
1. a streaming pull on `worker.subscription` (the OBJECT_FINALIZE notifications of storage.buckets.images, JSON
   API payload: attributes eventType, bucketId, objectId, objectGeneration), with flow control: at most
   `worker.max_messages` messages held at once. The client library keeps every held message leased: it
   extends the ack deadline by `worker.lease_extension_seconds` at a time while the image waits or the client
   runs, for up to `worker.max_lease_seconds` in all. So a dead worker's messages return to the subscription
   within `lease_extension_seconds`, or within the stream's own ack deadline (60 s) when it dies right after the
   delivery, before the first extension (the library's own choice, from its ack-latency histogram, left them
   away for minutes on the emulator);
2. each message's object is downloaded at its generation into the spool under its own (upstream) name, through
   a dot-named temporary file renamed into place. Other event types, other buckets and objects that are not
   JPEG images are acknowledged and counted as `skipped`; an object deleted since is acknowledged as `gone`;
   a failed download is nacked (Pub/Sub redelivers it);
3. the main loop takes what was fetched, up to `batch_frames` images or what arrived within
   `worker.batch_seconds` of the first, and runs the client over them as one batch (pipeline_run.py's
   `run_client`, the same flags and Triton); the rows are split per image and each image's rows are renamed
   into the upload queue as `results/detections/<generation>/<device>/<YYYYMMDD>/<stem>--<stem>.ndjson`
   (`<device>`: the prefix of the upstream frame name, else `bucket`);
4. only then are that batch's messages acknowledged. A batch the client fails is deleted here and every message
   of it nacked: Pub/Sub counts the attempt (`delivery_attempt`, logged) and redelivers it, to any worker;
   after the subscription's `maxDeliveryAttempts` Pub/Sub itself moves it to the dead-letter topic.

Why this is the design ("a worker killed mid-image loses nothing"): a message is acknowledged by the process
that wrote its result into the queue, after the rename, and by nothing else; the timer's runner does not run on
a bucket-input host, so no other process takes frames from this spool. Killed at any earlier point (download,
client, splitting), the process acknowledged nothing of the batch: its leases lapse within the ack deadline
and Pub/Sub redelivers every message to another worker (or to this one after its restart, which first empties
the spool and the work directory it left, since their messages come back). Killed between the rename and the
ack, the message comes back although its result is queued: the redelivery produces the same object name (an
image's result is named by the image alone, never by the batch it happened to share), so the queue holds one
file and the uploader's create-only write stores one object (a second worker's identical result is counted
`already_present`). Processing is at least once; results land exactly once.

SIGTERM (or SIGINT): stop pulling, finish the batch under way, nack what waits (redelivered at once), exit 0.

State: `<state>/worker.json` {updated, started, received, images, batches, rows, skipped, gone,
download_failures, failed_batches, acked, nacked, last_ok, last_error, last_delivery_attempt} (counters
cumulative), read by the health report; one journal line per batch, skip and failure.
Exit: 0 stopped, 2 bad settings or credentials (the line says which and the fix), 1 the subscription failed
(systemd restarts the unit).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnhost import pipeline_run, uploader  # the batch code and the bucket client

EXIT = {"ok": 0, "failed": 1, "usage": 2}
STATE_FILE = "worker.json"
FINALIZE = "OBJECT_FINALIZE"
IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.(jpe?g|JPE?G)$")
DEVICE = re.compile(r"^(.+?)_\d{8}_\d{8}$")  # upstream: <device>_<YYYYMMDD>_<HHMMSSxx>
COUNTERS = ("received", "images", "batches", "rows", "skipped", "gone", "download_failures", "failed_batches",
            "acked", "nacked")
DEFAULTS: dict[str, Any] = {"max_messages": 64, "max_lease_seconds": 1800, "lease_extension_seconds": 60,
                            "batch_seconds": 2.0}


def log(message: str) -> None:
    print(f"worker: {message}", file=sys.stderr, flush=True)


class UsageError(Exception):
    """Bad settings or credentials: exit 2; the message says what and how to fix it."""


# --- settings -------------------------------------------------------------------------------------------------


def load_settings(path: Path) -> dict[str, Any]:
    """pipeline.json, checked for what bucket input needs; UsageError naming each problem."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read the settings {path}: {exc.strerror or exc}; run the deploy") from None
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON ({exc}); run the deploy") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a JSON object expected; run the deploy")
    problems = [f"`{key}` is missing" for key in pipeline_run.REQUIRED if key not in data]
    if data.get("input") != "bucket":
        problems.append(f"input is {data.get('input')!r}, not 'bucket': this host reads no bucket "
                        "(set pipeline.input: bucket in the stack and deploy, or stop circularnet-worker)")
    worker = data.get("worker")
    if not isinstance(worker, dict) or not worker.get("subscription"):
        problems.append("worker.subscription is missing: set pipeline.subscription in the stack (or compute.mode "
                        "group) and deploy")
        worker = {}
    storage = data.get("storage") or {}
    if storage.get("kind") != "gcs":
        problems.append(f"storage.kind is {storage.get('kind')!r}: bucket input reads a Cloud Storage bucket's "
                        "notifications (storage.kind gcs), or use input spool")
    if not (storage.get("buckets") or {}).get("images"):
        problems.append("storage.buckets.images is missing")
    merged = {**DEFAULTS, **{k: v for k, v in worker.items() if v is not None}}
    try:
        merged["max_messages"] = int(merged["max_messages"])
        merged["max_lease_seconds"] = int(merged["max_lease_seconds"])
        merged["lease_extension_seconds"] = int(merged["lease_extension_seconds"])
        merged["batch_seconds"] = float(merged["batch_seconds"])
        if (merged["max_messages"] < 1 or not 10 <= merged["lease_extension_seconds"] <= 600
                or merged["max_lease_seconds"] < merged["lease_extension_seconds"] or merged["batch_seconds"] <= 0):
            raise ValueError
    except (TypeError, ValueError):
        problems.append("worker.max_messages >= 1, 10 <= worker.lease_extension_seconds <= 600, "
                        "worker.max_lease_seconds >= lease_extension_seconds and worker.batch_seconds > 0 must be numbers")
    if problems:
        raise UsageError(f"{path}: " + "; ".join(problems))
    return {**pipeline_run.DEFAULTS, **data, "worker": merged, "config": str(path)}


# --- state ----------------------------------------------------------------------------------------------------


class State:
    """<state>/worker.json, written atomically; a full disk loses an update, never an image."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / STATE_FILE
        self.lock = threading.RLock()
        try:
            found = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            found = {}
        self.data: dict[str, Any] = {**dict.fromkeys(COUNTERS, 0), "last_ok": None, "last_error": None,
                                     "last_delivery_attempt": None, **found, "started": time.time()}

    def note(self, **fields: Any) -> None:
        self.bump({}, **fields)

    def count(self, key: str, by: int = 1, **fields: Any) -> None:
        self.bump({key: by}, **fields)

    def bump(self, counts: dict[str, int], **fields: Any) -> None:
        """Counters and fields in one update: a reader never sees a batch half counted."""
        with self.lock:
            for key, by in counts.items():
                self.data[key] += by
            self.data.update(fields)
            self.save()

    def save(self) -> None:
        """Under the lock, snapshot and rename alike: an older snapshot never replaces a newer one."""
        with self.lock:
            self.data["updated"] = time.time()
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_text(json.dumps(self.data, sort_keys=True) + "\n", encoding="utf-8")
                os.chmod(tmp, 0o644)
                os.replace(tmp, self.path)
            except OSError as exc:
                log(f"cannot write {self.path} ({exc.strerror or exc})")


# --- one image, one batch -------------------------------------------------------------------------------------


def result_name(frame: str, generation: str) -> str:
    """The queue path of one image's rows: named by the image alone, so a redelivery yields the same name."""
    stem = Path(frame).stem
    device = DEVICE.match(stem)
    return (f"results/detections/{generation}/{device.group(1) if device else 'bucket'}/"
            f"{pipeline_run.day_of(stem)}/{stem}--{stem}.ndjson")


def split_rows(results: Path, frames: list[str]) -> dict[str, list[str]]:
    """The client's NDJSON lines by image (`image_name`); a line of no image of the batch is an error."""
    pipeline_run.rows_of(results)  # every line one JSON object, else ValueError
    by_frame: dict[str, list[str]] = {name: [] for name in frames}
    if not results.exists():
        return by_frame
    for number, line in enumerate(results.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        name = Path(str(json.loads(line).get("image_name", ""))).name
        if name not in by_frame:
            raise ValueError(f"{results} line {number}: image_name {name!r} is no image of the batch")
        by_frame[name].append(line)
    return by_frame


class Held:
    """Messages fetched into the spool and not yet settled, by frame name (a duplicate delivery joins its frame)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.frames: dict[str, list[Any]] = {}
        self.ready: queue.Queue[str] = queue.Queue()

    def add(self, frame: str, message: Any) -> bool:
        """True when `frame` is new (the caller downloads it), False when it joined a frame already held."""
        with self.lock:
            if frame in self.frames:
                self.frames[frame].append(message)
                return False
            self.frames[frame] = [message]
            return True

    def drop(self, frame: str) -> list[Any]:
        with self.lock:
            return self.frames.pop(frame, [])


class Worker:
    def __init__(self, settings: dict[str, Any], storage_client: Any, subscriber: Any) -> None:
        self.settings = settings
        self.worker = settings["worker"]
        self.storage = storage_client
        self.subscriber = subscriber
        self.images_bucket = settings["storage"]["buckets"]["images"]
        self.spool = Path(settings["spool"])
        self.work = Path(settings["work"])
        self.queue = Path(settings["queue"])
        self.state = State(Path(settings["state"]))
        self.held = Held()
        self.stopping = threading.Event()
        from google.api_core import exceptions as api  # the venv's; imported here so `status` needs none

        self.api = api

    # -- before the first message

    def clean_leftovers(self) -> None:
        """Frames and batches a killed worker left: their messages were never acknowledged and come back."""
        left = 0
        for directory in (self.spool, self.work):
            directory.mkdir(parents=True, exist_ok=True)
            for entry in directory.iterdir():
                left += 1
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        if left:
            log(f"removed {left} frames and batches a previous run left (their messages are redelivered)")

    # -- the subscriber's threads

    def on_message(self, message: Any) -> None:
        """The library's callback: fetch the image into the spool and hold the message; settle it only if it
        needs no result (skipped, gone) or the download failed (nack)."""
        attrs = dict(message.attributes)
        self.state.count("received", last_delivery_attempt=message.delivery_attempt)
        bucket, name = attrs.get("bucketId", ""), attrs.get("objectId", "")
        frame = name.rsplit("/", 1)[-1]
        why = self.skip_reason(attrs, frame)
        if why:
            message.ack()
            self.state.bump({"skipped": 1, "acked": 1})
            log(f"skipped {bucket}/{name} ({why})")
            return
        log(f"received {bucket}/{name} (delivery attempt {message.delivery_attempt or '?'})")
        if not self.held.add(frame, message):
            log(f"{name}: delivered again while held; settled with the first delivery")
            return
        try:
            generation = int(attrs.get("objectGeneration") or 0) or None
            self.fetch(bucket, name, generation, self.spool / frame)
        except self.api.NotFound:
            settled = self.held.drop(frame)
            for held in settled:
                held.ack()
            self.state.bump({"acked": len(settled), "gone": 1})
            log(f"{bucket}/{name} generation {attrs.get('objectGeneration')} is gone; nothing to do")
            return
        except Exception as exc:  # noqa: BLE001 - a store that is down raises many types: redeliver, say why
            settled = self.held.drop(frame)
            for held in settled:
                held.nack()
            self.state.bump({"nacked": len(settled), "download_failures": 1},
                            last_error=f"download of {bucket}/{name}: {_first_line(exc)}")
            log(f"download of {bucket}/{name} failed ({_first_line(exc)}); nacked (attempt {message.delivery_attempt})")
            return
        self.held.ready.put(frame)

    def skip_reason(self, attrs: dict[str, str], frame: str) -> str:
        """Why a notification needs no result ("" when it does): another event, another bucket, not an image."""
        if attrs.get("eventType") != FINALIZE:
            return f"event {attrs.get('eventType')}"
        if attrs.get("bucketId") != self.images_bucket:
            return f"not the images bucket {self.images_bucket}"
        if not IMAGE.match(frame):
            return "not a JPEG image"
        return ""

    def fetch(self, bucket: str, name: str, generation: int | None, dest: Path) -> None:
        """The object at its generation into `dest`, through a dot-named temporary file renamed into place."""
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            blob = self.storage.bucket(bucket).blob(name, generation=generation)
            blob.download_to_filename(str(tmp), timeout=(5, 60))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    # -- the main thread

    def next_batch(self) -> list[str]:
        """Frames fetched: the first waits; then up to batch_frames, or what arrives within batch_seconds."""
        try:
            first = self.held.ready.get(timeout=0.5)
        except queue.Empty:
            return []
        frames = [first]
        deadline = time.monotonic() + float(self.worker["batch_seconds"])
        limit = min(int(self.settings["batch_frames"]), int(self.worker["max_messages"]))
        while len(frames) < limit and not self.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                frames.append(self.held.ready.get(timeout=min(left, 0.5)))
            except queue.Empty:
                continue
        return frames

    def run_batch(self, frames: list[str]) -> bool:
        """The client over `frames`, each image's rows into the queue, then their messages acknowledged."""
        names = sorted(frames)
        batch = self.work / f"{Path(names[0]).stem}--{Path(names[-1]).stem}"
        shutil.rmtree(batch, ignore_errors=True)
        (batch / "frames").mkdir(parents=True)
        for name in names:
            os.replace(self.spool / name, batch / "frames" / name)
        problem = pipeline_run.run_client(pipeline_run.Settings(self.settings), batch)
        rows = 0
        if problem is None:
            try:
                by_frame = split_rows(batch / "out" / pipeline_run.RESULTS, names)
                for name, lines in by_frame.items():
                    if lines:
                        part = batch / "out" / f"{name}.ndjson"
                        part.write_text("\n".join(lines) + "\n", encoding="utf-8")
                        pipeline_run.enqueue(part, self.queue / result_name(name, self.settings["generation"]))
                        rows += len(lines)
            except (ValueError, OSError) as exc:
                problem = str(exc)
        shutil.rmtree(batch, ignore_errors=True)
        messages = [m for name in names for m in self.held.drop(name)]
        if problem is not None:
            attempts = [m.delivery_attempt for m in messages if m.delivery_attempt]
            for message in messages:
                message.nack()
            self.state.bump({"nacked": len(messages), "failed_batches": 1}, last_error=f"batch {batch.name}: {problem}")
            log(f"batch {batch.name} failed: {problem}; {len(messages)} messages nacked for redelivery "
                f"(delivery attempt {max(attempts) if attempts else '?'}: the subscription's dead-letter policy "
                "decides when to stop)")
            return False
        for message in messages:
            message.ack()
        self.state.bump({"acked": len(messages), "images": len(names), "rows": rows, "batches": 1},
                        last_ok=time.time(), last_error=None)
        log(f"batch {batch.name}: {len(names)} images, {rows} rows queued, {len(messages)} messages acknowledged")
        return True

    def release_waiting(self) -> None:
        """On stop: every fetched image not yet in a batch goes back to Pub/Sub at once."""
        while True:
            try:
                frame = self.held.ready.get_nowait()
            except queue.Empty:
                return
            (self.spool / frame).unlink(missing_ok=True)
            for message in self.held.drop(frame):
                message.nack()
                self.state.count("nacked")

    def run(self) -> int:
        from google.cloud import pubsub_v1

        self.clean_leftovers()
        self.state.save()
        subscription = self.worker["subscription"]
        extension = int(self.worker["lease_extension_seconds"])
        flow = pubsub_v1.types.FlowControl(max_messages=int(self.worker["max_messages"]),
                                           max_lease_duration=int(self.worker["max_lease_seconds"]),
                                           min_duration_per_lease_extension=extension,
                                           max_duration_per_lease_extension=extension)
        future = self.subscriber.subscribe(subscription, callback=self.on_message, flow_control=flow)
        log(f"pulling {subscription} (images of {self.images_bucket}, at most {self.worker['max_messages']} held) "
            f"into {self.spool}")
        code = EXIT["ok"]
        try:
            while not self.stopping.is_set():
                if future.done():
                    exc = future.exception()
                    refused = isinstance(exc, (self.api.NotFound, self.api.PermissionDenied))
                    why = (f"{subscription} does not exist or this identity may not pull from it (the cloud layer "
                           "creates it with compute.mode group; check pipeline.subscription)" if refused else
                           f"the subscription {subscription} failed")
                    self.state.note(last_error=f"{why}: {_first_line(exc)}")
                    log(f"{why}: {_first_line(exc)}")
                    code = EXIT["usage"] if refused else EXIT["failed"]
                    break
                frames = self.next_batch()
                if frames:
                    self.run_batch(frames)
        finally:
            future.cancel()
            try:
                future.result(timeout=30)
            except Exception:  # noqa: BLE001, S110 - cancelled: the result is the cancellation itself
                pass
            self.release_waiting()
            self.state.save()
        if code == EXIT["ok"]:
            log("stopped: unfinished images go back to the subscription")
        return code


def _first_line(exc: BaseException | None) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


# --- clients ------------------------------------------------------------------------------------------------


def clients(settings: dict[str, Any]) -> tuple[Any, Any]:
    """(storage client, subscriber): the uploader's GCS client for the same settings file (one copy of the
    emulator / credentials file / host identity choice and of the 0600 rule), and a subscriber with the same
    credentials (the Pub/Sub emulator through PUBSUB_EMULATOR_HOST, as the library reads it)."""
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.")
    from google.cloud import pubsub_v1

    store = uploader.load_settings(Path(settings["config"]))
    try:
        uploader.read_credentials(store.credentials)
        storage_client = uploader.GcsStore(store, None).client()
    except (uploader.UsageError, uploader.StoreError) as exc:
        raise UsageError(str(exc)) from None
    key = str(store.credentials) if store.credentials else None
    subscriber = (pubsub_v1.SubscriberClient.from_service_account_file(key) if key and not os.environ.get(
        "PUBSUB_EMULATOR_HOST") else pubsub_v1.SubscriberClient())
    return storage_client, subscriber


def main(argv: list[str] | None = None, make_clients: Callable[[dict[str, Any]], tuple[Any, Any]] = clients) -> int:
    parser = argparse.ArgumentParser(prog="bucket_worker.py", description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("run", "status"))
    parser.add_argument("--config", default="/etc/circularnet/pipeline.json", help="the pipeline's settings file")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_settings(Path(args.config))
        if args.mode == "status":
            print(json.dumps(State(Path(settings["state"])).data, indent=2, sort_keys=True))
            return EXIT["ok"]
        worker = Worker(settings, *make_clients(settings))
    except UsageError as exc:
        log(str(exc))
        return EXIT["usage"]
    except ImportError as exc:
        log(f"the pipeline venv lacks {exc.name} (the worker's wheels): deploy the pipeline layer again")
        return EXIT["usage"]
    except Exception as exc:  # noqa: BLE001 - no usable identity: auth libraries raise many types
        log(f"no usable credentials for the bucket or the subscription ({_first_line(exc)}): give the host an "
            "identity (a VM's service account) or set storage.credentialsFile")
        return EXIT["usage"]

    def stop(signum: int, _frame: object) -> None:
        worker.stopping.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return worker.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
