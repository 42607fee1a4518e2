"""pyinfra packaged deploys, one module per host layer; `deploy.py` at the repository root applies them.

Layers: `platform` (detect, refuse before any change), `nvidia` (servers, cloud VMs) or `jetson` (edge),
`container`. Shared by them: `facts` (what they read, parsed as data), `probe` (the same facts in one round
trip, for the Ansible roles), `checks` (the verdicts both engines give), `steps` (signed repositories,
pins, holds, checks as operations), `model` (the model repository, around the one host script
`model_sync.py`).
"""
