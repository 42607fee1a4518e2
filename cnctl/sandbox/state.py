"""The sandbox state file: what `up` created, so that status, inventories and `down` need no guessing.

It is written before the first host boots and after every step that creates something (PIDs included),
so a run cut at any point leaves a record; the leftover scan (`cleanup`) does not depend on it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from cnctl.paths import REPO_ROOT
from cnctl.sandbox.instance import Instance
from cnctl.sandbox.layout import HostSpec, Layout
from cnctl.sandbox.system import write_file

VERSION = 2
PYINFRA_INVENTORY = REPO_ROOT / "hosts" / "fleet.py"  # edge and servers of the local stack: the sandbox hosts


@dataclass
class HostState:
    spec: HostSpec
    netns: str
    merged: str
    pid: int | None = None
    host_key: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def address(self) -> str:
        return self.spec.address

    def to_json(self) -> dict[str, Any]:
        return {**self.spec.to_json(), "netns": self.netns, "merged": self.merged, "pid": self.pid, "host_key": self.host_key}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostState:
        return cls(
            spec=HostSpec.from_json(data), netns=data["netns"], merged=data["merged"],
            pid=data.get("pid"), host_key=data.get("host_key"),
        )


@dataclass
class FleetState:
    prefix: str
    state_dir: str
    stack: str
    subnet: str
    machine_address: str
    site_address: str
    site_netns: str
    uplink: str
    images: dict[str, str]  # dpkg architecture -> the image rootfs its hosts boot
    ssh_key: str
    known_hosts: str
    phase: str = "starting"  # starting -> up
    hosts: list[HostState] = field(default_factory=list)
    site: dict[str, Any] | None = None
    inventories: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    version: int = VERSION

    @property
    def layout(self) -> Layout:
        return Layout(self.subnet, self.machine_address, self.site_address, tuple(h.spec for h in self.hosts))

    def host(self, name: str) -> HostState:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no sandbox host {name!r}; hosts: {', '.join(h.name for h in self.hosts)}")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["hosts"] = [h.to_json() for h in self.hosts]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FleetState:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "hosts"}
        return cls(**fields, hosts=[HostState.from_json(h) for h in data.get("hosts", [])])


def save(inst: Instance, state: FleetState) -> None:
    """Ensure the state file holds `state` (written whole, then renamed)."""
    inst.state_dir.mkdir(parents=True, exist_ok=True)
    write_file(inst.state_file, json.dumps(state.to_json(), indent=2) + "\n", mode=0o644)


def load(inst: Instance) -> FleetState | None:
    """The recorded state, or None if there is none (or it is unreadable: then only the scan can help)."""
    try:
        data = json.loads(inst.state_file.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return None
    try:
        return FleetState.from_json(data)
    except (KeyError, TypeError):
        return None
