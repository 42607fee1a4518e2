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

# The build identity L4T prints in the release file's first line, per L4T version, as seen on real
# devices (../shared/reference/nvidia-platform.md section 4). One copy of this data: a candidate for
# the platform matrix (`jetson.releases[].gcid/build_date`) once a host layer needs it too.
L4T_BUILDS: dict[str, tuple[str, str]] = {
    "36.3.0": ("36191598", "Mon May  6 17:34:21 UTC 2024"),
    "36.4.0": ("37537400", "Fri Sep 13 04:36:44 UTC 2024"),
    "36.4.3": ("38968081", "Wed Jan  8 01:49:37 UTC 2025"),
    "36.4.4": ("41062509", "Mon Jun 16 16:07:13 UTC 2025"),
    "36.4.7": ("42132812", "Thu Sep 18 22:54:44 UTC 2025"),
}


def l4t_for(jetpack: str) -> str:
    """The L4T version of a JetPack release, from the platform matrix."""
    return catalog().platforms.jetson.release(jetpack).l4t


def nv_tegra_release(l4t: str) -> str:
    """`/etc/nv_tegra_release` as L4T r36 writes it (Orin, t234, out-of-tree kernel modules)."""
    major, minor, patch = l4t.split(".")
    try:
        gcid, date = L4T_BUILDS[l4t]
    except KeyError:
        known = ", ".join(L4T_BUILDS)
        raise ValueError(f"no L4T build identity for {l4t}; known: {known} (cnctl/sandbox/flavours.py)") from None
    return (
        f"# R{major} (release), REVISION: {minor}.{patch}, GCID: {gcid}, BOARD: generic, EABI: aarch64, DATE: {date}\n"
        "# KERNEL_VARIANT: oot\n"
        "TARGET_USERSPACE_LIB_DIR=nvidia\n"
        "TARGET_USERSPACE_LIB_DIR_PATH=usr/lib/aarch64-linux-gnu/nvidia\n"
    )
