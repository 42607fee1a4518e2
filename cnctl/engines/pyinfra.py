"""The pyinfra engine: `pyinfra <inventory> deploy.py` from the repository, through the venv's pyinfra.

pyinfra's `--json` puts the machine-readable plan and results on stdout; its usual progress log goes to
stderr, which is passed through to the user as it comes (and kept: a dry run's JSON plan does not say
which hosts were reached, the log does). A dry run is `--dry --diff`: facts are read, nothing is
executed, file diffs are shown.

A target's overrides go on the command line as `--data key=<JSON>`: pyinfra turns a --data value into a
bool, an int or a JSON value where it can (`1` becomes 1, `true` True), so every value is written as JSON
and arrives with its own type (`"1"` stays the string "1"). Its layers go to deploy.py as CNCTL_LAYERS.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from cnctl.engines.result import DeployResult, EngineFailure, HostResult
from cnctl.engines.target import REPO, Target

NAME = "pyinfra"
BIN = Path(sys.executable).parent
DEPLOY = "deploy.py"
LAYERS_ENV = "CNCTL_LAYERS"
# pyinfra logs "    [host]  Ready: deploy.py" once a host's operations are prepared (dry runs stop there).
_READY = re.compile(r"^\s*\[(?P<host>[^\]]+)\]\s+Ready: ")
# Any line pyinfra logs for one host: "    [host] text" (or "[host] nested text" inside a nested operation).
_HOST_LINE = re.compile(r"^\s*\[(?P<host>[^\]]+)\]\s+(?:nested\s+)?(?P<text>.*?)\s*$")
# A host's lines that close an operation (or say nothing about a failure): the output kept before them is dropped.
_ROUTINE = re.compile(r"^(Success|No changes|Skipped|Connected|Ready: |Loaded fact|Error \(ignored)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# One operation's outcome on a host (not inside a nested operation): "[host] Success" (commands ran: changed),
# "[host] No changes", "[host] Error: executed N commands"; "Error (ignored)" is not a failure.
_OUTCOME = re.compile(r"^\s*\[(?P<host>[^\]]+)\]\s+(?P<outcome>Success|No changes|Error(?=:|\s*$))")
# pyinfra's own error, which ends a run early: "--> pyinfra error: No hosts remaining!", "--> Operation error ...".
_ENGINE_ERROR = re.compile(r"^--> (?P<text>.*\berror\b.*?)\s*$", re.IGNORECASE)
REASON_LINES = 6


def command(target: Target, *, dry: bool) -> list[str]:
    """The pyinfra command line for `target` (run from the repository root)."""
    argv = [str(BIN / "pyinfra"), "--json"]
    argv += ["--dry", "--diff"] if dry else ["-y"]  # -y: no prompt (and no change detection pass)
    for name in target.limits:  # pyinfra's --limit takes one name or pattern each time, not a comma list
        argv += ["--limit", name]
    for key, value in target.overrides.items():
        argv += ["--data", f"{key}={json.dumps(value)}"]
    return [*argv, str(target.pyinfra_inventory), DEPLOY]


def environment(target: Target) -> dict[str, str]:
    """The environment of the pyinfra process: ours, what the inventories read, the venv first on PATH and,
    when the target names its layers, CNCTL_LAYERS for deploy.py."""
    env = {**os.environ, **target.env, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    if target.layers is not None:
        env[LAYERS_ENV] = ",".join(target.layers)
    return env


def run(target: Target, *, dry: bool = False, echo: bool = True) -> DeployResult:
    """Run the pyinfra deploy on `target`'s hosts; the result of every host in scope."""
    env = environment(target)
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
        if returncode:  # pyinfra writes no report when every host failed or it stopped on an error of its own
            return DeployResult(NAME, dry, log_hosts(log, target.hosts, dry=dry, returncode=returncode), returncode, seconds)
        tail = "".join(log).strip()[-2000:]
        raise EngineFailure(f"pyinfra exited {returncode} without a JSON report" + (f":\n{tail}" if tail else ""),
                            failure_reasons(log)) from None
    if dry:
        ready = {m["host"] for line in log if (m := _READY.match(line))}
        hosts = plan_hosts(report, target.hosts, ready)
    else:
        hosts = result_hosts(report, target.hosts)
    return DeployResult(NAME, dry, with_reasons(hosts, failure_reasons(log)), returncode, seconds)


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


