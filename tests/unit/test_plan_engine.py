"""The offline plan's engine: the real program on Pulumi's mock engine, isolated, repeatable, offline."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.runtime import settings
from pulumi.runtime.config import CONFIG

from cnctl.config import StackConfigError, stack_path
from cnctl.paths import REPO_ROOT
from cnctl.plan import plan_stack, pulumi_cli_available, pulumi_cli_missing_message
from cnctl.plan.engine import engine_config, project_name, run_program
from cnctl.plan.mocks import ProgramCalledDataSource


def dev_config() -> dict[str, Any]:
    return yaml.safe_load(stack_path("dev").read_text())["config"]


def test_plan_twice_in_one_process_is_identical_and_leaves_no_state() -> None:
    root, stack, config = settings.get_root_resource(), pulumi.get_stack(), dict(CONFIG.get())
    first = plan_stack("dev")
    prod = plan_stack("prod")
    second = plan_stack("dev")
    assert first.render_json() == second.render_json()
    assert first.render_json() != prod.render_json()
    # The caller's Pulumi runtime state is exactly what it was.
    assert (settings.get_root_resource(), pulumi.get_stack(), dict(CONFIG.get())) == (root, stack, config)


def test_plan_from_inside_a_running_event_loop() -> None:
    async def caller() -> int:
        return len(plan_stack("dev").resources)

    assert asyncio.run(caller()) == len(plan_stack("dev").resources)


def test_program_reads_its_stack_through_pulumi_config() -> None:
    """run_program skips load_stack: the program's own from_pulumi_config must see and reject this."""
    config = dev_config()
    config["circularnet:compute"]["gpu"] = {"type": "nvidia-l4", "count": 1}  # an L4 on n1-standard-8
    with pytest.raises(StackConfigError) as caught:
        run_program(config, stack="dev")
    assert caught.value.source == "stacks/Pulumi.dev.yaml"
    assert [p.path for p in caught.value.problems] == ["compute.gpu.type"]


def test_bad_stack_file_is_a_stack_config_error_naming_file_and_field(tmp_path: Path) -> None:
    document = yaml.safe_load(stack_path("dev").read_text())
    document["config"]["circularnet:compute"]["gpu"] = {"type": "nvidia-l4", "count": 1}
    path = tmp_path / "Pulumi.l4n1.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(StackConfigError) as caught:
        plan_stack(str(path))
    assert caught.value.source == str(path)
    assert "compute.gpu.type" in caught.value.render()


def test_data_source_calls_are_refused(tmp_path: Path) -> None:
    program = tmp_path / "program.py"
    program.write_text("from pulumi_gcp import organizations\norganizations.get_client_config()\n")
    with pytest.raises(ProgramCalledDataSource, match="getClientConfig"):
        run_program({}, stack="dev", program=program)


def test_config_reaches_the_program_as_the_engine_passes_it() -> None:
    assert engine_config({"circularnet:model": {"key": "k"}, "gcp:project": "p", "n": 3}) == {
        "circularnet:model": '{"key": "k"}',
        "gcp:project": "p",
        "n": "3",
    }
    assert project_name() == "circularnet"


# --- the real Pulumi CLI -------------------------------------------------------------------------


def test_pulumi_cli_detection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert pulumi_cli_available() is False
    fake = tmp_path / "pulumi"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    assert pulumi_cli_available() is True
    assert os.environ["PATH"] == str(tmp_path)


def test_pulumi_cli_missing_message_says_how_to_get_it() -> None:
    message = pulumi_cli_missing_message("pulumi preview -s dev")
    assert message.startswith("`pulumi preview -s dev` needs the Pulumi CLI")
    for hint in ("docs/cloud.md, 'Real use'", "curl -fsSL https://get.pulumi.com | sh", "pulumi login", "cnctl plan"):
        assert hint in message
    assert "\n## Real use\n" in (REPO_ROOT / "docs" / "cloud.md").read_text()  # the section the hint sends users to
