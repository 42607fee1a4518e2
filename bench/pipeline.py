"""Benchmark the pipeline's uploader (cnhost/uploader.py) against the GCS emulator and moto's S3, side by side.

For each store, behind a TCP proxy on loopback that can be down (nothing listens: connection refused) or cut
connections:

1. outage: N small NDJSON results (a few hundred bytes each) are queued while the store is unreachable; a
   `drain` then fails and loses nothing; the store comes back and a timed `drain` (a fresh process, as an
   operator or the service would start it) empties the queue. Objects are counted afterwards: one per file.
2. retries: M more results are sent through a proxy that drops every k-th answer and closes the connection
   (the store kept the object, the uploader never heard so: the case that makes duplicates and re-sent bytes),
   `drain` again after each failure until the queue is empty. Counted: payload bytes the uploader put on the
   wire against the unique bytes, split into bytes of objects the store already held (a create-only write
   refused: target 0) and bytes of attempts that never landed (a cut before the store kept the object: those
   must be sent again); objects against files. Target: 0 duplicates, 0 bytes of stored objects re-sent.

    .venv/bin/python bench/pipeline.py [--files 10000] [--cut-files 1000] [--cut-every 37] [--json]

The GCS emulator rewrites one JSON index of every object on each write, so its drain slows as the bucket grows
(quadratic: ~50 files/s near empty, ~2 at 3,500 objects, measured): that column measures the emulator more than the
uploader. `--kinds s3` runs one store only.

Frames per second through the pipeline on a sandbox host (spool -> client -> queue -> store): bench/pipeline_host.py.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnctl.sandbox.relay import Relay, free_port
from cnctl.sandbox.site import emulators
from cnhost import uploader

KINDS = {"gcs": "GCS emulator", "s3": "moto S3"}
BUCKETS = {"results": "bench-results", "images": "bench-images"}
S3_KEYS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}


class Proxy(Relay):
    """The store through a relay. `down()`: nothing listens. `cut_every` k: every k-th chunk the store sends
    back is dropped and the connection closed. Counts bytes each way."""

    def __init__(self, upstream: int) -> None:
        super().__init__(upstream)
        self.cut_every, self.chunks, self.cuts = 0, 0, 0
        self.bytes_up = self.bytes_down = 0

    def passing(self, data: bytes, upward: bool, flow: dict[str, Any]) -> bool:
        with self.lock:
            if upward:
                self.bytes_up += len(data)
                return True
            self.chunks += 1
            if self.cut_every and self.chunks % self.cut_every == 0:
                self.cuts += 1
                return False
            self.bytes_down += len(data)
            return True


class Site:
    """The two stores as processes (as the sandbox site runs them), each behind a proxy."""

    def __init__(self, work: Path) -> None:
        self.procs: list[subprocess.Popen] = []
        self.urls: dict[str, str] = {}
        self.proxies: dict[str, Proxy] = {}
        gcs_port, s3_port = free_port(), free_port()
        self.procs.append(subprocess.Popen(emulators.gcs_argv("127.0.0.1", gcs_port),
                                           env={**os.environ, **emulators.gcs_env(work / "gcs")},
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.procs.append(subprocess.Popen(emulators.moto_argv("127.0.0.1", s3_port), stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL))
        self.urls = {"gcs": f"http://127.0.0.1:{gcs_port}", "s3": f"http://127.0.0.1:{s3_port}"}
        for url in emulators.health_urls(self.urls["gcs"], self.urls["s3"]):
            _wait(url)
        self.proxies = {"gcs": Proxy(gcs_port), "s3": Proxy(s3_port)}

    def stop(self) -> None:
        for proxy in self.proxies.values():
            proxy.down()
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Bucket:
    """Direct access to a store (not through the proxy): make buckets, count objects."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        if kind == "gcs":
            warnings.filterwarnings("ignore", category=FutureWarning)
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import storage

            self.client: Any = storage.Client(project="bench", credentials=AnonymousCredentials(),
                                              client_options={"api_endpoint": url})
        else:
            import boto3  # type: ignore[import-untyped, unused-ignore]

            self.client = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                                       aws_access_key_id="bench", aws_secret_access_key="bench")

    def make(self, name: str) -> None:
        if self.kind == "gcs":
            self.client.create_bucket(name)
        else:
            self.client.create_bucket(Bucket=name)

    def count(self, name: str, prefix: str) -> tuple[int, int]:
        """(objects, bytes) under `prefix`."""
        if self.kind == "gcs":
            blobs = list(self.client.list_blobs(name, prefix=prefix))
            return len(blobs), sum(int(b.size or 0) for b in blobs)
        objects = nbytes = 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=name, Prefix=prefix):
            for obj in page.get("Contents", []):
                objects += 1
                nbytes += obj["Size"]
        return objects, nbytes


