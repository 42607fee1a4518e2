"""The model layer's pure builders (deploy/model.py runs them; so do the collection's filters)."""

from __future__ import annotations

from typing import Any


def options(wants: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """The script's options for this host (model_sync.OPTIONS): the stack's pin, the role's paths."""
    return {
        "url": wants["cn_model_url"], "sha256": wants["cn_model_sha256"], "name": wants["cn_model_name"],
        "version": wants["cn_model_version"], "repository": data["model_repository"], "staging": data["model_staging"],
        "default-config": data["model_default_config"], "keep": wants["cn_model_keep"], "format": wants["cn_model_format"],
    }
