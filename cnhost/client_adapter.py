#!/usr/bin/env python3
"""Run upstream's CircularNet client over one local batch, its BigQuery rows written as NDJSON instead.

Upstream's TF-generation client (tensorflow/models, Triton_TF_Cloud_Deployment/client/inference_pipeline.py) is
written for one cloud VM: it takes `--input_directory` and `--output_directory` as gs:// paths it copies with
`gsutil -m cp -r`, reads `labels.csv` and `models/official/...` from its working directory, and appends the
rows it finds to BigQuery (`big_query_ops.create_table`, `ingest_data`). A device has no BigQuery rights and
may have no network for hours, and its frames are on its own disk. This adapter runs that client unchanged:

    client_adapter.py run --entry <archive>/.../client/inference_pipeline.py --batch <work>/<batch> \
        --source <host> --columns '<json [{name, type}]>' --triton-grpc 127.0.0.1:8001 -- <the generation's flags>

1. a fresh working directory `<batch>/upstream/` holding `labels.csv` and `models` (links into the archive);
2. `gsutil` on the client's PATH is this script (`client_adapter.py gsutil ...`): `cp -r` between local
   directories and two gs:// names that exist only here — gs://cnctl-batch/<source> is the batch's frames,
   gs://cnctl-output is `<batch>/out/upstream/` — and nothing else (any other use fails, naming it);
3. the modules `big_query_ops` (and the older `biq_query_ops`) are this adapter's: `create_table` does
   nothing, `ingest_data(df, ...)` appends one JSON object per row to `<batch>/out/detections.ndjson`, with
   exactly the generation's columns (`--columns`, the catalog's table schema) cast to their types — the rows
   the runner queues for upload and the cloud loads into the table;
4. upstream dials Triton at a fixed `localhost:8001` (tritonclient.grpc); the adapter points that at the
   host's Triton (`--triton-grpc`, the stack's bind address and gRPC port: a worker in compute.mode group binds
   its private interface only);
5. the client's `main` runs as `__main__`, its own directory first on sys.path, the archive's root next
   (upstream's helpers import `official.*` from it).

Upstream's client catches its own failures and exits 0 whatever happened; the adapter does not let a batch
pass as done when the rows were not all written: exit 1 when `ingest_data` failed or the client died, so
that the runner retries the batch (its results file is rewritten from empty each attempt). A batch with no
object at all is a valid empty results file. Exit 2 on bad arguments. Standard library only (the client's
own venv runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import sys
import types
from pathlib import Path
from typing import Any

RESULTS = "detections.ndjson"
BATCH_BUCKET = "cnctl-batch"
OUTPUT_BUCKET = "cnctl-output"
# upstream renamed the module once (biq_query_ops.py, then big_query_ops.py): both names are ours
BIGQUERY_MODULES = ("big_query_ops", "biq_query_ops")
CASTS = {"INTEGER": int, "INT64": int, "FLOAT": float, "FLOAT64": float, "STRING": str, "BOOLEAN": bool}
ROOTS_ENV = "CNCTL_ADAPTER_GS_ROOTS"
UPSTREAM_TRITON = ("localhost:8001", "127.0.0.1:8001")  # triton_server_inference.py's fixed address


def log(message: str) -> None:
    print(f"client_adapter: {message}", file=sys.stderr, flush=True)


# --- the rows ---------------------------------------------------------------------------------------------


class NdjsonTable:
    """What upstream's big_query_ops does to a table, done to one NDJSON file: rows appended, nothing created."""

    def __init__(self, path: Path, columns: list[dict[str, str]]):
        self.path, self.columns = path, columns
        self.rows = 0
        self.error: str | None = None

    def create_table(self, project_id: Any = None, dataset_id: Any = None, table_id: Any = None,
                     overwrite: bool = False) -> None:
        """The table is the cloud's (issue 9's transfer): nothing to create on a device."""

    def ingest_data(self, df: Any, project_id: Any = None, dataset_id: Any = None, table_id: Any = None) -> None:
        """Every row of `df` (a pandas DataFrame) as one JSON object of the table's columns, appended."""
        try:
            lines = [json.dumps(self.row(record), sort_keys=True) + "\n" for record in df.to_dict(orient="records")]
        except (KeyError, TypeError, ValueError) as exc:
            self.error = f"ingest_data: {exc!r}"
            raise
        with self.path.open("a", encoding="utf-8") as fh:
            fh.writelines(lines)
        self.rows += len(lines)

    def row(self, record: dict[str, Any]) -> dict[str, Any]:
        """One record as the table takes it: each column present, cast to its type (numpy's too)."""
        missing = [c["name"] for c in self.columns if c["name"] not in record]
        if missing:
            raise KeyError(f"the client's rows lack column(s) {', '.join(missing)}")
        return {c["name"]: CASTS[c["type"]](record[c["name"]]) for c in self.columns}

    def module(self, name: str) -> types.ModuleType:
        """A module object that stands where upstream imports `name` from."""
        module = types.ModuleType(name, f"client_adapter: {name} writes {self.path}")
        module.create_table = self.create_table  # type: ignore[attr-defined]
        module.ingest_data = self.ingest_data  # type: ignore[attr-defined]
        return module


