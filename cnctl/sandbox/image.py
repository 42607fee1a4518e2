"""The host image: a Debian bookworm rootfs built once with mmdebstrap and cached outside the repo.

The cache key is a hash of the recipe (builder, suite, variant, packages, mirror and the source of `_finish`),
so the image is rebuilt exactly when what would go into it changes. A build goes into a temporary
directory and is renamed into place when complete, so a cut build never passes as a cached image.
Every host boots a fresh overlay of this directory; the image itself is never written after the build.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import shlex
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

from cnctl.sandbox import mounts
from cnctl.sandbox.errors import SandboxFailure, SandboxProblem
from cnctl.sandbox.prereqs import missing_tools
from cnctl.sandbox.progress import Progress
from cnctl.sandbox.system import locked

SUITE = "bookworm"
VARIANT = "minbase"
# What a host needs to be reached and configured: sshd, python for pyinfra/Ansible (python3-apt for
# Ansible's apt module), sudo, systemd as PID 1 (systemd-sysv gives real hosts' `reboot`), dbus for
# systemctl, iproute2 for network facts. Everything else comes from the host layers.
PACKAGES = (
    "openssh-server", "python3", "python3-apt", "sudo", "systemd", "systemd-sysv", "dbus", "iproute2",
    # the Triton python backend stub links against libpython (the inference layer runs it natively here)
    "libpython3.11",
)
BUILD_TIMEOUT_S = 1200
# mmdebstrap, not debootstrap: it resolves and installs with apt in one pass, so a foreign image runs dpkg once
# under qemu instead of debootstrap's second stage that unpacks and configures package by package (measured for
# arm64: 181 s against 504 s, toolchain.md). The debs are kept in a cache beside the images for rebuilds.
BUILDER = "mmdebstrap"
SOURCES_DIR = Path("/etc/apt")

# Real hosts allow key logins for an unprivileged user and no root logins; each host gets its own
# ed25519 host key at boot time (the image carries none, so no two hosts share one).
SSHD_CONFIG = """\
# Key-only logins; root works through sudo.
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
HostKey /etc/ssh/ssh_host_ed25519_key
"""


def debian_mirror(sources_dir: Path = SOURCES_DIR, suite: str = SUITE) -> str:
    """The Debian mirror this machine's apt uses for `suite` (CNCTL_SANDBOX_MIRROR overrides it)."""
    override = os.environ.get("CNCTL_SANDBOX_MIRROR")
    if override:
        return override
    for uri, suites in _apt_sources(sources_dir):
        if suite in suites and uri.startswith(("http://", "https://")) and "security" not in uri:
            return uri.rstrip("/")
    raise SandboxProblem(
        f"no Debian {suite} mirror in {sources_dir}/sources.list or sources.list.d/*.sources; "
        "set CNCTL_SANDBOX_MIRROR=http://<your mirror>/debian"
    )


