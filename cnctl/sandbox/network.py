"""The site network: a bridge in the site namespace, one namespace per host, one veth to the machine.

```
 machine namespace            site namespace <prefix>-site            host namespace <prefix>-h-<name>
 <prefix>-up  .1  ── veth ──  up0 ┐
                                  br0  .2 (site services)
                                  vh<hash> ─────────── veth ───────── eth0  .11 (no default route)
```

Addresses come only from the stack's `sandbox.subnet`. Nothing is routed or forwarded out of it: hosts
have only the subnet's connected route, the machine's forwarding and NAT settings are never touched,
and IPv6 is off on every interface we create so nothing speaks outside the IPv4 subnet.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterable
from pathlib import Path

from cnctl.sandbox.errors import SandboxProblem
from cnctl.sandbox.instance import Instance
from cnctl.sandbox.layout import HostSpec, Layout
from cnctl.sandbox.system import in_netns, run

NETNS_DIR = Path("/run/netns")
BRIDGE = "br0"
SITE_UPLINK_PORT = "up0"
HOST_IFACE = "eth0"
# Candidates offered when the stack's subnet is taken (all private, rarely used by other tools).
SUGGESTIONS = ("172.31.254.0/24", "172.31.253.0/24", "10.254.254.0/24", "10.199.77.0/24", "192.168.254.0/24")


# --- is the subnet free? ---------------------------------------------------------------------


def overlaps(subnet: str, addresses: list[dict], routes: list[dict], ignore: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(interface, network) pairs of the machine that overlap `subnet`, from `ip -j` address/route output.

    Default routes are not conflicts (a connected route to the subnet is more specific); interfaces in
    `ignore` are this sandbox's own.
    """
    net = ipaddress.ip_network(subnet)
    skip = set(ignore)
    found: list[tuple[str, str]] = []
    for link in addresses:
        if link.get("ifname") in skip:
            continue
        for info in link.get("addr_info", []):
            if info.get("family") != "inet":
                continue
            iface = ipaddress.ip_interface(f"{info['local']}/{info.get('prefixlen', 32)}")
            if iface.network.overlaps(net):
                found.append((link["ifname"], str(iface)))
    for route in routes:
        dst = route.get("dst", "")
        if dst in ("default", "") or route.get("dev") in skip:
            continue
        try:
            dest = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if dest.prefixlen == 0 or dest.version != 4:
            continue
        if dest.overlaps(net):
            found.append((route.get("dev", "?"), f"route {dst}" + (f" table {route['table']}" if "table" in route else "")))
    unique: list[tuple[str, str]] = []
    for item in found:  # the connected route repeats the address; keep the first mention per interface
        if item[0] not in [u[0] for u in unique]:
            unique.append(item)
    return unique


