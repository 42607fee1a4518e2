"""One sandbox host: a fresh overlay disk of the image, personalised, booted by systemd-nspawn.

Disk layout under `<state>/hosts/<name>/`: `upper/` and `work/` (the host's own writes), `merged/` (the
overlay the container boots), `console.log` (systemd-nspawn's output, for boot failures).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from cnctl.sandbox import keys, mounts, procs
from cnctl.sandbox.errors import SandboxFailure
from cnctl.sandbox.flavours import nv_tegra_release
from cnctl.sandbox.instance import Instance
from cnctl.sandbox.layout import HostSpec
from cnctl.sandbox.system import run, write_file

SUPERVISOR = Path(__file__).with_name("supervise.py")
BOOT_TIMEOUT_S = 240.0  # arm64 hosts boot under emulation: ~3 s alone, minutes on a loaded 2-core machine
STOP_TIMEOUT_S = 10.0


def merged_dir(inst: Instance, name: str) -> Path:
    return inst.host_dir(name) / "merged"


def mount_disk(inst: Instance, image: Path, name: str) -> Path:
    """Ensure the host has a fresh overlay of `image` mounted; return the merged directory."""
    base = inst.host_dir(name)
    if base.exists():
        mounts.remove_tree(base)  # a fresh disk every time: nothing of an earlier boot survives
    for part in ("upper", "work", "merged"):
        (base / part).mkdir(parents=True)
    merged = base / "merged"
    options = f"lowerdir={image},upperdir={base / 'upper'},workdir={base / 'work'}"
    run(["mount", "-t", "overlay", "overlay", "-o", options, str(merged)])
    return merged


def personalize(merged: Path, host: HostSpec, client_public_key: str, site: Any = None,
                machine: str | None = None) -> str:
    """Ensure the disk is this host's: name, machine id, host key, deploy user, platform files, and trust in
    the site registry's certificate (as a plant's provisioning gives its hosts the plant's CA).

    Returns the host's SSH public key (for known_hosts).
    """
    etc = merged / "etc"
    write_file(etc / "hostname", f"{host.name}\n")
    write_file(etc / "hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{host.name}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    write_file(etc / "machine-id", uuid.uuid4().hex + "\n", mode=0o444)
    host_key = keys.make_host_key(etc / "ssh", f"root@{host.name}")
    _ensure_user(merged, host.ssh_user, client_public_key)
    if host.flavour == "jetson":
        assert host.l4t is not None
        write_file(etc / "nv_tegra_release", nv_tegra_release(host.l4t))
    _engine_options(etc, host, machine or host.name)
    if host.arch != "amd64":
        _emulation_dropins(etc)
    if site is not None and site.registry and site.registry_ca:
        certs = etc / "docker" / "certs.d" / site.registry
        certs.mkdir(parents=True, exist_ok=True)
        write_file(certs / "ca.crt", Path(site.registry_ca).read_bytes())
    return host_key


def _ensure_user(merged: Path, user: str, public_key: str) -> None:
    """The deploy user: a home, our key in authorized_keys, passwordless sudo (sudoers.d file, 0440)."""
    passwd = (merged / "etc" / "passwd").read_text()
    if not any(line.split(":", 1)[0] == user for line in passwd.splitlines()):
        run(["useradd", "--root", str(merged), "--create-home", "--user-group", "--shell", "/bin/bash", user])
        passwd = (merged / "etc" / "passwd").read_text()
    entry = next(line for line in passwd.splitlines() if line.split(":", 1)[0] == user).split(":")
    uid, gid, home = int(entry[2]), int(entry[3]), entry[5]
    ssh_dir = merged / home.lstrip("/") / ".ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_file(ssh_dir / "authorized_keys", public_key + "\n", mode=0o600)
    for path in (ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(path, uid, gid)
    write_file(merged / "etc" / "sudoers.d" / user, f"{user} ALL=(ALL:ALL) NOPASSWD: ALL\n", mode=0o440)


def engine_cgroup(machine: str) -> str:
    """Where the host's containers' cgroups go. cgroup v1 controllers are not namespaced in nspawn: without a
    parent of its own, every host's engine would share the machine's `/docker`. `cleanup` removes these."""
    return f"{machine}-docker"  # nothing on a host names cnctl or the sandbox (test_fleet checks)


def _engine_options(etc: Path, host: HostSpec, machine: str) -> None:
    """dockerd's options the sandbox needs (Debian's docker.service passes $DOCKER_OPTS): a cgroup parent of
    the host's own and, under qemu-user (which cannot pass nftables netlink messages), no packet filter;
    published ports still work through docker-proxy. Sandbox facts in a drop-in; the host layers never see it."""
    options = [f"--cgroup-parent=/{engine_cgroup(machine)}"] + (["--iptables=false"] if host.arch != "amd64" else [])
    dropin = etc / "systemd" / "system" / "docker.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    write_file(dropin / "20-engine-options.conf", f'[Service]\nEnvironment="DOCKER_OPTS={" ".join(options)}"\n')


def _emulation_dropins(etc: Path) -> None:
    """What an emulated (qemu-user) host's systemd cannot do, turned off for every service: a private network
    namespace fails there with EIO and a user namespace with EINVAL (qemu-user cannot clone namespaces; a
    hardened unit's PrivateUsers=yes ends in 217/USER). Every other hardening knob stays as the unit says. A
    sandbox fact in a drop-in for all services; the host layers never see it."""
    dropin = etc / "systemd" / "system" / "service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    write_file(dropin / "10-emulated-host.conf",
               "# qemu-user cannot create network or user namespaces (emulated arm64 host)\n[Service]\n"
               "PrivateNetwork=no\nPrivateUsers=no\n")
    # Like the early units the image fixes (image.QEMU_CREDENTIAL_UNITS), the daily tmpfiles clean-up fails on
    # credentials under qemu-user (243/CREDENTIALS), 15 minutes after boot.
    clean = etc / "systemd" / "system" / "systemd-tmpfiles-clean.service.d"
    clean.mkdir(parents=True, exist_ok=True)
    write_file(clean / "10-no-credentials.conf", "[Service]\nLoadCredential=\n")


def machine_name(inst: Instance, name: str) -> str:
    """systemd-nspawn's name for the host: prefixed, so two sandboxes with the same host names never share
    nspawn's per-machine files (/run/systemd/nspawn/propagate/<machine>). The host's own hostname comes
    from its /etc/hostname."""
    return f"{inst.prefix}-{name}"[:64]


def docker_dir(inst: Instance, name: str) -> Path:
    """The host's /var/lib/docker, on the machine's filesystem: overlay2 cannot stack on the overlay root."""
    return inst.host_dir(name) / "docker"


def nspawn_command(merged: Path, machine: str, netns: str, docker: Path | None = None) -> list[str]:
    """How a host boots: systemd as PID 1 in its own namespace, invisible to the machine's systemd.

    With `docker`, the host can run a container engine: that directory is bound onto /var/lib/docker, the
    session-keyring syscalls runc needs are allowed (measured, toolchain.md), and the host keeps CAP_NET_ADMIN
    (nspawn drops it by default) for the engine's bridge and packet filter in the host's own namespace.
    """
    engine = [f"--bind={docker}:/var/lib/docker", "--system-call-filter=add_key keyctl",
              # the engine's bridge and packet filter, inside the host's own network namespace only
              "--capability=CAP_NET_ADMIN"] if docker else []
    return [
        "systemd-nspawn",
        "--quiet",
        f"--directory={merged}",
        "--boot",
        f"--machine={machine}",
        "--register=no",  # the machine may not run systemd-machined (or systemd at all)
        "--keep-unit",
        "--console=pipe",
        f"--network-namespace-path=/run/netns/{netns}",
        "--link-journal=no",  # never write into the machine's /var/log/journal
        "--resolv-conf=off",  # no DNS on the site network; the image has an empty resolv.conf
        "--timezone=off",
        *engine,
    ]


def boot(inst: Instance, host: HostSpec, merged: Path, netns: str) -> int:
    """Start the host (detached: it outlives this process); return the supervisor's PID."""
    docker = docker_dir(inst, host.name)
    docker.mkdir(mode=0o710, exist_ok=True)
    log = open(inst.host_dir(host.name) / "console.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        child = subprocess.Popen(
            [sys.executable, "-I", str(SUPERVISOR), "--",
             *nspawn_command(merged, machine_name(inst, host.name), netns, docker)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not killed by the terminal's Ctrl-C meant for `cnctl`
            close_fds=True,
        )
    finally:
        log.close()
    return child.pid


def console_tail(inst: Instance, name: str, lines: int = 8) -> str:
    try:
        text = (inst.host_dir(name) / "console.log").read_text(errors="replace")
    except OSError:
        return "(no console log)"
    return "\n    ".join(text.strip().splitlines()[-lines:]) or "(console log is empty)"


def ssh_banner(address: str, port: int = 22, connect_timeout: float = 0.3, banner_timeout: float = 10.0) -> bool:
    """True if an SSH server answers on address:port with its version banner.

    Connecting fails fast while the host boots; the banner itself may take seconds: sshd re-executes itself
    for every connection, which under emulation on a busy machine is slow (a short wait never sees it).
    """
    try:
        with socket.create_connection((address, port), timeout=connect_timeout) as conn:
            conn.settimeout(banner_timeout)
            return conn.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def wait_for_ssh(inst: Instance, targets: dict[str, tuple[str, int]], timeout: float = BOOT_TIMEOUT_S) -> dict[str, float]:
    """Wait (bounded) until every host's sshd answers; return seconds to answer per host.

    `targets` maps host name -> (address, supervisor pid). A host whose supervisor exits, or that does
    not answer in time, raises SandboxFailure with the end of its console log.
    """
    started = time.monotonic()
    deadline = started + timeout
    pending = dict(targets)
    answered: dict[str, float] = {}
    while pending:
        for name, (address, pid) in list(pending.items()):
            if ssh_banner(address):
                answered[name] = time.monotonic() - started
                del pending[name]
            elif not procs.alive(pid):
                raise SandboxFailure(f"host {name} stopped while booting:\n    {console_tail(inst, name)}")
        if pending and time.monotonic() > deadline:
            names = ", ".join(sorted(pending))
            raise SandboxFailure(f"no SSH answer from {names} within {timeout:.0f} s:\n    "
                                 + console_tail(inst, next(iter(pending))))
        if pending:
            time.sleep(0.05)
    return answered


def stop(pids: list[int], merged_root: Path, timeout: float = STOP_TIMEOUT_S,
         waiting: procs.Waiting | None = None) -> tuple[list[int], list[int]]:
    """Ensure the hosts' supervisors are gone: SIGTERM (systemd halts the container), a wait of up to `timeout`
    that ends as soon as they are gone (`waiting` hears which still run), then SIGKILL.

    Only PIDs that really are systemd-nspawn supervisors booting below `merged_root` are signalled, so a
    recycled PID is never hit.
    """
    ours = [pid for pid in pids if procs.alive(pid) and procs.boots_under(pid, merged_root)]
    return procs.terminate(ours, timeout, signal.SIGTERM, waiting)


def unmount_disk(inst: Instance, name: str) -> None:
    """Ensure the host's overlay is unmounted and its disk removed."""
    mounts.remove_tree(inst.host_dir(name))
