"""Where a client on a host reaches that host's Triton: the one builder of its endpoints.

    http_url("127.0.0.1", 8000)     -> "http://127.0.0.1:8000"
    http_url("0.0.0.0", 8000)       -> "http://127.0.0.1:8000"   (Triton binds every address: loopback)
    http_url("::", 8000)            -> "http://[::1]:8000"
    http_url("fe80::1%eth0", 8000)  -> "http://[fe80::1%eth0]:8000"
    grpc_target("::1", 8001)        -> "[::1]:8001"
    interface_ipv4("ens4")          -> "10.128.0.7" (`ip -4 -o addr show dev ens4`), None without one

Standard library only, no cnctl and no pyinfra: the controller imports it (`from cnhost import triton_endpoint`:
deploy/inference.py, deploy/pipeline.py, deploy/facts.py, cnctl/rollout.py), and so do the host programs that talk
to Triton (model_serve.py, health_report.py).

An address is refused (ValueError) unless it is an IP address (an IPv6 zone id of interface-name characters only)
or a DNS name: whatever reaches here becomes part of a URL, never more than its host.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from collections.abc import Iterable

LOOPBACK = {4: "127.0.0.1", 6: "::1"}
_ZONE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
_INET = re.compile(r"\binet (\d{1,3}(?:\.\d{1,3}){3})/")
IP_TIMEOUT_S = 10


def reach(bind_address: str) -> str:
    """The address a client on the host dials for a Triton bound to `bind_address`: that address, or the loopback
    of its family when Triton binds every one (`0.0.0.0`, `::`; empty: IPv4's). ValueError for anything but an
    IP address or a DNS name."""
    address = bind_address.strip()
    if not address:
        return LOOPBACK[4]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        if not _NAME.fullmatch(address):
            raise ValueError(f"Triton's address {address!r} is neither an IP address nor a DNS name") from None
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None and not _ZONE.fullmatch(ip.scope_id):
        raise ValueError(f"Triton's address {address!r}: its zone id is not an interface name")
    return LOOPBACK[ip.version] if ip.is_unspecified else address


def host_port(address: str, port: int) -> str:
    """`address:port`, an IPv6 address in brackets (`[::1]:8000`): the authority of a URL, a gRPC target."""
    return f"[{address}]:{int(port)}" if ":" in address else f"{address}:{int(port)}"


def http_url(bind_address: str, port: int) -> str:
    """Triton's HTTP endpoint as a client on the host reaches it."""
    return f"http://{host_port(reach(bind_address), port)}"


def grpc_target(bind_address: str, port: int) -> str:
    """Triton's gRPC endpoint (`host:port`) as a client on the host reaches it."""
    return host_port(reach(bind_address), port)


def parse_ipv4(lines: Iterable[str]) -> str | None:
    """The first IPv4 address in the output of `ip -4 -o addr show`, None when it names none."""
    for line in lines:
        match = _INET.search(line)
        if match:
            return match[1]
    return None


def interface_ipv4(interface: str) -> str | None:
    """The first IPv4 address of `interface` on this host, None when it has none (or there is no `ip`)."""
    try:
        done = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", interface], capture_output=True, text=True,
                              timeout=IP_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_ipv4(done.stdout.splitlines()) if done.returncode == 0 else None
