"""Find and remove what a sandbox left behind: after `down`, after a crash, after a kill -9.

Only what this sandbox owns is touched, recognised by what it is rather than by the state file:
network namespaces named `<prefix>-site` / `<prefix>-h-*`, processes running inside those namespaces,
systemd-nspawn processes booting a directory under our state dir, mounts under our state dir, the
`<prefix>-up` veth, the hosts' cgroups `cnctl-<prefix>-*`, and the state dir itself.
"""

from __future__ import annotations

import contextlib
import signal
from dataclasses import dataclass, field
from pathlib import Path

from cnctl.sandbox import mounts, network, procs, supervise
from cnctl.sandbox.instance import Instance

KILL_WAIT_S = 5.0
# systemd-nspawn's per-machine directory; left behind when systemd-nspawn itself is killed.
NSPAWN_PROPAGATE = Path("/run/systemd/nspawn/propagate")


@dataclass
class Leftovers:
    boots: list[int] = field(default_factory=list)  # systemd-nspawn / supervisor processes
    processes: list[int] = field(default_factory=list)  # anything inside our namespaces
    mounts: list[Path] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    nspawn_dirs: list[Path] = field(default_factory=list)
    cgroups: list[Path] = field(default_factory=list)  # what a killed supervisor could not remove
    uplink: str | None = None
    state_dir: Path | None = None

    @property
    def empty(self) -> bool:
        return not (self.boots or self.processes or self.mounts or self.namespaces or self.nspawn_dirs
                    or self.cgroups or self.uplink or self.state_dir)

    def summary(self) -> str:
        """One line: how many of each kind (the full list is `describe()`)."""
        parts = []
        for count, noun in ((len(self.boots) + len(self.processes), "process"), (len(self.mounts), "mount"),
                            (len(self.namespaces), "network namespace"),
                            (len(self.nspawn_dirs), "systemd-nspawn machine dir"), (len(self.cgroups), "cgroup")):
            if count:
                parts.append(f"{count} {noun}{'es' if noun == 'process' and count != 1 else ('s' if count != 1 else '')}")
        parts += [f"link {self.uplink}"] if self.uplink else []
        parts += [f"state dir {self.state_dir}"] if self.state_dir else []
        return ", ".join(parts) or "nothing"

    def describe(self) -> list[str]:
        out = [f"process {pid} ({' '.join(procs.cmdline(pid)[:2])})" for pid in self.boots + self.processes]
        out += [f"mount {m}" for m in self.mounts]
        out += [f"netns {n}" for n in self.namespaces]
        out += [f"nspawn dir {d}" for d in self.nspawn_dirs]
        out += [f"cgroup {d}" for d in self.cgroups]
        out += [f"link {self.uplink}"] if self.uplink else []
        out += [f"state dir {self.state_dir}"] if self.state_dir else []
        return out


def find(inst: Instance) -> Leftovers:
    """Everything of this sandbox that exists on the machine right now."""
    namespaces = network.our_namespaces(inst)
    inodes = network.namespace_inodes(namespaces)
    # Every process is judged by what it is, the PIDs recorded in our state included: a recorded PID
    # that was reused by something else is not ours.
    candidates = list(procs.pids())
    boots = sorted(p for p in candidates if procs.boots_under(p, inst.hosts_dir))
    inside = sorted(p for p in candidates if procs.net_ns_inode(p) in inodes)
    return Leftovers(
        boots=boots,
        processes=[p for p in inside if p not in boots],
        mounts=[m.target for m in mounts.mounts_under(inst.state_dir)],
        namespaces=namespaces,
        nspawn_dirs=sorted(NSPAWN_PROPAGATE.glob(f"{inst.prefix}-*")) if NSPAWN_PROPAGATE.is_dir() else [],
        cgroups=our_cgroups(inst),
        uplink=inst.uplink if network.uplink_exists(inst) else None,
        state_dir=inst.state_dir if inst.state_dir.exists() else None,
    )


def stop_site(inst: Instance) -> None:
    """Stop the site services through their own API (they recorded their PIDs in the site state dir)."""
    if not inst.site_state_dir.exists():
        return
    try:
        from cnctl.sandbox.site import stop_site_services
    except ImportError:
        return  # no site module: nothing of it can be running; the namespace scan covers the rest
    with contextlib.suppress(Exception):  # a broken record must not keep the rest from being cleaned
        stop_site_services(inst.state_dir)


def clean(inst: Instance, timeout: float = KILL_WAIT_S) -> Leftovers:
    """Ensure nothing of this sandbox remains on the machine; return what had to be removed."""
    found = find(inst)
    if found.empty:
        return found
    # 1. Hosts: systemd-nspawn halts its container on SIGTERM.
    procs.terminate(found.boots, timeout, signal.SIGTERM)
    # 2. Site services, politely, through their owner.
    stop_site(inst)
    # 3. Whatever still runs in our namespaces: an orphaned container init (its systemd-nspawn was
    #    killed) takes its whole PID namespace with it; the rest gets SIGTERM, then SIGKILL.
    end_processes_in(network.our_namespaces(inst), timeout)
    # 4. Disks, network, state.
    mounts.unmount_under(inst.state_dir)
    again = find(inst)  # found again: a running systemd-nspawn or supervisor removes its own
    for leftover in again.nspawn_dirs:
        mounts.remove_tree(leftover)
    supervise.remove_cgroups(again.cgroups)
    network.remove_all(inst)
    mounts.remove_tree(inst.state_dir)
    return found


def our_cgroups(inst: Instance) -> list[Path]:
    """The hosts' cgroups (`cnctl-<prefix>-<host>`, see supervise.py) beside this process's own cgroup, and
    their container engines' (`<prefix>-<host>-docker`, see host.engine_cgroup) in every v1 controller."""
    bases = {directory.parent for directory in supervise.cgroup_dirs("-")}
    controllers = [c for c in supervise.CGROUP_FS.iterdir() if (c / "cgroup.procs").exists()]
    found = {d for base in bases for d in base.glob(f"cnctl-{inst.prefix}-*") if d.is_dir()}
    found |= {d for c in controllers for d in c.glob(f"{inst.prefix}-*-docker") if d.is_dir()}
    return sorted(found)


def end_processes_in(namespaces: list[str], timeout: float = KILL_WAIT_S) -> list[int]:
    """Ensure no process runs in these namespaces of ours; return the PIDs that were ended.

    An orphaned container init (its systemd-nspawn was killed) gets SIGKILL, which ends its whole PID
    namespace at once (systemd as PID 1 does not stop on SIGTERM); the rest get SIGTERM, then SIGKILL.
    """
    inodes = network.namespace_inodes(namespaces)
    inside = [p for p in procs.pids() if procs.net_ns_inode(p) in inodes]
    inits = [p for p in inside if procs.is_pid_ns_init(p)]
    procs.signal_all(inits, signal.SIGKILL)
    procs.wait_gone(inits, timeout)
    rest = [p for p in procs.pids() if procs.net_ns_inode(p) in inodes]
    procs.terminate(rest, timeout, signal.SIGTERM)
    return inside
