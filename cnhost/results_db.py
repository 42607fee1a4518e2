#!/usr/bin/env python3
"""Load the plant's detection results from its own store into SQLite, for the results dashboard on site.

Run by circularnet-results.timer on the site's monitoring server (the monitoring layer), in the pipeline's venv,
as the pipeline's user, with the pipeline's settings and credentials: the store, its results bucket and how to
reach it are the uploader's (cnhost/uploader.py: `load_settings`, `read_credentials`, `make_store`; the one
copy of the store clients). Python 3.10+; sqlite3 is the standard library's.

    results_db.py load --config /etc/circularnet/pipeline.json [--db PATH] [--metrics PATH]
                       [--site HOST=SITE ...]

One run:
1. list `storage.buckets.results` under `detections/`: the pipeline's objects are
   `detections/<generation>/<host>/<YYYYMMDD>/<first frame>--<last frame>.ndjson` (pipeline_run.py; the bucket
   worker names `<host>` by the frame's device prefix), each one batch's NDJSON rows of the generation's
   columns (the pipeline settings' `client.columns`, the catalog's `generations.<g>.bigquery_schema`);
2. every object not yet in the `loaded` (or `bad`) table is read and loaded in ONE transaction: its rows into
   `detections`, its name into `loaded(object, etag, rows, loaded_at)`. A crash mid-run loses nothing and
   loads nothing twice: a rerun loads each object once (objects are write-once: the uploader never replaces
   one);
3. an object that is not NDJSON of JSON objects, has columns the generation lacks, no class column, or is of
   another generation than the settings' is skipped: recorded in `bad(object, etag, reason, found_at)`,
   counted, named in one log line; never fatal (and never read again);
4. the totals as Prometheus metrics for node-exporter's textfile collector (`--metrics`, replaced atomically,
   cnhost/metrics.py): `cnctl_results_detections_total{belt_site, host, belt, class}` (rows per material class
   of the generation's class column), `cnctl_results_objects_total`, `cnctl_results_bad_objects_total`,
   `cnctl_results_last_load_timestamp_seconds`.

The `detections` table: `object`, `line` (the row's line in its object), `generation`, `site`, `host`, `belt`,
`class`, then the generation's columns as the rows have them (a column a later generation adds is added to the
table). `host` is the object name's; `belt` is the camera's frame prefix (`camera.framePrefix`, upstream's
`<prefix>_<YYYYMMDD>_<HHMMSSxx>` frame names) of the row's `image_name`, else of the batch's name, else "";
`site` is the host's site in the stack (`--site HOST=SITE`, given by the deploy), else "". `class` is the
generation's class-name column (its STRING column named `*_classes_names`).

Metric label `belt_site`, not `site`: the site's Prometheus gives every series of this host its own target
label `site` (the monitoring server's), and a `site` label in the file would arrive renamed `exported_site`.

Exit: 0 loaded (bad objects included), 1 the store failed (the next run retries), 2 bad settings, credentials
or database. Log lines on stderr (the journal); the last line on stdout is one JSON object, what the run did.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnhost import bucket_worker, metrics, uploader

EXIT = {"ok": 0, "store": 1, "usage": 2}
PREFIX = "detections/"
DEFAULT_DB = "/var/lib/circularnet/results/results.db"
SQL_TYPES = {"INTEGER": "INTEGER", "INT64": "INTEGER", "FLOAT": "REAL", "FLOAT64": "REAL", "NUMERIC": "REAL",
             "BOOLEAN": "INTEGER", "BOOL": "INTEGER"}  # the rest (STRING, TIMESTAMP, ...) is TEXT
FIXED = ("object", "line", "generation", "site", "host", "belt", "class")


def log(message: str) -> None:
    print(f"results: {message}", file=sys.stderr, flush=True)


class BadObject(ValueError):
    """An object the loader cannot take: the reason, for the `bad` table and the log."""


# --- pure: names and rows ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Origin:
    """Where an object's rows come from, by its name."""

    generation: str
    host: str
    batch: str


def origin(key: str) -> Origin:
    """`detections/<generation>/<host>/<YYYYMMDD>/<batch>.ndjson` -> its parts; BadObject for another name."""
    parts = key.split("/")
    if len(parts) != 5 or parts[0] != PREFIX.rstrip("/") or not parts[4].endswith(".ndjson") or not all(parts[1:]):
        raise BadObject("not a results object name (detections/<generation>/<host>/<YYYYMMDD>/<batch>.ndjson)")
    return Origin(parts[1], parts[2], parts[4].removesuffix(".ndjson"))


def belt_of(image_name: Any, batch: str) -> str:
    """The camera's frame prefix of a row's image (upstream's `<prefix>_<YYYYMMDD>_<HHMMSSxx>.<ext>`), else of the
    batch's first frame, else ""."""
    for name in (image_name if isinstance(image_name, str) else "", batch.split("--", 1)[0]):
        found = bucket_worker.DEVICE.match(Path(name).stem if "." in name else name)
        if found:
            return found.group(1)
    return ""