def check_subnet_free(inst: Instance, subnet: str) -> None:
    """Raise SandboxProblem (exit 2) if an interface or route of the machine already uses `subnet`."""
    addresses = json.loads(run(["ip", "-j", "-4", "address", "show"]).stdout or "[]")
    routes = json.loads(run(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout or "[]")
    problem = subnet_problem(subnet, addresses, routes, own=inst.uplink)
    if problem:
        raise SandboxProblem(problem)


def subnet_problem(subnet: str, addresses: list[dict], routes: list[dict], own: str) -> str | None:
    """Why `subnet` cannot be used here, naming the interface and the fix; None if it is free."""
    clashes = overlaps(subnet, addresses, routes, ignore=[own])
    if not clashes:
        return None
    taken = "; ".join(f"interface {iface} ({what})" for iface, what in clashes)
    free = next((s for s in SUGGESTIONS if s != subnet and not overlaps(s, addresses, routes)), None)
    others = [iface[: -len("-up")] for iface, _ in clashes if iface.endswith("-up")]
    fix = (
        f"If that is another sandbox (prefix {others[0]}), `CNCTL_SANDBOX_PREFIX={others[0]} cnctl sandbox down` "
        "stops it; or pick" if others else "Pick"
    )
    return (
        f"sandbox.subnet {subnet} is already used on this machine: {taken}. {fix} another private range in "
        "`sandbox.subnet` of stacks/Pulumi.local.yaml (and move fleets.*.address, storage.endpoint and model.url "
        f"with it){f', e.g. {free}' if free else ''}."
    )


# --- create and remove -----------------------------------------------------------------------


def _ip(netns: str | None, *args: str) -> None:
    run(["ip", *(["-n", netns] if netns else []), *args])


def _new_netns(name: str) -> None:
    """A fresh namespace with loopback up and IPv6 off (nothing but the IPv4 subnet on our wires)."""
    run(["ip", "netns", "add", name])
    run(in_netns(name, ["sh", "-c",
        "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6"]))
    _ip(name, "link", "set", "lo", "up")


def create_site(inst: Instance, layout: Layout) -> None:
    """Ensure the site namespace with its bridge (the site address) and the machine's uplink exist."""
    ns = inst.site_netns
    _new_netns(ns)
    _ip(ns, "link", "add", BRIDGE, "type", "bridge")
    _ip(ns, "address", "add", f"{layout.site_address}/{layout.prefixlen}", "dev", BRIDGE)
    _ip(ns, "link", "set", BRIDGE, "up")
    _ip(None, "link", "add", inst.uplink, "type", "veth", "peer", "name", SITE_UPLINK_PORT, "netns", ns)
    # Only our own interface's setting: the machine's defaults stay as they were.
    Path(f"/proc/sys/net/ipv6/conf/{inst.uplink}/disable_ipv6").write_text("1")
    _ip(ns, "link", "set", SITE_UPLINK_PORT, "master", BRIDGE, "up")
    _ip(None, "address", "add", f"{layout.machine_address}/{layout.prefixlen}", "dev", inst.uplink)
    _ip(None, "link", "set", inst.uplink, "up")


def attach_host(inst: Instance, layout: Layout, host: HostSpec) -> str:
    """Ensure the host's namespace exists, wired to the bridge, with its address and no default route.

    Returns the namespace name (what systemd-nspawn joins).
    """
    ns = inst.host_netns(host.name)
    port = inst.site_port(host.name)
    _new_netns(ns)
    # A container engine forwards between its bridge and the host's interface, and systemd-nspawn mounts
    # /proc/sys read-only inside: set it here, in the host's own namespace (the machine's is never touched).
    run(in_netns(ns, ["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]))
    # Both ends are created directly in their namespaces: no name ever appears in the machine's own.
    _ip(None, "link", "add", HOST_IFACE, "netns", ns, "type", "veth", "peer", "name", port, "netns", inst.site_netns)
    _ip(inst.site_netns, "link", "set", port, "master", BRIDGE, "up")
    _ip(ns, "address", "add", f"{host.address}/{layout.prefixlen}", "dev", HOST_IFACE)
    _ip(ns, "link", "set", HOST_IFACE, "up")
    # A host booted again at an address another one had (fresh hosts in tests) has a new MAC: forget the
    # old neighbour entries (on our uplink and in the site namespace only) instead of waiting ~20 s for
    # them to go stale.
    _ip(None, "neigh", "flush", "to", host.address, "dev", inst.uplink)
    _ip(inst.site_netns, "neigh", "flush", "to", host.address)
    return ns


def detach_host(inst: Instance, host: str) -> None:
    """Ensure the host's namespace and its veth pair are gone.

    The pair is deleted first, from the site's end: that is synchronous, whereas a deleted namespace takes its
    interfaces along only once the kernel gets round to it, and a host booted again at once under the same name
    would find its site port still there ("File exists")."""
    ns = inst.host_netns(host)
    if (NETNS_DIR / inst.site_netns).exists():
        run(["ip", "-n", inst.site_netns, "link", "delete", inst.site_port(host)], check=False)
    if (NETNS_DIR / ns).exists():
        run(["ip", "netns", "delete", ns])


def our_namespaces(inst: Instance) -> list[str]:
    """The network namespaces this sandbox created (by name: `<prefix>-site`, `<prefix>-h-*`)."""
    if not NETNS_DIR.is_dir():
        return []
    names = sorted(os.listdir(NETNS_DIR))
    return [n for n in names if n == inst.site_netns or n.startswith(f"{inst.prefix}-h-")]


def namespace_inodes(names: Iterable[str]) -> dict[int, str]:
    """inode of each named namespace -> its name (how a process's /proc/PID/ns/net is recognised)."""
    found: dict[int, str] = {}
    for name in names:
        try:
            found[os.stat(NETNS_DIR / name).st_ino] = name
        except FileNotFoundError:
            continue
    return found


def uplink_exists(inst: Instance) -> bool:
    return Path(f"/sys/class/net/{inst.uplink}").exists()


def remove_all(inst: Instance) -> list[str]:
    """Ensure none of this sandbox's namespaces or its uplink remain; return what was removed."""
    removed: list[str] = []
    for ns in our_namespaces(inst):
        run(["ip", "netns", "delete", ns], check=False)
        removed.append(f"netns {ns}")
    if uplink_exists(inst):
        # Deleting a namespace frees its veths asynchronously; deleting our end now makes `down` final.
        run(["ip", "link", "delete", inst.uplink], check=False)
        removed.append(f"link {inst.uplink}")
    return removed
