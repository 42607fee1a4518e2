"""The GCE startup script: rendered once per stack from templates/gce-startup.sh.j2."""

from __future__ import annotations

import json
from typing import Any

import jinja2

from cnctl.catalog import catalog
from cnctl.config.loader import ROOT
from cnctl.config.schema import StackConfig

TEMPLATES = ROOT / "templates"
STARTUP_TEMPLATE = "gce-startup.sh.j2"

# Where the script records the stack on a VM (`stack.json`), for the host layers and operators.
STACK_DIR = "/etc/circularnet"


def stack_record(cfg: StackConfig) -> dict[str, Any]:
    """What a cloud VM knows about its stack: the model pin, how inference listens, where data goes."""
    model = catalog().models.models[cfg.model.key]
    buckets = cfg.storage.buckets
    return {
        "environment": cfg.environment,
        "project": cfg.gcp.project if cfg.gcp else None,
        "model": {
            "key": cfg.model.key,
            "version": cfg.model.version,
            "sha256": cfg.model.sha256,
            "url": cfg.model.url or model.url,
            "generation": model.generation,
        },
        "inference": {
            "bindAddress": cfg.inference.bind_address,
            "ports": cfg.inference.ports.model_dump(by_alias=True),
        },
        "buckets": {"images": buckets.images, "results": buckets.results, "models": buckets.models},
        "bigquery": {"dataset": cfg.analytics.dataset, "table": cfg.analytics.table},
    }


def render_startup_script(cfg: StackConfig) -> str:
    """The startup script for the stack's GPU VMs (all VMs of a stack get the same one)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # a shell script, not HTML
    )
    record = json.dumps(stack_record(cfg), indent=2, sort_keys=True)
    return env.get_template(STARTUP_TEMPLATE).render(
        environment=cfg.environment, stack_dir=STACK_DIR, stack_json=record
    )
