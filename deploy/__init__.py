"""pyinfra packaged deploys, one module per host layer; `deploy.py` at the repository root applies them.

Layers (LAYERS, in the order they apply: cnctl/layers.py, the one list): `platform` (detect, refuse before any
change; always applied), `jetson` (edge) or `nvidia` (servers, cloud VMs), `container`, `model` (the model
repository, around the one host script `model_sync.py`), `inference` (Triton's unit and the served version, around
`model_serve.py`), `pipeline` (capture, the client over the spool, the uploader: `capture.py`, `pipeline_run.py`,
`uploader.py`), `verify` (the health report, `health_report.py`), `pull` (pull mode's agent and timer on pull
hosts, none of it on push hosts). Shared by them: `facts` (what they read, parsed as data), `probe` (the same
facts in one round trip, for the Ansible roles), `checks` (the verdicts both engines give), `steps` (signed
repositories, pins, holds, checks as operations).
"""

from cnctl.layers import LAYERS

__all__ = ["LAYERS"]