def class_column(columns: Sequence[Mapping[str, str]]) -> str:
    """The generation's class-name column: its STRING column named `*_classes_names` (tf `detection_classes_names`,
    detr `detected_classes_names`); ValueError when it has none."""
    names = [c["name"] for c in columns if c["name"].endswith("_classes_names") and c.get("type", "STRING") == "STRING"]
    if len(names) != 1:
        raise ValueError(f"the generation's columns name no one class column (*_classes_names): {names}")
    return names[0]


def rows_of(key: str, body: bytes, generation: str, columns: Sequence[Mapping[str, str]],
            sites: Mapping[str, str]) -> list[dict[str, Any]]:
    """An object's rows as the `detections` table takes them (its fixed columns and the generation's); BadObject
    when it is not NDJSON of JSON objects with the generation's columns only."""
    where = origin(key)
    if where.generation != generation:
        raise BadObject(f"generation {where.generation}, not the stack's ({generation}): its columns are unknown here")
    known, klass = {c["name"] for c in columns}, class_column(columns)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadObject("not UTF-8 text") from None
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise BadObject(f"line {number} is not JSON") from None
        if not isinstance(row, dict):
            raise BadObject(f"line {number} is not a JSON object")
        extra = sorted(set(row) - known)
        if extra:
            raise BadObject(f"line {number} has columns the {generation} generation lacks: {', '.join(extra)[:200]}")
        if not isinstance(row.get(klass), str) or not row[klass]:
            raise BadObject(f"line {number} has no {klass}")
        values = {name: _cell(row.get(name)) for name in sorted(known)}
        rows.append({"object": key, "line": number, "generation": generation, "site": sites.get(where.host, ""),
                     "host": where.host, "belt": belt_of(row.get("image_name"), where.batch), "class": row[klass],
                     **values})
    return rows


def _cell(value: Any) -> Any:
    """A JSON value as SQLite stores it: scalars as they are, lists and objects as their JSON text."""
    if isinstance(value, bool):
        return int(value)
    if value is None or isinstance(value, (int, float, str)):
        return value
    return json.dumps(value, sort_keys=True)


def exposition(totals: Iterable[tuple[str, str, str, str, int]], objects: int, bad: int,
               loaded_at: float | None) -> str:
    """The metrics text: totals [(site, host, belt, class, rows)] and the run's counts (cnhost/metrics.py's format,
    its escaping); `loaded_at` None (the store failed) leaves the last load's time out."""
    return "".join([
        metrics.family("cnctl_results_detections_total", "counter",
                       "Detection rows loaded into the site's results database, per belt and material class",
                       [({"belt_site": site, "host": host, "belt": belt, "class": klass}, rows)
                        for site, host, belt, klass, rows in totals]),
        metrics.family("cnctl_results_objects_total", "counter", "Result objects loaded from the plant's store",
                       [({}, objects)]),
        metrics.family("cnctl_results_bad_objects_total", "counter",
                       "Result objects skipped: not NDJSON or not the generation's columns", [({}, bad)]),
        metrics.family("cnctl_results_last_load_timestamp_seconds", "gauge",
                       "When the results loader last read the whole store", [({}, loaded_at)]),
    ])


# --- the database --------------------------------------------------------------------------------------------


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def open_db(path: Path, columns: Sequence[Mapping[str, str]]) -> sqlite3.Connection:
    """The database, its tables made or widened to the generation's columns (idempotent)."""
    db = sqlite3.connect(path, isolation_level=None)  # transactions by hand: one per object
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript("""
        CREATE TABLE IF NOT EXISTS detections (object TEXT NOT NULL, line INTEGER NOT NULL, generation TEXT NOT NULL,
            site TEXT NOT NULL, host TEXT NOT NULL, belt TEXT NOT NULL, class TEXT NOT NULL,
            PRIMARY KEY (object, line));
        CREATE INDEX IF NOT EXISTS detections_by_class ON detections (site, host, belt, class);
        CREATE TABLE IF NOT EXISTS loaded (object TEXT PRIMARY KEY, etag TEXT, rows INTEGER NOT NULL,
            loaded_at REAL NOT NULL);
        CREATE TABLE IF NOT EXISTS bad (object TEXT PRIMARY KEY, etag TEXT, reason TEXT NOT NULL,
            found_at REAL NOT NULL);
    """)
    have = {row[1] for row in db.execute("PRAGMA table_info(detections)")}
    for column in columns:
        if column["name"] not in have and column["name"] not in FIXED:
            kind = SQL_TYPES.get(str(column.get("type", "")).upper(), "TEXT")
            db.execute(f"ALTER TABLE detections ADD COLUMN {_quoted(column['name'])} {kind}")
    return db


