"""Benchmark one bucket worker (issues 12, 21): images per second from the images queue to results in the bucket.

    .venv/bin/python bench/worker.py [--images 64,256] [--max-messages 64] [--json]

The processes a worker VM of the group runs, on this machine's loopback: Google's Pub/Sub emulator (the queue;
a real Pub/Sub server), the GCS emulator (STAND-IN for the images bucket), a real CPU Triton serving the
sandbox's STAND-IN model from the site's wheelhouse, `cnhost/bucket_worker.py` running the site's STAND-IN
client (TF generation flags, 1024x1024x3 tensors derived from each frame's bytes) with the local stack's
pipeline settings, and `cnhost/uploader.py` beside it (a worker VM runs both). For each count N, N frames of the
site's replay footage are stored in the images bucket and their OBJECT_FINALIZE notifications published at once
(as Cloud Storage does on upload); two clocks run: until the worker has acknowledged all N, and until all N
results are objects in the results bucket (the GCS emulator, STAND-IN). Reported: seconds and images/s for each,
batches, rows, and the worker's acked/nacked counters. A worker that acks only once the result is in the
bucket has both clocks alike; one that acked rows still in its local queue (before issue 21) acked sooner,
and its results reached the bucket when the uploader sent them. Run this script from another checkout's tree
to measure that checkout's worker (it imports the worker and the tests' helpers from the tree it lies in). Not
inside a sandbox host: the site has no Pub/Sub emulator, and the worker's work is the same process tree either
way. Needs the machine's prerequisites (the Pub/Sub emulator package) and the site content in the cache (built
on first use, as the tests build it).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnctl.config import load_stack
from cnctl.hostvars import host_vars
from cnctl.sandbox.site import build_site_content
from deploy.steps import role_data
from tests.unit.test_bucket_worker import EMULATOR, SCRIPT, Site, gcs_emulator, pubsub_emulator
from tests.unit.test_site_triton import load, triton_server

TIMEOUT_S = 1800


def say(message: str) -> None:
    print(f"[bench/worker] {message}", file=sys.stderr, flush=True)


def frames(footage: Path) -> list[bytes]:
    with zipfile.ZipFile(footage) as zf:
        return [zf.read(n) for n in sorted(zf.namelist()) if n.lower().endswith((".jpg", ".jpeg"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="64,256", help="images per burst, comma-separated")
    parser.add_argument("--max-messages", type=int, default=None,
                        help="images the worker holds at once (default: the local stack's pipeline.maxMessages)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.images.split(",") if c.strip()]
    if not counts or any(c < 1 or c > 5000 for c in counts):
        parser.error(f"--images {args.images}: give counts from 1 to 5000, e.g. 64,256")
    if not EMULATOR.exists():
        parser.error(f"{EMULATOR} is missing: `sudo python3 cnctl/sandbox/prereqs.py ensure` installs it")
    cfg = load_stack("local")
    wants = host_vars(cfg, "servers", cfg.fleets.servers[0])
    defaults = role_data("pipeline")
    max_messages = args.max_messages or int(wants["cn_pipeline_max_messages"])
    content = build_site_content(Path(os.environ.get("CNCTL_CACHE") or "/var/cache/cnctl"), progress=say)
    assert content.client is not None and content.footage is not None
    shots = frames(content.footage.path)
    rows_out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cnctl-bench-worker-") as tmp, contextlib.ExitStack() as running:
        work = Path(tmp)
        say("Triton (CPU) with the stand-in model, the Pub/Sub and GCS emulators")
        (work / "triton").mkdir()
        triton_url, _, _ = running.enter_context(triton_server(content, work / "triton"))
        status, body = load(triton_url)
        if status != 200:
            raise RuntimeError(f"Triton did not load the stand-in model: {status} {body[:500]!r}")
        pubsub = running.enter_context(pubsub_emulator())
        gcs = running.enter_context(gcs_emulator(work / "gcs"))
        (work / "site").mkdir()
        site = Site(work / "site", pubsub, gcs)
        running.callback(site.close)  # the worker's process group, by its PID, and the subscriber
        client = work / "client"
        with zipfile.ZipFile(io.BytesIO(content.client.path.read_bytes())) as zf:
            zf.extractall(client)
        settings = site.settings(
            "worker", triton_url=triton_url, batch_frames=int(wants["cn_pipeline_batch_frames"]),
            client={"python": sys.executable, "dir": str(client), "entry": wants["cn_pipeline_client_entry"],
                    "flags": list(wants["cn_pipeline_flags"])},
            worker={"subscription": site.subscription, "max_messages": max_messages,
                    "max_lease_seconds": defaults["pipeline_worker_max_lease_seconds"],
                    "lease_extension_seconds": defaults["pipeline_worker_lease_extension_seconds"],
                    "batch_seconds": defaults["pipeline_worker_batch_seconds"]})
        worker = subprocess.Popen([sys.executable, str(SCRIPT), "run", "--config", str(settings)],
                                  env={**os.environ, "PUBSUB_EMULATOR_HOST": site.pubsub},
                                  stdout=subprocess.DEVNULL, stderr=open(work / "worker.log", "wb"),  # noqa: SIM115
                                  start_new_session=True)
        site.procs.append(worker)  # stopped with its group by site.close
        sender = subprocess.Popen([sys.executable, str(SCRIPT.with_name("uploader.py")), "run", "--config", str(settings)],
                                  stdout=subprocess.DEVNULL, stderr=open(work / "uploader.log", "wb"),  # noqa: SIM115
                                  start_new_session=True)
        site.procs.append(sender)
        results = site.storage.bucket(site.results_bucket)
        sent = 0
        for count in counts:
            say(f"{count} images: stored, then their notifications published at once")
            names = [f"frames/bench/{sent + i:06d}.jpg" for i in range(count)]
            for i, name in enumerate(names):
                site.storage.bucket(site.bucket).blob(name).upload_from_string(shots[i % len(shots)],
                                                                               content_type="image/jpeg")
            before = site.state("worker")
            acked0, batches0, rows0 = (int(before.get(k, 0)) for k in ("acked", "batches", "rows"))
            stored0 = sum(1 for _ in results.list_blobs(prefix="detections/"))
            started = time.monotonic()
            for name in names:
                site.notify(name, site.generation(name))
            acked_s = stored_s = None
            while acked_s is None or stored_s is None:
                for proc, what in ((worker, "worker"), (sender, "uploader")):
                    if proc.poll() is not None:
                        raise RuntimeError(f"the {what} exited:\n{(work / f'{what}.log').read_text()[-2000:]}")
                if time.monotonic() - started > TIMEOUT_S:
                    raise RuntimeError(f"{count} images not acknowledged and stored within {TIMEOUT_S} s")
                time.sleep(0.2)
                if acked_s is None and int(site.state("worker").get("acked", 0)) - acked0 >= count:
                    acked_s = time.monotonic() - started
                if stored_s is None and sum(1 for _ in results.list_blobs(prefix="detections/")) - stored0 >= count:
                    stored_s = time.monotonic() - started
            state = site.state("worker")
            rows_out.append({"images": count, "acked_s": round(acked_s, 1), "acked_per_s": round(count / acked_s, 2),
                             "stored_s": round(stored_s, 1), "stored_per_s": round(count / stored_s, 2),
                             "batches": int(state["batches"]) - batches0, "rows": int(state["rows"]) - rows0,
                             "acked": int(state["acked"]) - acked0, "nacked": int(state.get("nacked", 0))})
            sent += count
    if args.json:
        print(json.dumps({"max_messages": max_messages, "runs": rows_out}, indent=2))
        return 0
    print(f"one bucket worker, max_messages {max_messages}, batch of {wants['cn_pipeline_batch_frames']} frames, CPU Triton")
    print(f"{'images':>7} {'acked s':>8} {'acked/s':>8} {'stored s':>9} {'stored/s':>9} {'batches':>8} {'rows':>6} "
          f"{'acked':>6} {'nacked':>7}")
    for r in rows_out:
        print(f"{r['images']:>7} {r['acked_s']:>8} {r['acked_per_s']:>8} {r['stored_s']:>9} {r['stored_per_s']:>9} "
              f"{r['batches']:>8} {r['rows']:>6} {r['acked']:>6} {r['nacked']:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
