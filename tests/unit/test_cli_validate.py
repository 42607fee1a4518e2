"""`cnctl validate`: the user's first check of a stack file, through the installed console script."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cnctl.config.loader import STACKS_DIR
from cnctl.paths import REPO_ROOT

CNCTL = shutil.which("cnctl") or str(REPO_ROOT / ".venv/bin/cnctl")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CNCTL, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("stack", ["local", "dev", "prod"])
def test_example_stacks_validate(stack: str) -> None:
    result = run("validate", "--stack", stack)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ok stack {stack}:")


def test_bad_stack_exits_2_with_one_unwrapped_line_per_problem(tmp_path: Path) -> None:
    text = (STACKS_DIR / "Pulumi.dev.yaml").read_text()
    text = text.replace("project: my-circularnet-dev", "project: My_Proj").replace("framePrefix:", "framePrefx:")
    bad = tmp_path / "Pulumi.dev.yaml"
    bad.write_text(text)
    before = bad.read_bytes()
    result = run("validate", "--stack", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == f"error: {bad}: 2 problems"
    assert lines[1] == "  - gcp.project: 'My_Proj' is not a valid GCP project id (6-30 of a-z 0-9 -)"
    assert lines[2].startswith("  - fleets.edge[0].camera.framePrefx: is not a known key (a typo?); known keys here: ")
    assert "framePrefix" in lines[2].split("known keys here: ", 1)[1].split(", ")
    assert bad.read_bytes() == before