def known_objects(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT object FROM loaded UNION SELECT object FROM bad")}


def store_rows(db: sqlite3.Connection, key: str, etag: str, rows: list[dict[str, Any]], now: float) -> None:
    """One object's rows and its `loaded` line, in one transaction: all of it, or nothing."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for row in rows:
            names = list(row)
            db.execute(f"INSERT INTO detections ({', '.join(map(_quoted, names))}) "
                       f"VALUES ({', '.join('?' for _ in names)})", [row[n] for n in names])
        db.execute("INSERT INTO loaded (object, etag, rows, loaded_at) VALUES (?, ?, ?, ?)", (key, etag, len(rows), now))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def store_bad(db: sqlite3.Connection, key: str, etag: str, reason: str, now: float) -> None:
    db.execute("INSERT OR REPLACE INTO bad (object, etag, reason, found_at) VALUES (?, ?, ?, ?)", (key, etag, reason, now))


def totals(db: sqlite3.Connection) -> list[tuple[str, str, str, str, int]]:
    return [tuple(row) for row in db.execute(
        "SELECT site, host, belt, class, COUNT(*) FROM detections GROUP BY site, host, belt, class "
        "ORDER BY site, host, belt, class")]


def counts(db: sqlite3.Connection) -> tuple[int, int]:
    """(objects loaded, objects found bad)."""
    return (db.execute("SELECT COUNT(*) FROM loaded").fetchone()[0], db.execute("SELECT COUNT(*) FROM bad").fetchone()[0])


# --- one run -------------------------------------------------------------------------------------------------


def load(db: sqlite3.Connection, store: Any, bucket: str, generation: str, columns: Sequence[Mapping[str, str]],
         sites: Mapping[str, str]) -> dict[str, int]:
    """Every object of the bucket not loaded yet; what this run did. StoreError when the store fails (what was
    loaded before it stays)."""
    done = {"loaded": 0, "rows": 0, "bad": 0}
    seen = known_objects(db)
    for key, etag in sorted(store.listing(bucket, PREFIX)):
        if key in seen:
            continue
        now = time.time()
        try:
            body = store.read(bucket, key)
            if body is None:
                continue  # deleted since the listing
            rows = rows_of(key, body, generation, columns, sites)
        except BadObject as exc:
            store_bad(db, key, etag, str(exc), now)
            done["bad"] += 1
            log(f"skipped {bucket}/{key}: {exc}")
            continue
        store_rows(db, key, etag, rows, now)
        done["loaded"] += 1
        done["rows"] += len(rows)
    return done


def parse_sites(pairs: Sequence[str]) -> dict[str, str]:
    sites = {}
    for pair in pairs:
        host, sep, site = pair.partition("=")
        if not sep or not host:
            raise ValueError(f"--site {pair!r}: HOST=SITE expected")
        sites[host] = site
    return sites


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="results_db.py", description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("load",))
    parser.add_argument("--config", default="/etc/circularnet/pipeline.json", help="the pipeline's settings file")
    parser.add_argument("--db", default=DEFAULT_DB, help="the SQLite database (its directory must exist)")
    parser.add_argument("--metrics", default=None, help="the metrics file in node-exporter's textfile directory")
    parser.add_argument("--site", action="append", default=[], help="HOST=SITE: a host's site in the stack")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    started = time.time()
    try:
        sites = parse_sites(args.site)
        settings = uploader.load_settings(Path(args.config))
        raw = json.loads(Path(args.config).read_text())
        generation, columns = str(raw.get("generation") or ""), (raw.get("client") or {}).get("columns") or []
        class_column(columns)
        store = uploader.make_store(settings, uploader.read_credentials(settings.credentials))
        db = open_db(Path(args.db), columns)
    except (uploader.UsageError, ValueError, KeyError, TypeError, sqlite3.Error, OSError) as exc:
        log(f"{args.config}: {exc}")
        return EXIT["usage"]
    except ImportError as exc:
        log(f"the pipeline venv lacks the store's library ({exc.name}): deploy the pipeline layer again")
        return EXIT["usage"]
    bucket = settings.buckets["results"]
    code, done, problem = EXIT["ok"], {"loaded": 0, "rows": 0, "bad": 0}, None
    try:
        done = load(db, store, bucket, generation, columns, sites)
    except (uploader.StoreError, uploader.Unreadable) as exc:
        code, problem = EXIT["store"], str(exc)
        log(f"{exc}; the next run tries again")
    objects, bad = counts(db)
    if args.metrics and not metrics.write(exposition(totals(db), objects, bad, started if code == 0 else None),
                                                   args.metrics):
        log(f"no directory for {args.metrics} (node-exporter's textfile collector): metrics not written")
    db.close()
    log(f"{done['loaded']} objects ({done['rows']} rows) loaded, {done['bad']} skipped; {objects} in {args.db}")
    print(json.dumps({"result": "ok" if code == 0 else "store", **done, "objects": objects, "bad_objects": bad,
                      "error": problem}, sort_keys=True), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
