"""The health report as Prometheus metrics: the text node-exporter's textfile collector reads.

Standard library only, like the report it reads (cnhost/health_report.py writes both, every few minutes):
`exposition(report)` is a pure function, report in, text out (Prometheus text format 0.0.4), and
`write(text, path)` replaces the file atomically, so a scrape never reads half of one. The names are the
contract the alert rules (monitoring/rules/) and dashboards read; docs/monitoring.md lists them.

Every metric is one sample per host: the scrape's `instance` and `job` say which host. Values that come from
a stack or a host (host, stack, model name, versions, paths) are label values only, escaped as the format
says (backslash, double quote, newline), never part of a name: a hostile value stays data.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import cnhost

Labels = Mapping[str, Any]

# The pipeline summary's counters (they only grow, but restart from 0 when the host's state is reset:
# Prometheus' rate() handles both), its gauges, and its times (ISO 8601 in the report, epoch seconds here).
PIPELINE_COUNTERS = {
    "frames_captured": "Frames the capture service stored",
    "frames_dropped": "Frames the capture service dropped (the spool full or a frame unreadable)",
    "batches": "Inference batches run",
    "failed_batches": "Inference batches that failed",
    "rows": "Detection rows written",
    "uploaded_files": "Result files uploaded to the store",
    "dropped_files": "Result files dropped from the upload queue (over its size limit)",
    "images": "Images a bucket worker ran",
    "acked": "Queue messages a bucket worker acknowledged",
    "nacked": "Queue messages a bucket worker gave back",
    "uploaded": "Results a bucket worker wrote to the results bucket",
    "already_present": "Results a bucket worker found already written (a redelivered image's)",
    "failed_uploads": "Results a bucket worker could not write (their images go back to the queue)",
}
PIPELINE_GAUGES = {
    "queue_files": "Result files waiting in the upload queue",
    "queue_bytes": "Bytes waiting in the upload queue",
}
PIPELINE_TIMES = {
    "last_frame": "When the last frame was captured",
    "last_run": "When the pipeline last ran",
    "last_ok": "When a pipeline run last succeeded",
    "last_upload": "When an upload last succeeded",
    "failing_since": "Since when uploads fail (absent while they succeed)",
}


def exposition(report: Mapping[str, Any]) -> str:
    """The report's metrics, each with its HELP and TYPE lines; a value the report lacks is left out."""
    return "".join(family(name, kind, text, samples) for name, kind, text, samples in _families(report))


def _families(report: Mapping[str, Any]) -> Iterator[tuple[str, str, str, list[tuple[Labels, Any]]]]:
    versions = report.get("versions") or {}
    deploy = report.get("last_deploy") or {}
    model = report.get("model") or {}
    pinned = deploy.get("model") or {}
    name = {"model": model.get("name")}
    yield "cnctl_health_healthy", "gauge", "1 when the host's health report has no problem", [({}, report.get("healthy"))]
    yield "cnctl_health_problems", "gauge", "Problems in the host's health report", [({}, len(report.get("problems") or []))]
    yield ("cnctl_health_checked_timestamp_seconds", "gauge", "When the health report was made",
           [({}, _epoch(report.get("checked")))])
    yield "cnctl_host_info", "gauge", "The host and what runs on it (always 1)", [({
        "host": report.get("host"), "hostname": report.get("hostname"), "stack": deploy.get("stack"),
        "runtime": deploy.get("runtime"), "driver": versions.get("driver"), "docker": versions.get("docker"),
        "l4t": versions.get("l4t"), "triton": versions.get("triton")}, 1)]
    yield "cnctl_triton_live", "gauge", "1 when Triton answers on its address", [({}, (report.get("triton") or {}).get("live"))]
    yield "cnctl_model_ready", "gauge", "1 when Triton reports the served version READY", [(name, model.get("ready"))]
    yield "cnctl_model_served_version", "gauge", "The model version Triton serves", [(name, model.get("version"))]
    pinned_version = pinned.get("version") if pinned.get("action", "pinned") == "pinned" else None
    yield ("cnctl_model_pinned_version", "gauge", "The model version the last deploy pinned (absent: not pinned)",
           [({"model": pinned.get("name")}, pinned_version)])
    yield ("cnctl_deploy_timestamp_seconds", "gauge", "When the deployed state last changed",
           [({}, _epoch(deploy.get("at")))])
    disks = report.get("disk") or []
    yield ("cnctl_disk_free_bytes", "gauge", "Free bytes of the filesystem holding the path",
           [({"path": d.get("path")}, d.get("free_bytes")) for d in disks])
    yield ("cnctl_disk_size_bytes", "gauge", "Size in bytes of the filesystem holding the path",
           [({"path": d.get("path")}, d.get("total_bytes")) for d in disks])
    pipeline = report.get("pipeline")
    if pipeline is None:
        return
    for key, text in PIPELINE_COUNTERS.items():
        yield f"cnctl_pipeline_{key}_total", "counter", text, [({}, pipeline.get(key))]
    for key, text in PIPELINE_GAUGES.items():
        yield f"cnctl_pipeline_{key}", "gauge", text, [({}, pipeline.get(key))]
    for key, text in PIPELINE_TIMES.items():
        yield f"cnctl_pipeline_{key}_timestamp_seconds", "gauge", text, [({}, _epoch(pipeline.get(key)))]


def family(name: str, kind: str, text: str, samples: list[tuple[Labels, Any]]) -> str:
    """One metric family: its HELP and TYPE lines, then a line per sample that has a value (labels without a
    value left out, the others escaped); empty when no sample has one. The GPU collector (gpu_metrics.py)
    renders its families with it too."""
    lines = [f"{name}{_labels(labels)} {_number(value)}\n" for labels, value in samples if _number(value) is not None]
    if not lines:
        return ""
    return f"# HELP {name} {_help(text)}\n# TYPE {name} {kind}\n" + "".join(lines)


def _labels(labels: Labels) -> str:
    """`{a="x",b="y"}` of the labels that have a value, each value escaped; empty when none has one."""
    pairs = [f'{key}="{escape(str(value))}"' for key, value in labels.items() if value is not None and value != ""]
    return "{" + ",".join(pairs) + "}" if pairs else ""


def escape(value: str) -> str:
    """A label value as the text format writes it: backslash, double quote and line feed escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: Any) -> str | None:
    """The sample value: booleans as 1 and 0, numbers as Prometheus reads them; None for anything else."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return None


def _epoch(iso: Any) -> float | None:
    """ISO 8601 (the report's times) as epoch seconds; None when absent or unreadable."""
    if not isinstance(iso, str):
        return None
    try:
        when = datetime.datetime.fromisoformat(iso)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def write(text: str, path: str) -> bool:
    """Replace `path` with `text` (0644, atomically: node-exporter reads whole files only) when its directory
    exists, that is when node-exporter's textfile collector is installed. False when it is not."""
    if not Path(path).parent.is_dir():
        return False
    cnhost.replace_file(path, text.encode())
    return True
