"""The filters templates/systemd/*.j2 write every value through (cnctl/unitescape.py, the one copy): the same
names and bytes as in pyinfra's environment (deploy/steps.py `UnitFilters`). Each role that renders a unit has
this file, byte for byte (tests/unit/test_units.py), so the role stands alone in a user's playbook. It imports
the standard-library module only, never pyinfra. The repository root goes on sys.path so the role works from a
checkout with cnctl's venv."""

from __future__ import annotations

import sys
from pathlib import Path

from ansible.errors import AnsibleFilterError

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cnctl import unitescape  # after the path is set


class FilterModule:
    """cnctl_exec_arg, cnctl_unit_value: see cnctl/unitescape.py."""

    def filters(self):
        return unitescape.filters(AnsibleFilterError)
