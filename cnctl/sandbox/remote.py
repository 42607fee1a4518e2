"""Running a command on a sandbox host over SSH, as the deploy user, with strict host key checking."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cnctl.sandbox.keys import ssh_options
from cnctl.sandbox.state import FleetState, HostState


def ssh(state: FleetState, host: HostState | str, command: str, *, timeout: float = 60,
        check: bool = False, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `command` (a shell string) on `host`; returns the completed process (stdout, stderr, rc)."""
    target = state.host(host) if isinstance(host, str) else host
    cmd = ["ssh", *ssh_options(Path(state.ssh_key), Path(state.known_hosts)),
           f"{target.spec.ssh_user}@{target.address}", command]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check, input=input,
                          stdin=None if input is not None else subprocess.DEVNULL)
