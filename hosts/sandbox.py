"""pyinfra inventory of the sandbox fleet: an alias of hosts/fleet.py (the local stack's edge and servers).

    pyinfra hosts/sandbox.py deploy.py        # same as: pyinfra hosts/edge.py ... and hosts/servers.py ...

Kept for existing commands and docs. CNCTL_STATE selects another sandbox's state directory.
"""

from cnctl.inventory import for_pyinfra_module

_groups = for_pyinfra_module(("edge", "servers"))
edge = _groups["edge"]
servers = _groups["servers"]
