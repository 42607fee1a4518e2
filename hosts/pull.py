"""pyinfra inventory of pull mode: this machine (`@local`) as its fleet entry, read from the bundle's stack.

    CNCTL_STACK=stacks/Pulumi.dev.yaml CNCTL_PULL_HOST=belt-1-orin pyinfra -y hosts/pull.py deploy.py

Run by pull mode's agent (cnctl/bundle/agent.py) inside an unpacked, verified bundle; see cnctl/inventory.py
(`for_pull_module`) and docs/pull-mode.md.
"""

from cnctl.inventory import for_pull_module

_groups = for_pull_module()
edge = _groups["edge"]
servers = _groups["servers"]
cloud = _groups["cloud"]  # a VM of the autoscaled worker group (compute.mode: group)