def enqueue(queue: Path, batch: str, count: int) -> int:
    """`count` NDJSON results of one day, as the pipeline runner leaves them; returns their bytes."""
    directory = queue / "results" / "detections" / "tf" / "belt-1" / batch
    directory.mkdir(parents=True, exist_ok=True)
    total = 0
    for n in range(count):
        row = {"particle": n, "detection_scores": 0.87, "class_name": "PET_bottle", "bbox": [12, 40, 300, 410],
               "image_name": f"belt1_{batch}_{n:08d}.jpg", "color": "transparent", "timestamp": 1772366400 + n}
        data = (json.dumps(row) + "\n").encode() * 2
        (directory / f"belt1_{batch}_{n:08d}--belt1_{batch}_{n:08d}.ndjson").write_bytes(data)
        total += len(data)
    return total


def settings(work: Path, kind: str, port: int) -> Path:
    path = work / f"{kind}.json"
    path.write_text(json.dumps({
        "host": "belt-1", "generation": "tf", "queue": str(work / kind / "queue"), "state": str(work / kind / "state"),
        "storage": {"kind": kind, "endpoint": f"http://127.0.0.1:{port}", "project": None, "buckets": BUCKETS,
                    "credentials": None},
        "queue_budget_mib": 1024, "retry": {"min_seconds": 0.05, "max_seconds": 0.5}, "poll_seconds": 1}))
    return path


def drain_cli(config: Path) -> tuple[int, dict[str, Any], float]:
    """`uploader.py drain` as a fresh process: (exit code, its JSON line, wall seconds)."""
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "cnhost.uploader", "drain", "--config", str(config)], capture_output=True,
                          text=True, check=False, env={**os.environ, **S3_KEYS})
    seconds = time.monotonic() - began
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}, seconds


def drain_here(config: Path) -> tuple[int, dict[str, Any]]:
    """The same drain in this process (the retry loop runs it dozens of times)."""
    settings = uploader.load_settings(config)
    store = uploader.make_store(settings, uploader.read_credentials(settings.credentials))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = uploader.Uploader(settings, store).drain()  # not main(): Ctrl-C must stop the benchmark
    return code, json.loads(out.getvalue())


def queued(work: Path, kind: str) -> int:
    return sum(1 for p in (work / kind / "queue").rglob("*") if p.is_file())


def outage(work: Path, site: Site, kind: str, files: int) -> dict[str, Any]:
    proxy, config = site.proxies[kind], settings(work, kind, site.proxies[kind].port)
    bucket = Bucket(kind, site.urls[kind])
    proxy.down()
    unique = enqueue(work / kind / "queue", "20260301", files)
    code_down, _, _ = drain_cli(config)
    lost = files - queued(work, kind)
    proxy.up()
    code, out, wall = drain_cli(config)
    objects, nbytes = bucket.count(BUCKETS["results"], "detections/tf/belt-1/20260301/")
    return {"files": files, "unique_bytes": unique, "drain_while_down_exit": code_down, "lost_while_down": lost,
            "drain_exit": code, "drain_wall_s": round(wall, 2), "drain_s": out.get("seconds"),
            "files_per_s": round(files / out["seconds"], 1) if out.get("seconds") else None,
            "objects": objects, "object_bytes": nbytes, "sent_bytes": out.get("sent_bytes"),
            "requests": out.get("requests"), "wire_bytes_up": proxy.bytes_up}


