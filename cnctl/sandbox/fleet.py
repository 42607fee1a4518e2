"""`up`, `status` and `down` of a sandbox fleet, and fresh single hosts for tests.

`up` is safe to repeat (a healthy fleet is left as it is) and cleans the leftovers of an earlier run
first; `down` stops hosts politely (SIGTERM, bounded wait, SIGKILL), stops the site services, and removes
every mount, namespace and link it made. A failure (or Ctrl-C) inside `up` removes what it started
before the error goes on.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cnctl.config.schema import StackConfig
from cnctl.sandbox import cleanup, host, image, keys, network, procs
from cnctl.sandbox.errors import SandboxFailure, SandboxProblem
from cnctl.sandbox.instance import Instance
from cnctl.sandbox.inventory import publish
from cnctl.sandbox.layout import HostSpec, Layout, layout_from_stack
from cnctl.sandbox.progress import Progress
from cnctl.sandbox.remote import ssh
from cnctl.sandbox.state import PYINFRA_INVENTORY, FleetState, HostState, load, save
from cnctl.sandbox.system import locked

# How long `down` lets hosts halt before SIGKILL. A native host halts in ~2 s; an emulated (arm64) one, or any
# host on a loaded machine, takes far longer, and systemd's own stop timeout is 90 s. The wait polls: a host
# that halts at once is not waited for.
DOWN_TIMEOUT_S = 30.0


# --- up --------------------------------------------------------------------------------------


def up(inst: Instance, cfg: StackConfig, *, stack: str = "local", edge: int | None = None,
       servers: int | None = None, progress: Progress | None = None) -> FleetState:
    """Ensure the stack's sandbox fleet is running; return its state."""
    progress = progress or Progress()
    layout = layout_from_stack(cfg, edge=edge, servers=servers)
    monitoring_password(cfg, progress)
    with locked(inst.lock_path, directory=True):
        current = load(inst)
        if current is not None and _healthy(inst, current):
            if _same_hosts(current.layout, layout):
                progress.note(f"the sandbox is already up ({len(current.hosts)} hosts); nothing to do")
                publish(inst, current)  # its fleet file again, should it have been removed
                return current
            raise SandboxProblem(
                f"the sandbox is up with other hosts ({', '.join(h.name for h in current.hosts)}); "
                "run `cnctl sandbox down` first"
            )
        leftovers = cleanup.clean(inst)
        if not leftovers.empty:
            progress.note(f"cleaned leftovers of an earlier run: {leftovers.summary()}")
        network.check_subnet_free(inst, layout.subnet)
        for spec in layout.generated:
            progress.note(f"booting {spec.name} ({spec.address}, {spec.flavour}): not in the stack's fleets."
                          f"{spec.group}; add it there to keep its name and address")
        try:
            return _bring_up(inst, cfg, layout, stack, progress)
        except BaseException:
            progress.note("`up` failed: removing what it started")
            cleanup.clean(inst)
            raise


def monitoring_password(cfg: StackConfig, progress: Progress) -> None:
    """The stack's monitoring.passwordFile on this machine, created when missing: a random password, mode 0600,
    in a directory of this user's (kept across `down`, so a sandbox brought up again keeps its password)."""
    if cfg.monitoring.password_file is None:
        return
    path = Path(cfg.monitoring.password_file).expanduser()
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(secrets.token_urlsafe(24) + "\n")
    progress.note(f"wrote the site monitoring's password to {path} (monitoring.passwordFile)")


