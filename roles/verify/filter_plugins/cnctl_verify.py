"""Filters that give the verify role the pyinfra deploy's own builders (deploy/verify.py): the deploy record,
the script's settings and the read-only check command, so both engines write the same bytes and run the same
check. The repository root goes on sys.path so the role works from a checkout with cnctl's venv."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from deploy import verify  # after the path is set


class FilterModule:
    """cnctl_verify_* filters: see deploy/verify.py."""

    def filters(self):
        return {
            "cnctl_verify_record": verify.record,
            "cnctl_verify_settings": verify.settings,
            "cnctl_verify_check_command": verify.check_command,
            "cnctl_verify_report": verify.report_of,
            "cnctl_verify_verdict": verify.verdict,
        }
