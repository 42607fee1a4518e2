"""An HTTP server on a free port for as long as a block runs: the one copy the tests' small servers use."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def http_server(handler: type[http.server.BaseHTTPRequestHandler], address: str = "127.0.0.1") -> Iterator[str]:
    """`handler` served by a threading server on `address` and a free port; yields `http://<address>:<port>`.
    Shut down, its socket closed and its thread joined when the block ends."""
    server = http.server.ThreadingHTTPServer((address, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{address}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
