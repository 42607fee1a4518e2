"""The programs that run on hosts, with nothing but the host's python3 (3.10 and newer) and the standard library.

Each program's one contract: `python3 -m cnhost.<program> <mode> --<option> <value> ...` prints one JSON line
(the last line of its output) and exits with the code its EXIT table names. The controller imports them
(`from cnhost import uploader`). On a host the package is the directory HOME/cnhost/ (every layer that runs a
program ships all of FILES there, both engines alike; pull-mode bundles carry it in their tree) and a program runs
as `PYTHONPATH=HOME python3 -m cnhost.<program>` (`argv`): the programs import each other as this package.

- `model_sync`: the model layer's repository sync; `model_serve`: the inference layer's served version;
  `triton_endpoint`: where a client reaches the host's Triton (the one builder of its URLs).
- `capture`, `pipeline_run`, `client_adapter`, `uploader`, `bucket_worker`: the pipeline layer's services.
- `health_report`: the verify layer's report.
- `results_db`: the site's results loader (the plant's results bucket into SQLite, and their metrics).
- `gpu_metrics`: the monitoring layer's GPU collector (nvidia-smi's or tegrastats' samples, for node-exporter's
  textfile collector).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

HOME = "/usr/local/lib/circularnet"  # on a host: the package's parent, on PYTHONPATH (the roles' defaults name it)
# What a host gets: the package's modules, read from its directory (both engines ship exactly these).
FILES = tuple(sorted(name for name in os.listdir(os.path.dirname(os.path.abspath(__file__))) if name.endswith(".py")))


def argv(program: str, home: str = HOME, python: str = "python3") -> list[str]:
    """The command that runs `program` on a host: `env PYTHONPATH=<home> <python> -m cnhost.<program>`."""
    return ["env", f"PYTHONPATH={home}", python, "-m", f"cnhost.{program}"]


def located(path: str) -> tuple[str, str]:
    """(home, program) of a program's file on a host, `<home>/cnhost/<program>.py`; ValueError for another path."""
    home, _, name = path.rpartition("/cnhost/")
    if not home.startswith("/") or "/" in name or not name.endswith(".py") or name == ".py":
        raise ValueError(f"{path} is not <home>/cnhost/<program>.py: the host programs run from their package")
    return home, name.removesuffix(".py")


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


def replace_file(path: str | Path, data: bytes) -> None:
    """Ensure `path` holds `data` (0644): written beside it, synced, then renamed over it, so a reader sees the
    old file or the new one, never a part (the temporary name starts with a dot and has no suffix)."""
    target = Path(path)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def stop(process: subprocess.Popen[Any], grace: float = 5.0) -> int:
    """Stop a child the program started (SIGTERM, then SIGKILL after `grace` seconds) unless it has exited; its exit
    status. The one way a program ends a tool it runs (capture's camera reader, the GPU collector's tool)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()
