"""pyinfra entry point: apply the host layers to each host by its role.

    pyinfra hosts/sandbox.py deploy.py      # the sandbox fleet (`cnctl sandbox up` first)

For now it applies the smoke deploy to sandbox hosts; the host layers (platform, nvidia/jetson,
container, model, inference, pipeline, verify) plug in here by group (`edge`, `servers`).
"""

from pyinfra import host

from deploy.smoke import smoke

if host.data.get("sandbox"):
    smoke(_sudo=True)