def retries(work: Path, site: Site, kind: str, files: int, cut_every: int) -> dict[str, Any]:
    proxy, config = site.proxies[kind], settings(work, kind, site.proxies[kind].port)
    bucket = Bucket(kind, site.urls[kind])
    unique = enqueue(work / kind / "queue", "20260302", files)
    proxy.cut_every, proxy.cuts = cut_every, 0
    sent = resent = present = uploaded = drains = 0
    began = time.monotonic()
    while True:
        drains += 1
        code, out = drain_here(config)
        sent += out["sent_bytes"]
        resent += out["resent_bytes"]
        present += out["already_present"]
        uploaded += out["uploaded_files"]
        if code == 0 or drains > 10 * files:
            break
    seconds = time.monotonic() - began
    proxy.cut_every = 0
    objects, nbytes = bucket.count(BUCKETS["results"], "detections/tf/belt-1/20260302/")
    return {"files": files, "unique_bytes": unique, "cuts": proxy.cuts, "drains": drains, "seconds": round(seconds, 2),
            "uploaded_files": uploaded, "already_present": present, "sent_bytes": sent,
            "resent_bytes": resent, "lost_in_cuts_bytes": sent - unique - resent, "objects": objects, "object_bytes": nbytes,
            "duplicates": objects - files, "left_in_queue": queued(work, kind)}


ROWS = [  # (label, section, key, format)
    ("files queued during the outage", "outage", "files", "{}"),
    ("drain while down: exit / files lost", "outage", ("drain_while_down_exit", "lost_while_down"), "{} / {}"),
    ("drain after the outage: exit", "outage", "drain_exit", "{}"),
    ("  wall seconds (fresh process)", "outage", "drain_wall_s", "{:.2f}"),
    ("  seconds inside drain", "outage", "drain_s", "{:.2f}"),
    ("  files per second", "outage", "files_per_s", "{:.0f}"),
    ("  requests", "outage", "requests", "{}"),
    ("  objects / files", "outage", ("objects", "files"), "{} / {}"),
    ("retries: files", "retries", "files", "{}"),
    ("  connections cut after the store answered", "retries", "cuts", "{}"),
    ("  drains until empty", "retries", "drains", "{}"),
    ("  uploaded / already present", "retries", ("uploaded_files", "already_present"), "{} / {}"),
    ("  payload bytes sent / unique", "retries", ("sent_bytes", "unique_bytes"), "{} / {}"),
    ("  bytes re-sent of objects already stored (target 0)", "retries", "resent_bytes", "{}"),
    ("  bytes re-sent of attempts cut before landing", "retries", "lost_in_cuts_bytes", "{}"),
    ("  duplicate objects (target 0)", "retries", "duplicates", "{}"),
]


def cell(results: dict[str, Any], section: str, key: Any, fmt: str) -> str:
    values = [results.get(section, {}).get(k) for k in (key if isinstance(key, tuple) else (key,))]
    return "n/a" if any(v is None for v in values) else fmt.format(*values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000, help="results queued during the outage")
    parser.add_argument("--cut-files", type=int, default=1_000, help="results sent through cut connections")
    parser.add_argument("--cut-every", type=int, default=37, help="drop every k-th answer chunk")
    parser.add_argument("--kinds", default="gcs,s3", help="stores to run, comma-separated (gcs, s3)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    kinds = {k: KINDS[k] for k in args.kinds.split(",") if k in KINDS}

    work = Path(tempfile.mkdtemp(prefix="cnctl-bench-pipeline-", dir="/var/tmp"))
    site = Site(work)
    results: dict[str, dict[str, Any]] = {}
    try:
        for kind in kinds:
            bucket = Bucket(kind, site.urls[kind])
            for name in BUCKETS.values():
                bucket.make(name)
            for name, value in S3_KEYS.items():
                os.environ.setdefault(name, value)
            results[kind] = {"outage": outage(work, site, kind, args.files),
                             "retries": retries(work, site, kind, args.cut_files, args.cut_every)}
    finally:
        site.stop()
        shutil.rmtree(work, ignore_errors=True)

    ok = all(r["outage"]["objects"] == r["outage"]["files"] and r["outage"]["lost_while_down"] == 0
             and r["retries"]["duplicates"] == 0 and r["retries"]["resent_bytes"] == 0
             and r["retries"]["left_in_queue"] == 0 for r in results.values())
    if args.json:
        print(json.dumps({"results": results, "targets_met": ok}, indent=2))
        return 0 if ok else 1
    width = max(len(label) for label, *_ in ROWS)
    print(f"{'':<{width}}  " + "  ".join(f"{name:>14}" for name in kinds.values()))
    for label, section, key, fmt in ROWS:
        print(f"{label:<{width}}  " + "  ".join(f"{cell(results[k], section, key, fmt):>14}" for k in kinds))
    print(f"targets (every file stored once, nothing lost, 0 duplicates, 0 bytes re-sent): "
          f"{'met' if ok else 'NOT MET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
