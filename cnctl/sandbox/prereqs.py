"""What the machine needs before a sandbox can start: root, and a few tools from Debian packages."""

from __future__ import annotations

import os
import shutil

from cnctl.sandbox.errors import SandboxProblem

# tool -> the Debian package that carries it
TOOLS: dict[str, str] = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "ip": "iproute2",
    "mount": "mount",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
}
# Tools only the image build needs are checked when it runs (a cached image does not need them).
IMAGE_TOOLS = ("debootstrap",)


def missing_tools(tools: dict[str, str] = TOOLS) -> dict[str, str]:
    """The tools not on PATH (also looking in the sbin directories a non-login root shell may lack)."""
    path = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
    return {tool: pkg for tool, pkg in tools.items() if shutil.which(tool, path=path) is None}


def ensure_sbin_on_path() -> None:
    """Make the sbin tools (ip, debootstrap, mount) findable by subprocess even from a minimal PATH."""
    parts = os.environ.get("PATH", "").split(":")
    for extra in ("/usr/local/sbin", "/usr/sbin", "/sbin"):
        if extra not in parts:
            parts.append(extra)
    os.environ["PATH"] = ":".join(p for p in parts if p)


def require(action: str = "manage the sandbox") -> None:
    """Raise SandboxProblem (exit 2) with the exact fix if we are not root or a tool is missing."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append(
            f"to {action} cnctl must run as root (network namespaces, overlay mounts, systemd-nspawn): "
            "run it with `sudo`, e.g. `sudo make demo` or `sudo .venv/bin/cnctl sandbox up`"
        )
    missing = missing_tools()
    if missing:
        base = ["debootstrap", "systemd-container", "iproute2"]
        packages = " ".join(base + sorted(set(missing.values()) - set(base)))
        problems.append(
            f"missing {', '.join(sorted(missing))}: install with `apt-get install -y {packages}`"
        )
    if problems:
        raise SandboxProblem("\n  ".join(problems))
    ensure_sbin_on_path()
