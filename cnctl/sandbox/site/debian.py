"""Debian's REAL packages the site's apt repository carries: the Docker engine and what the hosts lack for it.

Sandbox hosts have no route out, so the packages the host layers install from the distribution (Debian's
`docker.io`, `containerd`, `runc`, `python3-venv`, `prometheus-node-exporter`, `prometheus`, `prometheus-alertmanager` and their dependencies) reach them through the site repository, as in an
air-gapped plant with a mirror. They are downloaded on the machine, with the machine's own apt and its
Debian mirror, once per architecture and cached:

- the set is exactly what a host image lacks: apt resolves against the image's own dpkg status file, so the
  closure includes every dependency the image does not already have (recommendations are left out: the
  host layers install with --no-install-recommends, and apt skips an unavailable recommendation);
- a private apt state directory per architecture: the machine's apt configuration, lists and dpkg
  architectures are never touched (no `dpkg --add-architecture`).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

# What the host layers may install from the distribution: the local stack's `docker.io` engine source,
# python3-venv (ensurepip) for the native inference runtime's venv, and the monitoring layer's node-exporter,
# Prometheus (the site's, and the agents') and Alertmanager.
PACKAGES = ("docker.io", "python3-venv", "prometheus-node-exporter", "prometheus", "prometheus-alertmanager")
APT_TIMEOUT_S = 900


def _apt_options(work: Path, arch: str, status: Path) -> list[str]:
    """apt-get options that confine it to `work` and to `arch`, resolving against the image's dpkg status."""
    return [
        "-o", f"Dir::State={work / 'state'}",
        "-o", f"Dir::State::status={status}",
        "-o", f"Dir::Cache={work / 'cache'}",
        "-o", f"Dir::Etc::SourceList={work / 'sources.list'}",
        "-o", "Dir::Etc::SourceParts=/nonexistent",
        "-o", "Dir::Etc::PreferencesParts=/nonexistent",
        "-o", "Dir::Etc::Preferences=/nonexistent",
        "-o", f"APT::Architecture={arch}",
        "-o", f"APT::Architectures::={arch}",
        "-o", "Debug::NoLocking=1",
        "-o", "APT::Sandbox::User=root",
    ]


def _apt(args: list[str], timeout: float = APT_TIMEOUT_S) -> None:
    res = subprocess.run(["apt-get", "-q", *args], check=False, capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        tail = " / ".join((res.stderr or res.stdout).strip().splitlines()[-4:])
        raise RuntimeError(f"apt-get {args[-2:]} failed (exit {res.returncode}): {tail}")


def image_status(image_root: Path) -> Path:
    """The dpkg status file of a host image: what its hosts already have."""
    return image_root / "var" / "lib" / "dpkg" / "status"


def download(status: Path, arch: str, mirror: str, suite: str, dest: Path, work: Path,
             packages: tuple[str, ...] = PACKAGES, *, recommends: bool = True) -> list[Path]:
    """Download into `dest` the .debs of `packages` and every dependency a system with dpkg `status` lacks.

    `recommends`: whether recommended packages count as needed (apt's default on hosts: yes).
    """
    for sub in ("state/lists/partial", "cache/archives/partial"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    (work / "sources.list").write_text(f"deb {mirror} {suite} main\n")
    options = _apt_options(work, arch, status)
    _apt([*options, "update"])
    _apt([*options, "install", "--download-only", "--yes", f"-oAPT::Install-Recommends={str(recommends).lower()}",
          *packages])
    dest.mkdir(parents=True, exist_ok=True)
    debs = sorted((work / "cache" / "archives").glob("*.deb"))
    if not debs:
        raise RuntimeError(f"apt downloaded nothing for {arch}: are {packages} already installed?")
    for deb in debs:
        target = dest / deb.name
        if not target.exists():  # Architecture: all packages come with both architectures' closures
            deb.rename(target)
    return sorted(dest / deb.name for deb in debs)
