"""cnhost/client_adapter.py: upstream's client, unchanged, over a local batch; its BigQuery rows land as NDJSON.

Upstream's code cannot ship here, so the client below is shaped like upstream's inference_pipeline.py where the
adapter meets it (not its code): gs:// flags it refuses otherwise, `gsutil -m cp -r` in and out through a shell,
`labels.csv` and `models/official/...` read from its working directory, helpers imported from the archive's
`official` package, a pandas DataFrame with numpy values and extra columns handed to `big_query_ops.ingest_data`,
failures swallowed and logged, `sys.exit(0)` at the end as absl's app.run does. It runs through the real runner
(cnhost/pipeline_run.py) as a real process from a GitHub-shaped archive tree (`models-<commit>/official/...`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import cnhost
from cnctl.catalog import catalog
from cnhost import client_adapter, pipeline_run

CLIENT_DIR = "official/projects/waste_identification_ml/Triton_TF_Cloud_Deployment/client"
HELPER_DIR = "official/projects/waste_identification_ml/model_inference"
COLUMNS = [{"name": f.name, "type": f.type} for f in catalog().models.generations["tf"].bigquery_schema]

UPSTREAM_SHAPED_CLIENT = r'''
import argparse, os, subprocess, sys
import numpy as np
import pandas as pd
import big_query_ops
from official.vision import box_ops  # the archive's own package, as upstream's helpers
from tritonclient import grpc as triton_grpc

sys.path.append("models/official/projects/waste_identification_ml/model_inference/")
import color_and_property_extractor

p = argparse.ArgumentParser()
for flag in ("input_directory", "output_directory", "model", "score", "height", "width"):
    p.add_argument(f"--{flag}")
a = p.parse_args()
mode = os.environ.get("FAKE_MODE", "")


def main():
    if not a.input_directory.startswith("gs://") or not a.output_directory.startswith("gs://"):
        raise ValueError("Bucket path must be non-empty starting with 'gs://'")
    subprocess.run(f"gsutil -m cp -r {a.input_directory} .", shell=True, check=True)
    folder = os.path.basename(a.input_directory)
    prediction_folder = folder + "_prediction"
    os.makedirs(prediction_folder, exist_ok=True)
    labels = open("labels.csv").read().split()
    dialed = triton_grpc.InferenceServerClient(url="localhost:8001").url  # upstream's fixed address
    if dialed != os.environ["EXPECT_TRITON"]:
        raise RuntimeError(f"dialed {dialed}")
    if mode == "crash":
        raise RuntimeError("Triton went away")
    if mode == "foreign_gsutil":
        subprocess.run("gsutil ls gs://some-bucket", shell=True, check=True)
    rows = []
    for n, name in enumerate(sorted(os.listdir(folder))):
        open(os.path.join(prediction_folder, name + ".png"), "w").write("annotated")
        if mode == "empty":
            continue
        row = {"particle": np.int64(n), "source_name": os.path.basename(os.path.dirname(os.path.join(folder, name))),
               "image_name": name, "detection_scores": np.float32(0.5 + n / 100), "creation_time": "2026-11-29 12:00:00",
               "bbox_0": np.int64(1), "bbox_1": np.int64(2), "bbox_2": np.int64(box_ops.side), "bbox_3": np.int64(4),
               "detection_classes": np.int64(n % 2 + 1), "detection_classes_names": labels[n % 2],
               "frame": n + 1, "color": color_and_property_extractor.colour()}
        if mode == "missing_column":
            del row["bbox_3"]
        rows.append(row)
    if rows:
        df = pd.DataFrame(rows)
        try:
            big_query_ops.create_table("proj", "Circularnet_dataset", "Circularnet_table", overwrite=False)
            big_query_ops.ingest_data(df, "proj", "Circularnet_dataset", "Circularnet_table")
        except (KeyError, IndexError, TypeError, ValueError):
            print("Issue in data ingestion.")  # upstream logs and returns: exit 0 all the same
            return
    subprocess.run(f"gsutil -m cp -r {folder} {a.output_directory} && rm -r {folder} && "
                   f"gsutil -m cp -r {prediction_folder} {a.output_directory} && rm -r {prediction_folder}",
                   shell=True, check=True)


main()
sys.exit(0)
'''


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """An unpacked client archive as GitHub ships tensorflow/models: one top-level `models-<commit>/`."""
    root = tmp_path / "client" / "models-0123abc"
    (root / CLIENT_DIR).mkdir(parents=True)
    (root / CLIENT_DIR / "inference_pipeline.py").write_text(UPSTREAM_SHAPED_CLIENT)
    (root / CLIENT_DIR / "labels.csv").write_text("PET_bottle\nHDPE_container\n")
    (root / HELPER_DIR).mkdir(parents=True)
    (root / HELPER_DIR / "color_and_property_extractor.py").write_text("def colour():\n    return 'blue'\n")
    for package in ("official", "official/vision"):
        (root / package).mkdir(exist_ok=True)
        (root / package / "__init__.py").write_text("")
    (root / "official/vision/box_ops.py").write_text("side = 3\n")
    # tritonclient.grpc as the client's venv has it, reduced to the constructor the adapter re-points
    (root / CLIENT_DIR / "tritonclient" / "grpc").mkdir(parents=True)
    (root / CLIENT_DIR / "tritonclient" / "__init__.py").write_text("")
    (root / CLIENT_DIR / "tritonclient" / "grpc" / "__init__.py").write_text(
        "class InferenceServerClient:\n    def __init__(self, url, verbose=False):\n        self.url = url\n")
    return tmp_path / "client"


@pytest.fixture(autouse=True)
def _triton_address(monkeypatch):
    """What the upstream-shaped client checks it dialed: the stack's gRPC address, not upstream's fixed one."""
    monkeypatch.setenv("EXPECT_TRITON", "10.128.0.7:8101")
    monkeypatch.delenv("FAKE_MODE", raising=False)


@pytest.fixture
def settings(tmp_path: Path, archive: Path) -> pipeline_run.Settings:
    values = {
        "host": "belt-1", "generation": "tf", "spool": str(tmp_path / "spool"), "work": str(tmp_path / "work"),
        "queue": str(tmp_path / "queue"), "state": str(tmp_path / "state"), "triton_url": "http://127.0.0.1:8000",
        "triton_grpc": "10.128.0.7:8101", "batch_frames": 3, "upload_images": False, "max_attempts": 2,
        "client": {"python": sys.executable, "dir": str(archive), "entry": f"{CLIENT_DIR}/inference_pipeline.py",
                   "flags": ["--model=circularnet", "--score=0.4"], "contract": "upstream", "columns": COLUMNS},
    }
    (tmp_path / "spool").mkdir()
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(values))
    return pipeline_run.load(str(path))


def frames(settings: pipeline_run.Settings, count: int) -> list[str]:
    names = [f"belt1_20261129_{120000 + i:06d}{i:02d}.jpg" for i in range(count)]
    for name in names:
        (Path(settings["spool"]) / name).write_bytes(b"\xff\xd8 frame \xff\xd9")
    return names


def queued_rows(settings: pipeline_run.Settings) -> list[dict]:
    files = sorted(Path(settings["queue"]).rglob("*.ndjson"))
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


def state(settings: pipeline_run.Settings) -> dict:
    return json.loads((Path(settings["state"]) / "pipeline.json").read_text())


def test_upstream_client_rows_reach_the_queue_as_the_tables_columns_and_types(settings):
    names = frames(settings, 3)
    assert pipeline_run.run(settings) == 0
    rows = queued_rows(settings)
    assert [r["image_name"] for r in rows] == names
    assert [sorted(r) for r in rows] == [sorted(c["name"] for c in COLUMNS)] * 3  # `frame`, `color` dropped
    first = rows[0]
    assert first["source_name"] == "belt-1" and first["bbox_2"] == 3 and first["detection_classes_names"] == "PET_bottle"
    types = {c["name"]: {"INTEGER": int, "FLOAT": float, "STRING": str}[c["type"]] for c in COLUMNS}
    assert all(type(r[k]) is types[k] for r in rows for k in types)  # numpy's int64/float32 cast
    assert state(settings)["rows"] == 3 and not pipeline_run.pending(settings)


def test_a_batch_without_objects_is_done_with_no_rows(settings, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "empty")
    frames(settings, 2)
    assert pipeline_run.run(settings) == 0
    assert queued_rows(settings) == [] and state(settings)["batches"] == 1 and not pipeline_run.pending(settings)


@pytest.mark.parametrize(("mode", "says"), [
    ("missing_column", "lack column(s) bbox_3"),  # upstream swallows the error and exits 0: the adapter does not
    ("crash", "Triton went away"),
    ("foreign_gsutil", "only copies"),
])
def test_a_client_that_did_not_write_every_row_fails_the_batch_and_it_is_retried(settings, monkeypatch, capsys, mode,
                                                                                   says):
    monkeypatch.setenv("FAKE_MODE", mode)
    frames(settings, 2)
    assert pipeline_run.run(settings) == 1
    assert queued_rows(settings) == [] and len(pipeline_run.pending(settings)) == 1
    assert says in capsys.readouterr().err  # the runner logs the adapter's words
    monkeypatch.delenv("FAKE_MODE")
    assert pipeline_run.run(settings) == 0  # the same batch, retried, now whole: each row once
    assert len(queued_rows(settings)) == 2


def test_the_argv_goes_through_the_adapter_with_the_entry_under_the_archives_top_directory(settings, tmp_path):
    batch = tmp_path / "work" / "b1"
    argv = pipeline_run.client_argv(settings, batch)
    # run as on a host: the package's home on PYTHONPATH, the adapter as a module of it
    assert argv[:6] == ["env", f"PYTHONPATH={Path(cnhost.__file__).parent.parent}", settings["client"]["python"], "-m",
                        "cnhost.client_adapter", "run"]
    assert f"--entry={tmp_path}/client/models-0123abc/{CLIENT_DIR}/inference_pipeline.py" in argv
    assert argv[argv.index("--") + 1:] == ["--model=circularnet", "--score=0.4"]


def test_gsutil_copies_between_the_two_local_buckets_only(tmp_path, monkeypatch):
    (tmp_path / "in" / "belt-1").mkdir(parents=True)
    (tmp_path / "in" / "belt-1" / "a.jpg").write_text("x")
    roots = {"cnctl-batch": str(tmp_path / "in"), "cnctl-output": str(tmp_path / "out")}
    monkeypatch.chdir(tmp_path)
    assert client_adapter.gsutil(["-m", "cp", "-r", "gs://cnctl-batch/belt-1", "."], roots) == 0
    assert (tmp_path / "belt-1" / "a.jpg").read_text() == "x"
    assert client_adapter.gsutil(["-m", "cp", "-r", "belt-1", "gs://cnctl-output"], roots) == 0
    assert (tmp_path / "out" / "belt-1" / "a.jpg").exists()
    assert client_adapter.gsutil(["-m", "cp", "-r", "belt-1", "gs://elsewhere/x"], roots) == 1
    assert client_adapter.gsutil(["ls", "gs://cnctl-batch"], roots) == 2
    assert client_adapter.gsutil(["-m", "rsync", "-r", "a", "b"], roots) == 2


@pytest.mark.parametrize(("change", "says"), [
    ({"entry": "nowhere.py"}, "--entry"),
    ({"columns": "not json"}, "--columns is not a JSON list"),
    ({"columns": json.dumps([{"name": "x", "type": "GEOGRAPHY"}])}, "GEOGRAPHY"),
    ({"batch": "no-such-batch"}, "no frames/ directory"),
])
def test_bad_arguments_exit_2_naming_the_argument_and_write_nothing(tmp_path, archive, capsys, change, says):
    batch = tmp_path / "batch"
    (batch / "frames").mkdir(parents=True)
    args = {"entry": str(archive / "models-0123abc" / CLIENT_DIR / "inference_pipeline.py"), "batch": str(batch),
            "columns": json.dumps(COLUMNS)}
    args.update({k: str(tmp_path / v) if k in ("entry", "batch") else v for k, v in change.items()})
    argv = ["run", f"--entry={args['entry']}", f"--batch={args['batch']}", "--source=belt-1", f"--columns={args['columns']}"]
    assert client_adapter.main(argv) == 2
    assert says in capsys.readouterr().err
    assert not (batch / "out").exists() and not (batch / "upstream").exists()