def failure_reasons(log: list[str]) -> dict[str, str]:
    """{host: why it failed} from pyinfra's log: what pyinfra printed for the host's first failed operation
    (the failing command's stderr and stdout; a host script's JSON line counts by its "message"), else its
    "Error: ..." line; for a host that never got that far (could not connect), its last line."""
    pending: dict[str, list[str]] = {}
    reasons: dict[str, str] = {}
    for raw in log:
        match = _HOST_LINE.match(_ANSI.sub("", raw))
        if not match:
            continue
        host, text = match["host"], match["text"]
        if text.startswith("Error"):
            reasons.setdefault(host, _reason(pending.pop(host, []), text))  # a host stops at its first failure
        elif _ROUTINE.match(text):
            pending.pop(host, None)
        elif text:
            pending.setdefault(host, []).append(text)
    for host, lines in pending.items():
        reasons.setdefault(host, lines[-1])
    return reasons


def _reason(lines: list[str], error: str) -> str:
    """One line from a failed operation's output: the message of a JSON line where the command printed one
    (the layers' host scripts do), else its last distinct lines; pyinfra's own "Error: ..." when it printed
    nothing."""
    for line in lines:
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("message"):
            return str(data["message"]).strip().splitlines()[0]
    kept = list(dict.fromkeys(line for line in lines if line.strip(" ;")))
    return "; ".join(kept[-REASON_LINES:]) or error


def log_hosts(log: list[str], hosts: tuple[str, ...], *, dry: bool, returncode: int) -> list[HostResult]:
    """Per-host results read from pyinfra's log, for a run that failed without a JSON report: every operation's
    outcome counted as the report counts it. Every host failed the run: one that failed no operation (it could
    not connect, or pyinfra stopped before it finished) has its last words in the log, else pyinfra's own error,
    as its reason."""
    counts = {h: {"ok": 0, "changed": 0, "failed": 0} for h in hosts}
    for raw in log:
        if match := _OUTCOME.match(_ANSI.sub("", raw)):
            keys = {"Success": ("ok", "changed"), "No changes": ("ok",), "Error": ("failed",)}[match["outcome"]]
            for key in keys:
                counts.setdefault(match["host"], {"ok": 0, "changed": 0, "failed": 0})[key] += 1
    reasons = failure_reasons(log)
    stopped = engine_error(log) or f"pyinfra exited {returncode} before this host finished"
    return [HostResult(h, None if dry else c["ok"], c["changed"], max(c["failed"], 1), reasons.get(h) or stopped)
            for h, c in counts.items()]


def engine_error(log: list[str]) -> str:
    """pyinfra's own last error line ("pyinfra error: No hosts remaining!"), "" when it printed none."""
    found = [m["text"] for raw in log if (m := _ENGINE_ERROR.match(_ANSI.sub("", raw).strip()))]
    return found[-1] if found else ""


def with_reasons(hosts: list[HostResult], reasons: dict[str, str]) -> list[HostResult]:
    """`hosts` with each failed host's reason filled in from `reasons`."""
    return [replace(h, reason=reasons.get(h.host, "")) if h.failed else h for h in hosts]


def plan_hosts(report: dict[str, Any], hosts: tuple[str, ...], ready: set[str]) -> list[HostResult]:
    """Per-host counts from a dry run's `plan`: operations that would (or might) change the host. A host
    pyinfra never got ready (unreachable, a failing fact) counts as failed."""
    changed = dict.fromkeys(hosts, 0)
    for op in report.get("plan") or []:
        for host in {*op.get("hosts_with_change", []), *op.get("hosts_with_conditional_change", [])}:
            changed[host] = changed.get(host, 0) + 1
    return [HostResult(h, None, n, int(h not in ready)) for h, n in changed.items()]
