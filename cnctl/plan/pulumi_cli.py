"""The real Pulumi CLI: whether it is here, and what to tell a user when it is not."""

from __future__ import annotations

import shutil

INSTALL_HINT = (
    "the Pulumi CLI is not installed: see docs/cloud.md, 'Real use' — "
    "curl -fsSL https://get.pulumi.com | sh, then gcloud auth application-default login, "
    "pulumi login (e.g. gs://<state-bucket> or file://~/.pulumi-state) and pulumi stack init <env>. "
    "Without it, `cnctl plan` shows everything offline."
)


def pulumi_cli_available() -> bool:
    """True when a `pulumi` executable is on PATH."""
    return shutil.which("pulumi") is not None


def pulumi_cli_missing_message(command: str = "pulumi up") -> str:
    """What a command that needs the real CLI says when it is missing."""
    return f"`{command}` needs the Pulumi CLI; {INSTALL_HINT}"
