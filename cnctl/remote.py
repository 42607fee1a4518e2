"""Run one command on many hosts over SSH at once, each bounded in time: the fan-out `cnctl status` and the
model rollout share.

    outcomes = run_on_hosts(hosts, "sudo -n env PYTHONPATH=/usr/local/lib/circularnet python3 -m cnhost.health_report",
                            timeout=60)
    outcomes["gpu-server-1"].reachable, .rc, .stdout, .stderr

Hosts are cnctl.inventory's `InventoryHost`s, reached exactly as the engines reach them: the same user,
port, key, known_hosts and strict checking (from the fleet file, for a stack that has one) and, for cloud VMs,
the same IAP ProxyCommand. The OpenSSH client runs in batch mode (a missing key or an unknown host key
fails instead of prompting), and a host that does not answer within `timeout` is killed with its proxy
(its own process group) and reported unreachable: one dead host never holds up the others.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cnctl.inventory import InventoryHost, Ssh

SSH_UNREACHABLE = 255  # OpenSSH's exit code when it could not connect (or the connection broke)
CONNECT_TIMEOUT_S = 10
MAX_PARALLEL = 32


@dataclass(frozen=True)
class RemoteOutcome:
    """What one host answered. `reachable` is False when SSH could not connect, broke off or the command
    did not finish within the timeout (then `rc` is None and `stderr` says why)."""

    reachable: bool
    rc: int | None
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        """The command ran and exited 0."""
        return self.reachable and self.rc == 0


def ssh_argv(ssh: Ssh, command: str, *, connect_timeout: int = CONNECT_TIMEOUT_S, client: str = "ssh") -> list[str]:
    """The OpenSSH command line that runs `command` (a shell string) on the host `ssh` describes, with the
    same options the Ansible inventory gives (cnctl.inventory.ansible_vars), never prompting."""
    argv = [client, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}", "-o", "LogLevel=ERROR"]
    if ssh.port != 22:
        argv += ["-p", str(ssh.port)]
    if ssh.key:
        argv += ["-i", ssh.key, "-o", "IdentitiesOnly=yes"]
    if ssh.known_hosts:
        argv += ["-o", f"UserKnownHostsFile={ssh.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
    if ssh.strict_host_key_checking:
        argv += ["-o", f"StrictHostKeyChecking={ssh.strict_host_key_checking}"]
    if ssh.proxy_command:
        argv += ["-o", f"ProxyCommand={ssh.proxy_command}"]
    return [*argv, "--", f"{ssh.user}@{ssh.address}", command]  # `--`: no later word is an option


def run_on_host(host: InventoryHost, command: str, timeout: float, *, input: str | None = None,
                client: str = "ssh") -> RemoteOutcome:
    """Run `command` on `host`; the outcome once it exits, or unreachable once `timeout` seconds passed."""
    connect = max(1, min(CONNECT_TIMEOUT_S, int(timeout)))
    try:
        proc = subprocess.Popen(
            ssh_argv(host.ssh, command, connect_timeout=connect, client=client), text=True,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True,  # its own group: a ProxyCommand dies with it
        )
    except OSError as exc:
        return RemoteOutcome(False, None, "", f"{host.name}: cannot run {client}: {exc.strerror}")
    try:
        stdout, stderr = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        stdout, stderr = proc.communicate()
        why = f"{host.name} ({host.ssh.user}@{host.ssh.address}) gave no answer within {timeout:g} s"
        return RemoteOutcome(False, None, stdout, f"{stderr.rstrip()}\n{why}".lstrip())
    if proc.returncode == SSH_UNREACHABLE:
        last = (stderr.strip().splitlines() or ["ssh exited 255"])[-1]
        why = f"{host.name}: cannot reach {host.ssh.user}@{host.ssh.address} over SSH: {last}"
        return RemoteOutcome(False, SSH_UNREACHABLE, stdout, f"{stderr.rstrip()}\n{why}".lstrip())
    return RemoteOutcome(True, proc.returncode, stdout, stderr)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_on_hosts(hosts: Sequence[InventoryHost], command: str, timeout: float, *, input: str | None = None,
                 client: str = "ssh") -> dict[str, RemoteOutcome]:
    """`{host name: outcome}` of `command` run on every host at once (at most MAX_PARALLEL connections),
    each bounded by `timeout` seconds, in the order of `hosts`. `input` goes to the command's stdin."""
    if not hosts:
        return {}
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(hosts))) as pool:
        futures = {h.name: pool.submit(run_on_host, h, command, timeout, input=input, client=client) for h in hosts}
        return {name: future.result() for name, future in futures.items()}
