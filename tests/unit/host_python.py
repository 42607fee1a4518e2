"""A stand-in for a host's python3 that runs host programs as hosts do (`env PYTHONPATH=<home> python3 -m
cnhost.<program> ...`) from a test's own stand-in files: <home>/cnhost/<program>.py. This checkout's cnhost is
installed in the venv (editable), and it would win over PYTHONPATH."""

from __future__ import annotations

import os
import sys
from pathlib import Path

SCRIPT = """#!/bin/sh
[ "$1" = -m ] || {{ echo "python3 stand-in: not run as -m: $*" >&2; exit 9; }}
program=${{2#cnhost.}}; shift 2
exec {python} "$PYTHONPATH/cnhost/$program.py" "$@"
"""


def install(bin_dir: Path) -> dict[str, str]:
    """Write `python3` into `bin_dir`; the environment whose PATH finds it first."""
    stand_in = bin_dir / "python3"
    stand_in.write_text(SCRIPT.format(python=sys.executable))
    stand_in.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
