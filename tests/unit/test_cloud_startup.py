"""The GCE startup script: rendered from templates/gce-startup.sh.j2, valid bash, records the stack."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from cnctl.catalog import catalog
from cnctl.cloud.startup import STACK_DIR, TEMPLATES, render_startup_script, stack_record
from cnctl.config import StackConfig, load_stack


@pytest.fixture(scope="module")
def dev() -> StackConfig:
    return load_stack("dev")


def run(script: str, etc: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script],
        env={**os.environ, "CNCTL_ETC_DIR": str(etc)},
        capture_output=True,
        text=True,
        check=True,
    )


def test_template_says_what_it_does_until_the_host_layers_land() -> None:
    template = (TEMPLATES / "gce-startup.sh.j2").read_text()
    assert "Until the host layers land, this script only records the stack's parameters" in template
    assert "configure everything else" in template


def test_script_is_valid_bash(dev: StackConfig) -> None:
    subprocess.run(["bash", "-n"], input=render_startup_script(dev), text=True, check=True)


def test_script_records_the_stack_privately_and_idempotently(dev: StackConfig, tmp_path: Path) -> None:
    etc = tmp_path / "etc" / "circularnet"
    script = render_startup_script(dev)
    first = run(script, etc)
    run(script, etc)  # every boot runs it again
    assert "host layers configure the rest" in first.stdout
    assert sorted(p.name for p in etc.iterdir()) == ["stack.json"]  # no temp file left behind
    assert stat.S_IMODE((etc / "stack.json").stat().st_mode) == 0o640
    assert stat.S_IMODE(etc.stat().st_mode) == 0o750
    assert json.loads((etc / "stack.json").read_text()) == stack_record(dev)


def test_stack_record_carries_model_pin_ports_and_data_locations(dev: StackConfig) -> None:
    record = stack_record(dev)
    assert record["model"] == {
        "key": "Jan2025_ver2_merged_1024_1024",
        "version": 1,
        "sha256": "0" * 64,
        "url": catalog().models.models["Jan2025_ver2_merged_1024_1024"].url,
        "generation": "tf",
    }
    assert record["inference"] == {"bindAddress": "127.0.0.1", "ports": {"http": 8000, "grpc": 8001, "metrics": 8002}}
    assert record["buckets"] == {
        "images": "my-circularnet-dev-images",
        "results": "my-circularnet-dev-results",
        "models": "my-circularnet-dev-models",
    }
    assert record["bigquery"] == {"dataset": "circularnet_dev", "table": "detections"}
    assert STACK_DIR == "/etc/circularnet" and STACK_DIR in render_startup_script(dev)


def test_mirror_url_wins_over_the_catalog() -> None:
    assert stack_record(load_stack("prod"))["model"]["url"] == (
        "gs://my-circularnet-prod-models/archives/Jan2025_ver2_merged_1024_1024.zip"
    )
