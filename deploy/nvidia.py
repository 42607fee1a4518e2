"""The nvidia layer (GPU servers and cloud VMs): NVIDIA's driver and CUDA toolkit, pinned, held, verified.

On a server (`cn_driver_source: cuda-repo`):

1. NVIDIA's CUDA apt repository for the host's OS (`<cn_cuda_repo_url>/<repo_distro>/x86_64/`, a site mirror
   where the stack names one), its key in /etc/apt/keyrings and `signed-by` in the source;
2. apt pins at the matrix's versions: the driver branch's packages and the CUDA toolkit;
3. nouveau blacklisted (templates/modprobe/blacklist-nouveau.conf.j2), the initramfs rebuilt if that changed;
4. the index refreshed failing closed, the packages installed and proven at their pins, held with the
   kernel packages (a kernel moving under the driver breaks it: kernel moves are planned actions);
5. a first install that needs a reboot (nvidia-smi cannot reach the driver, or nouveau still holds the
   GPU) reboots where the fleet entry says `reboot: allowed`; with `never` the host ends "reboot pending"
   (a marker under /run, gone at the reboot) and fails with that message; the run after the reboot
   continues;
6. nvidia-smi verified at the pinned driver version, nvcc at the pinned toolkit's.

On a cloud VM of a Deep Learning VM image (`cn_driver_source: image`) the image's driver and CUDA stay:
they are verified (driver of the image family's branch, nvcc of its CUDA release) and held, never
reinstalled. roles/nvidia is the same layer for Ansible.
"""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra import host, state
from pyinfra.api import deploy, operation
from pyinfra.facts.files import File
from pyinfra.operations import files, server

from deploy.facts import DpkgVersions, LoadedModules, NvccRelease, NvidiaGpus, OsIdentity, SecureBoot
from deploy.rules import checks
from deploy.steps import (
    after_change,
    apt_pins,
    apt_repository,
    fail,
    held,
    index_refreshed,
    install_pinned,
    pinned_names,
    role_data,
    template,
    verified,
    wishes,
)


def repo_distro(os: dict[str, Any] | None, wants: dict[str, Any]) -> str:
    """The CUDA repository's name for the host's OS (`ubuntu2204`), from the matrix entry the platform accepted."""
    for entry in wants["cn_supported_os"]:
        if os and (entry["id"], entry["version"]) == (os.get("id"), os.get("version")) and entry["repo_distro"]:
            return str(entry["repo_distro"])
    raise ValueError(f"{wants['cn_host']}: no CUDA repository for {os}; the platform layer should have refused it")


def pins(wants: dict[str, Any]) -> list[dict[str, Any]]:
    """The driver branch's packages at the matrix's driver version (any packaging revision), and the toolkit."""
    return [{"packages": list(wants["cn_driver_packages"]), "version": f"{wants['cn_driver_version']}-*"},
            {"packages": [wants["cn_cuda_toolkit_package"]], "version": wants["cn_cuda_toolkit_version"]}]


def reboot_needed(first_install: bool, pending: bool, gpus: list[dict[str, Any]], modules: list[str]) -> bool:
    """A reboot is due when the driver went in by this run or a pending one, and it does not answer yet."""
    return (first_install or pending) and (not gpus or "nouveau" in modules)


@operation(is_idempotent=True)
def driver_settled(first_install: bool, reboot: str, marker: str, reboot_timeout: int):
    """Ensure a freshly installed driver is loaded: reboot once if allowed, else leave "reboot pending"."""
    if not state.is_executing:
        return
    pending = host.get_fact(File, path=marker) is not None
    if not reboot_needed(first_install, pending, host.get_fact(NvidiaGpus), host.get_fact(LoadedModules)):
        if pending:
            yield f"rm -f {shlex.quote(marker)}"
        return
    if reboot == "allowed":
        yield from server.reboot._inner(delay=5, interval=2, reboot_timeout=reboot_timeout)
        return
    reason = "the NVIDIA driver was installed and loads only after a reboot (fleet entry: reboot: never)"
    yield f"mkdir -p {shlex.quote(marker.rsplit('/', 1)[0])} && echo {shlex.quote(reason)} > {shlex.quote(marker)}"
    yield fail(f"{host.name}: reboot pending: {reason}. Reboot the host, then run the deploy again")


