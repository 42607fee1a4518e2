"""Keep one sandbox host's systemd-nspawn running across reboots (what systemd-nspawn@.service does).

Run as `python3 supervise.py -- systemd-nspawn ...`. A container that reboots makes systemd-nspawn exit
with 133; this restarts it (bounded), so `reboot` on a sandbox host behaves as on a real one. SIGTERM
and SIGINT are passed to systemd-nspawn, which halts the container cleanly. Standard library only:
the supervisor outlives the command that started it.

It also gives the host a cgroup of its own first. With `--keep-unit --register=no`, systemd-nspawn
builds the container's cgroups (`payload/`, `supervisor/`) under the cgroup of whoever started it: hosts
started by one process would share one `payload/` tree, and their systemd instances would create and
remove each other's unit cgroups (seen as units failing with 219/CGROUP at boot).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REBOOT_EXIT = 133
MAX_REBOOTS = 50  # a host that reboots in a loop is stopped rather than spun forever


CGROUP_FS = Path("/sys/fs/cgroup")


def cgroup_dirs(name: str) -> list[Path]:
    """This process's cgroup in each hierarchy systemd uses (name=systemd, unified), plus `name`."""
    dirs = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if controllers == "name=systemd":
            root = CGROUP_FS / "systemd"
        elif hierarchy == "0":  # cgroup v2: hybrid mounts it at unified/, pure v2 at the top
            root = CGROUP_FS / "unified" if (CGROUP_FS / "unified" / "cgroup.procs").exists() else CGROUP_FS
        else:
            continue
        if (root / "cgroup.procs").exists():
            dirs.append(root / path.lstrip("/") / name)
    return dirs


def enter_own_cgroup(name: str) -> list[Path]:
    """Ensure this process (and so its systemd-nspawn) sits in a cgroup named for its host alone."""
    entered = []
    for directory in cgroup_dirs(name):
        try:
            directory.mkdir(exist_ok=True)
            (directory / "cgroup.procs").write_text(f"{os.getpid()}\n")
        except OSError as exc:  # a read-only or delegated-elsewhere hierarchy: boot as before, say so
            print(f"supervise: cannot use cgroup {directory}: {exc}", file=sys.stderr, flush=True)
            continue
        entered.append(directory)
    return entered


def remove_cgroups(dirs: list[Path]) -> None:
    """Remove the host's cgroups once its container is gone (empty ones only; the kernel refuses others)."""
    for top in dirs:
        for directory in sorted((d for d in top.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)) + [top]:
            try:
                directory.rmdir()
            except OSError:
                pass


def machine_of(cmd: list[str]) -> str:
    return next((arg.split("=", 1)[1] for arg in cmd if arg.startswith("--machine=")), f"pid-{os.getpid()}")


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print("usage: supervise.py -- systemd-nspawn ARGS...", file=sys.stderr)
        return 2
    cmd = argv[argv.index("--") + 1 :]
    cgroups = enter_own_cgroup(f"cnctl-{machine_of(cmd)}")
    try:
        return supervise(cmd)
    finally:
        os.chdir("/")
        # leave our cgroups for the parent's before removing them (a cgroup with a process cannot go)
        for directory in cgroups:
            try:
                (directory.parent / "cgroup.procs").write_text(f"{os.getpid()}\n")
            except OSError:
                pass
        remove_cgroups(cgroups)


def supervise(cmd: list[str]) -> int:
    state: dict[str, object] = {"child": None, "stopping": False}

    def forward(signum: int, _frame: object) -> None:
        state["stopping"] = True
        child = state["child"]
        if isinstance(child, subprocess.Popen) and child.poll() is None:
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)

    reboots = 0
    while True:
        child = subprocess.Popen(cmd)
        state["child"] = child
        if state["stopping"]:  # a stop arrived while the child was starting
            child.terminate()
        rc = child.wait()
        if state["stopping"] or rc != REBOOT_EXIT or reboots >= MAX_REBOOTS:
            return rc
        reboots += 1
        print(f"supervise: container rebooted ({reboots}), starting it again", file=sys.stderr, flush=True)
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
