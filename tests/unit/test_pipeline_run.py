"""cnhost/pipeline_run.py on a real directory tree with a real client process (a small script standing in
for the CircularNet client: it writes one NDJSON row per frame, or fails when told to)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cnhost import pipeline_run

CLIENT = r'''
import argparse, json, os, pathlib, sys, time
p = argparse.ArgumentParser()
p.add_argument("--input_directory"); p.add_argument("--output_directory"); p.add_argument("--score")
a = p.parse_args()
if os.environ.get("CIRCULARNET_TRITON_URL") != "http://127.0.0.1:8000":
    sys.exit("wrong Triton URL")
if pathlib.Path(a.input_directory, "SLOW").exists():
    time.sleep(60)
if pathlib.Path(a.input_directory, "FAIL").exists() or any("bad" in n for n in os.listdir(a.input_directory)):
    sys.exit("Triton answered 500")
with open(os.path.join(a.output_directory, "detections.ndjson"), "w") as out:
    for name in sorted(os.listdir(a.input_directory)):
        out.write(json.dumps({"image_name": name, "detection_scores": float(a.score)}) + "\n")
'''


@pytest.fixture
def settings(tmp_path: Path) -> pipeline_run.Settings:
    client = tmp_path / "client"
    client.mkdir()
    (client / "inference_pipeline.py").write_text(CLIENT)
    values = {
        "host": "belt-1", "generation": "tf", "spool": str(tmp_path / "spool"), "work": str(tmp_path / "work"),
        "queue": str(tmp_path / "queue"), "state": str(tmp_path / "state"), "triton_url": "http://127.0.0.1:8000",
        "batch_frames": 3, "upload_images": False,
        "client": {"python": sys.executable, "dir": str(client), "entry": "inference_pipeline.py", "flags": ["--score=0.4"]},
    }
    (tmp_path / "spool").mkdir()
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(values))
    return pipeline_run.load(str(path))


def frames(settings: pipeline_run.Settings, count: int, start: int = 0, prefix: str = "belt1") -> list[str]:
    names = [f"{prefix}_20261129_{120000 + i:06d}{i % 100:02d}.jpg" for i in range(start, start + count)]
    for name in names:
        (Path(settings["spool"]) / name).write_bytes(b"\xff\xd8 frame \xff\xd9")
    return names


def queued(settings: pipeline_run.Settings) -> list[str]:
    root = Path(settings["queue"])
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def state(settings: pipeline_run.Settings) -> dict:
    return json.loads((Path(settings["state"]) / "pipeline.json").read_text())


def test_frames_become_batches_of_results_named_by_their_frames(settings):
    names = frames(settings, 7)
    assert pipeline_run.run(settings) == 0
    stems = [n[:-4] for n in names]
    assert queued(settings) == [
        f"results/detections/tf/belt-1/20261129/{stems[0]}--{stems[2]}.ndjson",
        f"results/detections/tf/belt-1/20261129/{stems[3]}--{stems[5]}.ndjson",
        f"results/detections/tf/belt-1/20261129/{stems[6]}--{stems[6]}.ndjson",
    ]
    rows = [json.loads(line) for f in sorted(Path(settings["queue"]).rglob("*.ndjson")) for line in f.read_text().splitlines()]
    assert [r["image_name"] for r in rows] == names
    assert not list(Path(settings["spool"]).iterdir()) and not pipeline_run.pending(settings)
    found = state(settings)
    assert (found["batches"], found["frames"], found["rows"], found["last_error"]) == (3, 7, 7, None)
    assert found["last_ok"] >= found["last_run"]
    # the queue as the run left it, counted whether an uploader runs or not (none does here)
    sizes = [f.stat().st_size for f in Path(settings["queue"]).rglob("*.ndjson")]
    assert (found["queue_files"], found["queue_bytes"]) == (3, sum(sizes)) and sum(sizes) > 0


def test_frames_are_queued_for_upload_when_the_stack_says_so(settings):
    settings["upload_images"] = True
    names = frames(settings, 2)
    assert pipeline_run.run(settings) == 0
    assert [q for q in queued(settings) if q.startswith("images/")] == [f"images/frames/belt-1/20261129/{n}" for n in names]


def test_a_failing_client_keeps_the_batch_and_a_later_run_yields_the_same_name(settings):
    frames(settings, 2)
    (Path(settings["spool"]) / "belt1_20261129_12000099bad.jpg").write_bytes(b"x")
    settings["batch_frames"] = 10
    assert pipeline_run.run(settings) == 1
    [batch] = pipeline_run.pending(settings)
    assert queued(settings) == [] and "Triton answered 500" in state(settings)["last_error"]
    (batch / "frames" / "belt1_20261129_12000099bad.jpg").rename(batch / "frames" / "belt1_20261129_12000099.jpg")
    assert pipeline_run.run(settings) == 0
    assert queued(settings) == [f"results/detections/tf/belt-1/20261129/{batch.name}.ndjson"]
    assert state(settings)["last_error"] is None


def test_a_batch_that_keeps_failing_is_set_aside_and_counted_so_the_belt_goes_on(settings):
    (Path(settings["spool"]) / "belt1_20261129_11000000bad.jpg").write_bytes(b"x")
    settings["batch_frames"] = 1
    for _ in range(3):
        assert pipeline_run.run(settings) == 1
    assert state(settings)["failed_batches"] == 1
    assert (Path(settings["work"]) / pipeline_run.FAILED / "belt1_20261129_11000000bad--belt1_20261129_11000000bad").is_dir()
    frames(settings, 1)
    assert pipeline_run.run(settings) == 0 and len(queued(settings)) == 1


def test_a_batch_whose_results_were_queued_before_a_crash_is_only_cleaned_up(settings):
    frames(settings, 2)
    batch = pipeline_run.claim(settings)
    assert batch is not None
    (batch / pipeline_run.QUEUED).touch()
    assert pipeline_run.run(settings) == 0
    assert queued(settings) == [] and not batch.exists()


@pytest.mark.parametrize(("timeout", "give_up", "said"), [
    (1, None, "the client ran over 1 s"),
    (60, lambda: True, "the client was stopped: the worker is stopping"),  # the bucket worker's stop budget
    (1, lambda: False, "the client ran over 1 s"),
])
def test_a_client_past_its_time_or_the_callers_budget_is_killed_and_said(
        settings: pipeline_run.Settings, timeout: int, give_up: Callable[[], bool] | None, said: str) -> None:
    batch = Path(settings["work"]) / "slow"
    (batch / "frames").mkdir(parents=True)
    (batch / "frames" / "SLOW").touch()  # the client would sleep a minute
    started = time.monotonic()
    assert pipeline_run.run_client(pipeline_run.Settings({**settings, "client_timeout": timeout}), batch, give_up) == said
    assert time.monotonic() - started < 5


def test_dot_files_being_written_are_left_in_the_spool(settings):
    frames(settings, 1)
    (Path(settings["spool"]) / ".belt1_20261129_12595999.jpg.tmp").write_bytes(b"half")
    assert pipeline_run.run(settings) == 0
    assert [p.name for p in Path(settings["spool"]).iterdir()] == [".belt1_20261129_12595999.jpg.tmp"]


def test_missing_settings_name_the_key_and_exit_2(tmp_path, capsys):
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps({"host": "x"}))
    with pytest.raises(SystemExit) as stopped:
        pipeline_run.main(["run", "--config", str(path)])
    assert stopped.value.code == 2
    assert "missing generation, spool" in capsys.readouterr().err
