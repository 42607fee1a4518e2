#!/usr/bin/env python3
"""Consume the images bucket: each new image, once, through the CircularNet client into the results bucket.

Runs in the pipeline's venv (google-cloud-pubsub and google-cloud-storage: the catalog's `worker` and
`uploader` wheels) as circularnet-worker.service on servers and cloud VMs whose input is the bucket
(`pipeline.input: bucket`); it replaces the pipeline timer there. Python 3.10+.

    bucket_worker.py run|status --config /etc/circularnet/pipeline.json

`run`, forever:
1. a streaming pull on `worker.subscription` (the OBJECT_FINALIZE notifications of storage.buckets.images, JSON
   API payload: attributes eventType, bucketId, objectId, objectGeneration), with flow control: at most
   `worker.max_messages` messages held at once. The client library keeps every held message leased: it
   extends the ack deadline by `worker.lease_extension_seconds` at a time while the image waits, the client
   runs or its result is written, for up to `worker.max_lease_seconds` in all. So a dead worker's messages
   return to the subscription within `lease_extension_seconds`, or within the stream's own ack deadline (60 s)
   when it dies right after the delivery, before the first extension (the library's own choice, from its
   ack-latency histogram, left them away for minutes on the emulator);
2. each message's object is downloaded at its generation into the spool under its own (upstream) name, through
   a dot-named temporary file renamed into place. Other event types, other buckets and objects that are not
   JPEG images are acknowledged and counted as `skipped`; an object deleted since is acknowledged as `gone`;
   a failed download is nacked (Pub/Sub redelivers it);
3. the main loop takes what was fetched, up to `batch_frames` images or what arrived within
   `worker.batch_seconds` of the first, and runs the client over them as one batch (pipeline_run.py's
   `run_client`, the same flags and Triton); the rows are split per image;
4. each image's rows are written to the results bucket (storage.buckets.results) as the object
   `detections/<generation>/<device>/<YYYYMMDD>/<stem>--<stem>.ndjson` (`<device>`: the prefix of the
   upstream frame name, else `bucket`; the name the upload queue's `results/...` file had before), create-only,
   through the uploader's `WriteOnce`, up to UPLOAD_THREADS side by side. A name already taken counts
   `already_present`: by the same bytes (a redelivery) or by other bytes, which is kept and said in one line
   (another run of the same image wrote it: a GPU's results may differ in the last digits with the batch an
   image shares, so a redelivered image's rows need not be byte-identical; nacking it would loop until the
   dead letters, while the image has its result);
5. only then is each image's message acknowledged: once its object is confirmed in the bucket (or the image
   had no rows). An image whose write failed (the store unreachable, a refusal) is nacked, and so
   is every message of a batch the client failed: Pub/Sub counts the attempt (`delivery_attempt`, logged) and
   redelivers it, to any worker; after the subscription's `maxDeliveryAttempts` Pub/Sub itself moves it to the
   dead-letter topic.

Why this is the design ("a worker lost at any moment loses nothing"): a message is acknowledged only after its
result is in the results bucket, by the process that wrote it. Nothing the worker keeps on its own disk matters
after an ack, so a VM whose boot disk goes with it (Spot preemption, scale-in, autohealing, a rolling replace)
loses no result. Killed before the write, the process acknowledged nothing of the batch: its leases lapse within
the ack deadline and Pub/Sub redelivers every message to another worker (or to this one after its restart, which
first empties the spool and the work directory it left, since their messages come back). Killed between the
write and the ack, the message comes back although its result is stored: the redelivery produces the same
object name (an image's result is named by the image alone, never by the batch it happened to share), the
create-only write finds it and compares (`already_present`). Processing is at least once; results land exactly
once. The local upload queue has no part in it: the worker never writes to it (the uploader still runs on such
a host, as on every host, and sends what an older worker left queued).

SIGTERM (or SIGINT), e.g. systemd stopping the unit as GCE shuts the VM down: stop taking work (a message that
arrives now is nacked), finish the batch in hand (client, writes, acks) within `worker.stop_seconds`, nack what
waits and what did not make it (the client is stopped when STOP_SETTLE_SECONDS of the budget are left, a write
not confirmed when the budget is over counts as failed), exit 0. The budget and the unit's TimeoutStopSec fit
inside the ~30 s GCE gives a Spot VM between the preemption notice and the hard stop
(https://cloud.google.com/compute/docs/instances/spot); a standard VM that is stopped or deleted (a group's
scale-in, autohealing, a rolling replace) gets 90 s (https://cloud.google.com/compute/docs/shutdownscript).

State: `<state>/worker.json` {updated, started, received, images, batches, rows, skipped, gone,
download_failures, failed_batches, uploaded, already_present, failed_uploads, acked, nacked, last_ok,
last_error, last_delivery_attempt} (counters cumulative), read by the health report; one journal line per batch,
skip and failure.
Exit: 0 stopped, 2 bad settings or credentials (the line says which and the fix), 1 the subscription failed
(systemd restarts the unit).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
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
            "uploaded", "already_present", "failed_uploads", "acked", "nacked")
DEFAULTS: dict[str, Any] = {"max_messages": 64, "max_lease_seconds": 1800, "lease_extension_seconds": 60,
                            "batch_seconds": 2.0, "stop_seconds": 20}
UPLOAD_THREADS = 8  # a batch's results written side by side: one round trip to the store per batch, not per image
STOP_SETTLE_SECONDS = 5  # of the stop budget, kept for the writes and the acks: the client is stopped before


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
    for role in ("images", "results"):
        if not (storage.get("buckets") or {}).get(role):
            problems.append(f"storage.buckets.{role} is missing")
    merged = {**DEFAULTS, **{k: v for k, v in worker.items() if v is not None}}
    try:
        merged["max_messages"] = int(merged["max_messages"])
        merged["max_lease_seconds"] = int(merged["max_lease_seconds"])
        merged["lease_extension_seconds"] = int(merged["lease_extension_seconds"])
        merged["batch_seconds"] = float(merged["batch_seconds"])
        merged["stop_seconds"] = float(merged["stop_seconds"])
        if (merged["max_messages"] < 1 or not 10 <= merged["lease_extension_seconds"] <= 600
                or merged["max_lease_seconds"] < merged["lease_extension_seconds"] or merged["batch_seconds"] <= 0
                or merged["stop_seconds"] <= 0):
            raise ValueError
    except (TypeError, ValueError):
        problems.append("worker.max_messages >= 1, 10 <= worker.lease_extension_seconds <= 600, "
                        "worker.max_lease_seconds >= lease_extension_seconds, worker.batch_seconds > 0 and "
                        "worker.stop_seconds > 0 must be numbers")
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


def result_key(frame: str, generation: str) -> str:
    """The results bucket's object of one image's rows: named by the image alone, so a redelivery yields the
    same name (the name its `results/...` file in the upload queue was sent under before this worker wrote it)."""
    stem = Path(frame).stem
    device = DEVICE.match(stem)
    return (f"detections/{generation}/{device.group(1) if device else 'bucket'}/"
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


def in_parallel(jobs: dict[str, Callable[[], str]], threads: int, give_up: Callable[[], bool]) -> dict[str, Any]:
    """Each job's outcome by name (what it returned, or the Exception it raised), on at most `threads` threads.
    A job not finished when `give_up()` turns true is left out and no further job starts; the threads are daemons,
    so a stop never waits for a store that hangs past the stop budget (an object that lands later is found by
    the redelivery's create-only write)."""
    todo: queue.SimpleQueue[tuple[str, Callable[[], str]]] = queue.SimpleQueue()
    for item in jobs.items():
        todo.put(item)
    done: dict[str, Any] = {}
    finished = threading.Condition()
    abandoned = threading.Event()

    def work() -> None:
        while not abandoned.is_set():
            try:
                name, job = todo.get_nowait()
            except queue.Empty:
                return
            try:
                outcome: Any = job()
            except Exception as exc:  # noqa: BLE001 - the caller says what failed, per job
                outcome = exc
            with finished:
                done[name] = outcome
                finished.notify()

    for _ in range(min(threads, len(jobs))):
        threading.Thread(target=work, daemon=True).start()
    with finished:
        while len(done) < len(jobs) and not give_up():
            finished.wait(0.2)
        abandoned.set()
        return dict(done)


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
    def __init__(self, settings: dict[str, Any], store: uploader.GcsStore, subscriber: Any) -> None:
        self.settings = settings
        self.worker = settings["worker"]
        self.storage = store.client()
        self.writer = uploader.WriteOnce(store, str(settings["host"]), probe=bool(settings["storage"].get("endpoint")))
        self.subscriber = subscriber
        self.images_bucket = settings["storage"]["buckets"]["images"]
        self.results_bucket = settings["storage"]["buckets"]["results"]
        self.spool = Path(settings["spool"])
        self.work = Path(settings["work"])
        self.state = State(Path(settings["state"]))
        self.held = Held()
        self.stopping = threading.Event()
        self.stop_at = 0.0  # time.monotonic() of the stop request
        self.deferred: list[Any] = []  # messages given back while stopping: nacked once the stream is closed
        self.deferred_lock = threading.Lock()
        from google.api_core import exceptions as api  # the venv's; imported here so `status` needs none

        self.api = api

    # -- stopping

    def stop(self) -> None:
        """SIGTERM/SIGINT: take no more work; the batch in hand has `worker.stop_seconds` from now."""
        if not self.stopping.is_set():
            self.stop_at = time.monotonic()
            self.stopping.set()

    def past_stop_budget(self, keep: float = 0.0) -> bool:
        """Stopping, and less than `keep` seconds of the stop budget are left."""
        return self.stopping.is_set() and time.monotonic() >= self.stop_at + float(self.worker["stop_seconds"]) - keep

    def client_overdue(self) -> bool:
        return self.past_stop_budget(keep=STOP_SETTLE_SECONDS)

    def give_back(self, messages: list[Any]) -> None:
        """Nack: back to Pub/Sub, for any worker. While stopping they wait until this worker's stream is closed
        (`return_deferred`): nacked on the open stream they would come straight back to it, and one in flight
        when it closes would stay away for a whole ack deadline."""
        if self.stopping.is_set():
            with self.deferred_lock:
                self.deferred.extend(messages)
            return
        for message in messages:
            message.nack()

    def return_deferred(self) -> None:
        """After the stream closed: the deferred nacks, by ack id (ModifyAckDeadline to 0 is the nack itself)."""
        with self.deferred_lock:
            ack_ids, self.deferred = [m.ack_id for m in self.deferred], []
        for start in range(0, len(ack_ids), 1000):  # well inside the request size limit
            try:
                self.subscriber.modify_ack_deadline(request={
                    "subscription": self.worker["subscription"], "ack_ids": ack_ids[start:start + 1000],
                    "ack_deadline_seconds": 0}, timeout=5)
            except Exception as exc:  # noqa: BLE001 - any failure: the leases lapse instead, nothing is lost
                log(f"could not give back {len(ack_ids) - start} messages ({_first_line(exc)}): they return to the "
                    "subscription when their leases lapse")
                return

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
        if self.stopping.is_set():  # stopping takes no work: given back once the stream is closed
            self.give_back([message])
            self.state.count("nacked")
            return
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
            self.give_back(settled)
            self.state.bump({"nacked": len(settled), "download_failures": 1},
                            last_error=f"download of {bucket}/{name}: {_first_line(exc)}")
            log(f"download of {bucket}/{name} failed ({_first_line(exc)}); nacked (attempt {message.delivery_attempt})")
            return
        self.held.ready.put(frame)  # fetched while a stop began: the main thread gives it back

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
        """The client over `frames`, each image's rows into the results bucket, then each image's messages
        acknowledged once its object is confirmed there (nacked when not). True when every image was."""
        names = sorted(frames)
        batch = self.work / f"{Path(names[0]).stem}--{Path(names[-1]).stem}"
        shutil.rmtree(batch, ignore_errors=True)
        (batch / "frames").mkdir(parents=True)
        for name in names:
            os.replace(self.spool / name, batch / "frames" / name)
        problem = pipeline_run.run_client(pipeline_run.Settings(self.settings), batch, give_up=self.client_overdue)
        rows: dict[str, list[str]] = {}
        if problem is None:
            try:
                rows = split_rows(batch / "out" / pipeline_run.RESULTS, names)
            except (ValueError, OSError) as exc:
                problem = str(exc)
        messages = {name: self.held.drop(name) for name in names}
        if problem is not None:
            shutil.rmtree(batch, ignore_errors=True)
            self.failed_batch(batch.name, problem, [m for held in messages.values() for m in held])
            return False
        outcomes = self.store_results(batch, {name: lines for name, lines in rows.items() if lines})
        shutil.rmtree(batch, ignore_errors=True)
        return self.settle(batch.name, messages, rows, outcomes)

    def failed_batch(self, batch: str, problem: str, messages: list[Any]) -> None:
        """The client failed the batch: every message back to Pub/Sub, which counts the attempt."""
        attempts = [m.delivery_attempt for m in messages if m.delivery_attempt]
        self.give_back(messages)
        self.state.bump({"nacked": len(messages), "failed_batches": 1}, last_error=f"batch {batch}: {problem}")
        log(f"batch {batch} failed: {problem}; {len(messages)} messages nacked for redelivery "
            f"(delivery attempt {max(attempts) if attempts else '?'}: the subscription's dead-letter policy "
            "decides when to stop)")

    def store_results(self, batch: Path, rows: dict[str, list[str]]) -> dict[str, Any]:
        """Each image's rows as its object in the results bucket, create-only, side by side -> by image:
        'uploaded', 'already_present', or the StoreError that kept it out; an image left out when the stop budget
        ran out is absent."""
        jobs: dict[str, Callable[[], str]] = {}
        for name, lines in rows.items():
            part = batch / "out" / f"{name}.ndjson"
            body = ("\n".join(lines) + "\n").encode("utf-8")
            part.write_bytes(body)
            key = result_key(name, self.settings["generation"])
            md5 = hashlib.md5(body, usedforsecurity=False).digest()
            jobs[name] = functools.partial(self.write_once, key, part, len(body), md5)
        return in_parallel(jobs, UPLOAD_THREADS, self.past_stop_budget) if jobs else {}

    def write_once(self, key: str, part: Path, size: int, md5: bytes) -> str:
        """One result, create-only; a name taken by other bytes is the image's result from another run: kept."""
        try:
            return str(self.writer.put(self.results_bucket, key, part, size, md5, f"gs://{self.results_bucket}/{key}"))
        except uploader.Differs as exc:
            log(f"{exc}: kept it, the image's result from an earlier run (inference may differ in the last digits "
                "with the batch an image shares)")
            return "already_present"

    def settle(self, batch: str, messages: dict[str, list[Any]], rows: dict[str, list[str]],
               outcomes: dict[str, Any]) -> bool:
        """Ack the images whose result is in the bucket (or that had no rows), nack the rest; count; one line."""
        stored = [name for name in messages if not rows.get(name) or outcomes.get(name) in ("uploaded", "already_present")]
        failures = {name: outcomes.get(name) for name in messages if name not in stored}
        for name in stored:
            for message in messages[name]:
                message.ack()
        self.give_back([message for name, held in messages.items() if name not in stored for message in held])
        acked = sum(len(messages[name]) for name in stored)
        nacked = sum(len(held) for held in messages.values()) - acked
        outcome_list = list(outcomes.values())
        counts = {"acked": acked, "nacked": nacked, "images": len(stored), "batches": 1,
                  "rows": sum(len(rows.get(name) or []) for name in stored),
                  "uploaded": outcome_list.count("uploaded"), "already_present": outcome_list.count("already_present"),
                  "failed_uploads": len(failures)}
        if not failures:
            self.state.bump(counts, last_ok=time.time(), last_error=None)
            log(f"batch {batch}: {len(stored)} images, {counts['rows']} rows in gs://{self.results_bucket} "
                f"({counts['uploaded']} written, {counts['already_present']} already there), {acked} messages acknowledged")
            return True
        why = "; ".join(sorted({_first_line(exc) if exc is not None else "not confirmed within the stop budget"
                                for exc in failures.values()}))  # a store that is down: said once, not per image
        self.state.bump(counts, last_error=f"batch {batch}: results not stored: {why}")
        log(f"batch {batch}: {len(failures)} of {len(messages)} results not stored ({why}); their {nacked} messages "
            f"nacked for redelivery, {acked} acknowledged")
        return False

    def release(self, frames: list[str]) -> None:
        """Fetched images that will not be run here: back to Pub/Sub at once."""
        for frame in frames:
            (self.spool / frame).unlink(missing_ok=True)
            given = self.held.drop(frame)
            self.give_back(given)
            self.state.count("nacked", len(given))

    def release_waiting(self) -> None:
        """On stop: every fetched image not yet in a batch goes back to Pub/Sub at once."""
        while True:
            try:
                self.release([self.held.ready.get_nowait()])
            except queue.Empty:
                return

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
                if frames and self.stopping.is_set():
                    self.release(frames)  # the stop came while the batch filled: start no client now
                elif frames:
                    self.run_batch(frames)
        finally:
            # the batch in hand is settled (its acks went out on the open stream); what waits is given back once
            # the stream is closed, so it goes to other workers rather than straight back here
            self.stop()
            self.release_waiting()
            future.cancel()
            try:
                future.result(timeout=5)
            except Exception:  # noqa: BLE001, S110 - cancelled: the result is the cancellation itself
                pass
            self.release_waiting()  # fetched while the stream closed
            self.return_deferred()
            self.state.save()
        if code == EXIT["ok"]:
            log("stopped: unfinished images go back to the subscription")
        return code


def _first_line(exc: BaseException | None) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


# --- clients ------------------------------------------------------------------------------------------------


def clients(settings: dict[str, Any]) -> tuple[uploader.GcsStore, Any]:
    """(store, subscriber): the uploader's GCS store for the same settings file (one copy of the emulator /
    credentials file / host identity choice, of the 0600 rule and of the create-only write), and a subscriber
    with the same credentials (the Pub/Sub emulator through PUBSUB_EMULATOR_HOST, as the library reads it)."""
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.")
    from google.cloud import pubsub_v1

    found = uploader.load_settings(Path(settings["config"]))
    try:
        store = uploader.GcsStore(found, uploader.read_credentials(found.credentials))
        store.client()
    except (uploader.UsageError, uploader.StoreError) as exc:
        raise UsageError(str(exc)) from None
    key = str(found.credentials) if found.credentials else None
    subscriber = (pubsub_v1.SubscriberClient.from_service_account_file(key) if key and not os.environ.get(
        "PUBSUB_EMULATOR_HOST") else pubsub_v1.SubscriberClient())
    return store, subscriber


def main(argv: list[str] | None = None,
         make_clients: Callable[[dict[str, Any]], tuple[uploader.GcsStore, Any]] = clients) -> int:
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
        worker.stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return worker.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
