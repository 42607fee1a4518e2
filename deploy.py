"""pyinfra entry point: apply the host layers to each host by its platform.

    pyinfra hosts/edge.py deploy.py         # Jetson edge devices: platform -> jetson -> container -> model -> inference -> pipeline -> verify -> pull
    pyinfra hosts/servers.py deploy.py      # GPU servers:         platform -> nvidia -> container -> model -> inference -> pipeline -> verify -> pull
    pyinfra hosts/cloud.py deploy.py        # cloud GPU VMs:       platform -> nvidia (the image's) -> container -> model -> inference -> pipeline -> verify -> pull

Each host's variables are its cn_* host data (cnctl.hostvars, the same names Ansible gets). The platform
check reads the host before any operation is added for it: a refused host gets one failing operation
that names it and what was found, and nothing else, so nothing changes on it while the others converge.

CNCTL_LAYERS=model,inference (a comma list) applies only those layers after the platform layer, which
always runs: `cnctl model rollout` uses it. playbooks/site.yml applies the same layers through Ansible
(the same list as --tags).
"""

import os
import sys

from pyinfra import host

from deploy import LAYERS, platform
from deploy.container import container
from deploy.inference import inference
from deploy.jetson import jetson
from deploy.model import model
from deploy.nvidia import nvidia
from deploy.pipeline import pipeline
from deploy.pull import pull
from deploy.steps import refused
from deploy.verify import verify

chosen = {name.strip() for name in os.environ.get("CNCTL_LAYERS", ",".join(LAYERS)).split(",") if name.strip()}
unknown = chosen - set(LAYERS)
if unknown:
    print(f"CNCTL_LAYERS names {', '.join(sorted(unknown))}: the layers are {', '.join(LAYERS)}", file=sys.stderr)
    raise SystemExit(2)

refusal = platform.refusal()
if refusal:
    refused(name="Platform: supported, and what its fleet entry says", message=refusal)
else:
    platform.platform(_sudo=True)
    jetson_host = host.data.get("cn_platform") == "jetson"
    if jetson_host and "jetson" in chosen:
        jetson(_sudo=True)
    if not jetson_host and "nvidia" in chosen:
        nvidia(_sudo=True)
    if "container" in chosen:
        container(_sudo=True)
    if "model" in chosen:
        model(_sudo=True)
    if "inference" in chosen:
        inference(_sudo=True)
    if "pipeline" in chosen:
        pipeline(_sudo=True)
    if "verify" in chosen:
        verify(_sudo=True)
    if "pull" in chosen:
        pull(_sudo=True)
