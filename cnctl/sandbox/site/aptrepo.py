"""The sandbox's signed flat apt repository of stand-in packages (measured recipe: shared/reference/toolchain.md).

Hosts use it as `deb [signed-by=/etc/apt/keyrings/cnctl-sandbox.gpg] <apt_url> ./`. The signing key is a
throwaway ed25519 key generated once into the cache (GNUPGHOME mode 0700, never in the repository) and used
for nothing else; the repository also serves its public half as cnctl-sandbox.gpg (binary) and .asc.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from cnctl.sandbox.site.debs import build_debs
from cnctl.sandbox.site.standins import StandinPackage

KEY_UID = "cnctl sandbox apt repository (STAND-IN, throwaway key) <noreply@invalid>"
KEYRING_NAME = "cnctl-sandbox.gpg"
ORIGIN = "cnctl sandbox"
LABEL = "cnctl sandbox stand-ins"


def _gpg(gnupg_home: Path, *args: str, stdin: bytes | None = None) -> bytes:
    env = {**os.environ, "GNUPGHOME": str(gnupg_home)}
    res = subprocess.run(["gpg", "--batch", "--no-tty", *args], env=env, input=stdin, capture_output=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"gpg {' '.join(args)} failed: {res.stderr.decode(errors='replace').strip()}")
    return res.stdout


@contextlib.contextmanager
def gpg_session(gnupg_home: Path) -> Iterator[None]:
    """Use `gnupg_home` for the block, then stop the gpg-agent gpg spawned there (no process left behind)."""
    gnupg_home.mkdir(parents=True, exist_ok=True)
    gnupg_home.chmod(0o700)
    try:
        yield
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env={**os.environ, "GNUPGHOME": str(gnupg_home)},
                       capture_output=True, check=False)


def fingerprint(gnupg_home: Path) -> str | None:
    """The fingerprint of the signing key in `gnupg_home`, if one was generated."""
    if not (gnupg_home / "pubring.kbx").exists():
        return None
    out = _gpg(gnupg_home, "--with-colons", "--list-secret-keys").decode()
    fprs = [line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")]
    return fprs[0] if fprs else None


def ensure_signing_key(gnupg_home: Path, uid: str = KEY_UID) -> str:
    """Ensure `gnupg_home` holds one passphrase-less ed25519 signing key; returns its fingerprint."""
    existing = fingerprint(gnupg_home)
    if existing:
        return existing
    _gpg(gnupg_home, "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key", uid, "ed25519",
         "sign", "never")
    fpr = fingerprint(gnupg_home)
    if not fpr:
        raise RuntimeError(f"gpg generated no key in {gnupg_home}")
    return fpr


def export_public_key(gnupg_home: Path, fpr: str, binary_dest: Path, armored_dest: Path | None = None) -> None:
    """Write the public key as a binary (dearmored) keyring, the form `signed-by=` wants, and optionally .asc."""
    binary_dest.write_bytes(_gpg(gnupg_home, "--export", fpr))
    if armored_dest:
        armored_dest.write_bytes(_gpg(gnupg_home, "--armor", "--export", fpr))


def write_index(repo: Path) -> None:
    """Packages (+ .gz, every version kept: apt picks among them) and a Release that hashes them."""
    packages = subprocess.run(["dpkg-scanpackages", "--multiversion", ".", "/dev/null"], cwd=repo,
                              check=True, capture_output=True).stdout
    (repo / "Packages").write_bytes(packages)
    (repo / "Packages.gz").write_bytes(gzip.compress(packages, 9, mtime=0))
    release = subprocess.run(
        ["apt-ftparchive", "-o", f"APT::FTPArchive::Release::Origin={ORIGIN}",
         "-o", f"APT::FTPArchive::Release::Label={LABEL}",
         "-o", ("APT::FTPArchive::Release::Description=STAND-IN packages for cnctl sandbox tests, not NVIDIA or "
                "Docker software"), "release", "."],
        cwd=repo, check=True, capture_output=True).stdout
    (repo / "Release").write_bytes(release)


def sign(repo: Path, gnupg_home: Path, fpr: str) -> None:
    """InRelease (clearsigned) and Release.gpg (detached) with the throwaway key."""
    for stale in ("InRelease", "Release.gpg"):
        (repo / stale).unlink(missing_ok=True)
    _gpg(gnupg_home, "--local-user", fpr, "--digest-algo", "SHA512", "--clearsign",
         "-o", str(repo / "InRelease"), str(repo / "Release"))
    _gpg(gnupg_home, "--local-user", fpr, "--digest-algo", "SHA512", "--armor", "--detach-sign",
         "-o", str(repo / "Release.gpg"), str(repo / "Release"))


def build_repo(repo: Path, packages: list[StandinPackage], gnupg_home: Path, fpr: str, work: Path) -> None:
    """Fill the empty directory `repo` with the .debs, the index, the signatures and the public key."""
    build_debs(packages, work, repo)
    export_public_key(gnupg_home, fpr, repo / KEYRING_NAME, repo / KEYRING_NAME.replace(".gpg", ".asc"))
    write_index(repo)
    sign(repo, gnupg_home, fpr)
