"""A stack file changed for one test: the one helper the plan and cloud tests write their variants with."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from cnctl.config import stack_path


def stack_variant(tmp_path: Path, change: Callable[[dict[str, Any]], None], base: str = "dev",
                  name: str | None = None) -> str:
    """stacks/Pulumi.<base>.yaml with its `config:` changed by `change(config)`, written as
    <tmp_path>/variant/Pulumi.<name>.yaml (the environment's name: `base` unless given) -> that path."""
    document = yaml.safe_load(stack_path(base).read_text())
    change(document["config"])
    folder = tmp_path / "variant"
    folder.mkdir(exist_ok=True)
    path = folder / f"Pulumi.{name or base}.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)