def _driver_problem(wants: dict[str, Any]) -> str:
    return checks.driver_problem(host.get_fact(NvidiaGpus), wants, host.get_fact(SecureBoot))


def _nvcc_problem(wants: dict[str, Any]) -> str:
    return checks.nvcc_problem(host.get_fact(NvccRelease), wants)


def _image_driver(wants: dict[str, Any], data: dict[str, Any]) -> None:
    """A Deep Learning VM image's driver and CUDA: verified and held, never reinstalled."""
    verified(name="NVIDIA: the image's driver answers (nvidia-smi)", check=lambda: _driver_problem(wants))
    verified(name="NVIDIA: the image's CUDA (nvcc)", check=lambda: _nvcc_problem(wants))
    held(name="NVIDIA: the image's driver and the kernel held", packages=[],
         patterns=[*data["nvidia_image_driver_patterns"], *data["nvidia_kernel_packages"]])


@deploy("NVIDIA driver and CUDA")
def nvidia() -> None:
    """The pinned driver and toolkit from NVIDIA's signed repository, held and verified (or the image's, verified)."""
    wants, data = wishes(), role_data("nvidia")
    if wants["cn_driver_source"] == "image":
        _image_driver(wants, data)
        return
    changed = []
    if not wants.get("cn_site_apt_url"):  # else the site repository (platform layer) carries the packages
        distro = repo_distro(host.get_fact(OsIdentity), wants)
        repo = f"{wants['cn_cuda_repo_url'].rstrip('/')}/{distro}/x86_64/"
        keyring = data["nvidia_cuda_keyring"]
        changed += apt_repository("NVIDIA CUDA repository", repo + data["nvidia_cuda_key_name"], keyring,
                                  f"/etc/apt/sources.list.d/cuda-{distro}-x86_64.list",
                                  [{"uri": repo, "suite": "/", "signed_by": keyring}])
    wanted = pins(wants)
    changed.append(apt_pins("NVIDIA driver and CUDA toolkit", data["nvidia_preferences"], wanted))
    files.directory(name="NVIDIA: modprobe configuration directory", path=data["nvidia_blacklist_file"].rsplit("/", 1)[0],
                    present=True, mode="755", user="root", group="root")
    blacklist = template("NVIDIA: nouveau blacklisted", "modprobe/blacklist-nouveau.conf.j2", data["nvidia_blacklist_file"])
    after_change(name="NVIDIA: initramfs rebuilt without nouveau", changed=[blacklist],
                 commands=[data["nvidia_initramfs_command"]])
    first_install = not host.get_fact(DpkgVersions, packages=wants["cn_driver_packages"])
    index_refreshed(name="NVIDIA: package index fresh (apt-get update --error-on=any)", changed=changed,
                    packages=pinned_names(wanted), timeout=data["nvidia_apt_update_timeout"])
    install_pinned("NVIDIA driver and CUDA toolkit", wanted)
    held(name="NVIDIA: driver, toolkit and kernel held", packages=pinned_names(wanted),
         patterns=data["nvidia_kernel_packages"])
    driver_settled(name="NVIDIA: driver loaded (reboot once if allowed)", first_install=first_install,
                   reboot=wants["cn_reboot"], marker=data["nvidia_reboot_marker"],
                   reboot_timeout=data["nvidia_reboot_timeout"])
    verified(name="NVIDIA: nvidia-smi at the pinned driver", check=lambda: _driver_problem(wants))
    verified(name="NVIDIA: nvcc of the pinned toolkit", check=lambda: _nvcc_problem(wants))
