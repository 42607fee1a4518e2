"""Reading a plan in the cloud tests: the resources of one type, the one resource of a type, the grants."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cnctl.plan import Plan


def of_type(plan: Plan, token: str) -> dict[str, dict[str, Any]]:
    """{resource name: its inputs} of every resource of type `token` in `plan`."""
    return {r.name: dict(r.inputs) for r in plan.resources if r.type == token}


def one(plan: Plan, token: str) -> dict[str, Any]:
    """The inputs of the one resource of type `token` (fails naming what was found otherwise)."""
    found = of_type(plan, token)
    assert len(found) == 1, f"expected one {token}, found {sorted(found)}"
    return next(iter(found.values()))


def grantee(inputs: Mapping[str, Any]) -> str:
    """Who a grant is to: an IAM member's `member`, or a dataset access entry's account (`userByEmail`)."""
    return str(inputs.get("member") or f"serviceAccount:{inputs['userByEmail']}")


def grants(plan: Plan, scopes: Mapping[str, str]) -> set[tuple[str, str, str]]:
    """(role, member, `<scope input>:<value>`) of every grant of a type `scopes` maps to its scope input."""
    return {
        (r.inputs["role"], grantee(r.inputs), f"{scopes[r.type]}:{r.inputs[scopes[r.type]]}")
        for r in plan.resources
        if r.type in scopes
    }