# --- gsutil -----------------------------------------------------------------------------------------------


def local_path(url: str, roots: dict[str, str]) -> Path:
    """A gs:// name of this adapter (or a local path) as the local path it stands for."""
    if not url.startswith("gs://"):
        return Path(url)
    bucket, _, rest = url[len("gs://"):].partition("/")
    if bucket not in roots:
        raise ValueError(f"{url}: only gs://{BATCH_BUCKET} and gs://{OUTPUT_BUCKET} exist here")
    return Path(roots[bucket]) / rest


def gsutil(argv: list[str], roots: dict[str, str]) -> int:
    """`gsutil [-m] cp -r SRC... DST` between local directories, as gsutil names its copies."""
    args = [a for a in argv if a != "-m"]
    if len(args) < 4 or args[0] != "cp" or args[1] != "-r":
        log(f"gsutil {' '.join(argv)}: this adapter's gsutil only copies (`cp -r SRC DST`)")
        return 2
    try:
        dest = local_path(args[-1], roots)
        for source in (local_path(a, roots) for a in args[2:-1]):
            into = dest.is_dir() or args[-1].endswith("/") or args[-1].startswith("gs://")
            target = dest / source.name if into else dest
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
            else:
                shutil.copy2(source, target)
    except (OSError, ValueError) as exc:
        log(f"gsutil {' '.join(argv)}: {exc}")
        return 1
    return 0


# --- Triton -----------------------------------------------------------------------------------------------


def redirect_triton(address: str) -> None:
    """tritonclient.grpc's clients built for upstream's fixed address dial `address` instead."""
    try:
        from tritonclient import grpc  # the client's venv has it (the import is the client's own cost)
    except ImportError:
        return  # a client that does not speak gRPC to Triton: nothing to point
    if address in UPSTREAM_TRITON:
        return
    original = grpc.InferenceServerClient.__init__

    def dial(self: Any, url: str, *args: Any, **kwargs: Any) -> None:
        original(self, address if url in UPSTREAM_TRITON else url, *args, **kwargs)

    grpc.InferenceServerClient.__init__ = dial


# --- the run ----------------------------------------------------------------------------------------------


def archive_root(entry: Path) -> Path:
    """The unpacked archive's root: the directory above `official/` on the entry's path."""
    for parent in entry.parents:
        if parent.name == "official":
            return parent.parent
    return entry.parent


def prepare(batch: Path, entry: Path, source: str) -> tuple[Path, dict[str, str]]:
    """A fresh working directory for one attempt; the gs:// roots its gsutil sees."""
    work = batch / "upstream"
    shutil.rmtree(work, ignore_errors=True)
    (work / "in").mkdir(parents=True)
    (work / "in" / source).symlink_to(batch / "frames", target_is_directory=True)
    labels = entry.parent / "labels.csv"
    if labels.exists():
        (work / "labels.csv").symlink_to(labels)
    (work / "models").symlink_to(archive_root(entry), target_is_directory=True)
    bindir = work / ".bin"
    bindir.mkdir()
    shim = bindir / "gsutil"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} {Path(__file__).resolve()} gsutil \"$@\"\n")
    shim.chmod(0o755)
    output = batch / "out" / "upstream"
    output.mkdir(parents=True, exist_ok=True)
    return work, {BATCH_BUCKET: str(work / "in"), OUTPUT_BUCKET: str(output)}


