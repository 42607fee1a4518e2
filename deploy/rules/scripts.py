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

from cnhost import answer, argv, located, model_serve, model_sync  # the host programs (cnctl/collection.py)


def program_home(helper: str) -> str:
    """The directory a host program's package is in, for PYTHONPATH: `<home>` of `<home>/cnhost/<program>.py`."""
    return located(helper)[0]


def program(helper: str, *args: str) -> str:
    """The shell command that runs the host program whose file is `helper` (`<home>/cnhost/<program>.py`) with
    `args`: `env PYTHONPATH=<home> python3 -m cnhost.<program> <args>`, every word quoted."""
    home, name = located(helper)
    return shlex.join([*argv(name, home), *args])


def unless_absent(helper: str, command: str, absent: str) -> str:
    """`command` where `helper` is on the host (its failure ignored: its output says it), else `absent` echoed:
    a check answers before the program is shipped (a fresh host, a dry run)."""
    return f"if [ -f {shlex.quote(helper)} ]; then {command} || true; else echo {shlex.quote(absent)}; fi"


def command_line(helper: str, mode: str, options: Mapping[str, Any], order: Sequence[str], flags: Sequence[str] = ()) -> str:
    """`python3 -m cnhost.<program> <mode> --<option> <value> ... <flags>`, the options in the program's `order`."""
    command = program(helper, mode, *(part for key in order for part in (f"--{key}", str(options[key]))), *flags)
    if mode != "check":
        return command
    absent = json.dumps({"result": "pending", "changed": False, "reason": "pending",
                         "message": f"{helper} is not on the host yet"})
    return unless_absent(helper, command, absent)


def model_command(helper: str, mode: str, options: Mapping[str, Any]) -> str:
    """model_sync.py `check` or `sync` with the model layer's options (deploy/model.py `options`)."""
    return command_line(helper, mode, options, model_sync.OPTIONS)


def serve_command(helper: str, mode: str, options: Mapping[str, Any], previous: bool = False) -> str:
    """model_serve.py `check` or `serve` with the inference layer's options; `previous` for a rollback run."""
    return command_line(helper, mode, options, model_serve.OPTIONS, ["--previous"] if previous else [])


def reported(output: Sequence[str]) -> dict[str, Any] | None:
    """The script's one JSON line (cnhost.answer: the last with a `result`), or None when there is none."""
    return answer(output, "result")
