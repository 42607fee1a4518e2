"""Inventories from the stack: the hosts of its fleets (and its cloud GPU VMs), with their variables and how to
reach them, rendered for pyinfra (hosts/*.py, or a generated module) and for Ansible (a YAML inventory).

    pyinfra hosts/edge.py deploy.py                    # CNCTL_STACK=<env> or --data stack=<env>; default local
    pyinfra hosts/cloud.py deploy.py                   # the stack's GPU VMs, from its Pulumi outputs, via IAP
    cnctl inventory --stack dev --engine ansible --output inv.yml && ansible-playbook -i inv.yml playbooks/site.yml

Every host carries `hostvars.host_vars()` (the `cn_*` variables), identical in both engines; only the
connection keys differ by engine. Where the SSH settings come from:

- a stack with a fleet file (`fleets.file`, or the file CNCTL_FLEET_FILE names; the local stack's is the one
  `cnctl sandbox up` writes): the hosts it lists, reached as it says (address, user, port, key, known_hosts,
  host key checking), each with the settings of its fleet entry (cnctl/fleet.py, docs/fleet-files.md);
- any other stack: the fleet entry (address, sshPort, sshUser) and the user's own SSH setup (agent, config);
- cloud VMs: the Pulumi stack outputs (`pulumi stack output --json -s <env>`, or the JSON file CNCTL_OUTPUTS
  names), reached through an IAP tunnel because they have no public IP: each host's ProxyCommand is
  `gcloud compute start-iap-tunnel <vm> 22 --listen-on-stdin --project=<p> --zone=<z>`, rendered into an
  ssh_config file for pyinfra (it has no proxy-command host data key; its SSH client reads ssh_config) and into
  `ansible_ssh_common_args` for Ansible. The login user is the OS Login user: the `sshUser` output when the
  stack exports one, else CNCTL_SSH_USER, else what `gcloud compute os-login describe-profile` says.
"""

from __future__ import annotations

import json
import os
import pprint
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from cnctl import fleet
from cnctl.ansible_yaml import comment_line, unsafe_dump
from cnctl.config import StackConfig, StackConfigError, load_stack
from cnctl.config.schema import EdgeDevice, Server
from cnctl.errors import EXIT_BAD_INPUT, UsageProblem
from cnctl.hostvars import GROUPS, CloudVm, Group, host_vars, pulls_from_startup
from cnctl.paths import REPO_ROOT

STACK_ENV = "CNCTL_STACK"
OUTPUTS_ENV = "CNCTL_OUTPUTS"
SSH_USER_ENV = "CNCTL_SSH_USER"
DEFAULT_STACK = "local"
FLEET_GROUPS: tuple[Group, ...] = ("edge", "servers")
PULUMI_TIMEOUT_S = 120


class InventoryProblem(UsageProblem):
    """The inventory cannot be built as asked (stack outputs missing, a host unreachable by design): exit 2."""


@dataclass(frozen=True)
class Ssh:
    """How to reach one host, engine-neutral. None means "the engine's and the user's SSH defaults"."""

    address: str
    user: str
    port: int = 22
    key: str | None = None
    known_hosts: str | None = None
    strict_host_key_checking: str | None = None
    proxy_command: str | None = None


@dataclass(frozen=True)
class InventoryHost:
    name: str
    group: Group
    ssh: Ssh
    vars: dict[str, Any] = field(default_factory=dict)


# --- which stack -------------------------------------------------------------------------------


