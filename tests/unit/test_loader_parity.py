"""pyinfra/Ansible (plain YAML) and the Pulumi program (pulumi.Config) read a stack into equal objects."""

from __future__ import annotations

import json

import pulumi
import pytest
import yaml

from cnctl.config import from_pulumi_config, load_stack
from cnctl.paths import STACKS_DIR
from cnctl.plan.engine import in_fresh_runtime
from tests.unit.test_schema import EXAMPLE_STACKS


class _NoResources(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        return f"{args.name}-id", args.inputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list]:
        return {}, []


@pytest.mark.parametrize("stack", EXAMPLE_STACKS)
def test_pulumi_config_and_yaml_give_equal_stacks(stack: str) -> None:
    document = yaml.safe_load((STACKS_DIR / f"Pulumi.{stack}.yaml").read_text())

    def program(_: object) -> None:  # in a fresh runtime of its own, as the engine runs the program
        # What the Pulumi engine hands a program: every config value as a string, objects as JSON.
        pulumi.runtime.set_all_config({key: json.dumps(value) for key, value in document["config"].items()})
        pulumi.runtime.set_mocks(_NoResources(), project="circularnet", stack=stack, preview=True)
        assert from_pulumi_config() == load_stack(stack)

    in_fresh_runtime(program)
