"""SSH identities: one client key pair per sandbox, one ed25519 host key per host, an exact known_hosts.

Host keys are generated on the machine into each host's fresh disk before it boots, so known_hosts is
written from what we generated (no trust-on-first-use scan) and inventories keep strict host key
checking on.
"""

from __future__ import annotations

import os
from pathlib import Path

from cnctl.sandbox.system import run, write_file

CLIENT_KEY = "id_ed25519"


def ensure_client_key(ssh_dir: Path) -> Path:
    """Ensure an ed25519 key pair exists in `ssh_dir` (dir 0700, private key 0600); return the private key."""
    ssh_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    key = ssh_dir / CLIENT_KEY
    if not (key.exists() and key.with_suffix(".pub").exists()):
        key.unlink(missing_ok=True)
        key.with_suffix(".pub").unlink(missing_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cnctl-sandbox", "-f", str(key)])
    os.chmod(key, 0o600)
    return key


def public_key(private_key: Path) -> str:
    return private_key.with_suffix(".pub").read_text().strip()


def make_host_key(etc_ssh: Path, comment: str) -> str:
    """Ensure the host's ed25519 key exists in `etc_ssh` (root-owned, 0600); return its public line."""
    key = etc_ssh / "ssh_host_ed25519_key"
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)])
    os.chmod(key, 0o600)
    os.chmod(key.with_name(key.name + ".pub"), 0o644)
    keytype, blob = key.with_name(key.name + ".pub").read_text().split()[:2]
    return f"{keytype} {blob}"


def write_known_hosts(path: Path, entries: list[tuple[str, str]]) -> None:
    """Ensure `path` lists exactly these (address, public key) pairs."""
    lines = "".join(f"{address} {key}\n" for address, key in entries)
    write_file(path, lines, mode=0o644)


def ssh_options(private_key: Path, known_hosts: Path, connect_timeout: int = 5) -> list[str]:
    """The OpenSSH client options every sandbox connection uses: our key only, strict host keys."""
    return [
        "-F", "/dev/null",
        "-i", str(private_key),
        "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes",
        "-o", f"ConnectTimeout={connect_timeout}",
        "-o", "LogLevel=ERROR",
    ]
