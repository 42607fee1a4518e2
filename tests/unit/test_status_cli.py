"""`cnctl status`: the table, the JSON, and the exit codes (0 all healthy, 1 any host unhealthy or unreachable,
named; 2 bad input, no traceback), with the SSH fan-out replaced by fake answers (tests/unit/test_status.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cnctl import status
from cnctl.cli.main import app
from cnctl.cli.status import _pipeline
from tests.unit.test_status import BAD, GOOD, FakeRemote, answer

PROD = ["status", "--stack", "prod", "--limit"]  # prod's fleet hosts: no cloud outputs needed with a fleet --limit


@pytest.fixture
def remote(monkeypatch: pytest.MonkeyPatch) -> FakeRemote:
    fake = FakeRemote()
    monkeypatch.setattr(status, "run_on_hosts", fake)
    return fake


def run(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    return result


def test_a_healthy_fleet_exits_0_with_one_row_per_host(remote: FakeRemote) -> None:
    result = run(*PROD, "edge")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if "plant-a-belt" in line]
    assert len(rows) == 2
    for row in rows:
        assert all(cell in row for cell in ("edge", "server · driver 550.90.07", "circularnet@2", "ready", "40.0 GiB (40%)",
                                            "2026-09-21 13:56", "none")), row
    assert "0/2" not in result.stdout and "2/2 healthy" in result.stdout
    assert result.stderr == ""


def test_an_unhealthy_or_unreachable_host_exits_1_naming_it_and_its_problems(remote: FakeRemote) -> None:
    remote.answers = {"plant-a-belt-1": answer(json.dumps(BAD)),
                      "plant-a-belt-2": answer(reachable=False, stderr="plant-a-belt-2: cannot reach over SSH: timeout")}
    result = run(*PROD, "edge")
    assert result.exit_code == 1
    assert "not healthy: plant-a-belt-1 (unhealthy), plant-a-belt-2 (unreachable)" in " ".join(result.stderr.split())
    lines = result.stdout.splitlines()
    assert "0/2 healthy" in result.stdout
    assert [line for line in lines if line.startswith("plant-a-belt")] == [
        *(f"plant-a-belt-1: {p}" for p in BAD["problems"]),
        "plant-a-belt-2: unreachable: plant-a-belt-2: cannot reach over SSH: timeout"]


def test_json_gives_every_hosts_report_and_keeps_the_exit_code(remote: FakeRemote) -> None:
    remote.answers = {"plant-a-belt-2": answer(json.dumps(BAD))}
    result = run(*PROD, "edge", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["stack"] == "prod" and data["healthy"] is False and data["unhealthy"] == ["plant-a-belt-2"]
    by_name = {h["name"]: h for h in data["hosts"]}
    assert by_name["plant-a-belt-1"]["report"] == GOOD and by_name["plant-a-belt-1"]["healthy"] is True
    assert by_name["plant-a-belt-2"]["problems"] == BAD["problems"]
    assert set(by_name["plant-a-belt-2"]) == {"name", "group", "reachable", "healthy", "problems", "source", "report",
                                           "origin"}


@pytest.mark.parametrize(("args", "message"), [
    (["status", "--stack", "nope"], "stack: 'nope' has no file Pulumi.nope.yaml in"),
    (["status", "--stack", "dev", "--limit", "nope"],
     "--limit nope: no such host or group in stack dev; known: belt-1-orin, cn-dev-gpu-0-81b5, cn-dev-gpu-1-81b5, cloud, edge"),
])
def test_bad_input_exits_2_with_the_fix_and_asks_no_host(remote: FakeRemote, args: list[str], message: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNCTL_OUTPUTS", str(Path(__file__).parent / "samples" / "dev-outputs.json"))
    monkeypatch.setenv("CNCTL_SSH_USER", "deploy_example_com")
    result = run(*args)
    assert result.exit_code == 2 and message in " ".join(result.stderr.split()), result.output
    assert remote.calls == []


def test_the_local_stack_without_its_sandbox_exits_2(remote: FakeRemote, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNCTL_FLEET_FILE", str(tmp_path / "none" / "fleet.json"))
    result = run("status", "--stack", "local")
    assert result.exit_code == 2 and "the sandbox is not up" in result.stderr and "cnctl sandbox up" in result.stderr
    assert remote.calls == []


def test_a_saved_report_is_shown_as_such(remote: FakeRemote) -> None:
    remote.answers = {"plant-b-gpu-1": answer(f"{status._SAVED}\n{json.dumps(GOOD)}", stderr="ImportError: x")}
    result = run(*PROD, "plant-b-gpu-1")
    assert result.exit_code == 1
    assert "ready (saved)" in result.stdout
    assert "plant-b-gpu-1: the health report could not run now (ImportError: x): showing the last report, of " \
        f"{GOOD['checked']}" in result.stdout.splitlines()


def test_the_pipeline_column_shows_frames_rows_queue_and_uploads(remote: FakeRemote) -> None:
    pipeline = {"frames_captured": 40, "frames_dropped": 0, "last_run": "2026-11-29T17:02:03Z", "rows": 200,
                "queue_files": 1, "uploaded_files": 5, "last_upload": "2026-11-29T17:02:09Z", "dropped_files": 2}
    remote.answers["plant-a-belt-1"] = answer(json.dumps({**GOOD, "pipeline": pipeline}))
    result = run(*PROD, "edge", "--json")
    assert json.loads(result.stdout)["hosts"][0]["report"]["pipeline"] == pipeline
    assert _pipeline({"pipeline": pipeline}) == "40 frames · run 17:02:03 · 200 rows · queue 1 · 5 up 17:02:09 · dropped 2"
    assert _pipeline(GOOD) == "-"  # a host without the pipeline layer
