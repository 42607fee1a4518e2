"""`cnctl plan`: the command's contract (JSON shape, exit codes) and the examples docs/cloud.md shows."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cnctl.cli.main import app
from cnctl.paths import REPO_ROOT
from tests.unit.stack_variants import stack_variant

ROOT = REPO_ROOT
DOC = ROOT / "docs" / "cloud.md"
CNCTL = Path(sys.executable).parent / "cnctl"


def cnctl(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def l4_on_n1(config: dict[str, Any]) -> None:
    config["circularnet:compute"]["gpu"] = {"type": "nvidia-l4", "count": 1}


def open_inference(config: dict[str, Any]) -> None:
    config["circularnet:network"]["inferenceAllowedCidrs"] = ["0.0.0.0/0"]
    config["circularnet:inference"]["bindInterface"] = "ens4"


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def dev_json() -> dict[str, Any]:
    result = cnctl("plan", "--stack", "dev", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def resources(plan: dict[str, Any], token: str) -> dict[str, dict[str, Any]]:
    return {r["name"]: r["inputs"] for r in plan["resources"] if r["type"] == token}


# --- the JSON contract ---------------------------------------------------------------------------


def test_json_shape(dev_json: dict[str, Any]) -> None:
    assert set(dev_json) == {"stack", "production", "resources", "violations", "outputs"}
    assert dev_json["stack"] == "dev" and dev_json["violations"] == [] and dev_json["production"] is False
    # `options`: protect / deleteBeforeReplace where the program sets them
    assert all(set(r) - {"options"} == {"type", "name", "inputs"} for r in dev_json["resources"])
    assert [(r["type"], r["name"]) for r in dev_json["resources"]] == sorted(
        (r["type"], r["name"]) for r in dev_json["resources"]
    )


def test_json_gpu_vm(dev_json: dict[str, Any]) -> None:
    (vm,) = resources(dev_json, "gcp:compute/instance:Instance").values()
    assert vm["guestAccelerators"] == [{"type": "nvidia-tesla-t4", "count": 1}]
    assert vm["scheduling"]["onHostMaintenance"] == "TERMINATE"
    assert all("accessConfigs" not in nic for nic in vm["networkInterfaces"])
    assert vm["serviceAccount"]["email"] == "cn-dev-vm@my-circularnet-dev.iam.gserviceaccount.com"


def test_json_buckets_dataset_table_and_ssh(dev_json: dict[str, Any]) -> None:
    buckets = resources(dev_json, "gcp:storage/bucket:Bucket")
    assert len(buckets) == 3
    assert all(b["publicAccessPrevention"] == "enforced" and b["uniformBucketLevelAccess"] for b in buckets.values())
    assert list(resources(dev_json, "gcp:bigquery/dataset:Dataset")) == ["cn-dev-dataset"]
    assert list(resources(dev_json, "gcp:bigquery/table:Table")) == ["cn-dev-table-detections_detr", "cn-dev-table-detections_tf"]
    ssh = [
        fw
        for fw in resources(dev_json, "gcp:compute/firewall:Firewall").values()
        if any("22" in allow.get("ports", []) for allow in fw["allows"])
    ]
    assert [fw["sourceRanges"] for fw in ssh] == [["35.235.240.0/20"]]


# --- exit codes ----------------------------------------------------------------------------------


def test_l4_on_n1_exits_2_naming_the_field(tmp_path: Path) -> None:
    result = cnctl("plan", "--stack", stack_variant(tmp_path, l4_on_n1, name="l4n1"), "--json")
    assert result.exit_code == 2
    assert "compute.gpu.type" in result.stderr and "Traceback" not in result.output
    assert result.stdout == ""


def test_open_inference_port_exits_1_naming_rule_and_resource(tmp_path: Path) -> None:
    result = cnctl("plan", "--stack", stack_variant(tmp_path, open_inference, name="open"), "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["violations"] == [
        {
            "rule": "no-open-ingress",
            "resource": "cn-open-allow-inference",
            "message": "allows ingress from 0.0.0.0/0; list the sources that need it",
        }
    ]
    assert "guardrail no-open-ingress failed on cn-open-allow-inference" in result.stderr


def test_unknown_stack_exits_2() -> None:
    result = cnctl("plan", "--stack", "nosuchstack")
    assert result.exit_code == 2 and "known stacks" in words(result.stderr)


def test_human_view_lists_resources_verdicts_and_outputs() -> None:
    result = cnctl("plan", "--stack", "dev")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "cn-dev-gpu-0" in text and "nvidia-tesla-t4" in text and "TERMINATE" in text
    for rule in ("no-external-ip", "no-open-ingress", "buckets-private", "labels-present"):
        assert re.search(rf"{rule}\s+│\s+pass", text), rule
    assert "lookerStudioUrl" in text and "serviceAccounts" in text


def test_installed_entry_point() -> None:
    """The `cnctl` script itself, as a user (and bench/plan.py) runs it."""
    command = [str(CNCTL), "plan", "--stack", "dev", "--json"]
    result = subprocess.run(command, check=False, capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["stack"] == "dev"


# --- docs/cloud.md examples ----------------------------------------------------------------------


def example(name: str) -> str:
    """The fenced block that follows `<!-- example: NAME -->` in docs/cloud.md."""
    match = re.search(rf"<!-- example: {name} -->\n```\w+\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert match, f"docs/cloud.md has no example {name}"
    return match.group(1)


def contains(actual: Any, expected: Any) -> bool:
    """`expected` is `actual` with some mapping keys left out (lists must match element by element)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and contains(actual[k], v) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(actual) == len(expected) and all(map(contains, actual, expected))
    return bool(actual == expected)


def test_doc_dev_vm_example(dev_json: dict[str, Any]) -> None:
    vm = resources(dev_json, "gcp:compute/instance:Instance")["cn-dev-gpu-0"]
    assert contains(vm, json.loads(example("dev-vm")))


def test_doc_dev_outputs_example(dev_json: dict[str, Any]) -> None:
    assert json.loads(example("dev-outputs")) == dev_json["outputs"]


@pytest.mark.parametrize(("name", "change", "code"), [("l4n1", l4_on_n1, 2), ("open", open_inference, 1)])
def test_doc_exit_code_examples(tmp_path: Path, name: str, change: Callable[[dict[str, Any]], None], code: int) -> None:
    transcript = example(f"exit-{code}").replace("/tmp/", f"{tmp_path}/variant/")
    command, *printed, echo, shown_code = transcript.strip().splitlines()
    assert command == f"$ cnctl plan --stack {tmp_path}/variant/Pulumi.{name}.yaml" and echo == "$ echo $?"
    result = cnctl("plan", "--stack", stack_variant(tmp_path, change, name=name))
    assert (result.exit_code, int(shown_code)) == (code, code)
    assert words("\n".join(printed)) in words(result.stderr)
