"""The smoke deploy: prove a host is ready for the host layers, and record what platform detection sees.

On every sandbox host (pyinfra over SSH as the deploy user, with sudo):

1. the site repo's keyring in /etc/apt/keyrings and its source (rendered from templates/apt/source.list.j2,
   the template the host layers use for NVIDIA's repositories);
2. `apt-get update --error-on=any` succeeds (a bad signature fails the deploy instead of warning);
3. sudo gives uid 0; systemd runs with no failed units;
4. /var/lib/circularnet/smoke.json holds the detection-relevant facts (L4T release line, architecture, OS),
   rendered from templates/smoke/facts.json.j2.

roles/smoke is the same deploy for Ansible: same files from the same templates, same checks.

Files are written only when their content differs, so a second run changes nothing. The checks change no
configuration; they run when the deploy executes, after the operations before them.
"""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra import host, state
from pyinfra.api import FactBase, StringCommand, deploy, operation
from pyinfra.facts.deb import DebArch
from pyinfra.facts.server import Arch, OsRelease
from pyinfra.operations import files

from cnctl.paths import TEMPLATES_DIR
from deploy.facts import TegraRelease

SOURCE_TEMPLATE = TEMPLATES_DIR / "apt" / "source.list.j2"
FACTS_TEMPLATE = TEMPLATES_DIR / "smoke" / "facts.json.j2"
KEYRING = "/etc/apt/keyrings/cnctl-sandbox.gpg"
SOURCE_FILE = "/etc/apt/sources.list.d/cnctl-sandbox.list"
FACT_DIR = "/var/lib/circularnet"
FACT_FILE = f"{FACT_DIR}/smoke.json"
SYSTEMD_WAIT_S = 60
APT_UPDATE_TIMEOUT_S = 300  # a stalled source must not hang the deploy


# --- facts -----------------------------------------------------------------------------------


class StrictAptUpdate(FactBase):
    """`apt-get update --error-on=any`: its exit status and the lines that explain a failure.

    Refreshes the package index (no configuration changes). `--error-on=any` turns the warnings apt
    prints for a bad signature or an unreachable source into a non-zero exit: the check fails closed.
    """

    def command(self) -> str:
        return f'timeout {APT_UPDATE_TIMEOUT_S} apt-get update --error-on=any -q 2>&1; echo "exit=$?"'

    def process(self, output: list[str]) -> dict[str, Any]:
        status = int(output[-1].partition("=")[2]) if output and output[-1].startswith("exit=") else -1
        problems = [line for line in output[:-1] if line.startswith(("E:", "W:", "Err:"))]
        return {"exit": status, "problems": problems}


class SudoUid(FactBase):
    """The uid commands run as (with `_sudo=True`: 0 if sudo works without a password)."""

    def command(self) -> str:
        return "id -u"

    def process(self, output: list[str]) -> int:
        return int(output[0])


class SystemdState(FactBase):
    """`systemctl is-system-running` once boot has finished (bounded wait), and the failed units."""

    def command(self) -> str:
        return (
            f"timeout {SYSTEMD_WAIT_S} systemctl is-system-running --wait 2>/dev/null; echo '--'; "
            "systemctl list-units --failed --plain --no-legend 2>/dev/null | cut -d' ' -f1"
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        marker = output.index("--") if "--" in output else len(output)
        return {"state": (output[:marker] or ["unknown"])[-1], "failed": [u for u in output[marker + 1 :] if u]}


# --- checks: operations that change nothing and fail with the reason ---------------------------


def _fail(message: str) -> StringCommand:
    """A command that prints `message` and fails the operation (pyinfra shows its stderr)."""
    return StringCommand("echo", shlex.quote(message), ">&2;", "exit", "1")


@operation(is_idempotent=True)
def apt_sources_verified():
    """Ensure every configured apt source is reachable and validly signed (`apt-get update --error-on=any`)."""
    if not state.is_executing:  # the sources are put in place by the operations before this one
        return
    result = host.get_fact(StrictAptUpdate)
    if result["exit"] != 0:
        yield _fail(f"apt-get update --error-on=any failed (exit {result['exit']}): " + " | ".join(result["problems"][:4]))


@operation(is_idempotent=True)
def sudo_gives_root():
    """Ensure the deploy user's sudo gives uid 0 without a password."""
    if not state.is_executing:
        return
    uid = host.get_fact(SudoUid)
    if uid != 0:
        yield _fail(f"sudo runs commands as uid {uid}, not 0")


@operation(is_idempotent=True)
def systemd_running():
    """Ensure systemd reports `running`: boot finished and no unit failed."""
    if not state.is_executing:
        return
    facts = host.get_fact(SystemdState)
    if facts["state"] != "running" or facts["failed"]:
        yield _fail(f"systemd is {facts['state']}; failed units: {', '.join(facts['failed']) or 'none'}")


# --- the deploy --------------------------------------------------------------------------------


def detection_facts() -> dict[str, Any]:
    """What platform detection reads on this host, as the smoke fact file records it."""
    os_release = host.get_fact(OsRelease) or {}
    return {
        "architecture": host.get_fact(Arch),
        "dpkg_architecture": host.get_fact(DebArch),
        "nv_tegra_release": (host.get_fact(TegraRelease) or {}).get("line"),
        "os": {"id": os_release.get("id"), "version_id": os_release.get("version_id")},
    }


@deploy("Sandbox smoke")
def smoke() -> None:
    """Signed site repo configured and verified, sudo and systemd proven, detection facts recorded."""
    site = host.data.get("sandbox_site") or {}
    if not site.get("apt_url") or not site.get("apt_keyring"):
        raise ValueError(f"{host.name}: the inventory gives no sandbox_site apt_url/apt_keyring (is this a sandbox host?)")

    files.directory(name="Keyring directory", path="/etc/apt/keyrings", present=True, mode="755", user="root", group="root")
    keyring = files.put(name="Site repo keyring", src=site["apt_keyring"], dest=KEYRING, mode="644", user="root", group="root")
    source = files.template(
        name="Site repo apt source",
        src=str(SOURCE_TEMPLATE),
        dest=SOURCE_FILE,
        mode="644",
        user="root",
        group="root",
        description="The sandbox site's apt repository (STAND-IN NVIDIA packages)",
        # "/" (not "./"): apt then asks for <apt_url>InRelease, a path every static server resolves.
        sources=[{"uri": site["apt_url"], "suite": "/", "signed_by": KEYRING}],
    )
    del keyring, source  # the index is verified on every run, changed or not
    apt_sources_verified(name="apt-get update --error-on=any")
    sudo_gives_root(name="sudo gives uid 0")
    systemd_running(name="systemd running, no failed units")

    files.directory(name="Fact directory", path=FACT_DIR, present=True, mode="755", user="root", group="root")
    files.template(
        name="Detection facts",
        src=str(FACTS_TEMPLATE),
        dest=FACT_FILE,
        mode="644",
        user="root",
        group="root",
        smoke_facts=detection_facts(),
    )
