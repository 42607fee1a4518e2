"""pyinfra packaged deploys, one module per host layer; `deploy.py` at the repository root applies them.

Layers: `platform` (detect, refuse before any change), `nvidia` (servers, cloud VMs) or `jetson` (edge),
`container`. Shared by them: `facts` (what they read, parsed as data), `probe` (the same facts in one round
trip, for the Ansible roles), `checks` (the verdicts both engines give), `steps` (signed repositories,
pins, holds, checks as operations). `smoke`: the earlier readiness deploy (signed site repo, sudo,
systemd), which the platform layer and the layers' fail-closed index refreshes now cover.
"""
