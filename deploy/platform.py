"""The platform layer: is this host what its fleet entry says, on a platform the matrix supports?

Detects the OS release, the dpkg architecture, a Jetson's L4T release (/etc/nv_tegra_release and
nvidia-l4t-core) and compares them with the host's cn_* variables (deploy/rules/checks.py `platform_refusal`).
`refusal()` runs before any operation of any layer is added for the host, so a refused host fails with
one message naming it, what was found and what the matrix supports, and nothing is changed on it.
A supported host is then proven ready (sudo gives root, systemd running with no failed unit), gets the
stack's site repository where it names one (`mirrors.siteApt`: one flat, signed source for every package
the layers install, in place of the upstream repositories), and its detection is recorded in /var/lib/circularnet/platform.json (templates/platform/facts.json.j2).

roles/platform is the same layer for Ansible: same probes (roles/platform/vars/main.yml), same verdict,
same file.
"""

from __future__ import annotations

from typing import Any

from pyinfra import host
from pyinfra.api import FactBase, deploy
from pyinfra.operations import files

from deploy.rules import checks
from deploy.steps import apt_repository, read, role_data, template, verified, wishes


class SudoUid(FactBase):
    """The uid commands run as (with `_sudo=True`: 0 if sudo works without a password)."""

    def command(self) -> str:
        return "id -u"

    def process(self, output: list[str]) -> int:
        return int(output[0])


class SystemdState(FactBase):
    """`systemctl is-system-running` once boot has finished (bounded wait), and the failed units."""

    def command(self, wait: int) -> str:
        return (
            f"timeout {int(wait)} systemctl is-system-running --wait 2>/dev/null; echo '--'; "
            "systemctl list-units --failed --plain --no-legend 2>/dev/null | cut -d' ' -f1"
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        marker = output.index("--") if "--" in output else len(output)
        return {"state": (output[:marker] or ["unknown"])[-1], "failed": [u for u in output[marker + 1 :] if u]}


def found() -> dict[str, Any]:
    """What the platform check compares, read on the host now."""
    return read(role_data("platform")["platform_probes"])


def refusal() -> str:
    """"" if this host may be converged, else why not (one line, naming the host): read before any change."""
    return checks.platform_refusal(found(), wishes())


def record(detected: dict[str, Any], wants: dict[str, Any]) -> dict[str, Any]:
    """The platform record of templates/platform/facts.json.j2."""
    tegra = detected.get("tegra") or {}
    os = detected.get("os") or {}
    return {
        "host": wants["cn_host"],
        "platform": wants["cn_platform"],
        "os": {"id": os.get("id"), "version": os.get("version"), "codename": os.get("codename")},
        "dpkg_architecture": detected.get("dpkg_arch"),
        "l4t": tegra.get("l4t"),
        "os_substitution": wants.get("cn_os_substitution"),
    }


def _sudo_problem() -> str:
    uid = host.get_fact(SudoUid)
    return "" if uid == 0 else f"sudo runs commands as uid {uid}, not 0"


def _systemd_problem(wait: int) -> str:
    """systemd must have finished booting; a failed unit elsewhere (`degraded`) is not the layers' to refuse."""
    facts = host.get_fact(SystemdState, wait=wait)
    if facts["state"] in ("running", "degraded"):
        return ""
    return f"systemd is {facts['state']}; failed units: {', '.join(facts['failed']) or 'none'}"


@deploy("Platform")
def platform() -> None:
    """Sudo and systemd proven, the accepted detection recorded. Call only where `refusal()` is ""."""
    data, wants = role_data("platform"), wishes()
    verified(name="Platform: sudo gives uid 0", check=_sudo_problem)
    verified(name="Platform: systemd has booted (running or degraded)",
             check=lambda: _systemd_problem(data["platform_systemd_wait"]))
    if wants.get("cn_site_apt_url"):
        keyring = data["platform_site_keyring"]
        apt_repository("Site repository", wants["cn_site_apt_key_url"], keyring, data["platform_site_source"],
                       [{"uri": wants["cn_site_apt_url"], "suite": "/", "signed_by": keyring}])
    files.directory(name="Platform: record directory", path=data["platform_record_dir"], present=True, mode="755",
                    user="root", group="root")
    detected = found()
    template("Platform: detection recorded", "platform/facts.json.j2", data["platform_record_file"],
             platform_record=record(detected, wants))
