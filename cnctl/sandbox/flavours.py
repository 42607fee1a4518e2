"""What makes a sandbox host look like a Jetson or a GPU server to the host layers.

Both flavours are plain x86_64 Debian underneath. A `jetson` host gets what a flashed device exposes
before any package is installed: `/etc/nv_tegra_release` in the exact four-line format L4T r36 writes,
for the host's JetPack release (L4T version from the platform matrix). The JetPack/L4T packages and the
NVIDIA driver packages are stand-ins served by the site's apt repo. No file on a host says "sandbox":
host layers detect the platform from what real devices show.
"""

from __future__ import annotations

from typing import Literal

from cnctl.catalog import catalog

Flavour = Literal["jetson", "server"]

def l4t_for(jetpack: str) -> str:
    """The L4T version of a JetPack release, from the platform matrix."""
    return catalog().platforms.jetson.release(jetpack).l4t


def nv_tegra_release(l4t: str) -> str:
    """`/etc/nv_tegra_release` as L4T r36 writes it for one L4T version (build identity from the matrix)."""
    release = catalog().platforms.jetson.by_l4t(l4t)
    if release is None:
        known = ", ".join(r.l4t for r in catalog().platforms.jetson.releases)
        raise ValueError(f"L4T {l4t} is not in the platform matrix; known: {known}")
    return release.nv_tegra_release()
