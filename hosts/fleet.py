"""pyinfra inventory: the whole fleet of the chosen stack, its edge devices and GPU servers (what `cnctl deploy` runs on).

    pyinfra hosts/fleet.py deploy.py                       # stack local: the sandbox's fleet (`cnctl sandbox up` first)
    CNCTL_STACK=prod pyinfra hosts/fleet.py deploy.py      # or: ... --data stack=prod

One group only: hosts/edge.py, hosts/servers.py. Cloud VMs: hosts/cloud.py. A pull host on itself: hosts/pull.py.
A stack with a fleet file (`fleets.file`, or CNCTL_FLEET_FILE) takes its hosts from it. See cnctl/inventory.py.
"""

from cnctl.inventory import for_pyinfra_module

_groups = for_pyinfra_module(("edge", "servers"))
edge = _groups["edge"]
servers = _groups["servers"]
