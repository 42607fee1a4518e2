"""The Pulumi policy pack (policy/) agrees with the offline guardrails on every case of the shared table.

The Pulumi CLI is not needed: the pack's validators are called the way the policy SDK calls them, with
pulumi_policy's own ResourceValidationArgs / StackValidationArgs built from the table's resources.
"""

from __future__ import annotations

import runpy
from typing import Any

import pytest
import yaml
from pulumi_policy import (
    EnforcementLevel,
    PolicyResource,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from cnctl.config.loader import ROOT
from cnctl.plan.guardrails import RULES, evaluate
from cnctl.plan.mocks import Registration
from tests.unit.guardrail_table import ALSO_GOOD, BAD, GOOD, GOOD_DEV

PACK = ROOT / "policy"
Stack = list[tuple[str, str, dict[str, Any]]]


def _urn(type_: str, name: str) -> str:
    return f"urn:pulumi:prod::circularnet::{type_}::{name}"


@pytest.fixture(scope="module")
def pack() -> dict[str, Any]:
    """policy/__main__.py loaded as a module (not as __main__, so no analyzer server starts)."""
    return runpy.run_path(str(PACK / "__main__.py"), run_name="policy_pack")


def pack_verdicts(pack: dict[str, Any], stack: Stack) -> set[tuple[str, str]]:
    """(policy name, resource name) of every violation the pack reports on `stack`."""
    found: set[tuple[str, str]] = set()
    by_urn = {_urn(t, n): n for t, n, _ in stack}
    for policy in pack["policies"]():
        if isinstance(policy, ResourceValidationPolicy):
            for type_, name, inputs in stack:
                args = ResourceValidationArgs(type_, inputs, _urn(type_, name), name, None, None, {}, {})
                policy.validate(args, lambda message, urn=None, name=name, p=policy.name: found.add((p, name)))
        else:
            assert isinstance(policy, StackValidationPolicy)
            resources = [PolicyResource(t, i, _urn(t, n), n, None, None, None, [], {}) for t, n, i in stack]
            policy.validate(StackValidationArgs(resources), lambda message, urn=None, p=policy.name: found.add((p, by_urn[urn])))
    return found


def plan_verdicts(stack: Stack) -> set[tuple[str, str]]:
    return {(v.rule, v.resource) for v in evaluate([Registration(t, n, i) for t, n, i in stack])}


def test_one_mandatory_policy_per_guardrail(pack: dict[str, Any]) -> None:
    policies = pack["policies"]()
    assert [(p.name, p.description) for p in policies] == [(r.id, r.description) for r in RULES]
    assert all(p.enforcement_level == EnforcementLevel.MANDATORY for p in policies)
    assert [isinstance(p, StackValidationPolicy) for p in policies] == [r.stack_wide for r in RULES]


@pytest.mark.parametrize("stack", [GOOD, GOOD_DEV], ids=["prod", "dev"])
def test_the_good_stacks_pass_the_pack(pack: dict[str, Any], stack: Stack) -> None:
    assert pack_verdicts(pack, stack) == set() == plan_verdicts(stack)


@pytest.mark.parametrize("case", BAD, ids=[f"{c.rule}-{i}" for i, c in enumerate(BAD)])
def test_the_pack_and_the_plan_refuse_the_same(pack: dict[str, Any], case: Any) -> None:
    stack = case.stack()
    verdicts = pack_verdicts(pack, stack)
    assert (case.rule, "judged") in verdicts
    assert verdicts == plan_verdicts(stack)


@pytest.mark.parametrize(("base", "type_", "inputs"), ALSO_GOOD, ids=[str(i) for i in range(len(ALSO_GOOD))])
def test_the_pack_accepts_the_near_misses(pack: dict[str, Any], base: tuple, type_: str, inputs: dict) -> None:
    assert pack_verdicts(pack, [*base, (type_, "judged", inputs)]) == set()


def test_the_pack_runs_in_the_project_virtualenv_and_is_documented() -> None:
    spec = yaml.safe_load((PACK / "PulumiPolicy.yaml").read_text())
    assert spec["runtime"]["name"] == "python"
    assert (PACK / spec["runtime"]["options"]["virtualenv"]).resolve() == (ROOT / ".venv").resolve()
    assert "--policy-pack policy" in (ROOT / "docs" / "cloud.md").read_text()  # Real use: how to run Pulumi with it


def test_the_pack_file_starts_the_analyzer_only_when_pulumi_runs_it() -> None:
    source = (PACK / "__main__.py").read_text()
    assert 'if __name__ == "__main__":' in source and source.count("PolicyPack(") == 1
