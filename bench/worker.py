"""Benchmark one bucket worker (issue 12): images per second from the images queue to result rows.

    .venv/bin/python bench/worker.py [--images 64,256] [--max-messages 64] [--json]

The processes a worker VM of the group runs, on this machine's loopback: Google's Pub/Sub emulator (the queue;
a real Pub/Sub server), the GCS emulator (STAND-IN for the images bucket), a real CPU Triton serving the
sandbox's STAND-IN model from the site's wheelhouse, and `deploy/bucket_worker.py` running the site's STAND-IN
client (TF generation flags, 1024x1024x3 tensors derived from each frame's bytes) with the local stack's
pipeline settings. For each count N, N frames of the site's replay footage are stored in the bucket and their
OBJECT_FINALIZE notifications published at once (as Cloud Storage does on upload); the clock runs until the
worker has acknowledged all N (each only after its rows were queued). Reported: seconds, images/s, batches,
rows, and the worker's acked/nacked counters. Not inside a sandbox host: the site has no Pub/Sub emulator, and
the worker's work is the same process tree either way. Needs the machine's prerequisites (the Pub/Sub emulator
package) and the site content in the cache (built on first use, as the tests build it).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnctl.config import load_stack
from cnctl.hostvars import host_vars
from cnctl.sandbox.site import build_site_content, emulators, triton
from deploy.steps import role_data
from tests.unit.conftest import free_port
from tests.unit.test_bucket_worker import EMULATOR, SCRIPT, Site
from tests.unit.test_uploader import _wait_until_serving

TIMEOUT_S = 1800


def say(message: str) -> None:
    print(f"[bench/worker] {message}", file=sys.stderr, flush=True)


def start(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})}, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """The process group, by its PID: SIGTERM, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen within {seconds:.0f} s") from None
            time.sleep(0.2)


def load_model(base: str, log: Path, seconds: float = 120) -> None:
    """Ask Triton (explicit model control) to load the stand-in model; retried while its HTTP side starts."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            request = urllib.request.Request(f"{base}/v2/repository/models/circularnet/load", data=b"", method="POST")
            urllib.request.urlopen(request, timeout=60).close()
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Triton did not load the stand-in model ({exc}):\n{log.read_text()[-2000:]}") from None
            time.sleep(1)


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
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="cnctl-bench-worker-") as tmp:
        work = Path(tmp)
        try:
            say("Triton (CPU) with the stand-in model, the Pub/Sub and GCS emulators")
            install = triton.unpack(content.wheelhouse_dir, work / "triton")
            repo = work / "repo"
            repo.mkdir()
            with zipfile.ZipFile(content.model_archive) as zf:
                zf.extractall(repo)
            triton_port, pubsub_port, gcs_port = free_port(), free_port(), free_port()
            procs.append(start(install.command(repo, triton_port, exit_timeout=1), work / "triton.log", install.env))
            procs.append(start([str(EMULATOR), "--host=127.0.0.1", f"--port={pubsub_port}"], work / "pubsub.log"))
            (work / "gcs").mkdir()
            procs.append(start(emulators.gcs_argv("127.0.0.1", gcs_port), work / "gcs.log", emulators.gcs_env(work / "gcs")))
            wait_port(pubsub_port, procs[1], "the Pub/Sub emulator")
            gcs = f"http://127.0.0.1:{gcs_port}"
            _wait_until_serving(f"{gcs}/storage/v1/b?project=cnctl-sandbox", procs[2])
            wait_port(triton_port, procs[0], "tritonserver")
            load_model(f"http://127.0.0.1:{triton_port}", work / "triton.log")

            (work / "site").mkdir()
            site = Site(work / "site", f"127.0.0.1:{pubsub_port}", gcs)
            client = work / "client"
            with zipfile.ZipFile(io.BytesIO(content.client.path.read_bytes())) as zf:
                zf.extractall(client)
            settings = site.settings(
                "worker", triton_url=f"http://127.0.0.1:{triton_port}", batch_frames=int(wants["cn_pipeline_batch_frames"]),
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
            procs.append(worker)
            sent = 0
            for count in counts:
                say(f"{count} images: stored, then their notifications published at once")
                names = [f"frames/bench/{sent + i:06d}.jpg" for i in range(count)]
                for i, name in enumerate(names):
                    site.storage.bucket(site.bucket).blob(name).upload_from_string(shots[i % len(shots)],
                                                                                   content_type="image/jpeg")
                before = site.state("worker")
                acked0, batches0, rows0 = (int(before.get(k, 0)) for k in ("acked", "batches", "rows"))
                started = time.monotonic()
                for name in names:
                    site.notify(name, site.generation(name))
                while int(site.state("worker").get("acked", 0)) - acked0 < count:
                    if worker.poll() is not None:
                        raise RuntimeError(f"the worker exited:\n{(work / 'worker.log').read_text()[-2000:]}")
                    if time.monotonic() - started > TIMEOUT_S:
                        raise RuntimeError(f"{count} images not acknowledged within {TIMEOUT_S} s")
                    time.sleep(0.2)
                seconds = time.monotonic() - started
                state = site.state("worker")
                rows_out.append({"images": count, "seconds": round(seconds, 1), "images_per_s": round(count / seconds, 2),
                                 "batches": int(state["batches"]) - batches0, "rows": int(state["rows"]) - rows0,
                                 "acked": int(state["acked"]) - acked0, "nacked": int(state.get("nacked", 0))})
                sent += count
            site.subscriber.close()
        finally:
            for proc in reversed(procs):
                stop(proc)
    if args.json:
        print(json.dumps({"max_messages": max_messages, "runs": rows_out}, indent=2))
        return 0
    print(f"one bucket worker, max_messages {max_messages}, batch of {wants['cn_pipeline_batch_frames']} frames, CPU Triton")
    print(f"{'images':>7} {'seconds':>8} {'images/s':>9} {'batches':>8} {'rows':>6} {'acked':>6} {'nacked':>7}")
    for r in rows_out:
        print(f"{r['images']:>7} {r['seconds']:>8} {r['images_per_s']:>9} {r['batches']:>8} {r['rows']:>6} "
              f"{r['acked']:>6} {r['nacked']:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
