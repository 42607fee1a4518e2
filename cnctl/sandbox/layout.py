"""The hosts a stack describes, placed on the sandbox subnet.

The stack is the one source of truth: `fleets.edge` and `fleets.servers` name the hosts, their addresses
and what they run (JetPack release, driver branch); `sandbox.subnet` is the network. `--edge N` /
`--servers M` boot the first N/M of them, or add generated hosts after the listed ones.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from cnctl.config.schema import EdgeDevice, Server, StackConfig
from cnctl.sandbox.errors import SandboxProblem
from cnctl.sandbox.flavours import Flavour, l4t_for

Group = Literal["edge", "servers"]
MAX_PER_GROUP = 8


@dataclass(frozen=True)
class HostSpec:
    """One sandbox host: who it is on the network and which platform it imitates."""

    name: str
    group: Group
    flavour: Flavour
    address: str
    ssh_user: str = "circularnet"
    site: str = "default"
    jetpack: str | None = None
    l4t: str | None = None
    driver_branch: str | None = None
    generated: bool = False

    @property
    def arch(self) -> str:
        """The host's dpkg architecture: Jetsons are arm64 (emulated), servers amd64, as the real ones."""
        return "arm64" if self.flavour == "jetson" else "amd64"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostSpec:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Layout:
    """The site network and its hosts. The machine takes the subnet's first address, the site the second."""

    subnet: str
    machine_address: str
    site_address: str
    hosts: tuple[HostSpec, ...] = field(default_factory=tuple)

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    @property
    def generated(self) -> list[HostSpec]:
        return [h for h in self.hosts if h.generated]


def layout_from_stack(cfg: StackConfig, *, edge: int | None = None, servers: int | None = None) -> Layout:
    """Place the stack's sandbox hosts; raise SandboxProblem naming the stack field to change."""
    if cfg.sandbox is None:
        raise SandboxProblem(
            f"stack {cfg.environment!r} has no `sandbox` section, so it describes no sandbox fleet; "
            "use `--stack local` (stacks/Pulumi.local.yaml)"
        )
    subnet = ipaddress.ip_network(cfg.sandbox.subnet)
    if subnet.version != 4 or subnet.num_addresses < 16:
        raise SandboxProblem(f"sandbox.subnet {cfg.sandbox.subnet} must be an IPv4 block of at least /28")
    machine, site = subnet[1], subnet[2]
    want_edge = _count("edge", edge, cfg.sandbox.edge, len(cfg.fleets.edge))
    want_servers = _count("servers", servers, cfg.sandbox.servers, len(cfg.fleets.servers))

    taken = {machine: "the machine's own address (sandbox uplink)", site: "the site services"}
    hosts: list[HostSpec] = []
    for i, dev in enumerate(cfg.fleets.edge[:want_edge]):
        hosts.append(_place(_edge(dev), f"fleets.edge[{i}]", subnet, taken))
    for i, srv in enumerate(cfg.fleets.servers[:want_servers]):
        hosts.append(_place(_server(srv), f"fleets.servers[{i}]", subnet, taken))

    # More hosts than the stack lists: generated names and the next free addresses, copying the
    # platform of the group's first listed host (or the schema default).
    free = (addr for addr in subnet.hosts() if addr not in taken and int(addr) - int(subnet[0]) >= 10)
    template_edge = cfg.fleets.edge[0] if cfg.fleets.edge else EdgeDevice(name="edge", address="-")
    template_server = cfg.fleets.servers[0] if cfg.fleets.servers else Server(name="server", address="-")
    used_names = {h.name for h in hosts} | {d.name for d in cfg.fleets.edge} | {s.name for s in cfg.fleets.servers}
    for group, want, listed, template in (
        ("edge", want_edge, len(cfg.fleets.edge), template_edge),
        ("servers", want_servers, len(cfg.fleets.servers), template_server),
    ):
        for n in range(listed + 1, want + 1):
            name = _free_name(f"sandbox-{'edge' if group == 'edge' else 'server'}-{n}", used_names)
            used_names.add(name)
            address = next(free, None)
            if address is None:
                raise SandboxProblem(f"sandbox.subnet {subnet} has no free address left for {name}")
            taken[address] = name
            base = template.model_copy(update={"name": name, "address": str(address)})
            spec = _edge(base) if group == "edge" else _server(base)  # type: ignore[arg-type]
            hosts.append(HostSpec(**{**asdict(spec), "generated": True}))
    return Layout(subnet=str(subnet), machine_address=str(machine), site_address=str(site), hosts=tuple(hosts))


def _count(group: str, asked: int | None, configured: int | None, listed: int) -> int:
    value = asked if asked is not None else (configured if configured is not None else listed)
    if not 0 <= value <= MAX_PER_GROUP:
        raise SandboxProblem(f"--{group} must be between 0 and {MAX_PER_GROUP}, not {value}")
    return value


def _edge(dev: EdgeDevice) -> HostSpec:
    return HostSpec(
        name=dev.name, group="edge", flavour="jetson", address=dev.address, ssh_user=dev.ssh_user,
        site=dev.site, jetpack=dev.jetpack, l4t=l4t_for(dev.jetpack),
    )


def _server(srv: Server) -> HostSpec:
    return HostSpec(
        name=srv.name, group="servers", flavour="server", address=srv.address, ssh_user=srv.ssh_user,
        site=srv.site, driver_branch=srv.driver_branch,
    )


def _place(spec: HostSpec, path: str, subnet: ipaddress.IPv4Network | ipaddress.IPv6Network,
           taken: dict[Any, str]) -> HostSpec:
    try:
        address = ipaddress.ip_address(spec.address)
    except ValueError:
        raise SandboxProblem(f"{path}.address {spec.address!r} must be an IP address in sandbox.subnet {subnet}") from None
    if address not in subnet or address in (subnet.network_address, subnet.broadcast_address):
        raise SandboxProblem(
            f"{path}.address {address} is not a host address of sandbox.subnet {subnet}; "
            "move the fleet's addresses with the subnet (stacks/Pulumi.local.yaml)"
        )
    if address in taken:
        raise SandboxProblem(f"{path}.address {address} is already {taken[address]}")
    taken[address] = spec.name
    return spec


def _free_name(name: str, used: set[str]) -> str:
    candidate, n = name, 1
    while candidate in used:  # bounded by len(used)
        n += 1
        candidate = f"{name}-{n}"
    return candidate
