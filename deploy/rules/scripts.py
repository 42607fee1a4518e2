"""How both engines run the layers' host scripts (cnhost/model_sync.py, cnhost/model_serve.py): one command line.

A script takes `<mode> --<option> <value> ...` and prints one JSON line {"result", "changed", "reason",
"message", ...}. Its `check` mode changes nothing; before the script is on the host (a fresh host, a dry run)
the shell answers it with "pending" itself, so a fact never fails there. The scripts stay free of this
controller-side logic: they run on hosts with nothing but python3.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from cnhost import (  # the host programs: the collection carries them (cnctl/collection.py)
    answer,
    model_serve,
    model_sync,
)


def command_line(helper: str, mode: str, options: Mapping[str, Any], order: Sequence[str], flags: Sequence[str] = ()) -> str:
    """`python3 <helper> <mode> --<option> <value> ... <flags>`, the options in the script's `order`."""
    argv = ["python3", helper, mode, *(part for key in order for part in (f"--{key}", str(options[key]))), *flags]
    command = " ".join(shlex.quote(part) for part in argv)
    if mode != "check":
        return command
    absent = json.dumps({"result": "pending", "changed": False, "reason": "pending",
                         "message": f"{helper} is not on the host yet"})
    return f"if [ -f {shlex.quote(helper)} ]; then {command} || true; else echo {shlex.quote(absent)}; fi"


def model_command(helper: str, mode: str, options: Mapping[str, Any]) -> str:
    """model_sync.py `check` or `sync` with the model layer's options (deploy/model.py `options`)."""
    return command_line(helper, mode, options, model_sync.OPTIONS)


def serve_command(helper: str, mode: str, options: Mapping[str, Any], previous: bool = False) -> str:
    """model_serve.py `check` or `serve` with the inference layer's options; `previous` for a rollback run."""
    return command_line(helper, mode, options, model_serve.OPTIONS, ["--previous"] if previous else [])


def reported(output: Sequence[str]) -> dict[str, Any] | None:
    """The script's one JSON line (cnhost.answer: the last with a `result`), or None when there is none."""
    return answer(output, "result")