def _bring_up(inst: Instance, cfg: StackConfig, layout: Layout, stack: str, progress: Progress) -> FleetState:
    timings: dict[str, float] = {}
    mark = time.monotonic()

    site_api = _site_api()
    rootfs = _images_beside_the_site(inst, site_api, progress)
    timings["image"] = _lap(mark)
    mark = time.monotonic()

    with progress.step("site content (signed apt repo, Debian's Docker packages, registry images, model)"):
        content = site_api.build_site_content(inst.cache, progress=progress.note, host_images=rootfs,
                                              mirror=image.debian_mirror())
    timings["site_content"] = _lap(mark)
    mark = time.monotonic()

    inst.state_dir.mkdir(parents=True, exist_ok=True)
    key = keys.ensure_client_key(inst.ssh_dir)
    state = FleetState(
        prefix=inst.prefix, state_dir=str(inst.state_dir), stack=stack, subnet=layout.subnet,
        machine_address=layout.machine_address, site_address=layout.site_address,
        site_netns=inst.site_netns, uplink=inst.uplink, images={a: str(p) for a, p in rootfs.items()}, ssh_key=str(key),
        known_hosts=str(inst.ssh_dir / "known_hosts"),
        hosts=[HostState(spec, inst.host_netns(spec.name), str(host.merged_dir(inst, spec.name))) for spec in layout.hosts],
        inventories={"fleet": str(inst.fleet_file), "pyinfra": str(PYINFRA_INVENTORY), "ansible": str(inst.ansible_inventory)},
    )
    save(inst, state)  # from here on a crash leaves a record of what was meant to exist

    with progress.step(f"start site network {layout.subnet} and services (namespace {inst.site_netns})"):
        network.create_site(inst, layout)
        buckets = cfg.storage.buckets
        endpoints = site_api.start_site_services(
            inst.site_netns, layout.site_address, inst.state_dir, inst.cache,
            buckets=(buckets.images, buckets.results, buckets.models), registry_port=site_api.REGISTRY_PORT,
        )
        state.site = endpoints.to_json()
        save(inst, state)
        for warning in _stack_drift(cfg, endpoints, content):
            progress.note(f"warning: {warning}")
    timings["site_services"] = _lap(mark)
    mark = time.monotonic()

    public = keys.public_key(key)
    with progress.step(f"boot {len(state.hosts)} hosts"):
        for hs in state.hosts:
            merged = host.mount_disk(inst, rootfs[hs.spec.arch], hs.name)
            hs.host_key = host.personalize(merged, hs.spec, public, endpoints, host.machine_name(inst, hs.name))
            network.attach_host(inst, layout, hs.spec)
            hs.pid = host.boot(inst, hs.spec, merged, hs.netns)
            save(inst, state)
        timings["boot_started"] = _lap(mark)
        answered = host.wait_for_ssh(inst, {h.name: (h.address, h.pid or 0) for h in state.hosts})
    timings["hosts"] = _lap(mark)
    timings.update({f"ssh:{name}": round(t, 2) for name, t in answered.items()})

    keys.write_known_hosts(Path(state.known_hosts), [(h.address, h.host_key or "") for h in state.hosts])
    state.phase = "up"
    state.timings = timings
    publish(inst, state)  # the fleet file the product reads, last: it exists only for a fleet that is up
    save(inst, state)
    return state


def _images_beside_the_site(inst: Instance, site_api: Any, progress: Progress) -> dict[str, Path]:
    """Both host images (always both: the site's Debian packages are resolved against each), while the site
    parts no image decides build beside them in a thread: downloads and native work next to the arm64
    image's dpkg under qemu, where a cold `up` spent minutes doing one after the other. A failed image leaves
    the thread to end with the process (every site part builds into a temporary directory first)."""
    mirror = image.debian_mirror()
    failed: list[BaseException] = []

    def early() -> None:
        try:
            site_api.prefetch_site_content(inst.cache, progress=progress.note, mirror=mirror)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            failed.append(exc)

    beside = threading.Thread(target=early, name="site-prefetch", daemon=True)
    beside.start()
    rootfs = {arch: image.ensure_image(inst.image_cache, progress, arch) for arch in image.ARCHES}
    with progress.step("site content that needs no host image (models, client, wheelhouse, registry images)"):
        beside.join()
    if failed:
        raise failed[0]
    return rootfs


def _stack_drift(cfg: StackConfig, endpoints: Any, content: Any) -> list[str]:
    """Where the stack's URLs and pins disagree with what the site serves (the stack is edited by hand)."""
    problems = []
    if cfg.storage.endpoint and cfg.storage.endpoint.rstrip("/") != endpoints.gcs_url.rstrip("/"):
        problems.append(f"storage.endpoint is {cfg.storage.endpoint}, the site's GCS emulator is {endpoints.gcs_url}")
    if cfg.model.key == "sandbox_standin":
        url = endpoints.artifacts_url + content.model_url_path
        if cfg.model.url != url:
            problems.append(f"model.url is {cfg.model.url}, the site serves the stand-in model at {url}")
        if cfg.model.sha256 != content.model_sha256:
            problems.append(f"model.sha256 is {cfg.model.sha256}, the stand-in archive's is {content.model_sha256}")
    problems += _site_api().pipeline.stack_drift(cfg, endpoints.artifacts_url, content.client, content.footage)
    return problems


