"""The site's results loader (cnhost/results_db.py): object names and rows in, tables and metrics out, as data;
then against the real stores the uploader's tests run on loopback (the GCS emulator and moto's S3): each object
loaded once, in one transaction, a bad one skipped and named, the metrics read by promtool."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cnctl.catalog import catalog
from cnhost import results_db
from tests.unit.test_uploader import KINDS, Host, _new_host, _s3_default_keys, endpoints  # noqa: F401 - fixtures

CATALOG = catalog()
TF = [{"name": f.name, "type": f.type} for f in CATALOG.models.generations["tf"].bigquery_schema]
DETR = [{"name": f.name, "type": f.type} for f in CATALOG.models.generations["detr"].bigquery_schema]
KEY = "detections/tf/belt-1-orin/20260301/belt1_20260301_12000000--belt1_20260301_12000900.ndjson"
SITES = {"belt-1-orin": "plant-a"}


def row(n: int, klass: str = "PET_bottle", image: str | None = None, **extra: Any) -> dict[str, Any]:
    """One row of the tf generation's columns, as the client writes it."""
    return {"particle": n, "source_name": "belt-1-orin", "image_name": image or f"belt1_20260301_1200{n:04d}.jpg",
            "detection_scores": 0.91, "creation_time": "2026-03-01 12:00:00", "bbox_0": 1, "bbox_1": 2, "bbox_2": 3,
            "bbox_3": 4, "detection_classes": 7, "detection_classes_names": klass, **extra}


