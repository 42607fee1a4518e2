"""`cnctl preview|up`: the offline guardrails gate the real Pulumi CLI, which is found on PATH or explained."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cnctl.config.loader import ROOT
from cnctl.paths import STACKS_DIR

CNCTL = str(ROOT / ".venv/bin/cnctl")

# A stand-in for the Pulumi CLI (none can be installed here): records its arguments and working dir.
FAKE_PULUMI = """#!/bin/sh
echo "$PWD" > "$RECORD"
echo "$@" >> "$RECORD"
exit 3
"""


@pytest.fixture
def fake_pulumi(tmp_path: Path) -> tuple[str, Path]:
    """A PATH whose `pulumi` is the recording stand-in, and the file it records into."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pulumi").write_text(FAKE_PULUMI)
    (bin_dir / "pulumi").chmod(0o755)
    return f"{bin_dir}:/usr/bin:/bin", tmp_path / "record"


def run(args: list[str], path: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PATH": path, **env}
    return subprocess.run([CNCTL, *args], capture_output=True, text=True, timeout=120, check=False, env=environ)


def test_without_the_pulumi_cli_it_says_how_to_install_it() -> None:
    result = run(["preview", "--stack", "dev"], path="/usr/bin:/bin")
    assert result.returncode == 2
    assert "needs the Pulumi CLI" in result.stderr and "get.pulumi.com" in result.stderr
    assert "Traceback" not in result.stderr


def test_hands_over_to_pulumi_from_the_repo_root_after_the_guardrails_pass(fake_pulumi: tuple[str, Path]) -> None:
    path, record = fake_pulumi
    result = run(["up", "--stack", "prod", "--", "--yes"], path=path, RECORD=str(record))
    assert result.returncode == 3, result.stderr  # pulumi's own exit code is passed on
    cwd, argv = record.read_text().splitlines()
    assert (cwd, argv) == (str(ROOT), f"up --stack prod --policy-pack {ROOT / 'policy'} --yes")


def test_a_policy_pack_the_user_names_replaces_ours(fake_pulumi: tuple[str, Path]) -> None:
    path, record = fake_pulumi
    result = run(["preview", "--stack", "dev", "--", "--policy-pack=/srv/theirs"], path=path, RECORD=str(record))
    assert result.returncode == 3, result.stderr
    assert record.read_text().splitlines()[1] == "preview --stack dev --policy-pack=/srv/theirs"


def test_a_guardrail_failure_never_reaches_pulumi(fake_pulumi: tuple[str, Path]) -> None:
    path, record = fake_pulumi
    open_stack = STACKS_DIR / "Pulumi.cnctl-test-open.yaml"
    text = (STACKS_DIR / "Pulumi.dev.yaml").read_text()
    text = text.replace("inferenceAllowedCidrs: []", "inferenceAllowedCidrs: [0.0.0.0/0]")
    text = text.replace("    bindAddress: 127.0.0.1\n", "    bindAddress: 127.0.0.1\n    bindInterface: ens4\n")
    open_stack.write_text(text)
    try:
        result = run(["up", "--stack", "cnctl-test-open"], path=path, RECORD=str(record))
    finally:
        open_stack.unlink()
    assert result.returncode == 1
    assert "guardrail no-open-ingress failed" in result.stderr and "refusing `pulumi up`" in result.stderr
    assert not record.exists()


def test_a_stack_outside_stacks_dir_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "Pulumi.dev.yaml"
    elsewhere.write_text((STACKS_DIR / "Pulumi.dev.yaml").read_text())
    result = run(["preview", "--stack", str(elsewhere)], path="/usr/bin:/bin")
    assert result.returncode == 2 and "runs stacks from" in result.stderr
