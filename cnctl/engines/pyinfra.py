"""The pyinfra engine: `pyinfra <inventory> deploy.py` from the repository, through the venv's pyinfra.

pyinfra's `--json` puts the machine-readable plan and results on stdout; its usual progress log goes to
stderr, which is passed through to the user as it comes (and kept: a dry run's JSON plan does not say
which hosts were reached, the log does). A dry run is `--dry --diff`: facts are read, nothing is
executed, file diffs are shown.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cnctl.engines.result import DeployResult, EngineFailure, HostResult
from cnctl.engines.target import REPO, Target

NAME = "pyinfra"
BIN = Path(sys.executable).parent
DEPLOY = "deploy.py"
# pyinfra logs "    [host]  Ready: deploy.py" once a host's operations are prepared (dry runs stop there).
_READY = re.compile(r"^\s*\[(?P<host>[^\]]+)\]\s+Ready: ")


def command(target: Target, *, dry: bool) -> list[str]:
    """The pyinfra command line for `target` (run from the repository root)."""
    argv = [str(BIN / "pyinfra"), "--json"]
    argv += ["--dry", "--diff"] if dry else ["-y"]  # -y: no prompt (and no change detection pass)
    if target.limit:
        argv += ["--limit", target.limit]
    return [*argv, str(target.pyinfra_inventory), DEPLOY]


def run(target: Target, *, dry: bool = False, echo: bool = True) -> DeployResult:
    """Run the pyinfra deploy on `target`'s hosts; the result of every host in scope."""
    env = {**os.environ, **target.env, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    started = time.monotonic()
    proc = subprocess.Popen(
        command(target, dry=dry), cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    log: list[str] = []
    reader = threading.Thread(target=_tee, args=(proc.stderr, log, echo), daemon=True)
    reader.start()
    stdout = proc.stdout.read() if proc.stdout else ""
    returncode = proc.wait()
    reader.join()
    seconds = time.monotonic() - started
    try:
        report = json.loads(stdout)
    except ValueError:
        tail = "".join(log).strip()[-2000:]
        raise EngineFailure(f"pyinfra exited {returncode} without a JSON report" + (f":\n{tail}" if tail else "")) from None
    if dry:
        ready = {m["host"] for line in log if (m := _READY.match(line))}
        hosts = plan_hosts(report, target.hosts, ready)
    else:
        hosts = result_hosts(report, target.hosts)
    return DeployResult(NAME, dry, hosts, returncode, seconds)


def _tee(stream: Any, lines: list[str], echo: bool) -> None:
    """Keep every line of `stream`; pass it on to our stderr as it comes when `echo`."""
    for line in stream:
        lines.append(line)
        if echo:
            sys.stderr.write(line)
            sys.stderr.flush()


def result_hosts(report: dict[str, Any], hosts: tuple[str, ...]) -> list[HostResult]:
    """Per-host counts from a run's `results`: success = changed, no_change = ok, error = failed."""
    results = report.get("results") or {}
    counts = {h: {"ok": 0, "changed": 0, "failed": 0} for h in hosts}
    for op in results.get("operations", []):
        for outcome, keys in (("success", ("ok", "changed")), ("no_change", ("ok",)), ("error", ("failed",))):
            for host in op.get(outcome, []):
                for key in keys:
                    counts.setdefault(host, {"ok": 0, "changed": 0, "failed": 0})[key] += 1
    failed_hosts = set(results.get("failed_hosts", []))
    return [
        HostResult(h, c["ok"], c["changed"], max(c["failed"], int(h in failed_hosts or c["ok"] + c["failed"] == 0)))
        for h, c in counts.items()
    ]


def plan_hosts(report: dict[str, Any], hosts: tuple[str, ...], ready: set[str]) -> list[HostResult]:
    """Per-host counts from a dry run's `plan`: operations that would (or might) change the host. A host
    pyinfra never got ready (unreachable, a failing fact) counts as failed."""
    changed = dict.fromkeys(hosts, 0)
    for op in report.get("plan") or []:
        for host in {*op.get("hosts_with_change", []), *op.get("hosts_with_conditional_change", [])}:
            changed[host] = changed.get(host, 0) + 1
    return [HostResult(h, None, n, int(h not in ready)) for h, n in changed.items()]