def _endpoints_of(fleet: FleetState) -> Any:
    return _site_api().SiteEndpoints.from_json(fleet.site) if fleet.site else None


def _site_api() -> Any:
    try:
        from cnctl.sandbox import site
    except ImportError as exc:
        raise SandboxFailure(f"the site services (cnctl.sandbox.site) cannot be imported: {exc}") from None
    return site


def _lap(mark: float) -> float:
    return round(time.monotonic() - mark, 2)


def _same_hosts(a: Layout, b: Layout) -> bool:
    return a.subnet == b.subnet and [(h.name, h.address, h.flavour) for h in a.hosts] == [
        (h.name, h.address, h.flavour) for h in b.hosts
    ]


def _running(inst: Instance, hs: HostState) -> bool:
    return bool(hs.pid) and procs.alive(hs.pid or 0) and procs.boots_under(hs.pid or 0, inst.hosts_dir)


def _healthy(inst: Instance, state: FleetState) -> bool:
    return state.phase == "up" and all(_running(inst, h) for h in state.hosts) and network.uplink_exists(inst)


# --- status ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostStatus:
    """One host as `status` finds it: its platform, its process, and whether SSH and systemd answer."""

    name: str
    group: str
    flavour: str
    arch: str
    address: str
    jetpack: str | None
    l4t: str | None
    driver_branch: str | None
    pid: int | None
    running: bool
    ssh: bool = False
    systemd: str | None = None  # `systemctl is-system-running`, when SSH answered


@dataclass(frozen=True)
class ServiceStatus:
    url: str
    answering: bool | None  # None: not probed


@dataclass(frozen=True)
class FleetStatus:
    """What runs on the machine for one sandbox (`up` False: nothing, or only `leftovers` of a crashed run)."""

    up: bool
    state_file: str
    healthy: bool = False
    leftovers: list[str] = field(default_factory=list)
    prefix: str = ""
    stack: str = ""
    subnet: str = ""
    machine_address: str = ""
    site_address: str = ""
    hosts: list[HostStatus] = field(default_factory=list)
    site: dict[str, ServiceStatus] = field(default_factory=dict)
    inventories: dict[str, str] = field(default_factory=dict)
    ssh: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def status(inst: Instance, *, probe: bool = True) -> FleetStatus:
    """What runs: hosts (process, SSH, systemd state), site services (answering?), inventory paths."""
    state = load(inst)
    if state is None:
        return FleetStatus(up=False, state_file=str(inst.state_file), leftovers=cleanup.find(inst).describe())

    def probe_host(hs: HostState) -> HostStatus:
        spec = hs.spec
        running, reachable, systemd = _running(inst, hs), False, None
        if probe and running:
            try:
                result = ssh(state, hs, "systemctl is-system-running", timeout=15)
                reachable = result.returncode in (0, 1) and bool(result.stdout.strip())
                systemd = result.stdout.strip() or None
            except Exception:  # noqa: BLE001 - a probe reports, it does not raise
                reachable = False
        return HostStatus(hs.name, spec.group, spec.flavour, spec.arch, hs.address, spec.jetpack, spec.l4t,
                          spec.driver_branch, hs.pid, running, reachable, systemd)

    with ThreadPoolExecutor(max_workers=8) as pool:
        hosts = list(pool.map(probe_host, state.hosts))
    site = state.site or {}
    urls = {name.removesuffix("_url"): url for name, url in site.items() if name.endswith("_url")}
    if site.get("registry"):
        urls["registry"] = f"https://{site['registry']}/v2/"
    services = {name: ServiceStatus(url, _answers(url) if probe else None) for name, url in sorted(urls.items())}
    return FleetStatus(
        up=state.phase == "up",
        state_file=str(inst.state_file),
        healthy=state.phase == "up" and all(h.running and (h.ssh or not probe) for h in hosts),
        prefix=state.prefix, stack=state.stack, subnet=state.subnet, machine_address=state.machine_address,
        site_address=state.site_address, hosts=hosts, site=services, inventories=state.inventories,
        ssh={"key": state.ssh_key, "known_hosts": state.known_hosts}, timings=state.timings,
    )


