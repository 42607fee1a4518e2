"""The jetson layer's pure builders and verdict (deploy/jetson.py runs them; so do the collection's filters)."""

from __future__ import annotations

from typing import Any


def sources(wants: dict[str, Any], keyring: str) -> list[dict[str, Any]]:
    """One line per repository component (`common`, `t234`), suite = the L4T release (`r36.4`)."""
    base = wants["cn_jetson_apt_url"].rstrip("/")
    return [{"uri": f"{base}/{component}", "suite": wants["cn_jetson_apt_release"], "components": ["main"],
             "signed_by": keyring} for component in wants["cn_jetson_apt_components"]]


def pins(wants: dict[str, Any]) -> list[dict[str, Any]]:
    """Each JetPack component at its exact matrix version."""
    return [{"packages": [name], "version": version} for name, version in sorted(wants["cn_jetson_packages"].items())]


def power_mode_problem(current: dict[str, Any] | None, mode: int | None) -> str:
    """The power mode nvpmodel reports must be the fleet entry's (no wish: nothing to check)."""
    if mode is None or (current is not None and current["id"] == mode):
        return ""
    found = f"{current['name']} (id {current['id']})" if current else "no answer from nvpmodel -q"
    return f"nvpmodel reports {found}, the fleet entry wants mode {mode}"
