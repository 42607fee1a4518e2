"""pyinfra inventory: the GPU servers of the chosen stack's `fleets.servers`.

    pyinfra hosts/servers.py deploy.py                     # stack local: the sandbox's (`cnctl sandbox up` first)
    CNCTL_STACK=prod pyinfra hosts/servers.py deploy.py    # or: ... --data stack=prod

Each host carries its `cn_*` variables (cnctl/hostvars.py). See cnctl/inventory.py.
"""

from cnctl.inventory import for_pyinfra_module

servers = for_pyinfra_module(("servers",))["servers"]
