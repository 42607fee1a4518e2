"""pyinfra inventory: the edge devices and GPU servers of the chosen stack (what `cnctl deploy` runs on).

    CNCTL_STACK=prod pyinfra hosts/fleet.py deploy.py     # or: pyinfra hosts/fleet.py deploy.py --data stack=prod

Default stack: local (the sandbox fleet, `cnctl sandbox up` first). See cnctl/inventory.py.
"""

from cnctl.inventory import for_pyinfra_module

_groups = for_pyinfra_module(("edge", "servers"))
edge = _groups["edge"]
servers = _groups["servers"]
