"""Helpers shared by the sandbox fleet tests and their fixtures (conftest.py): prerequisites, instances,
stack copies on other subnets, the environment for the CLI, and a teardown that runs exactly once."""

from __future__ import annotations

import atexit
import base64
import contextlib
import http.server
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from cnctl.sandbox import fleet as sandbox
from cnctl.sandbox import network, prereqs, procs
from cnctl.sandbox.instance import Instance
from cnctl.sandbox.inventory import publish
from cnctl.sandbox.progress import Quiet
from cnctl.sandbox.state import FleetState, HostState, save
from tests.unit.http_server import http_server

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOCAL_STACK = REPO / "stacks" / "Pulumi.local.yaml"
LOCAL_NET = "172.31.254."
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# The session's own sandbox; overridable so that two test sessions on one machine never share one.
SESSION_PREFIX = os.environ.get("CNCTL_TEST_PREFIX", "cnte")
SESSION_NET = os.environ.get("CNCTL_TEST_NET", "172.31.252.")
SESSION_STATE = Path(os.environ.get("CNCTL_TEST_STATE", "/run/cnctl/test-fleet"))
SITE_KEYRING = "/etc/apt/keyrings/cnctl-sandbox.gpg"


def require_fleet_prerequisites() -> None:
    """Skip (outside CI, non-root only) or fail with the exact fix when the fleet cannot run here."""
    if os.geteuid() != 0:
        message = "the sandbox fleet needs root (network namespaces, overlay mounts, systemd-nspawn): run `sudo make test`"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    missing = prereqs.missing_tools()
    if missing:
        pytest.fail(
            f"missing {', '.join(sorted(missing))}: `apt-get install -y debootstrap systemd-container iproute2 "
            f"{' '.join(sorted(set(missing.values())))}`",
            pytrace=False,
        )
    prereqs.ensure_sbin_on_path()


def cache_dir() -> Path:
    return Path(os.environ.get("CNCTL_CACHE") or "/var/cache/cnctl")