def ndjson(*rows: dict[str, Any]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


# --- as data ------------------------------------------------------------------------------------------------------

def test_the_object_name_gives_generation_host_and_batch() -> None:
    assert results_db.origin(KEY) == results_db.Origin("tf", "belt-1-orin", KEY.rsplit("/", 1)[1][:-7])
    for bad in ("detections/tf/belt-1/x.ndjson", "images/tf/a/b/c.ndjson", "detections/tf/a/b/c.json",
                "detections//a/b/c.ndjson"):
        with pytest.raises(results_db.BadObject):
            results_db.origin(bad)


def test_the_belt_is_the_cameras_frame_prefix() -> None:
    assert results_db.belt_of("line-2_20260301_12000000.jpg", "x--y") == "line-2"
    assert results_db.belt_of(None, "belt1_20260301_12000000--belt1_20260301_12000900") == "belt1"
    assert results_db.belt_of("photo.jpg", "batch") == ""


def test_the_class_column_is_the_generations() -> None:
    assert results_db.class_column(TF) == "detection_classes_names"
    assert results_db.class_column(DETR) == "detected_classes_names"
    with pytest.raises(ValueError, match="class column"):
        results_db.class_column([{"name": "particle", "type": "INTEGER"}])


def test_rows_carry_the_generations_columns_and_where_they_come_from() -> None:
    rows = results_db.rows_of(KEY, ndjson(row(1), row(2, "HDPE", bbox_0=None)) + b"\n", "tf", TF, SITES)
    assert [(r["line"], r["class"], r["site"], r["host"], r["belt"]) for r in rows] == [
        (1, "PET_bottle", "plant-a", "belt-1-orin", "belt1"), (2, "HDPE", "plant-a", "belt-1-orin", "belt1")]
    assert set(rows[0]) == set(results_db.FIXED) | {c["name"] for c in TF}
    assert rows[1]["bbox_0"] is None and rows[0]["object"] == KEY
    unknown = results_db.rows_of(KEY.replace("belt-1-orin", "lab-3"), ndjson(row(1)), "tf", TF, SITES)
    assert unknown[0]["site"] == ""


@pytest.mark.parametrize(("body", "reason"), [
    (b"not json\n", "line 1 is not JSON"),
    (b"[1, 2]\n", "line 1 is not a JSON object"),
    (b"\xff\xfe", "not UTF-8"),
    (ndjson(row(1), {**row(2), "class_name": "PET"}), "line 2 has columns the tf generation lacks: class_name"),
    (ndjson({k: v for k, v in row(1).items() if k != "detection_classes_names"}), "no detection_classes_names"),
])
def test_a_bad_object_says_why(body: bytes, reason: str) -> None:
    with pytest.raises(results_db.BadObject, match=reason):
        results_db.rows_of(KEY, body, "tf", TF, SITES)


def test_another_generations_object_is_bad_not_guessed() -> None:
    with pytest.raises(results_db.BadObject, match="generation detr"):
        results_db.rows_of(KEY.replace("/tf/", "/detr/"), ndjson(row(1)), "tf", TF, SITES)


def test_the_metrics_count_rows_per_class_and_escape_label_values() -> None:
    text = results_db.exposition([("plant-a", "belt-1", "belt1", "PET_bottle", 3),
                                  ("plant-a", "belt-1", "belt1", 'odd "class"\\\n', 1)], 4, 1, 1772366400.5)
    assert 'cnctl_results_detections_total{belt_site="plant-a",host="belt-1",belt="belt1",class="PET_bottle"} 3\n' in text
    assert 'class="odd \\"class\\"\\\\\\n"} 1\n' in text
    assert "cnctl_results_objects_total 4\n" in text and "cnctl_results_bad_objects_total 1\n" in text
    assert "cnctl_results_last_load_timestamp_seconds 1772366400.5\n" in text
    assert "# TYPE cnctl_results_detections_total counter\n" in text
    assert "last_load" not in results_db.exposition([], 0, 0, None)


def test_promtool_reads_the_metrics() -> None:
    if shutil.which("promtool") is None:  # a system package of the one list: missing is a failure, never a skip
        pytest.fail("promtool is missing: `sudo python3 cnctl/sandbox/prereqs.py ensure` installs it", pytrace=False)
    text = results_db.exposition([("plant-a", "belt-1", "belt1", "PET_bottle", 3)], 1, 0, 1772366400.0)
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


class FakeStore:
    """A store's listing and reads, in memory; `fail_on` a key makes its read fail as the store would."""

    def __init__(self, objects: dict[str, bytes], fail_on: str | None = None) -> None:
        self.objects, self.fail_on, self.reads = objects, fail_on, 0

    def listing(self, bucket: str, prefix: str) -> list[tuple[str, str]]:
        return [(k, f"etag-{len(v)}") for k, v in self.objects.items() if k.startswith(prefix)]

    def read(self, bucket: str, key: str) -> bytes | None:
        self.reads += 1
        if key == self.fail_on:
            raise results_db.uploader.StoreError("S3 unreachable (Connection refused)")
        return self.objects.get(key)


def test_each_object_is_loaded_once_and_a_failure_mid_run_keeps_what_was_loaded(tmp_path: Path) -> None:
    second = KEY.replace("12000000--", "12001000--")
    objects = {KEY: ndjson(row(1), row(2, "HDPE")), second: ndjson(row(3)), "detections/tf/x/bad.ndjson": b"{",
               ".cnctl-uploader-probe/belt-1": b"probe"}
    db = results_db.open_db(tmp_path / "results.db", TF)
    failing = FakeStore(objects, fail_on=second)
    with pytest.raises(results_db.uploader.StoreError):
        results_db.load(db, failing, "results", "tf", TF, SITES)
    assert results_db.counts(db) == (1, 0) and len(results_db.totals(db)) == 2  # the first object, whole
    store = FakeStore(objects)
    assert results_db.load(db, store, "results", "tf", TF, SITES) == {"loaded": 1, "rows": 1, "bad": 1}
    assert store.reads == 2  # the loaded object was not read again
    assert results_db.load(db, store, "results", "tf", TF, SITES) == {"loaded": 0, "rows": 0, "bad": 0}
    assert store.reads == 2
    assert results_db.totals(db) == [("plant-a", "belt-1-orin", "belt1", "HDPE", 1),
                                     ("plant-a", "belt-1-orin", "belt1", "PET_bottle", 2)]
    loaded = db.execute("SELECT object, etag, rows FROM loaded ORDER BY object").fetchall()
    assert loaded == [(KEY, f"etag-{len(objects[KEY])}", 2), (second, f"etag-{len(objects[second])}", 1)]
    assert db.execute("SELECT object, reason FROM bad").fetchall() == [
        ("detections/tf/x/bad.ndjson",
         "not a results object name (detections/<generation>/<host>/<YYYYMMDD>/<batch>.ndjson)")]


def test_a_crash_inside_an_objects_transaction_leaves_none_of_its_rows(tmp_path: Path) -> None:
    db = results_db.open_db(tmp_path / "results.db", TF)
    rows = results_db.rows_of(KEY, ndjson(row(1), row(2)), "tf", TF, SITES)
    rows[1]["line"] = 1  # the second insert breaks the primary key, after the first went in
    with pytest.raises(sqlite3.IntegrityError):
        results_db.store_rows(db, KEY, "e", rows, 0.0)
    assert db.execute("SELECT COUNT(*) FROM detections").fetchone()[0] == 0 and results_db.counts(db) == (0, 0)


def test_a_new_generation_widens_the_table(tmp_path: Path) -> None:
    results_db.open_db(tmp_path / "results.db", TF).close()
    db = results_db.open_db(tmp_path / "results.db", DETR)
    names = {r[1] for r in db.execute("PRAGMA table_info(detections)")}
    assert {"detection_classes_names", "detected_classes_names", "detected_colors"} <= names


# --- against the real stores ------------------------------------------------------------------------------------

@pytest.fixture(params=KINDS)
def site_store(request: pytest.FixtureRequest, endpoints: dict[str, str], tmp_path: Path) -> Host:  # noqa: F811
    return _new_host(tmp_path, request.param, endpoints[request.param])


def _run(host: Host, tmp_path: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    settings = json.loads(host.settings().read_text())
    settings["client"] = {"columns": TF}
    config = tmp_path / "pipeline.json"
    config.write_text(json.dumps(settings))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = results_db.main(["load", "--config", str(config), "--db", str(tmp_path / "results.db"),
                                "--metrics", str(tmp_path / "textfile" / "results.prom"),
                                "--site", "belt-1-orin=plant-a", *extra])
    assert "Traceback" not in err.getvalue()
    return code, json.loads(out.getvalue().splitlines()[-1]), err.getvalue()


def test_the_loader_reads_the_plants_store_once_and_writes_its_metrics(site_store: Host, tmp_path: Path) -> None:
    assert site_store.store is not None
    bucket = site_store.buckets["results"]
    site_store.store.put(bucket, KEY, ndjson(row(1), row(2), row(3, "Aluminium_can")))
    site_store.store.put(bucket, KEY.replace("/tf/", "/tf/").replace("12000000--", "bad--"), b"garbage\n")
    (tmp_path / "textfile").mkdir()
    code, summary, log = _run(site_store, tmp_path)
    assert code == 0, log
    assert (summary["loaded"], summary["rows"], summary["bad"], summary["objects"]) == (1, 3, 1, 1)
    assert "skipped" in log and "bad--" in log and "line 1 is not JSON" in log
    text = (tmp_path / "textfile" / "results.prom").read_text()
    assert ('cnctl_results_detections_total{belt_site="plant-a",host="belt-1-orin",belt="belt1",'
            'class="PET_bottle"} 2\n') in text
    assert "cnctl_results_bad_objects_total 1\n" in text and "cnctl_results_last_load_timestamp_seconds " in text
    code, summary, _ = _run(site_store, tmp_path)  # again: nothing new, nothing twice
    assert code == 0 and (summary["loaded"], summary["bad"], summary["objects"]) == (0, 0, 1)
    db = sqlite3.connect(tmp_path / "results.db")
    assert db.execute("SELECT class, COUNT(*) FROM detections GROUP BY class ORDER BY class").fetchall() == [
        ("Aluminium_can", 1), ("PET_bottle", 2)]


def test_a_store_that_is_down_is_exit_1_and_the_next_run_loads(site_store: Host, tmp_path: Path) -> None:
    settings = json.loads(site_store.settings().read_text())
    settings["storage"]["endpoint"] = "http://127.0.0.1:9"
    settings["client"] = {"columns": TF}
    config = tmp_path / "down.json"
    config.write_text(json.dumps(settings))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = results_db.main(["load", "--config", str(config), "--db", str(tmp_path / "results.db")])
    assert code == 1 and "unreachable" in err.getvalue() and "Traceback" not in err.getvalue()


def test_bad_settings_are_exit_2(tmp_path: Path) -> None:
    (tmp_path / "pipeline.json").write_text("{}")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert results_db.main(["load", "--config", str(tmp_path / "pipeline.json"), "--db", str(tmp_path / "x.db")]) == 2
    assert "storage" in err.getvalue()
