"""The Ansible engine: playbooks/site.yml through ansible-runner, with the collection circularnet.fleet as
`cnctl collection build` assembles it (cnctl/collection.py: cached by the hash of its inputs, so a run whose
roles, templates and programs did not change does not rebuild): the same roles a user installs.

ansible-runner needs an absolute private_data_dir (a relative one breaks the inventory, ansible-runner
#1216) and writes artifacts there: a temporary directory, removed after the run. It starts
`ansible-playbook` from PATH, so the venv's bin goes first (else rc 127 at once). ANSIBLE_HOME, the
local temp dir and the SSH control sockets live in the same temporary directory, so a run writes nothing
into the repository or $HOME, and the SSH masters are closed before it is removed. A dry run is
`--check --diff`.

A target's overrides are extra vars on top of the stack's (they beat inventory host vars); its layers are
the tags the play runs (every role is tagged with its layer's name; platform always runs). The extra vars go
in the run's `env/extravars` file (ansible-runner passes it as `-e @file`), every string tagged `!unsafe` as in
the inventory (cnctl.ansible_yaml): given as a dict, ansible-runner would write them as JSON on the command line,
which cannot mark them, and Ansible would evaluate any `{{ }}` a stack value holds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from cnctl import collection
from cnctl.ansible_yaml import unsafe_dump
from cnctl.engines.result import DeployResult, EngineFailure, HostResult
from cnctl.engines.target import REPO, Target

NAME = "ansible"
BIN = Path(sys.executable).parent
PLAYBOOK = REPO / "playbooks" / "site.yml"


def envvars(workdir: Path, collections: Path) -> dict[str, str]:
    """The environment of ansible-playbook for one run in `workdir` with the assembled `collections` path."""
    return {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_HOME": str(workdir / "home"),
        "ANSIBLE_LOCAL_TEMP": str(workdir / "tmp"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(workdir / "cp"),  # not under ANSIBLE_HOME by default
        "ANSIBLE_COLLECTIONS_PATH": str(collections),
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        # ansible-runner turns host key checking off unless it is set; the inventories pin known_hosts.
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        # One SSH round trip per task instead of three (the hosts' sudoers do not require a tty).
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_NOCOLOR": "1",
    }


def extravars(target: Target) -> dict[str, Any]:
    """The run's extra vars: the stack's shared values, the run's overrides winning over them."""
    return {**target.extravars, **target.overrides}


def write_extravars(target: Target, workdir: Path) -> Path:
    """`workdir/env/extravars`, where ansible-runner finds the extra vars: YAML, every string `!unsafe`."""
    path = workdir / "env" / "extravars"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(unsafe_dump(extravars(target)), encoding="utf-8")
    return path


def runner_args(target: Target, workdir: Path, *, dry: bool, collections: Path | None = None) -> dict[str, Any]:
    """The arguments of `ansible_runner.run` for `target` in `workdir` (without the event handler); the extra
    vars are the file `write_extravars` writes there, never a dict (which would go as JSON, templates live).
    `collections`: the assembled collection (default: assembled now, or found in the cache)."""
    return {
        "private_data_dir": str(workdir),
        "playbook": str(PLAYBOOK),
        "inventory": str(target.ansible_inventory),
        "limit": ",".join(target.limits) or None,
        "tags": ",".join(target.layers) if target.layers is not None else None,
        "cmdline": "--check --diff" if dry else None,
        "envvars": {**target.env, **envvars(workdir, collections or collection.assemble())},
        "quiet": True,
    }


def run(target: Target, *, dry: bool = False, echo: bool = True) -> DeployResult:
    """Run playbooks/site.yml on `target`'s hosts; the result of every host in scope."""
    import ansible_runner  # imported here: it is slow to import and only this engine needs it

    reasons: dict[str, str] = {}

    def on_event(event: dict[str, Any]) -> bool:
        failure = failure_reason(event)
        if failure:
            reasons.setdefault(*failure)  # a host stops at its first failure: that is the reason
        return _echo(event) if echo else True

    with tempfile.TemporaryDirectory(prefix="cnctl-ansible-") as tmp:
        workdir = Path(tmp).resolve()
        started = time.monotonic()
        write_extravars(target, workdir)
        runner = ansible_runner.run(**runner_args(target, workdir, dry=dry), event_handler=on_event)
        seconds = time.monotonic() - started
        _close_ssh_masters(workdir / "cp")
        if runner.stats is None:
            tail = _tail(runner)
            raise EngineFailure(f"ansible-playbook exited {runner.rc} before any host ran" + (f":\n{tail}" if tail else ""))
        hosts = [replace(h, reason=reasons.get(h.host, "")) if h.failed else h
                 for h in stats_hosts(runner.stats, target.hosts)]
    return DeployResult(NAME, dry, hosts, int(runner.rc or 0), seconds)


def failure_reason(event: dict[str, Any]) -> tuple[str, str] | None:
    """(host, "task: message") of a failed (not ignored) or unreachable task event, else None. The message is
    the module's `msg`, with the last lines of a command's stderr when it printed any."""
    if event.get("event") not in ("runner_on_failed", "runner_on_unreachable"):
        return None
    data = event.get("event_data") or {}
    if data.get("ignore_errors"):
        return None
    res = data.get("res") or {}
    parts = [str(res.get("msg") or "").strip()]
    stderr = str(res.get("stderr") or "").strip()
    if stderr and stderr not in parts[0]:
        parts.append("; ".join(stderr.splitlines()[-3:]))
    message = ": ".join(p for p in parts if p) or "failed (no message)"
    return str(data.get("host", "")), f"{data.get('task', 'a task')}: {message}"


def stats_hosts(stats: dict[str, dict[str, int]], hosts: tuple[str, ...]) -> list[HostResult]:
    """Per-host counts from the play recap: failures and unreachable (dark) both count as failed; a host
    in scope that the recap does not name failed too (it never ran)."""
    processed = stats.get("processed", {})

    def count(key: str, host: str) -> int:
        return int(stats.get(key, {}).get(host, 0))

    return [
        HostResult(h, count("ok", h), count("changed", h),
                   count("failures", h) + count("dark", h) + int(h not in processed))
        for h in hosts
    ]


def _echo(event: dict[str, Any]) -> bool:
    """Pass the playbook's own output on to our stderr as it comes (stdout is for the summary)."""
    text = event.get("stdout")
    if text:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    return True


def _close_ssh_masters(control_dir: Path) -> None:
    """Stop the SSH connection masters of this run (ControlPersist would keep them a minute longer)."""
    for socket in control_dir.glob("*"):
        subprocess.run(["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "cnctl"], check=False, capture_output=True,
                       timeout=10)


def _tail(runner: Any) -> str:
    """The end of the playbook's output (from the artifacts, before the temp dir goes)."""
    try:
        with runner.stdout as stdout:
            return str(stdout.read()).strip()[-2000:]
    except (OSError, ValueError, AttributeError):
        return ""
