"""The GitHub workflows are hardened and lint-clean: actions pinned by commit SHA, no secret where
pull-request code runs outside a protected environment, least permissions written per job, no
persisted token, a deploy of main behind environments with the policy pack; zizmor (offline) and
actionlint find nothing. Both linters come from the locked test dependencies (wheels carrying their
binary), so under CI=true a missing one fails instead of skipping."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cnctl.config.loader import ROOT

WORKFLOWS = sorted((ROOT / ".github/workflows").glob("*.yml"))
BIN = ROOT / ".venv/bin"
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def _load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    document["on"] = document.pop(True, document.get("on"))  # YAML 1.1 reads the key `on` as true
    return document


def _jobs() -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    docs = [(p.name, _load(p)) for p in WORKFLOWS]
    return [(name, job_name, job, doc) for name, doc in docs for job_name, job in doc["jobs"].items()]


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is missing: run `make venv` (it comes with the test extra)"
    return found


def test_there_are_the_plan_and_deploy_workflows() -> None:
    assert {"plan.yml", "deploy.yml", "deploy-stack.yml"} <= {p.name for p in WORKFLOWS}


@pytest.mark.parametrize(("workflow", "job", "spec", "doc"), _jobs(), ids=[f"{w}:{j}" for w, j, _, _ in _jobs()])
def test_every_job_is_hardened(workflow: str, job: str, spec: dict[str, Any], doc: dict[str, Any]) -> None:
    assert doc["permissions"] == {}, "workflow-level permissions stay empty: each job asks for its own"
    assert "permissions" in spec, f"{workflow}:{job} must list its permissions"
    text = (ROOT / ".github/workflows" / workflow).read_text()
    for scope in spec["permissions"]:
        assert re.search(rf"^\s+{re.escape(scope)}: \w+\s+#\s*\S", text, re.MULTILINE), f"{scope} has no comment saying why"
    for step in spec.get("steps", []):
        uses = step.get("uses")
        if uses and not uses.startswith(("./", "$/")):
            assert PINNED.match(uses), f"{workflow}:{job} uses {uses} without a commit SHA"
        if uses and uses.startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False


def test_pins_say_which_release_they_are() -> None:
    for path in WORKFLOWS:
        for line in path.read_text().splitlines():
            if re.search(r"uses: [\w-]+/[\w./-]+@[0-9a-f]{40}", line):
                assert re.search(r"#\s*v\d", line), f"{path.name}: {line.strip()} needs its tag in a comment"


def _runs_pull_request_code(doc: dict[str, Any], spec: dict[str, Any]) -> bool:
    triggers = doc["on"] if isinstance(doc["on"], dict) else {t: None for t in doc["on"]}
    pr = bool({"pull_request", "pull_request_target"} & set(triggers))
    return pr and any("checkout" in str(step.get("uses", "")) for step in spec.get("steps", []))


@pytest.mark.parametrize(("workflow", "job", "spec", "doc"), _jobs(), ids=[f"{w}:{j}" for w, j, _, _ in _jobs()])
def test_no_secret_where_pull_request_code_runs_unprotected(
    workflow: str, job: str, spec: dict[str, Any], doc: dict[str, Any]
) -> None:
    if not _runs_pull_request_code(doc, spec):
        return
    uses_secrets = "secrets." in yaml.safe_dump(spec) or "id-token" in spec.get("permissions", {})
    assert not uses_secrets or spec.get("environment"), f"{workflow}:{job} gives pull-request code credentials"
    assert "pull_request_target" not in doc["on"]
    writes = {scope for scope, level in spec["permissions"].items() if level == "write" and scope != "id-token"}
    assert not writes, f"{workflow}:{job} runs pull-request code with write access to {writes}"


def test_deploy_runs_main_through_environments_with_the_policy_pack() -> None:
    deploy, stack = _load(ROOT / ".github/workflows/deploy.yml"), _load(ROOT / ".github/workflows/deploy-stack.yml")
    assert deploy["on"]["push"]["branches"] == ["main"] and "pull_request" not in deploy["on"]
    jobs = deploy["jobs"]
    assert [jobs[j]["with"]["stack"] for j in ("dev", "prod")] == ["dev", "prod"]
    assert jobs["prod"]["needs"] == "dev"
    assert deploy["concurrency"]["cancel-in-progress"] is False
    up = stack["jobs"]["up"]
    assert up["environment"] == "${{ inputs.stack }}"
    script = "\n".join(step.get("run", "") for step in up["steps"])
    assert "cnctl up --stack" in script and "--policy-pack policy" in script
    assert "hosts/cloud.py deploy.py" in script.split("cnctl up")[1], "host layers run after pulumi up"


def test_the_pull_request_preview_uses_the_policy_pack_in_a_protected_environment() -> None:
    job = _load(ROOT / ".github/workflows/plan.yml")["jobs"]["pulumi-preview"]
    assert job["environment"] == "preview"
    assert any("--policy-pack policy" in step.get("run", "") for step in job["steps"])


def test_zizmor_offline_finds_nothing() -> None:
    result = subprocess.run([_tool("zizmor"), "--offline", "--no-progress", *map(str, WORKFLOWS)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_finds_nothing() -> None:
    result = subprocess.run([_tool("actionlint"), "-no-color", *map(str, WORKFLOWS)],
                            capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