def _apt_sources(sources_dir: Path) -> Iterator[tuple[str, list[str]]]:
    """(uri, suites) of every enabled `deb` source, one-line and deb822 formats."""
    one_line = [sources_dir / "sources.list", *sorted((sources_dir / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()  # drop [options]
            if len(words) >= 3 and words[0] == "deb":
                yield words[1], [words[2]]
    for path in sorted((sources_dir / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text(encoding="utf-8", errors="replace")):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if fields.get("enabled", "yes").lower() == "no" or "deb" not in fields.get("types", "").split():
                continue
            for uri in fields.get("uris", "").split():
                yield uri, fields.get("suites", "").split()


ARCHES = ("amd64", "arm64")  # servers are amd64; Jetson hosts are arm64 as on a real Jetson (qemu-user)
NATIVE_ARCH = "amd64"

# What a booted host needs for a Docker engine to run inside systemd-nspawn (measured, toolchain.md). These
# belong to the sandbox image, never to the host layers: nspawn mounts the cgroup v1 controllers read-only,
# and containerd must be able to create cgroups.
CGROUP_RW_DROPIN = """\
# The container engine needs writable cgroup controllers; systemd-nspawn mounts them read-only.
[Service]
ExecStartPre=/bin/sh -c 'for d in /sys/fs/cgroup/*/; do mount -o remount,bind,rw "$d" "$d" || true; done'
"""
# Under qemu-user these units fail with 243/CREDENTIALS (measured): they need no credentials here.
QEMU_CREDENTIAL_UNITS = ("systemd-sysctl", "systemd-sysusers", "systemd-tmpfiles-setup-dev", "systemd-tmpfiles-setup")
NO_CREDENTIALS_DROPIN = "[Service]\nLoadCredential=\n"


def recipe(mirror: str, arch: str = NATIVE_ARCH) -> dict[str, object]:
    """Everything that decides the image's content; its hash is the cache key."""
    return {
        "builder": build_command(Path("/target"), mirror, Path("/debs"), arch),  # its options are the recipe too
        "suite": SUITE,
        "variant": VARIANT,
        "arch": arch,
        "packages": list(PACKAGES),
        "mirror": mirror,
        "finish": inspect.getsource(_finish),
        "sshd_config": SSHD_CONFIG,
        "dropins": [CGROUP_RW_DROPIN, NO_CREDENTIALS_DROPIN, *QEMU_CREDENTIAL_UNITS],
    }


def recipe_hash(spec: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _check_arch(arch: str) -> None:
    if arch not in ARCHES:
        raise SandboxProblem(f"no sandbox image for architecture {arch!r}; known: {', '.join(ARCHES)}")


def cached_image(cache: Path, mirror: str | None = None, arch: str = NATIVE_ARCH) -> Path | None:
    """The cached rootfs for the current recipe, or None when it must be built."""
    key = recipe_hash(recipe(mirror or debian_mirror(), arch))
    done = cache / key
    return done / "rootfs" if (done / "recipe.json").is_file() else None


def ensure_image(cache: Path, progress: Progress, arch: str = NATIVE_ARCH) -> Path:
    """Ensure the image of `arch` for the current recipe exists under `cache`; return its rootfs directory."""
    _check_arch(arch)
    mirror = debian_mirror()
    spec = recipe(mirror, arch)
    key = recipe_hash(spec)
    done = cache / key
    if (done / "recipe.json").is_file():
        return done / "rootfs"
    cache.mkdir(parents=True, exist_ok=True)
    with locked(cache / ".lock"):
        if (done / "recipe.json").is_file():  # another process built it while we waited
            return done / "rootfs"
        if missing_tools({BUILDER: BUILDER}):
            raise SandboxProblem(f"the image build needs {BUILDER}: `apt-get install -y {BUILDER}`")
        for stale in cache.glob(".build-*"):  # cut builds; we hold the lock, so nobody is writing them
            mounts.remove_tree(stale)
        staging = cache / f".build-{key}-{os.getpid()}"
        emulated = ", dpkg under qemu: minutes" if arch != NATIVE_ARCH else ""
        try:
            with progress.step(f"build {arch} host image {key} ({BUILDER} {SUITE} from {mirror}{emulated})") as detail:
                staging.mkdir(parents=True)
                (cache.parent / "debs").mkdir(exist_ok=True)
                _stream(build_command(staging / "rootfs", mirror, cache.parent / "debs", arch), mirror, detail)
                _finish(staging / "rootfs", arch)
                (staging / "recipe.json").write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
                os.rename(staging, done)
        finally:
            mounts.remove_tree(staging)  # gone after the rename; a leftover only if the build failed
        _prune(cache, keep=key, arch=arch)
    return done / "rootfs"


# debootstrap's merged /usr (directory symlinks, usr-is-merged): without it apt picks usrmerge, which pulls perl
MERGED_USR_HOOKS = Path("/usr/share/mmdebstrap/hooks/merged-usr")


def build_command(target: Path, mirror: str, debs: Path, arch: str) -> list[str]:
    """mmdebstrap of the recipe into `target`, reusing and refilling the deb cache `debs` (the manual's recipe:
    sync the cache in before the download, out after the install; keep the essential debs for the sync-out).
    dpkg skips its fsyncs while building (force-unsafe-io, gone from the image after): a cut build is thrown
    away whole, never used."""
    archives = "/var/cache/apt/archives/"
    return [
        "mmdebstrap", "--mode=root", f"--arch={arch}", f"--variant={VARIANT}", f"--include={','.join(PACKAGES)}",
        f"--hook-dir={MERGED_USR_HOOKS}", "--dpkgopt=force-unsafe-io", "--skip=essential/unlink",
        f'--setup-hook=mkdir -p "$1"{archives}',
        f"--setup-hook=sync-in {shlex.quote(str(debs))} {archives}",  # hook words are split like a shell's
        f"--customize-hook=sync-out {archives} {shlex.quote(str(debs))}",
        SUITE, str(target), mirror,
    ]


def _stream(cmd: list[str], mirror: str, detail) -> None:
    """Run a build step, its output as progress detail; bounded, with the last lines in the error."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    timer = threading.Timer(BUILD_TIMEOUT_S, proc.kill)  # a stalled mirror must not hang `up` forever
    timer.start()
    tail: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                tail = (tail + [line])[-8:]
                detail(line)
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        timer.cancel()
    if rc != 0:
        log = "\n    ".join(tail)
        raise SandboxFailure(f"{cmd[0]} failed (exit {rc}) building from {mirror}:\n    {log}")


def _finish(root: Path, arch: str = NATIVE_ARCH) -> None:
    """Turn a bootstrapped tree into a generic host image.

    - No apt sources: the default ones cannot resolve inside a namespace and stall `apt-get update`;
      hosts get the site repo from the deploy, as real hosts get theirs.
    - No SSH host keys, machine id or hostname: each host gets its own at boot (`host.personalize`).
    - Key-only SSH, no root logins. No package caches (they only make every overlay bigger).
    - What a container engine needs inside nspawn (writable cgroups), and under qemu-user the units that
      fail on credentials: sandbox facts, kept in drop-ins the host layers never see or write.
    """
    etc = root / "etc"
    (etc / "apt" / "sources.list").unlink(missing_ok=True)
    for path in (etc / "apt" / "sources.list.d").glob("*"):
        path.unlink()
    for path in (etc / "ssh").glob("ssh_host_*"):
        path.unlink()
    (etc / "machine-id").write_text("")
    dbus_id = root / "var" / "lib" / "dbus" / "machine-id"
    dbus_id.unlink(missing_ok=True)
    dbus_id.symlink_to("/etc/machine-id")
    (etc / "hostname").unlink(missing_ok=True)
    (etc / "resolv.conf").unlink(missing_ok=True)
    (etc / "resolv.conf").write_text("")  # no DNS on the site network: every URL uses an address
    (etc / "ssh" / "sshd_config.d" / "00-hardening.conf").write_text(SSHD_CONFIG)
    units = etc / "systemd" / "system"
    for unit in ("containerd", "docker"):
        (units / f"{unit}.service.d").mkdir(parents=True, exist_ok=True)
        (units / f"{unit}.service.d" / "10-cgroup-rw.conf").write_text(CGROUP_RW_DROPIN)
    if arch != NATIVE_ARCH:
        for unit in QEMU_CREDENTIAL_UNITS:
            (units / f"{unit}.service.d").mkdir(parents=True, exist_ok=True)
            (units / f"{unit}.service.d" / "10-no-credentials.conf").write_text(NO_CREDENTIALS_DROPIN)
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*_*"):
        for path in root.glob(pattern):
            path.unlink()


def _prune(cache: Path, keep: str, arch: str) -> None:
    """Remove images of older recipes of `arch` that no running host uses as its overlay's lower layer."""
    in_use = mounts.lower_dirs()
    for old in cache.iterdir():
        if old.name == keep or old.name.startswith(".") or not old.is_dir():
            continue
        try:
            if json.loads((old / "recipe.json").read_text()).get("arch", NATIVE_ARCH) != arch:
                continue
        except (OSError, ValueError):
            pass  # no readable recipe: a cut build of any architecture
        if os.path.normpath(old / "rootfs") in in_use:
            continue
        mounts.remove_tree(old)
