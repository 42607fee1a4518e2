"""The signed flat apt repository, checked by the real apt against the artifact server on loopback.

apt-get runs with private Dir::State / Dir::Cache / sources options under tmp_path, so this machine's apt
configuration and lists are neither read for sources nor written.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cnctl.catalog import catalog
from cnctl.sandbox.site import aptrepo


def apt_options(root: Path, keyring: Path, url: str) -> list[str]:
    """A private apt configuration whose only source is the sandbox repository, signed-by `keyring`."""
    for d in ("etc/sources.list.d", "etc/preferences.d", "etc/trusted.gpg.d", "state/lists/partial",
              "cache/archives/partial"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/sources.list").write_text(f"deb [signed-by={keyring}] {url} ./\n")
    return [
        "-o", f"Dir::Etc::sourcelist={root / 'etc/sources.list'}",
        "-o", f"Dir::Etc::sourceparts={root / 'etc/sources.list.d'}",
        "-o", f"Dir::Etc::preferences={root / 'etc/preferences'}",
        "-o", f"Dir::Etc::preferencesparts={root / 'etc/preferences.d'}",
        "-o", f"Dir::Etc::trusted={root / 'etc/trusted.gpg'}",
        "-o", f"Dir::Etc::trustedparts={root / 'etc/trusted.gpg.d'}",
        "-o", f"Dir::State={root / 'state'}",
        "-o", f"Dir::Cache={root / 'cache'}",
        "-o", "Dir::State::status=/var/lib/dpkg/status",  # read-only: lets -s resolve python3 & co.
        "-o", "Debug::NoLocking=1",
        "-o", "APT::Sandbox::User=root",
        "-o", "Acquire::Languages=none",
    ]


def apt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"})


@pytest.fixture
def repo_url(artifact_server):
    base, _ = artifact_server
    return f"{base}/apt/"


def test_apt_update_succeeds_with_the_repo_key(site_content, repo_url, tmp_path):
    opts = apt_options(tmp_path, site_content.apt_keyring, repo_url)
    res = apt("apt-get", *opts, "update", "--error-on=any")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "InRelease" in res.stdout
    branch = catalog().platforms.servers.driver_branches[0]
    policy = apt("apt-cache", *opts, "policy", f"cuda-drivers-{branch.branch}").stdout
    assert f"{branch.version}-1" in policy
    # Every JetPack release's nvidia-l4t-core is offered (--multiversion index), for arm64 only, as the real one.
    assert "nvidia-l4t-core" not in apt("apt-cache", *opts, "madison", "nvidia-l4t-core").stdout
    arm64 = ["-o", "APT::Architecture=arm64", "-o", "APT::Architectures::=arm64"]
    assert apt("apt-get", *opts, *arm64, "update", "--error-on=any").returncode == 0
    madison = apt("apt-cache", *opts, *arm64, "madison", "nvidia-l4t-core").stdout
    for rel in catalog().platforms.jetson.releases:
        assert f"nvidia-l4t-core | {rel.packages['nvidia-l4t-core']} |" in madison


def test_apt_resolves_the_install_sets(site_content, repo_url, tmp_path):
    """What the host layers install resolves with the stand-ins' dependency chains (simulated only)."""
    opts = apt_options(tmp_path, site_content.apt_keyring, repo_url)
    assert apt("apt-get", *opts, "update", "--error-on=any").returncode == 0
    plat = catalog().platforms
    branch = plat.servers.driver_branches[0]
    bookworm = next(o for o in plat.servers.os if o.codename == "bookworm")
    server = [f"cuda-drivers-{branch.branch}={branch.version}-1", plat.servers.cuda_toolkits[0].package,
              "nvidia-container-toolkit", f"docker-ce={plat.container.docker.apt_version(bookworm)}"]
    rel = plat.jetson.releases[0]
    jetson = [f"nvidia-jetpack={rel.packages['nvidia-jetpack']}", f"nvidia-l4t-core={rel.packages['nvidia-l4t-core']}",
              f"nvidia-l4t-tools={rel.packages['nvidia-l4t-core']}", "nvidia-container"]
    # Jetson packages are arm64: resolve them as an arm64 host with python3 installed would.
    arm64_status = tmp_path / "arm64-status"
    arm64_status.write_text("Package: python3\nStatus: install ok installed\nPriority: optional\nSection: python\n"
                            "Maintainer: x <x@invalid>\nArchitecture: arm64\nVersion: 3.11.2-1+b1\n"
                            "Description: interactive high-level object-oriented language\n")
    arm64 = ["-o", "APT::Architecture=arm64", "-o", "APT::Architectures::=arm64",
             "-o", f"Dir::State::status={arm64_status}"]
    assert apt("apt-get", *opts, *arm64, "update", "--error-on=any").returncode == 0
    for pkgs, extra in ((server, []), (jetson, arm64)):
        res = apt("apt-get", *opts, *extra, "-s", "install", *pkgs)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "Inst nvidia-" in res.stdout


def test_apt_update_fails_closed_with_another_key(site_content, repo_url, tmp_path):
    other_home = tmp_path / "gnupg"
    with aptrepo.gpg_session(other_home):
        fpr = aptrepo.ensure_signing_key(other_home, "someone else <other@invalid>")
        aptrepo.export_public_key(other_home, fpr, tmp_path / "other.gpg")
    opts = apt_options(tmp_path / "apt", tmp_path / "other.gpg", repo_url)
    res = apt("apt-get", *opts, "update", "--error-on=any")
    assert res.returncode != 0
    assert "NO_PUBKEY" in res.stdout + res.stderr or "not signed" in res.stdout + res.stderr


def test_apt_update_fails_closed_on_a_tampered_index(site_content, artifact_server, tmp_path):
    base, _ = artifact_server
    tampered = tmp_path / "repo"
    subprocess.run(["cp", "-a", str(site_content.apt_dir), str(tampered)], check=True)
    (tampered / "Packages").write_text((tampered / "Packages").read_text().replace("Version: ", "Version: 9", 1))
    (tampered / "Packages.gz").unlink()
    _, server = artifact_server
    server.mounts = {**server.mounts, "/apt/": tampered}
    opts = apt_options(tmp_path / "apt", site_content.apt_keyring, f"{base}/apt/")
    res = apt("apt-get", *opts, "update", "--error-on=any")
    assert res.returncode != 0, res.stdout
