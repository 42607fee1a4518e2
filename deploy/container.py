"""The container layer: the Docker engine and the NVIDIA Container Toolkit, pinned, held, configured, verified.

1. The engine's packages: `docker-ce` from Docker's signed repository (`<cn_docker_apt_url>/<os id>`, a site
   mirror where the stack names one), or `docker.io` from the distribution (the stack's
   `container.engine`); the NVIDIA Container Toolkit from its signed repository;
2. apt pins at the matrix's versions (docker.io: those of the host's OS release), the index refreshed
   failing closed, everything installed, proven at its pins and held (an unplanned upgrade of the
   toolkit breaks the runtime: jetson-containers #710);
3. cnctl's daemon settings (log rotation, data-root, the site's registry mirror) rendered from
   templates/docker/daemon.json.j2 to a base file, and /etc/docker/daemon.json made from it by
   `nvidia-ctk runtime configure --runtime=docker` (`--set-as-default` on a Jetson): NVIDIA's tool owns
   the runtime entry, and the file is rewritten only when it differs from what the tool makes of the base;
4. Docker enabled and running, restarted only when daemon.json changed, and `docker info` verified to
   list the nvidia runtime (the default one on a Jetson).

roles/container is the same layer for Ansible.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.facts.deb import DebArch
from pyinfra.operations import files, systemd

from deploy.facts import DockerRuntimes, NvidiaCtkDaemonJson, OsIdentity
from deploy.rules import checks
from deploy.rules.container import configure_command, pins
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
def nvidia_runtime_configured(base: str, target: str, set_default: bool):
    """Ensure daemon.json is what `nvidia-ctk runtime configure` makes of the base file."""
    if not host.get_fact(NvidiaCtkDaemonJson, base=base, target=target, set_default=set_default):
        yield configure_command(base, target, set_default)


@deploy("Container engine and NVIDIA Container Toolkit")
def container() -> None:
    """Pinned, held engine and toolkit from signed sources; daemon.json from templates/ and nvidia-ctk; verified."""
    wants, data = wishes(), role_data("container")
    os = host.get_fact(OsIdentity) or {}
    changed = []
    site = bool(wants.get("cn_site_apt_url"))  # the site repository (platform layer) carries every package
    if wants["cn_docker_source"] == "docker-ce" and not site:
        url = f"{wants['cn_docker_apt_url'].rstrip('/')}/{os.get('id')}"
        keyring = data["container_docker_keyring"]
        changed += apt_repository("Docker CE repository", f"{url}/gpg", keyring, data["container_docker_source"],
                                  [{"uri": url, "suite": os.get("codename"), "components": ["stable"],
                                    "signed_by": keyring, "arch": host.get_fact(DebArch)}])
    if not site:
        keyring = data["container_ctk_keyring"]
        changed += apt_repository("NVIDIA Container Toolkit repository", wants["cn_nvidia_ctk_key_url"], keyring,
                                  data["container_ctk_source"],
                                  [{"uri": wants["cn_nvidia_ctk_repo_url"], "suite": "/", "signed_by": keyring}])
    wanted = pins(wants, os.get("codename"))
    changed.append(apt_pins("Container engine and NVIDIA Container Toolkit", data["container_preferences"], wanted))
    index_refreshed(name="Container: package index fresh (apt-get update --error-on=any)", changed=changed,
                    packages=pinned_names(wanted), timeout=data["container_apt_update_timeout"])
    install_pinned("Container engine and NVIDIA Container Toolkit", wanted)
    held(name="Container: engine and toolkit held", packages=pinned_names(wanted))

    base = data["container_daemon_base"]
    files.directory(name="Container: base settings directory", path=base.rsplit("/", 1)[0], present=True, mode="755",
                    user="root", group="root")
    template("Container: Docker settings (base of daemon.json)", "docker/daemon.json.j2", base,
             data_root=wants["cn_docker_data_root"], log_max_size=wants["cn_docker_log_max_size"],
             log_max_files=wants["cn_docker_log_max_files"], registry_mirrors=wants["cn_docker_registry_mirrors"])
    files.directory(name="Container: Docker configuration directory", path=data["container_daemon_json"].rsplit("/", 1)[0],
                    present=True, mode="755", user="root", group="root")
    daemon = nvidia_runtime_configured(name="Container: daemon.json with the nvidia runtime (nvidia-ctk)", base=base,
                                       target=data["container_daemon_json"],
                                       set_default=wants["cn_platform"] == "jetson")
    systemd.service(name="Container: Docker enabled and running", service="docker.service", running=True, enabled=True)
    after_change(name="Container: Docker restarted (daemon.json changed)", changed=[daemon],
                 commands=["systemctl restart docker.service"])
    verified(name="Container: docker info lists the nvidia runtime",
             check=lambda: checks.docker_problem(host.get_fact(DockerRuntimes), wants))