def run_client(entry: Path, flags: list[str], work: Path, roots: dict[str, str], table: NdjsonTable,
               source: str, triton: str) -> int:
    """Upstream's `main` in this process, in `work`; its exit status (0 when it returned)."""
    started = Path(sys.path[0] or ".").resolve() if sys.path else None  # before the chdir: `-m` put it first
    os.chdir(work)
    os.environ[ROOTS_ENV] = json.dumps(roots)
    os.environ["PATH"] = f"{work / '.bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    for name in BIGQUERY_MODULES:
        sys.modules[name] = table.module(name)
    # The client's directory first, as when it runs as a script; the directory this ran from (`-m` put it first)
    # out: whatever it holds would shadow the standard library's and upstream's modules.
    sys.path[:] = [str(entry.parent), str(archive_root(entry)),
                   *(p for p in sys.path if Path(p or ".").resolve() != started)]
    redirect_triton(triton)
    sys.argv = [str(entry), *flags, f"--input_directory=gs://{BATCH_BUCKET}/{source}",
                f"--output_directory=gs://{OUTPUT_BUCKET}"]
    try:
        runpy.run_path(str(entry), run_name="__main__")
    except SystemExit as done:  # absl's app.run ends in sys.exit
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


def run(args: argparse.Namespace) -> int:
    entry, batch = Path(args.entry), Path(args.batch)
    try:
        columns = json.loads(args.columns)
        unknown = sorted({c["type"] for c in columns} - set(CASTS))
    except (ValueError, KeyError, TypeError) as exc:
        log(f"--columns is not a JSON list of {{name, type}}: {exc}")
        return 2
    problems = []
    if not entry.is_file():
        problems.append(f"--entry {entry} is not a file")
    if not (batch / "frames").is_dir():
        problems.append(f"--batch {batch} has no frames/ directory")
    if unknown:
        problems.append(f"--columns has types no cast is known for: {', '.join(unknown)}")
    if problems:
        log("; ".join(problems))
        return 2
    (batch / "out").mkdir(exist_ok=True)
    results = batch / "out" / RESULTS
    results.write_text("")  # rewritten from empty each attempt: a retried batch never holds a row twice
    table = NdjsonTable(results, columns)
    work, roots = prepare(batch, entry, args.source)
    try:
        status = run_client(entry, args.flags, work, roots, table, args.source, args.triton_grpc)
    except Exception as exc:  # noqa: BLE001 - whatever the client raised, the batch must fail, not pass
        log(f"the client raised {exc!r}")
        return 1
    if table.error:
        log(f"the client could not write its rows ({table.error}); the batch is retried")
        return 1
    if status != 0:
        log(f"the client exited {status}")
        return 1
    log(f"{table.rows} rows written to {results}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["gsutil"]:
        return gsutil(argv[1:], json.loads(os.environ.get(ROOTS_ENV, "{}")))
    parser = argparse.ArgumentParser(prog="client_adapter.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run", help="upstream's client over one batch")
    go.add_argument("--entry", required=True, help="upstream's inference_pipeline.py in the unpacked archive")
    go.add_argument("--batch", required=True, help="the batch directory (frames/ in, out/ for the rows)")
    go.add_argument("--source", required=True, help="the rows' source_name: the frames' folder name upstream")
    go.add_argument("--columns", required=True, help="JSON [{name, type}]: the detections table's columns")
    go.add_argument("--triton-grpc", default="127.0.0.1:8001", help="host:port of the host's Triton (gRPC)")
    go.add_argument("flags", nargs="*", help="the client's own flags, after --")
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
