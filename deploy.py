"""pyinfra entry point: apply the host layers to each host by its platform.

    pyinfra hosts/edge.py deploy.py         # Jetson edge devices: platform -> jetson -> container -> model -> inference -> pipeline -> monitoring -> verify -> pull
    pyinfra hosts/servers.py deploy.py      # GPU servers:         platform -> nvidia -> container -> model -> inference -> pipeline -> monitoring -> verify -> pull
    pyinfra hosts/cloud.py deploy.py        # cloud GPU VMs:       platform -> nvidia (the image's) -> container -> model -> inference -> pipeline -> monitoring -> verify -> pull
    pyinfra hosts/fleet.py deploy.py        # the whole fleet (edge and servers): what `cnctl deploy` runs

Each host's variables are its cn_* host data (cnctl.hostvars, the same names Ansible gets). The platform
check reads the host before any operation is added for it: a refused host gets one failing operation
that names it and what was found, and nothing else, so nothing changes on it while the others converge.

The layers, their order and which platform takes which are cnctl/layers.py (the one list).
CNCTL_LAYERS=model,inference (a comma list) applies only those layers after the platform layer, which
always runs: `cnctl model rollout` uses it. playbooks/site.yml applies the same layers through Ansible
(the same names as --tags).
"""

import os
import sys

from pyinfra import host, state

from cnctl.layers import LAYERS, UnknownLayers, chosen, for_platform
from deploy import platform
from deploy.container import container
from deploy.inference import inference
from deploy.jetson import jetson
from deploy.model import model
from deploy.monitoring import monitoring
from deploy.nvidia import nvidia
from deploy.pipeline import pipeline
from deploy.pull import pull
from deploy.steps import refused
from deploy.timing import install as time_layers
from deploy.verify import verify

# Each layer after platform by its name in cnctl/layers.py (the one list), in the order it gives, each CALLED
# FROM ITS OWN LINE: pyinfra identifies an operation by the line numbers of its call stack, not by file, so two
# layers called from one shared line would give their operations on the same line of their own files one
# identity, and a fleet mixing platforms (Jetsons and servers) would stop on "Cycle detected in operation
# ordering DAG" (it did, for the Jetson layer's line 92 and the container layer's).
APPLY = {
    "jetson": lambda: jetson(_sudo=True),
    "nvidia": lambda: nvidia(_sudo=True),
    "container": lambda: container(_sudo=True),
    "model": lambda: model(_sudo=True),
    "inference": lambda: inference(_sudo=True),
    "pipeline": lambda: pipeline(_sudo=True),
    "monitoring": lambda: monitoring(_sudo=True),
    "verify": lambda: verify(_sudo=True),
    "pull": lambda: pull(_sudo=True),
}

try:
    layers = chosen(os.environ.get("CNCTL_LAYERS") or ",".join(LAYERS))
except UnknownLayers as exc:
    print(f"CNCTL_LAYERS: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

time_layers(state)  # the run ends with seconds per layer and host (deploy/timing.py)
refusal = platform.refusal()
if refusal:
    refused(name="Platform: supported, and what its fleet entry says", message=refusal)
else:
    platform.platform(_sudo=True)
    for name in for_platform(host.data.get("cn_platform"), layers):
        if name in APPLY:  # platform, applied first above
            APPLY[name]()
