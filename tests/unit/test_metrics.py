"""The health report as Prometheus metrics (cnhost/metrics.py), as data: a report in, the text format out.

Prometheus' own `promtool check metrics` reads the text; hostile values from a stack or a host (host names,
model names, paths) stay label values, whatever they hold."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnhost import metrics
from cnhost.health_report import DEFAULTS, judge
from tests.unit.test_verify_report import HEALTHY

NOW = HEALTHY["now"]


def full_report(worker: dict[str, Any] | None = None, **upload: Any) -> dict[str, Any]:
    """A converged belt host's report with every part: a capture service, runs, uploads (test_verify_report's
    server, plus the pipeline's state files); `worker`: a bucket worker's state as well."""
    seen = copy.deepcopy(HEALTHY)
    seen["pipeline"] = {
        "settings": {"work": "/var/lib/circularnet/work", "storage": {"buckets": {"results": "results"}}},
        "units": {},
        "capture": {"captured": 1200, "dropped": 3, "last_frame_at": NOW - 2},
        "pipeline": {"last_run": NOW - 30, "last_ok": NOW - 30, "batches": 40, "rows": 950, "failed_batches": 1},
        "upload": {"queue_files": 3, "queue_bytes": 4096, "last_success": NOW - 60, "uploaded_files": 37,
                   "dropped_files": 0, "failing_since": None, **upload},
        **({"worker": worker} if worker is not None else {}),
    }
    return judge(seen, DEFAULTS)


def samples(text: str) -> dict[str, str]:
    """`name{labels}` -> value, of every sample line."""
    return dict(line.rsplit(" ", 1) for line in text.split("\n") if line and not line.startswith("#"))


def test_a_converged_host_exports_its_health_model_disks_and_pipeline() -> None:
    found = samples(metrics.exposition(full_report()))
    assert found["cnctl_health_healthy"] == "1" and found["cnctl_health_problems"] == "0"
    assert found["cnctl_health_checked_timestamp_seconds"] == repr(NOW)
    assert found["cnctl_triton_live"] == "1"
    assert found['cnctl_model_ready{model="circularnet"}'] == "1"
    assert found['cnctl_model_served_version{model="circularnet"}'] == "2"
    assert found['cnctl_model_pinned_version{model="circularnet"}'] == "2"
    assert found['cnctl_disk_free_bytes{path="/opt/circularnet/models"}'] == str(40 << 30)
    assert found['cnctl_disk_size_bytes{path="/"}'] == str(100 << 30)
    assert (found["cnctl_pipeline_frames_captured_total"], found["cnctl_pipeline_failed_batches_total"]) == ("1200", "1")
    assert (found["cnctl_pipeline_queue_files"], found["cnctl_pipeline_queue_bytes"]) == ("3", "4096")
    assert found["cnctl_pipeline_last_upload_timestamp_seconds"] == repr(NOW - 60)
    assert found["cnctl_pipeline_last_frame_timestamp_seconds"] == repr(NOW - 2)  # whole seconds: the report's
    info = next(key for key in found if key.startswith("cnctl_host_info"))
    assert 'host="gpu-server-1"' in info and 'driver="550.90.07"' in info and 'triton="2.48.0"' in info


def test_a_bucket_workers_counters_are_exported() -> None:
    worker = {"updated": NOW, "started": NOW - 600, "last_ok": NOW, "images": 12, "acked": 13, "nacked": 2,
              "uploaded": 11, "already_present": 1, "failed_uploads": 2}
    found = samples(metrics.exposition(full_report(worker=worker)))
    assert [found[f"cnctl_pipeline_{key}_total"] for key in ("images", "acked", "nacked", "uploaded",
                                                             "already_present", "failed_uploads")] == \
        ["12", "13", "2", "11", "1", "2"]
    assert "cnctl_pipeline_acked_total" not in metrics.exposition(full_report())  # no worker on a belt host


def test_what_the_report_lacks_is_left_out_never_a_zero() -> None:
    report = full_report()
    assert "cnctl_pipeline_failing_since_timestamp_seconds" not in metrics.exposition(report)  # uploads succeed
    assert "failing_since" in metrics.exposition(full_report(failing_since=NOW - 1000))
    report["pipeline"] = None
    report["model"]["version"] = None
    text = metrics.exposition(report)
    assert "cnctl_pipeline_" not in text and "cnctl_model_served_version" not in text
    assert "cnctl_model_ready" in text  # not ready is a value: 0


def test_an_unpinned_model_has_no_pinned_version() -> None:
    report = full_report()
    report["last_deploy"]["model"]["action"] = "latest"
    assert "cnctl_model_pinned_version" not in metrics.exposition(report)


def test_promtool_reads_the_text() -> None:
    if shutil.which("promtool") is None:  # a system package of the one list: missing is a failure, never a skip
        pytest.fail("promtool is missing: `sudo python3 cnctl/sandbox/prereqs.py ensure` installs it", pytrace=False)
    report = full_report()
    report["host"] = 'belt-1"} 1\ncnctl_evil 1\n# \\'
    checked = subprocess.run(["promtool", "check", "metrics"], input=metrics.exposition(report), capture_output=True,
                             text=True, timeout=60, check=False)
    assert checked.returncode == 0 and checked.stdout + checked.stderr == "", checked.stdout + checked.stderr


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text(), st.text())
def test_a_hostile_value_stays_one_label_value(host: str, model: str, path: str) -> None:
    """Whatever a host name, model name or path holds, the text has the same lines, the same names, and the value
    reads back whole (the format's escapes undone)."""
    benign = full_report()
    hostile = copy.deepcopy(benign)
    hostile["host"], hostile["model"]["name"], hostile["disk"][0]["path"] = host, model, path
    # split at line feeds only, as Prometheus does (str.splitlines also splits at U+0085, U+2028, ...)
    lines, expected = metrics.exposition(hostile).split("\n"), metrics.exposition(benign).split("\n")
    assert len(lines) == len(expected)
    assert [re.split(r"[{ ]", line, maxsplit=1)[0] for line in lines] == [
        re.split(r"[{ ]", line, maxsplit=1)[0] for line in expected]
    ready = next(line for line in lines if line.startswith("cnctl_model_ready"))
    if model:
        quoted = re.fullmatch(r'cnctl_model_ready\{model="((?:[^"\\]|\\.)*)"\} 1', ready)
        assert quoted is not None and _unescape(quoted.group(1)) == model


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def test_the_file_is_written_whole_and_only_where_the_collector_reads(tmp_path: Any) -> None:
    target = tmp_path / "node-exporter" / "circularnet.prom"
    assert metrics.write("a 1\n", str(target)) is False and not target.parent.exists()  # no collector: nothing
    target.parent.mkdir()
    assert metrics.write("a 1\n", str(target)) is True and target.read_text() == "a 1\n"
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in target.parent.iterdir()] == ["circularnet.prom"]  # no temporary file left
