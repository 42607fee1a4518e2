"""Keep one sandbox host's systemd-nspawn running across reboots (what systemd-nspawn@.service does).

Run as `python3 supervise.py -- systemd-nspawn ...`. A container that reboots makes systemd-nspawn exit
with 133; this restarts it (bounded), so `reboot` on a sandbox host behaves as on a real one. SIGTERM
and SIGINT are passed to systemd-nspawn, which halts the container cleanly. Standard library only:
the supervisor outlives the command that started it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

REBOOT_EXIT = 133
MAX_REBOOTS = 50  # a host that reboots in a loop is stopped rather than spun forever


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print("usage: supervise.py -- systemd-nspawn ARGS...", file=sys.stderr)
        return 2
    cmd = argv[argv.index("--") + 1 :]
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
