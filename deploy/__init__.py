"""pyinfra packaged deploys, one module per host layer; `deploy.py` at the repository root applies them.

`smoke`: proves a sandbox host is ready for the host layers (signed apt from the site repo, sudo, systemd).
"""
