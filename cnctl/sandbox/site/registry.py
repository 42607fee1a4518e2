"""The site's container registry: Debian's `docker-registry` (the CNCF distribution registry), over TLS.

Its content (the STAND-IN Triton images, `tritonimage.py`) is built once into the cache and served read-only:
pulls never write, so the running registry keeps no data of its own. Its TLS certificate is made per site
address when the site starts (into the state directory, removed by `down`); hosts trust it as a plant's hosts
trust the plant's CA, through Docker's `/etc/docker/certs.d/<registry>/ca.crt`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

PORT = 5001
CERT_DAYS = 30


def config(root: Path, address: str, port: int, tls: tuple[Path, Path] | None, *, read_only: bool) -> str:
    """The registry's configuration (YAML is a superset of JSON: written as JSON, one copy of the keys)."""
    conf: dict = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(root)},
            "maintenance": {"uploadpurging": {"enabled": False}, "readonly": {"enabled": read_only}},
        },
        "http": {"addr": f"{address}:{port}", "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }
    if tls:
        conf["http"]["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
    return json.dumps(conf, indent=2) + "\n"


def argv(config_file: Path) -> list[str]:
    return ["docker-registry", "serve", str(config_file)]


def make_certificate(address: str, directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for `address` (an IP SAN), which hosts trust as the registry's CA."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "registry.crt", directory / "registry.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", str(CERT_DAYS), "-subj", "/CN=cnctl sandbox site registry",
         "-addext", f"subjectAltName=IP:{address}"],
        check=True, capture_output=True, stdin=subprocess.DEVNULL,
    )
    key.chmod(0o600)
    return cert, key


