"""The GCE startup script, the cloud VMs' bootstrap: rendered once per stack from templates/gce-startup.sh.j2."""

from __future__ import annotations

import json
from typing import Any

import jinja2

from cnctl.catalog import catalog
from cnctl.config.loader import ROOT
from cnctl.config.schema import StackConfig

TEMPLATES = ROOT / "templates"
STARTUP_TEMPLATE = "gce-startup.sh.j2"

# Where the script records the stack (`stack.json`) and its bootstrap result (`bootstrap.json`) on a VM,
# for the host layers and operators.
STACK_DIR = "/etc/circularnet"

# How long the script waits for `nvidia-smi`: a Deep Learning VM image's first-boot driver install
# takes a few minutes; 60 tries 10 s apart bound the wait at ten minutes.
NVIDIA_ATTEMPTS = 60
NVIDIA_WAIT_SECONDS = 10


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
        # the table the deployed model's client generation appends to (docs/cloud.md, generation upgrade)
        "bigquery": {"dataset": cfg.analytics.dataset, "table": cfg.analytics.table_of(model.generation)},
    }


def render_startup_script(cfg: StackConfig) -> str:
    """The bootstrap for the stack's GPU VMs (all VMs of a stack get the same one)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # a shell script, not HTML
    )
    record = json.dumps(stack_record(cfg), indent=2, sort_keys=True)
    return env.get_template(STARTUP_TEMPLATE).render(
        environment=cfg.environment,
        stack_dir=STACK_DIR,
        stack_json=record,
        os_login="TRUE" if cfg.security.os_login else "FALSE",
        nvidia_attempts=NVIDIA_ATTEMPTS,
        nvidia_wait_seconds=NVIDIA_WAIT_SECONDS,
    )
