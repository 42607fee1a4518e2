#!/usr/bin/env python3
"""Run the CircularNet client over the frame spool, a batch at a time, and queue its results for upload.

Shipped to the host by both engines (deploy/pipeline.py, roles/pipeline) and run by circularnet-pipeline.timer
as the pipeline's unprivileged user, with the host's python3. Standard library only; Python 3.10+.

    pipeline_run.py run|status --config /etc/circularnet/pipeline.json

`run`, one pass:
1. batches a crash or a failed client left in `<work>` are finished first (a batch keeps its name, so a
   retried batch yields the same object name: the store gets it once);
2. then, while the spool holds frames, up to `batch_frames` of them (oldest first: upstream's names sort in
   capture order) are moved into `<work>/<batch>/frames/`, where `<batch>` is `<first>--<last>` frame stem;
3. the client runs over the batch: `<client.python> <client.dir>/<client.entry> <client.flags>
   --input_directory=<batch>/frames --output_directory=<batch>/out`, Triton's URL in CIRCULARNET_TRITON_URL
   (contract `ndjson`), or upstream's client through client_adapter.py (contract `upstream`);
4. its `<out>/detections.ndjson` is checked (one JSON object a line) and renamed into the upload queue as
   `<queue>/results/detections/<generation>/<host>/<YYYYMMDD>/<batch>.ndjson`, the frames into
   `<queue>/images/frames/<host>/<YYYYMMDD>/` when `upload_images` (else deleted); then the batch is gone.
A batch whose client fails `max_attempts` times is moved to `<work>/.failed/` (kept for a look, counted), so
one bad frame cannot stop the belt's data.

State: `<state>/pipeline.json` {updated, last_run, last_ok, batches, frames, rows, failed_batches, last_error,
queue_files, queue_bytes (the upload queue as this run left it)}
(counters cumulative), read by the health report. Exit: 0 every batch done (or none), 1 a batch failed
(it is retried next run), 2 bad settings.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cnhost
from cnhost.uploader import scan

RESULTS = "detections.ndjson"
FAILED = ".failed"
QUEUED = ".queued"  # in a batch directory: its results are in the queue, only the clean-up is left
ATTEMPTS = ".attempts"
_STEM_DATE = re.compile(r"_(\d{8})_\d{8}$")
REQUIRED = ("host", "generation", "spool", "work", "queue", "state", "client", "triton_url", "batch_frames")
DEFAULTS: dict[str, Any] = {"upload_images": False, "max_attempts": 3, "client_timeout": 600, "max_batches": 100}


class Settings(dict):
    """/etc/circularnet/pipeline.json with the runner's defaults under it."""


def load(path: str) -> Settings:
    try:
        found = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(_fail(2, f"{path}: cannot read the pipeline settings ({exc}); run the deploy"))
    missing = [key for key in REQUIRED if key not in found]
    if missing:
        raise SystemExit(_fail(2, f"{path}: missing {', '.join(missing)}; run the deploy"))
    return Settings({**DEFAULTS, **found})


def _fail(code: int, message: str) -> int:
    print(f"pipeline: {message}", file=sys.stderr)
    return code


def log(message: str) -> None:
    print(f"pipeline: {message}", file=sys.stderr, flush=True)


# --- state -------------------------------------------------------------------------------------------------

