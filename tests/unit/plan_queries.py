"""Reading a plan in the cloud tests: the resources of one type, or the one resource of a type."""

from __future__ import annotations

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
