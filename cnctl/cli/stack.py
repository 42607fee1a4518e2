"""`cnctl validate`: check a stack file against the schema and the catalog, touching nothing."""

from __future__ import annotations

from cnctl.cli.errors import user_errors
from cnctl.cli.options import stack_option
from cnctl.config import load_stack
from cnctl.console import console

out = console()


def validate(stack: str = stack_option()) -> None:
    """Validate a stack file: every problem is named by its field path; exit 2 if any. An example's placeholders
    (a placeholder bundle signer) are problems here: the stack is checked as ready to use."""
    with user_errors():
        cfg = load_stack(stack, refuse_placeholders=True)
    parts = ["cloud" if cfg.gcp else "no cloud", f"{len(cfg.fleets.edge)} edge", f"{len(cfg.fleets.servers)} servers"]
    out.print(f"[green]ok[/] stack {cfg.environment}: {', '.join(parts)}, model {cfg.model.key} v{cfg.model.version}")
