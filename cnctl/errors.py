"""The errors every layer may raise, and the exit codes the CLI turns them into.

They live here, below the CLI, so that engines, sandbox, inventory and model code can say "the user must
fix this" without importing cnctl.cli (layers point one way: cli -> the rest -> config/catalog).
cnctl/cli/errors.py prints them: one line, exit code `EXIT_BAD_INPUT`, no traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_VIOLATIONS = 1  # guardrails failed, a deploy failed on a host: the run did what it could
EXIT_BAD_INPUT = 2  # the user must change something: the message says what


class UsageProblem(Exception):
    """Input the user must fix (a missing prerequisite, a bad flag, a stack that cannot be reached).
    The message names the field or host and says how to fix it."""