def _answers(url: str, timeout: float = 1.0) -> bool:
    """True if something accepts TCP connections at the URL's host and port."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


# --- down ------------------------------------------------------------------------------------


def down(inst: Instance, *, progress: Progress | None = None, timeout: float = DOWN_TIMEOUT_S) -> cleanup.Leftovers:
    """Ensure nothing of the sandbox remains; return what was removed. Safe to repeat."""
    progress = progress or Progress()
    with locked(inst.lock_path, directory=True):
        state = load(inst)
        if state is not None:
            names = {h.pid: h.name for h in state.hosts if h.pid}
            with progress.step(f"stop {len(state.hosts)} hosts"):
                _, killed = host.stop(list(names), inst.hosts_dir, timeout, halting(progress, names, timeout))
            if killed:
                progress.note(f"did not halt within {timeout:.0f} s, killed: {', '.join(names[p] for p in killed)}")
        with progress.step("remove site services, mounts, namespaces and state"):
            removed = cleanup.clean(inst)
    return removed


def halting(progress: Progress, names: dict[int, str], timeout: float) -> procs.Waiting:
    """What `down` says while it waits for hosts to halt: which, and how long of how long."""
    def say(pids: list[int], waited: float) -> None:
        progress.note(f"waiting for {', '.join(names.get(p, str(p)) for p in pids)} to halt "
                      f"({waited:.0f} s of {timeout:.0f} s)")
    return say


# --- fresh hosts (tests that need a clean disk) ---------------------------------------------


@dataclass
class FreshHost:
    """A host booted on a running fleet's site network, not listed in its state or inventories."""

    state: HostState
    fleet: FleetState

    def ssh(self, command: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return ssh(self.fleet, self.state, command, **kwargs)


def boot_fresh_host(inst: Instance, fleet: FleetState, spec: HostSpec, timeout: float = host.BOOT_TIMEOUT_S) -> FreshHost:
    """Boot one more host from the image on a fresh overlay, reachable with the fleet's key."""
    if spec.name in {h.name for h in fleet.hosts}:
        raise SandboxProblem(f"{spec.name} is already a fleet host")
    hs = HostState(spec, inst.host_netns(spec.name), str(host.merged_dir(inst, spec.name)))
    try:
        merged = host.mount_disk(inst, Path(fleet.images[spec.arch]), spec.name)
        hs.host_key = host.personalize(merged, spec, keys.public_key(Path(fleet.ssh_key)), _endpoints_of(fleet),
                                       host.machine_name(inst, spec.name))
        network.attach_host(inst, fleet.layout, spec)
        hs.pid = host.boot(inst, spec, merged, hs.netns)
        host.wait_for_ssh(inst, {spec.name: (spec.address, hs.pid)}, timeout)
    except BaseException:
        remove_fresh_host(inst, hs)
        raise
    # Its own known_hosts beside the fleet's, so the fleet's inventories never see it.
    known = inst.host_dir(spec.name) / "known_hosts"
    keys.write_known_hosts(known, [(spec.address, hs.host_key or "")])
    view = FleetState(**{**fleet.__dict__, "known_hosts": str(known), "hosts": [hs]})
    return FreshHost(hs, view)


def remove_fresh_host(inst: Instance, hs: HostState) -> None:
    """Ensure a fresh host is gone, its disk unmounted and removed, its namespace gone.

    A fresh host is a throwaway (its overlay is deleted next), so it is killed at once rather than given
    `down`'s graceful halt: an emulated arm64 host took the whole 30 s to halt, per test."""
    if hs.pid:
        host.stop([hs.pid], inst.hosts_dir, timeout=0)
    cleanup.end_processes_in([hs.netns])
    host.unmount_disk(inst, hs.name)
    network.detach_host(inst, hs.name)
