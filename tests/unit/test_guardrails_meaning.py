"""The offline guardrails, driven by the shared table (guardrail_table.py): the GOOD production and dev
stacks pass every rule; each BAD stack fails exactly at its judged resource for the rule it breaks."""

from __future__ import annotations

import pytest

from cnctl.plan.guardrails import RULES, Context, Violation, evaluate
from cnctl.plan.mocks import Registration
from tests.unit.guardrail_table import ALSO_GOOD, BAD, DEV, GOOD, GOOD_DEV, Bad


def registrations(stack: list[tuple[str, str, dict]] | tuple[tuple[str, str, dict], ...]) -> list[Registration]:
    return [Registration(type_, name, inputs) for type_, name, inputs in stack]


def test_every_rule_has_bad_cases_and_a_one_line_description() -> None:
    assert {case.rule for case in BAD} == {r.id for r in RULES}
    assert len({r.id for r in RULES}) == len(RULES)
    for r in RULES:
        assert r.description and "\n" not in r.description


@pytest.mark.parametrize("stack", [GOOD, GOOD_DEV], ids=["prod", "dev"])
def test_the_good_stacks_pass_every_rule(stack: list) -> None:
    assert evaluate(registrations(stack)) == []


@pytest.mark.parametrize("case", BAD, ids=[f"{c.rule}-{i}" for i, c in enumerate(BAD)])
def test_bad_stack_fails_its_rule_at_the_judged_resource(case: Bad) -> None:
    violations = evaluate(registrations(case.stack()))
    assert (case.rule, "judged") in {(v.rule, v.resource) for v in violations}, (case.why, violations)
    assert {v.resource for v in violations} == {"judged"}, "the rest of the stack stays good"


@pytest.mark.parametrize(("base", "type_", "inputs"), ALSO_GOOD, ids=[str(i) for i in range(len(ALSO_GOOD))])
def test_near_misses_pass(base: tuple, type_: str, inputs: dict) -> None:
    assert evaluate(registrations([*base, (type_, "judged", inputs)])) == []


def test_resource_rules_do_not_depend_on_the_stack() -> None:
    """Rules not marked stack_wide give the same verdict with or without context (the pack relies on it)."""
    full = Context(production=True, cmek=True, transfer_sources={"serviceAccount:x": frozenset({"b"})},
                   uploaders=frozenset({"serviceAccount:y"}), bigquery_custom_roles=frozenset({"projects/p/roles/r"}),
                   writer_custom_roles=frozenset({"projects/p/roles/r"}))
    for case in BAD:
        for rule in (r for r in RULES if not r.stack_wide):
            assert rule.check(case.type, case.inputs, full) == rule.check(case.type, case.inputs, Context())


def test_production_is_read_from_the_stack_not_the_resource() -> None:
    assert Context.of((t, i) for t, _, i in GOOD).production
    assert not Context.of((t, i) for t, _, i in DEV).production


def test_evaluate_names_rule_and_resource() -> None:
    open_rule = [("gcp:compute/firewall:Firewall", "open", {"allows": [{"protocol": "tcp", "ports": ["80"]}],
                                                             "sourceRanges": ["0.0.0.0/0"]})]
    assert evaluate(registrations(open_rule)) == [
        Violation("no-open-ingress", "open", "allows ingress from 0.0.0.0/0; list the sources that need it")
    ]
