"""The pull-request workflow: offline plans for every PR (forks too), credentials only for our own branches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cnctl.config import load_stack
from cnctl.config.loader import ROOT
from cnctl.paths import STACKS_DIR

WORKFLOW = ROOT / ".github/workflows/plan.yml"
SAME_REPO = "github.event.pull_request.head.repo.full_name == github.repository"


def _workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def _cloud_stacks() -> list[str]:
    names = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in Path(STACKS_DIR).glob("Pulumi.*.yaml"))
    return [name for name in names if load_stack(name).gcp is not None]


def test_every_cloud_stack_is_planned_and_previewed() -> None:
    jobs = _workflow()["jobs"]
    assert jobs["offline-plan"]["strategy"]["matrix"]["stack"] == _cloud_stacks()
    assert jobs["pulumi-preview"]["strategy"]["matrix"]["stack"] == _cloud_stacks()


def test_the_offline_plan_uses_no_secret_and_comments_only_where_the_token_can() -> None:
    jobs = _workflow()["jobs"]
    assert "secrets." not in yaml.safe_dump(jobs["offline-plan"])
    assert jobs["offline-plan"]["permissions"] == {"contents": "read"}
    comment_job = jobs["comment"]
    assert SAME_REPO in comment_job["if"] and comment_job["needs"] == "offline-plan"
    assert comment_job["permissions"] == {"pull-requests": "write"}
    assert not any("checkout" in step.get("uses", "") for step in comment_job["steps"])  # runs no PR code
    comment = next(s for s in comment_job["steps"] if s.get("name", "").startswith("one comment per stack"))
    assert "cnctl-plan:${process.env.STACK}" in comment["with"]["script"]
    assert "updateComment" in comment["with"]["script"]


def test_the_real_preview_runs_only_for_this_repository_and_behind_the_guardrails() -> None:
    job = _workflow()["jobs"]["pulumi-preview"]
    assert job["if"] == SAME_REPO
    assert job["permissions"] == {"contents": "read", "id-token": "write"}
    assert any("cnctl preview" in step.get("run", "") for step in job["steps"])


def test_workflow_permissions_default_to_none() -> None:
    assert _workflow()["permissions"] == {}
