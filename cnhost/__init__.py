"""The programs that run on hosts, with nothing but the host's python3 (3.10 and newer) and the standard library.

Each program's one contract: `python3 -m cnhost.<program> <mode> --<option> <value> ...` prints one JSON line
(the last line of its output) and exits with the code its EXIT table names. The controller imports them
(`from cnhost import uploader`); both engines and pull-mode bundles ship this package to the hosts.

- `model_sync`: the model layer's repository sync; `model_serve`: the inference layer's served version;
  `triton_endpoint`: where a client reaches the host's Triton (the one builder of its URLs).
- `capture`, `pipeline_run`, `client_adapter`, `uploader`, `bucket_worker`: the pipeline layer's services.
- `health_report`: the verify layer's report.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def answer(output: str | Iterable[str], key: str | None = None) -> dict[str, Any] | None:
    """A program's answer in its output (text or lines): the last line that is a JSON object (one holding `key`,
    when given), None when no line is. The one reader of the contract, for the controller and the tests."""
    lines = output.splitlines() if isinstance(output, str) else list(output)
    for line in reversed(lines):
        try:
            found = json.loads(line)
        except ValueError:
            continue
        if isinstance(found, dict) and (key is None or key in found):
            return found
    return None
