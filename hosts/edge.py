"""pyinfra inventory: the Jetson edge devices of the chosen stack's `fleets.edge`.

    pyinfra hosts/edge.py deploy.py                        # stack local: the sandbox's (`cnctl sandbox up` first)
    CNCTL_STACK=prod pyinfra hosts/edge.py deploy.py       # or: ... --data stack=prod

Each host carries its `cn_*` variables (cnctl/hostvars.py). See cnctl/inventory.py.
"""

from cnctl.inventory import for_pyinfra_module

edge = for_pyinfra_module(("edge",))["edge"]
