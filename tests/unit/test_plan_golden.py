"""Golden plans: `cnctl plan --json` of the example stacks, compared byte for byte.

A change to the cloud layer, the catalog or an example stack shows up here as a plan diff. When the
change is intended, regenerate on purpose and review the diff with the change:

    CNCTL_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_plan_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cnctl.plan import plan_stack

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
UPDATE = os.environ.get("CNCTL_UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("stack", ["dev", "dev-group", "prod"])
def test_plan_matches_golden(stack: str) -> None:
    path = GOLDEN / f"plan-{stack}.json"
    rendered = plan_stack(stack).render_json()
    if UPDATE:
        path.write_text(rendered, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == rendered, (
        f"the {stack} plan changed; if intended: CNCTL_UPDATE_GOLDEN=1 .venv/bin/pytest {Path(__file__).name}"
    )
