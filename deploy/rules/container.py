"""The container layer's pure builders (deploy/container.py runs them; so do the collection's filters)."""

from __future__ import annotations

import shlex
from typing import Any

from . import checks


def pins(wants: dict[str, Any], codename: str | None) -> list[dict[str, Any]]:
    """The engine's pins for this OS release, then the toolkit's."""
    return [*checks.pins_for(wants, codename),
            {"packages": list(wants["cn_nvidia_ctk_packages"]), "version": wants["cn_nvidia_ctk_version"]}]


def configure_command(base: str, target: str, set_default: bool) -> str:
    """daemon.json replaced, atomically, by what nvidia-ctk makes of the base file."""
    new = f"{target}.cnctl-new"
    flag = " --set-as-default" if set_default else ""
    return (f"install -m 644 -o root -g root {shlex.quote(base)} {shlex.quote(new)} && "
            f"nvidia-ctk runtime configure --runtime=docker {shlex.quote(f'--config={new}')}{flag} && "
            f"mv -f {shlex.quote(new)} {shlex.quote(target)}")
