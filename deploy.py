"""pyinfra entry point: apply the host layers to each host by its platform.

    pyinfra hosts/edge.py deploy.py         # Jetson edge devices: platform -> jetson -> container -> model
    pyinfra hosts/servers.py deploy.py      # GPU servers:         platform -> nvidia -> container -> model
    pyinfra hosts/cloud.py deploy.py        # cloud GPU VMs:       platform -> nvidia (the image's) -> container -> model

Each host's variables are its cn_* host data (cnctl.hostvars, the same names Ansible gets). The platform
check reads the host before any operation is added for it: a refused host gets one failing operation
that names it and what was found, and nothing else, so nothing changes on it while the others converge.
playbooks/site.yml applies the same layers through Ansible.
"""

from pyinfra import host

from deploy import platform
from deploy.container import container
from deploy.jetson import jetson
from deploy.model import model
from deploy.nvidia import nvidia
from deploy.steps import refused

refusal = platform.refusal()
if refusal:
    refused(name="Platform: supported, and what its fleet entry says", message=refusal)
else:
    platform.platform(_sudo=True)
    if host.data.get("cn_platform") == "jetson":
        jetson(_sudo=True)
    else:
        nvidia(_sudo=True)
    container(_sudo=True)
    model(_sudo=True)
