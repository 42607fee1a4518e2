"""A loopback TCP relay in front of a sandbox service, for fault tests and benchmarks (never a production path).

    relay = Relay(upstream_port); relay.up()      # 127.0.0.1:relay.port -> 127.0.0.1:upstream_port
    relay.down()                                  # nothing listens, every connection cut (a store that is down)

Each connection is relayed both ways, one thread a direction, every write forwarded at once (no Nagle stalls).
A subclass sees each chunk in `passing(data, upward, flow)` before it is forwarded (upward: client to service;
`flow`: a dict of that connection's own) and may count it, hold it back (by not returning yet) or cut the
connection (by returning False).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now (the one copy: relays, registries, tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Relay:
    def __init__(self, upstream: int) -> None:
        self.upstream, self.port = upstream, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.closed = threading.Event()
        self.listener: socket.socket | None = None
        self.conns: set[socket.socket] = set()
        self.lock = threading.Lock()

    def passing(self, data: bytes, upward: bool, flow: dict[str, Any]) -> bool:
        """Called with each chunk before it is forwarded; False cuts the connection. Forwards everything."""
        return True

    def up(self) -> None:
        self.closed.clear()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def down(self) -> None:
        self.closed.set()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        with self.lock:
            for conn in self.conns:
                close(conn)
            self.conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                if self.closed.is_set() or listener is not self.listener:
                    return  # this listener was closed (down(), maybe up() again since)
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream), timeout=10)
                server.settimeout(None)
                for sock in (client, server):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                close(client)
                continue
            with self.lock:
                self.conns.update((client, server))
            flow: dict[str, Any] = {}
            threading.Thread(target=self._pump, args=(client, server, True, flow), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False, flow), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upward: bool, flow: dict[str, Any]) -> None:
        try:
            while data := src.recv(1 << 16):
                if not self.passing(data, upward, flow):
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            close(src)
            close(dst)
            with self.lock:
                self.conns.difference_update((src, dst))


def close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
