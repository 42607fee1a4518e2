"""The jetson layer: the pinned JetPack components from NVIDIA's L4T repository, the power mode, clocks, holds.

The platform layer has already proven the host runs the L4T release of its fleet entry's JetPack (upgrading
L4T or the OS is out of scope: re-flash the device). Here:

1. NVIDIA's L4T apt repository (`<cn_jetson_apt_url>/<component> <release> main`, a site mirror where the
   stack names one) with its key in /etc/apt/keyrings and `signed-by`, in the file L4T itself uses
   (nvidia-l4t-apt-source.list), so no second, unsigned copy of the same source remains;
2. apt pins at the matrix's versions of the JetPack components, the index refreshed failing closed, the
   components installed, proven at their pins, and held with the L4T kernel packages;
3. the nvpmodel power mode of the fleet entry (`nvpmodel`; none: the board's own stays);
4. a jetson_clocks oneshot unit (templates/systemd/jetson-clocks.service.j2), enabled and started where the
   fleet entry says `jetsonClocks: true`, disabled otherwise; systemd reloaded only when the unit changed.

roles/jetson is the same layer for Ansible.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.operations import systemd

from deploy.facts import NvpmodelMode
from deploy.rules.jetson import pins, power_mode_problem, sources
from deploy.steps import (
    after_change,
    apt_pins,
    apt_repository,
    held,
    index_refreshed,
    install_pinned,
    pinned_names,
    role_data,
    template,
    verified,
    wishes,
)


@operation(is_idempotent=True)
def power_mode(mode: int | None):
    """Ensure nvpmodel runs the fleet entry's power mode (None: leave the board's)."""
    if mode is not None and power_mode_problem(host.get_fact(NvpmodelMode), mode):
        yield f"nvpmodel -m {int(mode)} </dev/null"  # stdin closed: never answer a reboot prompt


@deploy("Jetson: JetPack, power mode, clocks")
def jetson() -> None:
    """Pinned, held JetPack components from the signed L4T repository; the power mode; the clocks unit."""
    wants, data = wishes(), role_data("jetson")
    changed = []
    if not wants.get("cn_site_apt_url"):  # else the site repository (platform layer) carries the packages
        keyring = data["jetson_keyring"]
        changed += apt_repository("NVIDIA L4T repository", wants["cn_jetson_apt_key_url"], keyring,
                                  data["jetson_source"], sources(wants, keyring))
    wanted = pins(wants)
    changed.append(apt_pins("JetPack components", data["jetson_preferences"], wanted))
    index_refreshed(name="Jetson: package index fresh (apt-get update --error-on=any)", changed=changed,
                    packages=pinned_names(wanted), timeout=data["jetson_apt_update_timeout"])
    install_pinned("JetPack components", wanted)
    held(name="Jetson: JetPack components and the L4T kernel held", packages=pinned_names(wanted),
         patterns=data["jetson_kernel_packages"])

    power_mode(name="Jetson: nvpmodel power mode", mode=wants["cn_nvpmodel"])
    verified(name="Jetson: nvpmodel reports the power mode",
             check=lambda: power_mode_problem(host.get_fact(NvpmodelMode), wants["cn_nvpmodel"]))

    unit = template("Jetson: jetson_clocks unit", "systemd/jetson-clocks.service.j2",
                    f"/etc/systemd/system/{data['jetson_clocks_unit']}", jetson_clocks=data["jetson_clocks_bin"])
    after_change(name="Jetson: systemd reloaded (the unit changed)", changed=[unit], commands=["systemctl daemon-reload"])
    pinned = bool(wants["cn_jetson_clocks"])
    systemd.service(name="Jetson: jetson_clocks unit enabled and started where the fleet entry pins clocks",
                    service=data["jetson_clocks_unit"], running=pinned, enabled=pinned)
