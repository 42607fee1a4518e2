"""Shared fixtures of the unit tests.

Site services (cnctl.sandbox.site): the site content is built once into the cache ($CNCTL_CACHE, default
/var/cache/cnctl; warm it takes a fraction of a second) and shared by the test_site_* modules.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cnctl.sandbox.site import SiteContent, build_site_content
from cnctl.sandbox.site.artifacts import ArtifactServer


@pytest.fixture(scope="session")
def site_content() -> SiteContent:
    """The built site content (apt repo, model archives, wheelhouse) in the shared cache."""
    return build_site_content(Path(os.environ.get("CNCTL_CACHE", "/var/cache/cnctl")), progress=lambda _: None)


@pytest.fixture(scope="session")
def deb_of(site_content: SiteContent):
    """Look up a stand-in .deb in the built repository by package name and version."""

    def find(name: str, version: str | None = None) -> Path:
        for pkg, ver, filename in site_content.packages:
            if pkg == name and (version is None or ver == version):
                return site_content.apt_dir / filename
        raise KeyError((name, version))

    return find


@pytest.fixture(scope="session")
def extract_deb(tmp_path_factory):
    """dpkg-deb -x a package into a fresh directory (a stand-in root for CNCTL_STANDIN_ROOT)."""

    def extract(deb: Path) -> Path:
        root = tmp_path_factory.mktemp(deb.name.split("_")[0])
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        return root

    return extract


@pytest.fixture
def artifact_server(site_content: SiteContent, tmp_path: Path) -> Iterator[tuple[str, ArtifactServer]]:
    """The artifact server in a thread on a free loopback port; yields (base URL, server)."""
    mounts = {"/apt/": site_content.apt_dir, "/artifacts/": site_content.artifacts_dir}
    server = ArtifactServer(("127.0.0.1", 0), mounts, tmp_path / "requests.log")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