def read_state(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        found = {}
    return {"last_run": None, "last_ok": None, "batches": 0, "frames": 0, "rows": 0, "failed_batches": 0,
            "last_error": None, **found}


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Atomically; a full disk loses this update, never the batch."""
    state["updated"] = time.time()
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(state, sort_keys=True) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        log(f"cannot write {path} ({exc})")


# --- batches -----------------------------------------------------------------------------------------------

def frames_in(directory: Path) -> list[Path]:
    """Finished frames, oldest first (names sort in capture order); dot files are still being written."""
    try:
        return sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    except FileNotFoundError:
        return []


def batch_name(frames: list[Path]) -> str:
    return f"{frames[0].stem}--{frames[-1].stem}"


def day_of(batch: str) -> str:
    """YYYYMMDD of a batch's first frame (upstream naming), else today (UTC)."""
    found = _STEM_DATE.search(batch.split("--", 1)[0])
    return found.group(1) if found else time.strftime("%Y%m%d", time.gmtime())


def claim(settings: Settings) -> Path | None:
    """Move the next `batch_frames` frames of the spool into a new batch directory; None when none wait."""
    frames = frames_in(Path(settings["spool"]))[: int(settings["batch_frames"])]
    if not frames:
        return None
    batch = Path(settings["work"]) / batch_name(frames)
    (batch / "frames").mkdir(parents=True, exist_ok=True)
    for frame in frames:
        shutil.move(str(frame), str(batch / "frames" / frame.name))  # a rename on one filesystem
    return batch


def pending(settings: Settings) -> list[Path]:
    """Batch directories a previous run left (crashed, or the client failed), oldest first."""
    work = Path(settings["work"])
    try:
        return sorted(p for p in work.iterdir() if p.is_dir() and not p.name.startswith("."))
    except FileNotFoundError:
        return []


def entry_path(client: dict[str, Any]) -> Path:
    """The client's script: `entry` in the unpacked archive, or under its one top-level directory (GitHub's
    archives hold `<repo>-<commit>/`)."""
    root = Path(client["dir"])
    if not (root / client["entry"]).exists():
        tops = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
        if len(tops) == 1 and (tops[0] / client["entry"]).exists():
            return tops[0] / client["entry"]
    return root / client["entry"]


def client_argv(settings: Settings, batch: Path) -> list[str]:
    """The client's command line for one batch: itself (`ndjson`), or through the adapter (`upstream`)."""
    client = settings["client"]
    if client.get("contract", "ndjson") == "upstream":
        home = str(Path(__file__).resolve().parents[1])  # the package's parent: on a host, cnhost.HOME
        return [*cnhost.argv("client_adapter", home, client["python"]), "run", f"--entry={entry_path(client)}",
                f"--batch={batch}",
                f"--source={settings['host']}", f"--columns={json.dumps(client['columns'])}",
                f"--triton-grpc={settings.get('triton_grpc') or '127.0.0.1:8001'}", "--", *client["flags"]]
    return [client["python"], str(entry_path(client)), *client["flags"],
            f"--input_directory={batch / 'frames'}", f"--output_directory={batch / 'out'}"]


def run_client(settings: Settings, batch: Path, give_up: Callable[[], bool] | None = None) -> str | None:
    """The client over one batch; None when it succeeded, else why not (its last words).

    `give_up` (the bucket worker's stop budget) is asked twice a second while the client runs: when it turns true
    the client is killed, as at `client_timeout`, and the batch counts as failed."""
    shutil.rmtree(batch / "out", ignore_errors=True)
    (batch / "out").mkdir()
    env = {**os.environ, "CIRCULARNET_TRITON_URL": settings["triton_url"]}
    try:
        proc = subprocess.Popen(client_argv(settings, batch), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    except OSError as exc:
        return f"the client did not start ({exc})"
    deadline = time.monotonic() + int(settings["client_timeout"])
    while True:
        left = deadline - time.monotonic()
        try:
            _, stderr = proc.communicate(timeout=max(0.0, min(left, 0.5) if give_up else left))
            break
        except subprocess.TimeoutExpired:  # retrying communicate() loses no output (the subprocess docs)
            stopped = give_up is not None and give_up()
            if not stopped and time.monotonic() < deadline:
                continue
            proc.kill()
            proc.communicate()
            return "the client was stopped: the worker is stopping" if stopped else \
                f"the client ran over {settings['client_timeout']} s"
    for line in stderr.splitlines()[-20:]:
        log(f"client: {line}")
    if proc.returncode != 0:
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        return f"the client exited {proc.returncode}: {last}"
    return None


def rows_of(results: Path) -> int:
    """Lines of the client's NDJSON, each proven to be one JSON object (a torn file is a failed batch)."""
    if not results.exists():
        return 0
    count = 0
    with results.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if not isinstance(json.loads(line), dict):  # a ValueError too when not JSON at all
                raise ValueError(f"{results} line {number} is not a JSON object")  # noqa: TRY004
            count += 1
    return count


def enqueue(source: Path, dest: Path) -> None:
    """`source` into the queue under `dest`, atomically: the uploader never sees half a file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.move(str(source), str(tmp))
    os.replace(tmp, dest)


def queue_batch(settings: Settings, batch: Path) -> tuple[int, int]:
    """The batch's results (and frames, when asked) into the upload queue; (frames, rows)."""
    day, host, queue = day_of(batch.name), settings["host"], Path(settings["queue"])
    frames = frames_in(batch / "frames")
    results = batch / "out" / RESULTS
    rows = rows_of(results)
    if rows:
        enqueue(results, queue / "results" / "detections" / settings["generation"] / host / day / f"{batch.name}.ndjson")
    if settings["upload_images"]:
        for frame in frames:
            enqueue(frame, queue / "images" / "frames" / host / day / frame.name)
    (batch / QUEUED).touch()
    return len(frames), rows


def attempts(batch: Path) -> int:
    try:
        return int((batch / ATTEMPTS).read_text())
    except (OSError, ValueError):
        return 0


def process(settings: Settings, batch: Path, state: dict[str, Any]) -> bool:
    """One batch to the queue; False when its client failed (it stays for the next run, or is set aside)."""
    if not (batch / QUEUED).exists():
        problem = run_client(settings, batch)
        if problem is None:
            try:
                frames, rows = queue_batch(settings, batch)
            except ValueError as exc:
                problem = str(exc)
            else:
                state["frames"] += frames
                state["rows"] += rows
                state["batches"] += 1
                log(f"batch {batch.name}: {frames} frames, {rows} rows queued")
        if problem is not None:
            tried = attempts(batch) + 1
            (batch / ATTEMPTS).write_text(str(tried))
            state["last_error"] = f"batch {batch.name}: {problem}"
            log(state["last_error"] + f" (attempt {tried} of {settings['max_attempts']})")
            if tried >= int(settings["max_attempts"]):
                aside = Path(settings["work"]) / FAILED / batch.name
                aside.parent.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(aside, ignore_errors=True)
                os.replace(batch, aside)
                state["failed_batches"] += 1
                log(f"batch {batch.name} set aside in {aside} after {tried} attempts")
            return False
    shutil.rmtree(batch)
    return True


def run(settings: Settings) -> int:
    state_file = Path(settings["state"]) / "pipeline.json"
    state = read_state(state_file)
    state["last_run"] = time.time()
    ok = True
    for batch in pending(settings):
        ok = process(settings, batch, state) and ok
        write_state(state_file, state)
    if ok:
        for _ in range(int(settings["max_batches"])):
            claimed = claim(settings)
            if claimed is None:
                break
            if not process(settings, claimed, state):
                ok = False
                break
            write_state(state_file, state)
    if ok:
        state["last_ok"] = time.time()
        state["last_error"] = None
    # The queue's depth, counted each run whether the uploader runs or not: a stopped uploader counts nothing,
    # and the health report (and the stalled-uploads alert) would see an empty queue.
    items = scan(Path(settings["queue"]))
    state["queue_files"], state["queue_bytes"] = len(items), sum(item.size for item in items)
    write_state(state_file, state)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("run", "status"))
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    settings = load(args.config)
    if args.mode == "status":
        print(json.dumps(read_state(Path(settings["state"]) / "pipeline.json"), sort_keys=True))
        return 0
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
