"""The platform matrix's Jetson releases, read from its YAML (cnctl/catalog/platforms.yaml, the one copy) for the
verdicts that name them. In the collection the file lies beside this module (cnctl/collection.py copies it)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
# Beside the module in the collection; cnctl/catalog/ in the repository (deploy/rules -> deploy -> the root).
PLACES = (HERE / "platforms.yaml", HERE.parents[1] / "cnctl" / "catalog" / "platforms.yaml")


@cache
def jetson_releases() -> tuple[dict[str, Any], ...]:
    """The matrix's JetPack releases: [{jetpack, l4t, ...}], in its order."""
    path = next(p for p in PLACES if p.is_file())
    return tuple(yaml.safe_load(path.read_text(encoding="utf-8"))["jetson"]["releases"])


def by_l4t(l4t: str) -> dict[str, Any] | None:
    """The release of an L4T version, or None when the matrix does not list it."""
    return next((release for release in jetson_releases() if release["l4t"] == l4t), None)
