"""The two ways a sandbox command fails: the user must change something (exit 2), or the machine did not
do what it should have (exit 1). Both carry a message that says what happened and what to do."""

from __future__ import annotations

from cnctl.errors import UsageProblem


class SandboxProblem(UsageProblem):
    """Something the user fixes: run as root, install a tool, pick another subnet, fix the stack."""


class SandboxFailure(RuntimeError):
    """An operation on the machine failed (a command, a boot, a timeout). The message names it."""