def chosen_stack(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The stack an inventory module serves: `--data stack=<env>` on pyinfra's command line, else
    CNCTL_STACK, else `local`. (pyinfra gives inventory modules no access to --data, so argv is read.)"""
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    for i, arg in enumerate(argv):
        value = arg.removeprefix("--data=") if arg.startswith("--data=") else None
        if arg == "--data" and i + 1 < len(argv):
            value = argv[i + 1]
        if value is not None and value.startswith("stack="):
            return value.removeprefix("stack=")
    return environ.get(STACK_ENV) or DEFAULT_STACK


# --- fleets ------------------------------------------------------------------------------------


def fleet_hosts(cfg: StackConfig, groups: Sequence[Group] = FLEET_GROUPS,
                environ: Mapping[str, str] | None = None) -> list[InventoryHost]:
    """The hosts of the stack's fleets in `groups`: its entries, or the hosts of its fleet file (cnctl/fleet.py)."""
    if not groups:
        return []
    found = fleet.members(cfg, environ)
    as_it_is = fleet.with_members(cfg, found)  # the fleet file's hosts: what monitoring.server names among them
    return [InventoryHost(_host_name(m.entry.name, m.group), m.group, _ssh(m), host_vars(as_it_is, m.group, m.entry))
            for m in found if m.group in groups]


def _host_name(name: str, group: str) -> str:
    """`name` as the inventories key a host by it, checked again here (a name is an inventory key and a label in
    every engine's output: one past the schema must not reach them)."""
    return _checked(name, _HOST_NAME, f"fleets.{group}", "a host name (a-z 0-9 -, at most 63)")


def _ssh(member: fleet.Member) -> Ssh:
    entry = member.entry
    return Ssh(address=entry.address, user=entry.ssh_user, port=entry.ssh_port, key=member.key,
               known_hosts=member.known_hosts, strict_host_key_checking=member.strict_host_key_checking)


# --- cloud VMs from the stack outputs ----------------------------------------------------------

_VM_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_HOST_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_POSIX_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_IPV4 = re.compile(r"^(\d{1,3}\.){3}\d{1,3}$")


def stack_outputs(stack: str, environ: Mapping[str, str] | None = None) -> tuple[dict[str, Any], str]:
    """The Pulumi stack outputs and where they came from: the file CNCTL_OUTPUTS names (explicit wins),
    else `pulumi stack output --json -s <stack>` when pulumi is on PATH."""
    environ = os.environ if environ is None else environ
    path = environ.get(OUTPUTS_ENV)
    if path:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise InventoryProblem(f"{OUTPUTS_ENV}={path}: cannot read it ({exc.strerror})") from None
        except ValueError as exc:
            raise InventoryProblem(f"{OUTPUTS_ENV}={path}: not JSON ({exc}); export it with "
                                   f"`pulumi stack output --json -s {stack} > {path}`") from None
        source = f"{OUTPUTS_ENV}={path}"
    else:
        data, source = _pulumi_outputs(stack), f"pulumi stack output -s {stack}"
    if not isinstance(data, dict):
        raise InventoryProblem(f"{source}: the outputs are not a JSON object")
    return data, source


def _pulumi_outputs(stack: str) -> Any:
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        raise InventoryProblem(
            f"no stack outputs for {stack}: the pulumi CLI is not on PATH; install it, or export the outputs "
            f"elsewhere (`pulumi stack output --json -s {stack} > outputs.json`) and set {OUTPUTS_ENV}=outputs.json"
        )
    try:
        proc = subprocess.run([pulumi, "stack", "output", "--json", "-s", stack], cwd=REPO_ROOT, text=True,
                              capture_output=True, timeout=PULUMI_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise InventoryProblem(f"`pulumi stack output -s {stack}` took over {PULUMI_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise InventoryProblem(f"`pulumi stack output -s {stack}` failed: {why} (`pulumi up -s {stack}` first?)")
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise InventoryProblem(f"`pulumi stack output --json -s {stack}` printed no JSON") from None


def cloud_vms(cfg: StackConfig, outputs: Mapping[str, Any], source: str, environ: Mapping[str, str] | None = None,
              os_login_user: Any = None) -> list[CloudVm]:
    """The GPU VMs the outputs name, each value checked (it ends up in a shell ProxyCommand)."""
    environ = os.environ if environ is None else environ
    if cfg.gcp is None or cfg.compute is None:
        raise InventoryProblem(f"stack {cfg.environment} has no cloud GPU VMs (no `gcp`/`compute` section)")
    project = _checked(outputs.get("project"), _PROJECT, f"{source}: output project", "a GCP project id")
    if project != cfg.gcp.project:
        raise InventoryProblem(f"{source}: the outputs are of project {project}, but stack {cfg.environment} "
                               f"deploys to {cfg.gcp.project}: export the outputs of stack {cfg.environment}")
    vms = outputs.get("vms")
    if not isinstance(vms, list):
        raise InventoryProblem(f"{source}: output vms is missing or not a list (`pulumi up -s {cfg.environment}` first?)")
    user = None
    result = []
    for i, vm in enumerate(vms):
        where = f"{source}: output vms[{i}]"
        if not isinstance(vm, dict):
            raise InventoryProblem(f"{where} is not an object")
        name = _checked(vm.get("name"), _VM_NAME, f"{where}.name", "a VM name")
        zone = _checked(vm.get("zone"), _ZONE, f"{where}.zone", "a GCP zone like us-central1-a")
        internal_ip = _checked(vm.get("internalIp"), _IPV4, f"{where}.internalIp", "an IPv4 address")
        vm_user = vm.get("sshUser") or outputs.get("sshUser")
        if vm_user is None:
            user = user or _os_login_user(environ, os_login_user)
            vm_user = user
        vm_user = _checked(vm_user, _POSIX_USER, f"{where}.sshUser", "a POSIX user name")
        fallback = tuple(z for z in vm.get("fallbackZones") or [] if isinstance(z, str))
        result.append(CloudVm(name=name, zone=zone, project=project, internal_ip=internal_ip, ssh_user=vm_user,
                              fallback_zones=fallback))
    return result


def _checked(value: Any, pattern: re.Pattern[str], where: str, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InventoryProblem(f"{where}: {value!r} is not {what}")
    return value


def _os_login_user(environ: Mapping[str, str], lookup: Any = None) -> str:
    """The OS Login user to log in as: CNCTL_SSH_USER, else the active gcloud account's POSIX user name."""
    if environ.get(SSH_USER_ENV):
        return environ[SSH_USER_ENV]
    name = (lookup or _gcloud_os_login_user)()
    if not name:
        raise InventoryProblem(
            f"no OS Login user for the cloud VMs: the stack outputs name none (sshUser), {SSH_USER_ENV} is unset and "
            "`gcloud compute os-login describe-profile` gave none; set "
            f"{SSH_USER_ENV}=$(gcloud compute os-login describe-profile --format='value(posixAccounts[0].username)')"
        )
    return str(name)


def _gcloud_os_login_user() -> str | None:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return None
    proc = subprocess.run([gcloud, "compute", "os-login", "describe-profile",
                           "--format=value(posixAccounts[0].username)"], text=True, capture_output=True,
                          timeout=60, check=False)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def iap_proxy_command(vm: CloudVm) -> str:
    """The SSH ProxyCommand that reaches `vm` through an IAP TCP tunnel (no public IP needed)."""
    return shlex.join(["gcloud", "compute", "start-iap-tunnel", vm.name, "22", "--listen-on-stdin",
                       f"--project={vm.project}", f"--zone={vm.zone}", "--verbosity=warning"])


def cloud_hosts(cfg: StackConfig, vms: Sequence[CloudVm]) -> list[InventoryHost]:
    """The cloud group: each VM by name, through its IAP tunnel, as its OS Login user."""
    return [
        InventoryHost(vm.name, "cloud", Ssh(address=vm.name, user=vm.ssh_user, proxy_command=iap_proxy_command(vm)),
                      host_vars(cfg, "cloud", vm))
        for vm in vms
    ]


# --- one call for the CLI, the engines and hosts/*.py -------------------------------------------


def stack_hosts(stack: str, groups: Sequence[Group],
                environ: Mapping[str, str] | None = None) -> tuple[StackConfig, list[InventoryHost]]:
    """Load `stack` and give the hosts of `groups` (cloud ones from its outputs)."""
    cfg = load_stack(stack)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise InventoryProblem(f"unknown group {unknown[0]!r}; groups: {', '.join(GROUPS)}")
    hosts = fleet_hosts(cfg, [g for g in groups if g != "cloud"], environ)
    if "cloud" in groups:
        if cfg.gcp is None or cfg.compute is None:
            raise InventoryProblem(f"stack {cfg.environment} has no cloud GPU VMs (no `gcp`/`compute` section)")
        outputs, source = stack_outputs(cfg.environment, environ)
        hosts += cloud_hosts(cfg, cloud_vms(cfg, outputs, source, environ))
    return cfg, hosts


# --- pyinfra -----------------------------------------------------------------------------------


def pyinfra_data(host: InventoryHost, ssh_config: Path | None = None) -> dict[str, Any]:
    """pyinfra host data: connection keys (ssh_*) and the host's variables."""
    ssh = host.ssh
    data: dict[str, Any] = {"ssh_hostname": ssh.address, "ssh_user": ssh.user}
    if ssh.port != 22:
        data["ssh_port"] = ssh.port
    if ssh.key:
        data.update(ssh_key=ssh.key, ssh_allow_agent=False, ssh_look_for_keys=False)
    if ssh.known_hosts:
        data["ssh_known_hosts_file"] = ssh.known_hosts
    if ssh.strict_host_key_checking:
        data["ssh_strict_host_key_checking"] = ssh.strict_host_key_checking
    if ssh.proxy_command:
        if ssh_config is None:
            raise ValueError(f"host {host.name} needs a ProxyCommand: give an ssh_config path")
        data["ssh_config_file"] = str(ssh_config)
    return {**data, **host.vars}


def ssh_config_text(hosts: Sequence[InventoryHost]) -> str:
    """An ssh_config with one block per host that needs a ProxyCommand (pyinfra's SSH client reads it)."""
    blocks = ["# Generated by cnctl from the stack outputs: how to reach each cloud VM through IAP.\n"]
    for host in hosts:
        if host.ssh.proxy_command:
            blocks.append(f"Host {host.name}\n  HostName {host.ssh.address}\n  User {host.ssh.user}\n"
                          f"  ProxyCommand {host.ssh.proxy_command}\n")
    return "\n".join(blocks)


def write_ssh_config(hosts: Sequence[InventoryHost], path: Path) -> Path | None:
    """Ensure `path` holds the ssh_config of `hosts` (None and nothing written when none needs one)."""
    if not any(h.ssh.proxy_command for h in hosts):
        return None
    return write_private(path, ssh_config_text(hosts))


def user_cache(*parts: str) -> Path:
    """A path in the user's cache (`$XDG_CACHE_HOME/cnctl`, default ~/.cache/cnctl): generated inventories
    and ssh_configs live there, never in the repository."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "cnctl", *parts)


def ssh_config_path(stack: str) -> Path:
    """Where the cloud ssh_config of `stack` is kept."""
    return user_cache("ssh", f"{stack}.config")


def write_private(path: Path, text: str) -> Path:
    """Ensure `path` holds `text`, readable by its owner only (it names keys, users and hosts)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def pyinfra_groups(hosts: Sequence[InventoryHost], ssh_config: Path | None = None) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """`{group: [(host name, host data)]}`, every group of `hosts` (empty groups kept for edge and servers)."""
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {g: [] for g in FLEET_GROUPS}
    for host in hosts:
        groups.setdefault(host.group, []).append((host.name, pyinfra_data(host, ssh_config)))
    return groups


def pyinfra_module_text(stack: str, groups: Mapping[str, list[tuple[str, dict[str, Any]]]]) -> str:
    """A pyinfra inventory module holding `groups` as literals (what `cnctl inventory --engine pyinfra` writes).
    Every value is data: the stack's name only in comments (escaped), each group a Python literal (`pprint` writes
    strings as `repr` does), group names checked to be identifiers."""
    header = (f"pyinfra inventory of stack {stack}, generated by `cnctl inventory --stack {shlex.quote(stack)} "
              "--engine pyinfra`.")
    lines = [comment_line(header).rstrip("\n"),
             "# Regenerate it after the stack (or its outputs) change; hosts/edge.py etc. read the stack directly.", ""]
    for group, members in groups.items():
        if not group.isidentifier():
            raise ValueError(f"group {group!r} is not a Python name")
        lines.append(f"{group} = {pprint.pformat(members, width=110, sort_dicts=True)}")
        lines.append("")
    return "\n".join(lines)


# --- Ansible -----------------------------------------------------------------------------------


def ansible_vars(host: InventoryHost) -> dict[str, Any]:
    """Ansible host vars: connection keys (ansible_*) and the host's variables."""
    ssh = host.ssh
    data: dict[str, Any] = {"ansible_host": ssh.address, "ansible_user": ssh.user}
    if ssh.port != 22:
        data["ansible_port"] = ssh.port
    if ssh.key:
        data["ansible_ssh_private_key_file"] = ssh.key
    options = []
    if ssh.known_hosts:
        options += [f"UserKnownHostsFile={ssh.known_hosts}", "GlobalKnownHostsFile=/dev/null"]
    if ssh.strict_host_key_checking:
        options.append(f"StrictHostKeyChecking={ssh.strict_host_key_checking}")
    if ssh.key:
        options.append("IdentitiesOnly=yes")
    if ssh.proxy_command:
        options.append(f"ProxyCommand={ssh.proxy_command}")
    if options:  # Ansible splits it as a shell would (shlex): each option one word, whatever it holds
        data["ansible_ssh_common_args"] = shlex.join(part for option in options for part in ("-o", option))
    return {**data, **host.vars}


def ansible_inventory(hosts: Sequence[InventoryHost]) -> dict[str, Any]:
    """The Ansible YAML inventory: groups as children of `all`, become via sudo, the system python."""
    children: dict[str, Any] = {g: {"hosts": {}} for g in FLEET_GROUPS}
    for host in hosts:
        children.setdefault(host.group, {"hosts": {}})["hosts"][host.name] = ansible_vars(host)
    return {
        "all": {
            "vars": {"ansible_python_interpreter": "/usr/bin/python3", "ansible_become": True,
                     "ansible_become_method": "sudo"},
            "children": children,
        }
    }


def ansible_inventory_text(stack: str, hosts: Sequence[InventoryHost]) -> str:
    """The inventory as YAML with every string value tagged `!unsafe` (cnctl.ansible_yaml): Ansible takes the
    stack's values literally, never as templates."""
    header = comment_line(f"Ansible inventory of stack {stack}, generated by "
                          f"`cnctl inventory --stack {shlex.quote(stack)} --engine ansible`.")
    return header + unsafe_dump(ansible_inventory(hosts))


# --- hosts/*.py --------------------------------------------------------------------------------


def for_pyinfra_module(groups: Sequence[Group]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """What hosts/<group>.py hands pyinfra: the chosen stack's hosts of `groups`. Bad input (an invalid
    stack, a missing fleet file, missing outputs) prints one line and exits 2: no traceback."""
    stack = chosen_stack()
    try:
        cfg, hosts = stack_hosts(stack, groups)
        config = write_ssh_config(hosts, ssh_config_path(cfg.environment))
        all_groups = pyinfra_groups(hosts, config)
    except StackConfigError as exc:
        _exit(f"stack {stack}: {exc.source}: " + "; ".join(str(p) for p in exc.problems))
    except UsageProblem as exc:
        _exit(f"stack {stack}: {exc}")
    return {g: all_groups.get(g, []) for g in groups}


# --- pull mode: this machine, as its fleet entry ---------------------------------------------------

PULL_HOST_ENV = "CNCTL_PULL_HOST"
PULL_GROUP_ENV = "CNCTL_PULL_GROUP"
PULL_CREDENTIALS_ENV = "CNCTL_PULL_CREDENTIALS"
PULL_ZONE_ENV = "CNCTL_PULL_ZONE"
PULL_GROUPS: tuple[Group, ...] = (*FLEET_GROUPS, "cloud")


def pull_entry(cfg: StackConfig, name: str, group: Group) -> EdgeDevice | Server:
    """The fleet entry `name` of `group`. In a stack whose fleet comes from a fleet file (`fleets.file`), a host the
    file lists beyond the stack's entries (`cnctl sandbox up --servers 6`) stands for the group's first entry under
    its own name, as in a push (cnctl/fleet.py); the bundle carries the stack, not the file."""
    entries: Sequence[EdgeDevice | Server] = cfg.fleets.edge if group == "edge" else cfg.fleets.servers
    found = next((e for e in entries if e.name == name), None)
    entry = f"its fleet entry {name}"
    elsewhere = [g for g, listed in (("edge", cfg.fleets.edge), ("servers", cfg.fleets.servers))
                 if g != group and any(e.name == name for e in listed)]
    if found is None and elsewhere:
        raise InventoryProblem(f"host {name} is in fleets.{elsewhere[0]} of stack {cfg.environment}, not fleets.{group}: "
                               f"give its group ({PULL_GROUP_ENV}={elsewhere[0]})")
    if found is None and cfg.fleets.file is not None and entries:
        found, entry = _renamed(entries[0], name), f"fleets.{group}[0] ({entries[0].name}), which it stands for"
    if found is None:
        raise InventoryProblem(f"host {name} is not in fleets.{group} of stack {cfg.environment}: the bundle was built "
                               "for another fleet, or the host was removed from it")
    if found.mode != "pull":
        raise InventoryProblem(f"host {name} is `mode: {found.mode}` in stack {cfg.environment}: only a pull-mode host "
                               f"applies a bundle to itself; set mode: pull in {entry}")
    return found


def _renamed(entry: EdgeDevice | Server, name: str) -> EdgeDevice | Server:
    """`entry` under the name `name`, which passes the schema's host name rule like any entry's."""
    try:
        return type(entry).model_validate({**entry.model_dump(by_alias=True), "name": name})
    except ValidationError:
        raise InventoryProblem(f"host {name!r}: not a host name (a-z 0-9 -, at most 63); check {PULL_HOST_ENV}") from None


def pull_vm(cfg: StackConfig, name: str, zone: str | None) -> CloudVm:
    """A VM of the stack's autoscaled worker group as what it knows about itself: its name (the group names its
    VMs; they are in no fleet and no stack output), its zone (the metadata server's, which the startup script puts
    in the agent's config and the agent passes as CNCTL_PULL_ZONE) and the stack's project (the group's VMs are in
    it). Only a stack whose group VMs configure themselves (`compute.mode: group` and a `bundle` section) has any."""
    if cfg.gcp is None or cfg.compute is None or not pulls_from_startup(cfg):
        shape = ("no `gcp`/`compute` section" if cfg.gcp is None or cfg.compute is None
                 else f"compute.mode {cfg.compute.mode}" if cfg.compute.mode != "group" else "no `bundle` section")
        raise InventoryProblem(f"group 'cloud': a pull-mode host is one of {', '.join(FLEET_GROUPS)}, or a VM of the "
                               "worker group of a `compute.mode: group` stack with a `bundle` section; host "
                               f"{name}'s stack {cfg.environment} has {shape} (fixed VMs are configured by push)")
    _checked(name, _VM_NAME, f"host {name} of group cloud: its name", "a VM name")
    _checked(zone, _ZONE, f"host {name} of group cloud: its zone ({PULL_ZONE_ENV})", "a GCP zone like us-central1-a")
    assert zone is not None
    if zone not in cfg.gcp.zones:
        raise InventoryProblem(f"host {name} of group cloud: zone {zone} is not one of stack {cfg.environment}'s "
                               f"gcp.zones ({', '.join(cfg.gcp.zones)}): the bundle was built for another stack")
    return CloudVm(name=name, zone=zone, project=cfg.gcp.project, internal_ip="", ssh_user="root")


def pull_host(cfg: StackConfig, name: str, group: Group, credentials: str | None = None,
              zone: str | None = None) -> InventoryHost:
    """The fleet entry `name` of `cfg` as pyinfra's `@local` host: its cn_* variables as a push would give them,
    except the uploader's credentials, which are the file already on this host (`credentials`, the pipeline
    layer's copy), and the site monitoring's password (already on the host too): a bundle never carries them,
    and the layers then find them in place. In group `cloud`, the
    worker group's VM `name` in `zone` (`pull_vm`)."""
    if group == "cloud":
        data = host_vars(cfg, group, pull_vm(cfg, name, zone))
    elif group in FLEET_GROUPS:
        data = host_vars(cfg, group, pull_entry(cfg, name, group))
    else:
        raise InventoryProblem(f"group {group!r}: a pull-mode host is one of {', '.join(PULL_GROUPS)}")
    if data["cn_storage_credentials_file"] is not None:
        data["cn_storage_credentials_file"] = credentials
    # The site's password likewise: the first (push) deploy put it on the host (roles/monitoring
    # monitoring_password_path), which the monitoring layer then keeps as it is.
    data["cn_monitoring_password_file"] = None
    return InventoryHost("@local", group, Ssh(address="localhost", user="root"), data)


def for_pull_module(environ: Mapping[str, str] | None = None) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """What hosts/pull.py hands pyinfra: `{group: [("@local", host data)]}` for the host CNCTL_PULL_HOST names in
    group CNCTL_PULL_GROUP of the stack file CNCTL_STACK names (all set by pull mode's agent; a `cloud` host's
    zone in CNCTL_PULL_ZONE). Bad input exits 2 in one line."""
    environ = os.environ if environ is None else environ
    stack, name, group = environ.get(STACK_ENV), environ.get(PULL_HOST_ENV), environ.get(PULL_GROUP_ENV)
    if not stack or not name or not group:
        _exit(f"{STACK_ENV} (the bundle's stack file), {PULL_HOST_ENV} (this host's fleet name) and {PULL_GROUP_ENV} "
              "(edge, servers or cloud) must be set: hosts/pull.py is run by pull mode's agent (python -m cnctl.bundle.agent)")
    try:
        host = pull_host(load_stack(stack), name, group, environ.get(PULL_CREDENTIALS_ENV) or None,  # type: ignore[arg-type]
                         environ.get(PULL_ZONE_ENV) or None)
    except StackConfigError as exc:
        _exit(f"stack {stack}: {exc.source}: " + "; ".join(str(p) for p in exc.problems))
    except UsageProblem as exc:
        _exit(f"stack {stack}: {exc}")
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {g: [] for g in PULL_GROUPS}
    groups[host.group].append((host.name, dict(host.vars)))
    return groups


def _exit(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_BAD_INPUT)
