"""What the machine needs before the sandbox (and the tests) can run: root, Debian packages, binfmt for arm64.

This file holds the ONE list of the machine's system packages: `TOOLS` (every executable the sandbox runs,
and the package that carries it) plus `LIBRARIES` (packages needed for what they install, not for a
command). `make demo`, `make test` and `.ci/run` all install from it through `python3 cnctl/sandbox/prereqs.py
ensure`, which runs before any virtualenv exists: standard library only, no import of cnctl.

    python3 cnctl/sandbox/prereqs.py check     # exit 2 with one message if anything is missing
    python3 cnctl/sandbox/prereqs.py ensure    # as root: apt-get install what is missing, enable binfmt
    python3 cnctl/sandbox/prereqs.py packages  # the package list, one per line
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

# executable -> the Debian (bookworm) package that carries it. tests/unit/test_prereqs.py compares this with
# the executables the sandbox code really runs, so a new tool cannot be used without being listed here.
TOOLS: dict[str, str] = {
    "mmdebstrap": "mmdebstrap",  # the host images (amd64 native; arm64 with dpkg under qemu-user)
    "systemd-nspawn": "systemd-container",  # boots the hosts
    "ip": "iproute2",  # namespaces, veths, the site bridge
    "mount": "mount",
    "umount": "mount",
    "rm": "coreutils",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "useradd": "passwd",  # the deploy user on a host's disk
    "gpg": "gnupg",  # signs the site's apt repository
    "gpgconf": "gnupg",  # stops the gpg-agent a signing session started
    "apt-ftparchive": "apt-utils",  # the repository's Release file
    "dpkg-deb": "dpkg",  # builds the stand-in packages
    "dpkg-query": "dpkg",  # which LIBRARIES are installed
    "dpkg-scanpackages": "dpkg-dev",
    "apt-get": "apt",  # downloads Debian's real docker.io closure for the site repository
    "qemu-aarch64-static": "qemu-user-static",
    "docker-registry": "docker-registry",  # the site's container registry
    "umoci": "umoci",  # builds the Triton stand-in image without a Docker daemon
    "skopeo": "skopeo",  # pushes it to the site registry
    "openssl": "openssl",  # the site registry's TLS certificate
    "prometheus": "prometheus",  # a loopback site Prometheus over fake hosts (cnctl/sandbox/prometheus.py)
}
# Packages needed for files they install rather than a command: mmdebstrap runs arch-test before it builds a
# foreign-architecture image (the arm64 Jetsons'); the Triton python-backend stub links against
# libpython (unit tests run a real CPU Triton on the machine), python3-venv bootstraps the virtualenv, and the
# bucket worker's tests run Google's Pub/Sub emulator (a Java program outside PATH: the Cloud SDK's package, and
# a JRE for it); the GCE startup scripts' tests lint them with shellcheck. The alert rules' tests and the
# hosts' metrics are checked by promtool, of Debian's prometheus package (in TOOLS for its `prometheus`); the fleet
# dashboards (Prometheus console templates) are rendered by headless Chromium (tests/unit/test_dashboards.py), and
# the site's alertmanager.yml is checked by amtool (Debian's prometheus-alertmanager; tests/unit/test_monitoring_site.py).
LIBRARIES: tuple[str, ...] = ("arch-test", "libpython3.11", "python3-venv", "ca-certificates", "binfmt-support",
                              "google-cloud-cli-pubsub-emulator", "openjdk-17-jre-headless", "shellcheck",
                              "chromium-headless-shell", "prometheus-alertmanager")
BINFMT = Path("/proc/sys/fs/binfmt_misc")
QEMU_ARM64 = "qemu-aarch64"
QEMU_FORMAT = Path("/usr/share/binfmts") / QEMU_ARM64  # what qemu-user-static registers
# F: the interpreter is opened once, so it works inside the hosts' root filesystems without a copy there.
# C: setuid binaries keep their credentials (sudo on an arm64 host); Debian registers without it.
BINFMT_FLAGS = "FPC"
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")
EXIT_BAD_INPUT = 2


def packages() -> list[str]:
    """Every system package the sandbox and the tests need, sorted, once each."""
    return sorted(set(TOOLS.values()) | set(LIBRARIES))


def _path() -> str:
    return os.environ.get("PATH", "") + ":" + ":".join(SBIN)


def missing_tools(tools: dict[str, str] | None = None) -> dict[str, str]:
    """The tools not on PATH (also looking in the sbin directories a non-login root shell may lack)."""
    tools = TOOLS if tools is None else tools
    return {tool: pkg for tool, pkg in tools.items() if shutil.which(tool, path=_path()) is None}


def missing_libraries() -> list[str]:
    """The LIBRARIES packages dpkg does not list as installed."""
    missing = []
    for pkg in LIBRARIES:
        res = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", pkg], capture_output=True, text=True, check=False)
        if res.stdout.strip() != "installed":
            missing.append(pkg)
    return missing


def binfmt_ready() -> bool:
    """True when the kernel runs arm64 binaries through qemu with the flags the hosts need (see BINFMT_FLAGS)."""
    entry = BINFMT / QEMU_ARM64
    if not entry.is_file():
        return False
    lines = entry.read_text().splitlines()
    flags = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("flags:")), "")
    return bool(lines) and lines[0] == "enabled" and set(BINFMT_FLAGS) <= set(flags)


def register_binfmt() -> None:
    """Register qemu-aarch64 with BINFMT_FLAGS (replacing Debian's registration; not kept across reboots)."""
    fields = dict(line.split(" ", 1) for line in QEMU_FORMAT.read_text().splitlines() if " " in line)
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=False, capture_output=True)
    entry = BINFMT / QEMU_ARM64
    if entry.exists():
        entry.write_text("-1")  # unregister: the same name cannot be registered twice
    rule = (f":{QEMU_ARM64}:M:{fields['offset']}:{fields['magic']}:{fields['mask']}:{fields['interpreter']}:"
            f"{BINFMT_FLAGS}")
    (BINFMT / "register").write_text(rule)


