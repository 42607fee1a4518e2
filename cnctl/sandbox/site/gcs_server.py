"""gcp-storage-emulator's own command line with a deeper listen queue: `python -m cnctl.sandbox.site.gcs_server
start --host H --port P`.

The emulator answers one request at a time. With http.server's backlog of 5, a fleet's uploaders and pull agents
plus an operator's publish overflow it under load, and the kernel drops the extra connections' SYNs: clients time
out connecting instead of waiting their turn. Not imported by the site package (run as a program only).
"""

from __future__ import annotations

import http.server
import sys

BACKLOG = 128  # connections queued while the emulator serves one (http.server's default: 5)


def main(args: list[str]) -> None:
    from gcp_storage_emulator.__main__ import main as emulator

    http.server.HTTPServer.request_queue_size = BACKLOG
    emulator(args)


if __name__ == "__main__":
    main(sys.argv[1:])