def write_stack(directory: Path, net: str) -> Path:
    """stacks/Pulumi.local.yaml with every address moved from 172.31.254.x to `net`x (same host parts)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "Pulumi.local.yaml"
    path.write_text(LOCAL_STACK.read_text().replace(LOCAL_NET, net))
    return path


def env_for(inst: Instance) -> dict[str, str]:
    """The environment that makes `cnctl sandbox ...` act on `inst` and the product (hosts/*.py, `cnctl deploy`,
    `status`, `infer`) read its fleet file (CNCTL_FLEET_FILE), as a user of that sandbox would set it."""
    return {
        **os.environ,
        **inst.environment(),
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}:/usr/sbin:/sbin",
    }


class Teardown:
    """`down` for one sandbox, exactly once, from whichever comes first: the fixture's finally, atexit,
    or a SIGTERM/SIGHUP (turned into KeyboardInterrupt so that pytest unwinds through the finally)."""

    def __init__(self, inst: Instance) -> None:
        self.inst = inst
        self.done = False
        self._previous: dict[int, object] = {}

    def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        sandbox.down(self.inst, progress=Quiet())

    def install(self) -> None:
        atexit.register(self)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            self._previous[signum] = signal.signal(signum, self._interrupt)

    def uninstall(self) -> None:
        atexit.unregister(self)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    @staticmethod
    def _interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")


def install_site_source(host: sandbox.FreshHost, keyring: bytes, apt_url: str) -> None:
    """Point a fresh host's apt at the site repository with `keyring` as its only trusted key."""
    encoded = base64.b64encode(keyring).decode()
    command = (
        "sudo install -d -m 755 /etc/apt/keyrings && "
        f"echo {encoded} | base64 -d | sudo tee {SITE_KEYRING} >/dev/null && "
        f"echo 'deb [signed-by={SITE_KEYRING}] {apt_url} /' | sudo tee /etc/apt/sources.list.d/cnctl-sandbox.list"
    )
    result = host.ssh(command)
    assert result.returncode == 0, result.stderr


# --- for fault tests: a host's processes seen from the machine, a signing key that is not the site's -------


def host_processes(netns: str) -> list[tuple[int, list[str]]]:
    """(pid, argv) of every process of the sandbox host in network namespace `netns`, read from the machine's
    /proc (no SSH session of our own: nothing that would be cut with the host's sessions)."""
    inodes = network.namespace_inodes([netns])
    return [(pid, procs.cmdline(pid)) for pid in procs.pids() if inodes and procs.net_ns_inode(pid) in inodes]


def cut_ssh_sessions(netns: str, user: str) -> list[int]:
    """SIGKILL the sshd processes serving `user`'s sessions on that host (`sshd: <user> [priv]`, `sshd:
    <user>@notty`; the listener stays): every SSH connection of that user drops at once, as when a link goes
    down. Returns the PIDs signalled."""
    cut = [pid for pid, argv in host_processes(netns) if argv and argv[0].startswith(f"sshd: {user}")]
    procs.signal_all(cut, signal.SIGKILL)
    return cut


def other_signing_key(directory: Path) -> bytes:
    """An armored OpenPGP public key that signs nothing the site serves (a throwaway ed25519 key made in
    `directory`; its gpg-agent is stopped again)."""
    home = directory / "gnupg"
    home.mkdir(mode=0o700, parents=True)
    env = {**os.environ, "GNUPGHOME": str(home)}
    try:
        subprocess.run(["gpg", "--batch", "--quiet", "--passphrase", "", "--quick-gen-key",
                        "not the site <nobody@example.invalid>", "ed25519", "sign", "never"],
                       env=env, check=True, capture_output=True, timeout=60)
        return subprocess.run(["gpg", "--batch", "--armor", "--export"], env=env, check=True, capture_output=True,
                              timeout=60).stdout
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=env, check=False, capture_output=True, timeout=30)


@contextlib.contextmanager
def serving(address: str, body: bytes) -> Iterator[str]:
    """Serve `body` over HTTP on `address` (one of the machine's own, e.g. a sandbox's uplink address) on a free
    port, for as long as the block runs; yields the URL of the file."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the http.server interface
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    with http_server(Handler, address) as base:
        yield f"{base}/signing-key.asc"


_ANSIBLE_TASK = re.compile(r"^TASK \[(?P<task>.+?)\] \*")
_ANSIBLE_CHANGED = re.compile(r"^changed: \[(?P<host>[^\]]+)\]")
_PYINFRA_OP = re.compile(r"^--> Starting operation: (?P<op>.+?)\s*$")
_PYINFRA_CHANGED = re.compile(r"^\s+\[(?P<host>[^\]]+)\] Success")


def what_changed(log: str) -> list[str]:
    """`host: task` for every Ansible task reported `changed` and every pyinfra operation that ran commands
    (`Success`, not `No changes`) in an engine's log: what an assertion on a no-op run shows when it fails."""
    found, current = [], ""
    for line in log.splitlines():
        if m := _ANSIBLE_TASK.match(line) or _PYINFRA_OP.match(line):
            current = m.groupdict().get("task") or m.group("op")
        elif m := _ANSIBLE_CHANGED.match(line) or _PYINFRA_CHANGED.match(line):
            found.append(f"{m['host']}: {current}")
    return found


DeployRow = tuple[int | None, int, int]


def deploy_rows(out: str, engines: tuple[str, ...] = ("pyinfra", "ansible")) -> dict[str, DeployRow]:
    """`cnctl deploy`'s per-host table read back: {host: (ok or None for '-', changed, failed)}. Its columns are
    host, engine, ok, changed, failed and, when a host failed, its reason (cnctl/cli/deploy.py)."""
    rows: dict[str, DeployRow] = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) in (5, 6) and cells[1] in engines:
            ok, changed, failed = cells[2:5]
            rows[cells[0]] = (None if ok == "-" else int(ok), int(changed), int(failed))
    return rows


def view_of(fleet: FleetState, fleet_instance: Instance, fleet_env: dict[str, str], stack: Path, directory: Path,
            hosts: Sequence[sandbox.FreshHost], extra: Sequence[HostState] = ()) -> dict[str, str]:
    """The environment in which `stack`'s inventories are exactly `hosts` (and `extra`): a state directory in
    `directory` (with its fleet file) and a user cache of their own."""
    known = directory / "known_hosts"
    known.write_text("".join(Path(h.fleet.known_hosts).read_text() for h in hosts))
    inst = Instance(prefix=fleet_instance.prefix, state_dir=directory / "state", cache=fleet_instance.cache)
    state = replace(fleet, state_dir=str(inst.state_dir), known_hosts=str(known), hosts=[h.state for h in hosts] + list(extra),
                    inventories={**fleet.inventories, "fleet": str(inst.fleet_file), "ansible": str(inst.ansible_inventory)})
    save(inst, state)
    publish(inst, state)
    return {**fleet_env, **inst.environment(), "CNCTL_STACK": str(stack), "XDG_CACHE_HOME": str(directory / "cache")}