def problems() -> list[str]:
    """Everything missing, each with the command that fixes it; empty when the machine is ready."""
    found: list[str] = []
    pkgs = sorted(set(missing_tools().values()) | set(missing_libraries()))
    if pkgs:
        tools = sorted(missing_tools())
        what = f"missing {', '.join(tools)}" if tools else "missing packages"
        found.append(f"{what}: install with `apt-get install -y {' '.join(pkgs)}`")
    if not binfmt_ready():
        found.append(
            f"arm64 emulation is off or lacks the flags {BINFMT_FLAGS} (sudo on arm64 hosts needs C): "
            "`python3 cnctl/sandbox/prereqs.py ensure` as root registers it (needs qemu-user-static)"
        )
    return found


def ensure_sbin_on_path() -> None:
    """Make the sbin tools (ip, mount, useradd) findable by subprocess even from a minimal PATH."""
    parts = os.environ.get("PATH", "").split(":")
    os.environ["PATH"] = ":".join(p for p in [*parts, *(s for s in SBIN if s not in parts)] if p)


def ensure(say=print) -> list[str]:
    """As root: install the missing packages and enable arm64 emulation. Returns what is still missing."""
    ensure_sbin_on_path()
    pkgs = sorted(set(missing_tools().values()) | set(missing_libraries()))
    if pkgs:
        say(f"installing system packages: {' '.join(pkgs)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        steps = [["apt-get", "update", "-q"],
                 ["apt-get", "install", "-y", "-q", "--no-install-recommends", *pkgs]]
        for cmd in steps:
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
            if res.returncode != 0:
                tail = " / ".join((res.stderr or res.stdout).strip().splitlines()[-3:])
                return [f"`{' '.join(cmd)}` failed (exit {res.returncode}): {tail}"]
    if not binfmt_ready() and QEMU_FORMAT.is_file():
        say(f"enabling arm64 emulation (binfmt_misc: qemu-aarch64, flags {BINFMT_FLAGS})")
        register_binfmt()
    return problems()


def require(action: str = "manage the sandbox") -> None:
    """Raise SandboxProblem (exit 2) with the exact fix if we are not root or the machine is not ready."""
    found = [] if os.geteuid() == 0 else [
        (f"to {action} cnctl must run as root (network namespaces, overlay mounts, systemd-nspawn): "
        "run it with `sudo`, e.g. `sudo make demo` or `sudo .venv/bin/cnctl sandbox up`")
    ]
    found += problems()
    if found:
        from cnctl.sandbox.errors import SandboxProblem  # lazily: this module runs before the venv exists

        raise SandboxProblem("\n  ".join(found + ["(`make setup` as root installs all of it)"]))
    ensure_sbin_on_path()


def main(argv: list[str]) -> int:
    verb = argv[0] if argv else "check"
    if verb == "packages":
        print("\n".join(packages()))
        return 0
    if verb == "ensure" and os.geteuid() == 0:
        left = ensure(lambda msg: print(f"setup: {msg}", flush=True))
    elif verb in ("ensure", "check"):
        left = problems()
        if left and verb == "ensure":
            left.insert(0, "not root: cannot install system packages; run `sudo make setup`")
    else:
        print(f"usage: {Path(__file__).name} check|ensure|packages", file=sys.stderr)
        return EXIT_BAD_INPUT
    if left:
        print("error: this machine is not ready for the sandbox:\n  " + "\n  ".join(left), file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
