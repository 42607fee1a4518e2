"""pyinfra inventory: the cloud GPU VMs of the chosen stack, from its Pulumi stack outputs, through IAP.

    pulumi up -s dev && CNCTL_STACK=dev pyinfra hosts/cloud.py deploy.py
    CNCTL_STACK=dev CNCTL_OUTPUTS=outputs.json pyinfra hosts/cloud.py deploy.py   # outputs exported earlier

The VMs have no public IP: each is reached by an SSH ProxyCommand `gcloud compute start-iap-tunnel <vm> 22
--listen-on-stdin --project=<p> --zone=<z>` (an ssh_config in ~/.cache/cnctl/ssh/), as the OS Login user
(CNCTL_SSH_USER, or gcloud's profile). See cnctl/inventory.py.
"""

from cnctl.inventory import for_pyinfra_module

cloud = for_pyinfra_module(("cloud",))["cloud"]
