"""Command lines of the cloud-storage emulators the site runs: gcp-storage-emulator (GCS) and moto (S3).

Both run from this venv's interpreter as background processes in the site namespace. The GCS emulator keeps
its objects on disk under the state directory (STORAGE_BASE), so uploads can be inspected after a test;
moto keeps its state in memory.
"""

from __future__ import annotations

import sys
from pathlib import Path


def gcs_argv(address: str, port: int) -> list[str]:
    """gcp-storage-emulator's server, quiet, on address:port (through gcs_server: a deeper listen queue)."""
    return [sys.executable, "-m", "cnctl.sandbox.site.gcs_server", "start", "--host", address, "--port", str(port),
            "-q"]


def gcs_env(data_dir: Path) -> dict[str, str]:
    """Where the GCS emulator stores objects (it creates `.cloudstorage/` under STORAGE_BASE)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return {"STORAGE_BASE": str(data_dir)}


def moto_argv(address: str, port: int) -> list[str]:
    """moto's standalone server (all AWS services; the sandbox uses S3) on address:port."""
    return [sys.executable, "-m", "moto.server", "-H", address, "-p", str(port)]


def health_urls(gcs_url: str, s3_url: str) -> list[str]:
    """URLs that answer once each emulator is serving."""
    return [f"{gcs_url}/storage/v1/b?project=cnctl-sandbox", f"{s3_url}/moto-api/"]

