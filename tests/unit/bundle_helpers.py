"""Shared by the bundle tests: throwaway ed25519 keys and a stack variant with a `bundle` section."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from tests.unit.stack_variants import stack_variant


def keypair(folder: Path, name: str = "signer") -> tuple[Path, str]:
    """A fresh ed25519 key without passphrase in `folder` (0600) -> (private key path, public key line)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key, (folder / f"{name}.pub").read_text().strip()


def bundle_stack(tmp_path: Path, public_key: str | None, key: Path | None = None, identity: str = "release@plant",
                 storage: dict[str, Any] | None = None) -> str:
    """stacks/Pulumi.local.yaml with `bundle` (None: without it) and `storage` changed -> its path."""

    def change(config: dict[str, Any]) -> None:
        if public_key is not None:
            section: dict[str, Any] = {"signers": [{"identity": identity, "publicKey": public_key}]}
            if key is not None:
                section["signingKey"] = str(key)
            config["circularnet:bundle"] = section
        if storage is not None:
            config["circularnet:storage"] = {**config["circularnet:storage"], **storage}

    return stack_variant(tmp_path, change, base="local")
