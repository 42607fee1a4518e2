"""pyinfra inventory of the sandbox fleet, read from the state `cnctl sandbox up` wrote.

    pyinfra hosts/sandbox.py deploy.py

Groups `edge` (Jetson flavour) and `servers` (GPU server flavour). Connections use the sandbox's own key
and known_hosts with strict host key checking. CNCTL_STATE selects another sandbox's state directory.
"""

import sys

from cnctl.sandbox.inventory import SandboxNotUp, pyinfra_groups

try:
    _groups = pyinfra_groups()
except SandboxNotUp as _exc:
    print(f"error: {_exc}", file=sys.stderr)
    raise SystemExit(2) from None

edge = _groups["edge"]
servers = _groups["servers"]
