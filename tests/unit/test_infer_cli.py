"""`cnctl infer`: one row per host with the version that answered and what it found; exit 1 naming a host that
did not answer, 2 for bad input. The SSH fan-out is replaced by each host's recorded `model_serve.py` output."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from cnctl import rollout
from cnctl.cli.main import app
from cnctl.remote import RemoteOutcome

STATUS = {"result": "ok", "live": True, "served": 2, "ready": True, "loaded": [2], "history": [1], "message": "ok",
          "reason": "ok", "changed": False}
PROBE = {"result": "ok", "model_version": "2", "detections": 1, "ms": 12.5, "reason": "ok", "changed": False,
         "message": "circularnet version 2 answered in 12 ms, 1 detection(s)",
         "outputs": {"num_detections": [1], "detection_boxes": [1, 100, 4]}}
REFUSED = {"result": "failed", "reason": "probe", "changed": False,
           "message": "inference on circularnet failed: Triton does not answer"}


def said(status: dict[str, Any], probe: dict[str, Any]) -> str:
    return f"{rollout.MARK}status\n{json.dumps(status)}\n{rollout.MARK}probe\n{json.dumps(probe)}\n{rollout.MARK}end\n"


@pytest.fixture
def outputs(monkeypatch: pytest.MonkeyPatch) -> dict[str, RemoteOutcome]:
    answers: dict[str, RemoteOutcome] = {}

    def fake(hosts: Sequence[Any], command: str, timeout: float, **_: Any) -> dict[str, RemoteOutcome]:
        assert "-m cnhost.model_serve probe" in command and "sudo -n" in command
        default = RemoteOutcome(reachable=True, rc=0, stdout=said(STATUS, PROBE), stderr="")
        return {h.name: answers.get(h.name, default) for h in hosts}

    monkeypatch.setattr("cnctl.remote.run_on_hosts", fake)
    return answers


def run(*args: str) -> Result:
    result = CliRunner().invoke(app, ["infer", "--stack", "prod", *args])
    assert "Traceback" not in result.output, result.output
    return result


def test_every_host_answering_exits_0_with_the_version_and_detections(outputs: dict[str, RemoteOutcome]) -> None:
    result = run("--limit", "edge")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if "plant-a-belt" in line]
    assert len(rows) == 2 and all("version 2" in row and "│          1 │" in row and "│ 12 │" in row for row in rows), rows


def test_a_host_that_does_not_answer_exits_1_naming_it_and_why(outputs: dict[str, RemoteOutcome]) -> None:
    outputs["plant-a-belt-2"] = RemoteOutcome(reachable=True, rc=7, stdout=said(STATUS, REFUSED), stderr="")
    result = run("--limit", "edge")
    assert result.exit_code == 1
    assert "no answer from plant-a-belt-2: plant-a-belt-2: inference on circularnet failed: Triton does not answer" \
        in " ".join(result.stderr.split())


def test_an_unknown_host_exits_2_naming_it(outputs: dict[str, RemoteOutcome]) -> None:
    result = run("--limit", "nowhere")
    assert result.exit_code == 2 and "--limit nowhere" in result.stderr
