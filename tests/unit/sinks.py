"""Every place a stack value can land, as data: the sink registry of issue 20.

A sink is something cnctl renders from a stack that a machine then reads as code or structure: a file the host
layers write (templates/, through both engines), a command a host runs (the layers' operations and facts, the
controller's SSH commands), the inventories and extra vars Ansible reads on the controller, the GCE startup
scripts a VM runs as root at boot. Each `Sink` says where it lands, how it is rendered from a `StackConfig`
through the code the product runs (cnctl/hostvars.py -> host variables -> builder or template), and which parser
reads its structure (tests/unit/sink_shapes.py, tests/unit/shell_shape.py for the shell).

`BASES` are stacks that set every string field of the schema and reach every sink; `string_fields()` walks the
schema; `Scene` is one stack rendered for all its hosts. tests/unit/test_hostile_values.py attacks the sinks,
tools/sink_map.py writes docs/sinks.md from `trace()`.
"""

from __future__ import annotations

import atexit
import base64
import copy
import functools
import json
import re
import shutil
import tempfile
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from unittest import mock

import jinja2
from pydantic import BaseModel, TypeAdapter

from cnctl.cloud.startup import render_startup_script
from cnctl.config import StackConfig, StackConfigError, parse
from cnctl.errors import UsageProblem
from cnctl.hostvars import CloudVm, Group, host_vars, pulls_from_startup
from cnctl.inventory import (
    InventoryHost,
    ansible_inventory_text,
    cloud_hosts,
    cloud_vms,
    fleet_hosts,
    iap_proxy_command,
    pull_vm,
    pyinfra_groups,
    pyinfra_module_text,
    ssh_config_text,
)
from cnctl.paths import TEMPLATES_DIR
from tests.unit import render_parity, shell_shape, sink_shapes
from tests.unit.sink_recorder import Recording, recorder

# --- the stacks the suite starts from ----------------------------------------------------------------------


def _ssh_key(comment: str) -> str:
    """An ssh-ed25519 public key line whose blob really is one (type name, then a 32-byte key)."""
    name = b"ssh-ed25519"
    blob = len(name).to_bytes(4, "big") + name + (32).to_bytes(4, "big") + bytes(range(1, 33))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


SHA = "0123456789abcdef" * 4
CLIENT_SHA = "fedcba9876543210" * 4
REPLAY_SHA = "00112233445566778899aabbccddeeff" * 2
KMS = "projects/cn-sinks-dev/locations/us-central1/keyRings/circularnet/cryptoKeys/"

# A cloud stack with everything a plant can write: fixed GPU VMs, two edge devices (an RTSP and a replay camera,
# one of them pull mode), two servers (container and native runtime, spool and bucket input), every upstream
# mirror, a bundle. CLOUD_GROUP is the same with autoscaled workers (their startup script applies the bundle).
CLOUD: dict[str, Any] = {
    "gcp": {"project": "cn-sinks-dev", "region": "us-central1", "zones": ["us-central1-a", "us-central1-b"],
            "labels": {"team": "vision"}},
    "network": {"subnetCidr": "10.20.0.0/24", "inferenceAllowedCidrs": ["10.50.0.0/16"]},
    "storage": {"endpoint": "https://storage.plant.example", "location": "US-CENTRAL1",
                "buckets": {"images": "cn-sinks-images", "results": "cn-sinks-results", "models": "cn-sinks-models"},
                "kmsKeyName": KMS + "storage", "credentialsFile": "~/.config/cnctl/uploader.json"},
    "analytics": {"dataset": "circularnet_sinks", "table": "detections", "kmsKeyName": KMS + "analytics"},
    "monitoring": {"emails": ["ops@plant.example"]},
    "compute": {"machineType": "n1-standard-8", "gpu": {"type": "nvidia-tesla-t4", "count": 1},
                "imageFamily": "common-cu124-ubuntu-2204-nvidia-550", "instances": 1,
                "placement": [{"zone": "us-central1-b"}], "kmsKeyName": KMS + "compute"},
    "model": {"key": "Jan2025_ver2_merged_1024_1024", "version": 2, "sha256": SHA,
              "url": "https://models.plant.example/circularnet/model.zip"},
    "inference": {"images": {"server": "nvcr.io/nvidia/tritonserver:24.03-py3",
                             "jetson": "nvcr.io/nvidia/tritonserver:24.08-py3-igpu"},
                  "bindAddress": "10.20.0.7"},
    "pipeline": {"client": "tf", "clientUrl": "https://mirror.plant.example/client/tf.zip", "clientSha256": CLIENT_SHA,
                 "subscription": "cn-sinks-images-work"},
    "fleets": {
        "edge": [
            {"name": "belt-1-orin", "address": "10.50.1.21", "sshUser": "circularnet", "site": "plant-a",
             "jetpack": "6.0", "mode": "pull", "camera": {"source": "rtsp", "url": "rtsp://10.50.1.40:554/belt1",
                                                          "framePrefix": "belt1", "captureDir": "/srv/circularnet/frames"}},
            {"name": "belt-2-orin", "address": "10.50.1.22", "site": "plant-a", "jetpack": "6.0", "nvpmodel": 0,
             "jetsonClocks": True,
             "camera": {"source": "replay", "replayUrl": "https://mirror.plant.example/footage/belt2.zip",
                        "replaySha256": REPLAY_SHA, "device": "/dev/video2"}},
        ],
        "servers": [
            {"name": "plant-a-gpu-1", "address": "10.50.2.10", "sshUser": "deploy", "site": "plant-a",
             "driverBranch": "550"},
            {"name": "plant-a-gpu-2", "address": "10.50.2.11", "site": "plant-a", "driverBranch": "550",
             "inferenceRuntime": "native", "pipelineInput": "bucket"},
        ],
    },
    "mirrors": {"jetsonApt": "https://mirror.plant.example/jetson",
                "cudaApt": "https://mirror.plant.example/cuda",
                "containerToolkitApt": "https://mirror.plant.example/libnvidia-container",
                "dockerApt": "https://mirror.plant.example/docker",
                "opsAgentApt": "https://mirror.plant.example/google-cloud/apt",
                "registry": "https://registry.plant.example",
                "pythonIndex": "https://pypi.plant.example/simple"},
    "container": {"dataRoot": "/srv/docker", "logMaxSize": "50m"},
    "bundle": {"signers": [{"identity": "release@plant", "publicKey": _ssh_key("release@plant")}],
               "signingKey": "~/.ssh/cnctl-release"},
}
CLOUD_GROUP = {**CLOUD, "compute": {**{k: v for k, v in CLOUD["compute"].items() if k not in ("instances", "placement")},
                                    "mode": "group"},
               "inference": {**CLOUD["inference"], "bindInterface": "ens4"}}
# A plant without a cloud layer: its own S3, a signed site repository in place of the upstream ones.
SITE: dict[str, Any] = {
    "storage": {"kind": "s3", "endpoint": "https://s3.plant.example:9000",
                "buckets": {"images": "plant-images", "results": "plant-results", "models": "plant-models"},
                "credentialsFile": "/etc/cnctl/onprem-s3.json"},
    "model": {"key": "Jan2025_ver2_merged_1024_1024", "sha256": SHA,
              "url": "https://models.plant.example/circularnet/model.zip"},
    "pipeline": {"clientUrl": "https://mirror.plant.example/client/tf.zip", "clientSha256": CLIENT_SHA},
    "inference": {"bindAddress": "fd00:50::7"},
    "fleets": {"edge": [{"name": "belt-3-orin", "address": "belt-3.plant.example", "jetpack": "6.0",
                         "camera": {"device": "/dev/video1"}}],
               "servers": [{"name": "plant-c-gpu-1", "address": "fd00:60::10", "driverBranch": "550"}]},
    "mirrors": {"siteApt": "https://apt.plant.example/site", "siteAptKey": "https://apt.plant.example/site/key.asc"},
    "monitoring": {"server": "plant-c-gpu-1", "interface": "enp3s0", "passwordFile": "/etc/cnctl/onprem-monitoring.pw",
                   "emails": ["ops@plant.example"],
                   "smtp": {"smarthost": "mail.plant.example", "sender": "alerts@plant.example", "username": "alerts",
                            "passwordFile": "/etc/cnctl/onprem-smtp.pw"},
                   "webhooks": [{"url": "https://hooks.plant.example/alerts", "tokenFile": "/etc/cnctl/hook.token"}]},
}
# The local stack's shape: a sandbox section (its Jetson hosts run a declared stand-in OS), its fleet from the
# fleet file `cnctl sandbox up` writes.
LOCAL: dict[str, Any] = {
    **{k: v for k, v in SITE.items() if k not in ("mirrors", "fleets")},
    "fleets": {**SITE["fleets"], "file": "/run/cnctl/sandbox/fleet.json"},
    "sandbox": {"subnet": "172.31.99.0/24", "jetsonOs": {"id": "debian", "version": "12", "codename": "bookworm"}},
}
BASES: dict[str, tuple[str, dict[str, Any]]] = {  # name -> (environment, the `circularnet:` sections)
    "cloud": ("dev", CLOUD), "cloud-group": ("dev", CLOUD_GROUP), "site": ("onprem", SITE), "local": ("local", LOCAL),
}


def validated(raw: Mapping[str, Any], environment: str) -> StackConfig:
    """`raw` through the schema and every stack check, as `cnctl` reads a stack file; StackConfigError if refused."""
    return parse(copy.deepcopy(dict(raw)), environment=environment, source="tests/unit/sinks.py")


@functools.cache
def base(name: str) -> StackConfig:
    environment, raw = BASES[name]
    return validated(raw, environment)


# --- the schema's string fields ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One string field of the schema: `fleets.edge[].camera.url`, `gcp.labels{key}` (a key), `gcp.labels{}`
    (a value). `annotation` is the type of one value (a list's item, a mapping's value)."""

    path: str
    parts: tuple[str, ...]
    annotation: Any

    @functools.cached_property
    def adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.annotation)


def string_fields() -> list[Field]:
    """Every string field of StackConfig, depth first; `environment` (the file name) included. A Literal is a
    choice among fixed strings, not a field a value is written into: left out (`enumerated_fields`)."""
    return [f for f in _walk(StackConfig, ()) if f is not None and not _literal(f.annotation)]


def enumerated_fields() -> list[str]:
    return [f.path for f in _walk(StackConfig, ()) if f is not None and _literal(f.annotation)]


def _literal(annotation: Any) -> bool:
    return get_origin(annotation) is Literal


def _walk(model: type[BaseModel], parts: tuple[str, ...]) -> Iterator[Field | None]:
    for name, info in model.model_fields.items():
        # pydantic keeps a field's own constraints (pattern, validators) beside its annotation: put them back
        annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        yield from _annotation(annotation, (*parts, info.alias or name))


def _annotation(annotation: Any, parts: tuple[str, ...]) -> Iterator[Field | None]:
    origin = get_origin(annotation)
    if origin is Annotated:
        inner = get_args(annotation)[0]
        if _is_string(inner):
            yield Field(_path(parts), parts, annotation)
        else:
            yield from _annotation(inner, parts)
    elif origin in (Union, types.UnionType):
        for arg in get_args(annotation):
            if arg is not type(None):
                yield from _annotation(arg, parts)
    elif origin is Literal:
        yield Field(_path(parts), parts, annotation)
    elif origin is list:
        yield from _annotation(get_args(annotation)[0], (*parts, "[]"))
    elif origin is dict:
        key, value = get_args(annotation)
        yield from _annotation(key, (*parts, "{key}"))
        yield from _annotation(value, (*parts, "{}"))
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield from _walk(annotation, parts)
    elif _is_string(annotation):
        yield Field(_path(parts), parts, annotation)


def _is_string(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, str)


def _path(parts: tuple[str, ...]) -> str:
    return "".join(p if p.startswith(("[", "{")) else f".{p}" for p in parts).lstrip(".")


# A concrete place in a stack: field names (aliases), list indexes, ("key", k) a mapping's key, ("value", k) its value.
Loc = tuple[Any, ...]


def locate(raw: Any, parts: tuple[str, ...]) -> Loc | None:
    """The first place in `raw` (alias-keyed sections) where `parts` holds a value, None where nothing does."""
    if not parts:
        return () if isinstance(raw, str) else None
    head, rest = parts[0], parts[1:]
    if head == "[]" and isinstance(raw, list):
        return next(((i, *found) for i, item in enumerate(raw) if (found := locate(item, rest)) is not None), None)
    if head in ("{key}", "{}") and isinstance(raw, dict):
        for key, value in raw.items():
            found = locate(key if head == "{key}" else value, rest)
            if found is not None:
                return (("key" if head == "{key}" else "value", key), *found)
        return None
    if isinstance(raw, dict) and head in raw:
        found = locate(raw[head], rest)
        return None if found is None else (head, *found)
    return None


def value_at(raw: Any, loc: Loc) -> Any:
    for step in loc:
        raw = step[1] if isinstance(step, tuple) and step[0] == "key" else raw[step[1] if isinstance(step, tuple) else step]
    return raw


def with_value(raw: Any, loc: Loc, value: Any) -> Any:
    """A copy of alias-keyed `raw` with `value` at `loc` (a mapping key is renamed)."""
    if not loc:
        return value
    step, rest = loc[0], loc[1:]
    if isinstance(step, tuple) and step[0] == "key":
        return {(value if k == step[1] else k): v for k, v in raw.items()}
    key = step[1] if isinstance(step, tuple) else step
    out = list(raw) if isinstance(raw, list) else dict(raw)
    out[key] = with_value(raw[key], rest, value)
    return out


def bypassing(cfg: StackConfig, loc: Loc, value: Any) -> StackConfig:
    """`cfg` with `value` at `loc`, past every validator (model_copy): what a looser schema would let through."""
    return _bypass(cfg, loc, value)


def _bypass(obj: Any, loc: Loc, value: Any) -> Any:
    if not loc:
        return value
    step, rest = loc[0], loc[1:]
    if isinstance(obj, BaseModel):
        name = next(n for n, f in type(obj).model_fields.items() if (f.alias or n) == step)
        return obj.model_copy(update={name: _bypass(getattr(obj, name), rest, value)})
    if isinstance(obj, list):
        return [_bypass(item, rest, value) if i == step else item for i, item in enumerate(obj)]
    if step[0] == "key":
        return {(value if k == step[1] else k): v for k, v in obj.items()}
    return {k: (_bypass(v, rest, value) if k == step[1] else v) for k, v in obj.items()}


def raw_sections(name: str) -> tuple[str, dict[str, Any]]:
    environment, raw = BASES[name]
    return environment, {"environment": environment, **copy.deepcopy(raw)}


def place(name: str, fld: Field) -> Loc | None:
    """Where base `name` holds a value of `fld` (None: this base leaves the field unset)."""
    return locate(raw_sections(name)[1], fld.parts)


def with_field(name: str, loc: Loc, value: Any) -> StackConfig:
    """Base `name` with `value` at `loc`, validated like a stack file (StackConfigError when refused)."""
    changed = with_value(raw_sections(name)[1], loc, value)
    return validated({k: v for k, v in changed.items() if k != "environment"}, changed["environment"])


# --- one stack, rendered for every host ------------------------------------------------------------------------


class NotRendered(Exception):
    """The code path refused the stack before any sink was written (a catalog lookup, a value it cannot use)."""


@dataclass(frozen=True)
class SceneHost:
    group: Group
    index: int  # its place in the scene: labels name hosts by it, since a value may be the host's name
    entry: Any
    vars: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.group}/{self.index}"


class Scene:
    """A stack and what the sinks are rendered from: each host's variables (all of them at once), what its layers
    would do (recorded on first use, for the hosts `only` names, or all), and the inventory's hosts."""

    def __init__(self, cfg: StackConfig, only: set[str] | None = None) -> None:
        self.cfg, self.only = cfg, only
        self.vms = _cloud_vms(cfg)
        entries: list[tuple[Group, Any]] = [("edge", e) for e in cfg.fleets.edge]
        entries += [("servers", s) for s in cfg.fleets.servers] + [("cloud", vm) for vm in self.vms]
        if pulls_from_startup(cfg):
            assert cfg.gcp is not None
            entries.append(("cloud", pull_vm(cfg, f"cn-{cfg.environment}-workers-x1z2", cfg.gcp.zones[0])))
        self.hosts = [SceneHost(group, i, entry, host_vars(cfg, group, entry)) for i, (group, entry) in enumerate(entries)]

    @functools.cached_property
    def recordings(self) -> dict[str, Recording]:
        chosen = [h for h in self.hosts if self.only is None or h.label in self.only]
        with recorder() as run:
            return {h.label: run(h.entry.name, h.vars) for h in chosen}

    @functools.cached_property
    def inventory(self) -> list[tuple[str, InventoryHost]]:
        """(label, host) of the inventories; none for a stack whose fleet comes from a fleet file (the local stack's
        is the running sandbox's): its hosts are what another tool wrote there (cnctl/fleet.py), not stack values."""
        if self.cfg.fleets.file is not None:
            return []
        hosts = fleet_hosts(self.cfg) + cloud_hosts(self.cfg, self.vms)
        return [(h.label, i) for h, i in zip(self.hosts, hosts, strict=False)]

    @property
    def refused(self) -> dict[str, str]:
        return {label: rec.refused for label, rec in self.recordings.items() if rec.refused}


def stack_outputs(cfg: StackConfig) -> dict[str, Any]:
    """The `project` and `vms` outputs `pulumi up` would export for `cfg`'s fixed GPU VMs (cnctl/cloud: each VM's
    name, its placement's zone and fallbacks; an internal address and the OS Login user GCE would give)."""
    from cnctl.cloud.base import Naming
    from cnctl.cloud.compute import Placement, revision

    assert cfg.gcp is not None and cfg.compute is not None
    names, rev = Naming.of(cfg), revision(cfg.compute, True, None)
    vms = []
    for i in range(cfg.compute.instances):
        placement = Placement.of(i, cfg.compute, cfg.gcp.zones)
        vms.append({"name": names("gpu", str(i), rev), "zone": placement.zone, "internalIp": f"10.20.0.{10 + i}",
                    "fallbackZones": list(placement.fallbacks), "sshUser": "cnctl_deploy"})
    return {"project": cfg.gcp.project, "vms": vms}


def _cloud_vms(cfg: StackConfig) -> list[CloudVm]:
    """The fixed GPU VMs as the inventory reads them from the stack outputs (cnctl.inventory.cloud_vms checks them)."""
    if cfg.gcp is None or cfg.compute is None or cfg.compute.mode != "vms":
        return []
    return cloud_vms(cfg, stack_outputs(cfg), "pulumi stack output", environ={})


def scene(cfg: StackConfig, only: set[str] | None = None) -> Scene:
    """`cfg` rendered for its fleet hosts and cloud VMs (fixed ones as their outputs name them, a worker of the
    group as its startup script does). NotRendered when the code path stops the stack before any host (a catalog
    lookup); a layer that refuses one host says so in its recording."""
    try:
        sc = Scene(cfg, only)
        sc.inventory  # noqa: B018 - the inventories check each host's name again: one they refuse stops the stack
        return sc
    except (LookupError, ValueError, TypeError, StopIteration, UsageProblem) as exc:  # the code path said no
        raise NotRendered(f"{type(exc).__name__}: {exc}") from None


# --- the sinks --------------------------------------------------------------------------------------------------

Output = str | list[str]
HOST = "each host of the groups shown (edge device, server, cloud VM), as root"
CONTROLLER = "the controller (the machine running cnctl, pyinfra or Ansible)"


@dataclass(frozen=True)
class Sink:
    """One place stack values land. `render(scene)` gives its outputs by label (`<group>/<host>...`);
    `kind` names its parser (sink_shapes.SHAPES, or `argv`/`ssh-argv`); `builders` the code that makes it (the
    templates and the functions the completeness test looks for); `engines` renders a template in both."""

    name: str
    machine: str
    kind: str
    builders: tuple[str, ...]
    render: Callable[[Scene], dict[str, Output]]
    engines: tuple[str, ...] = ()
    slow: bool = False  # seconds per rendering (a YAML dump of every host's variables): attacked all fields at once
    argv: bool = False  # a command line the controller hands to a shell: shlex's and bashlex's views are checked too
    controller: bool = False  # rendered per host but read on the controller (ssh's command line, a ProxyCommand)


def render_template(src: str, variables: Mapping[str, Any]) -> str:
    """templates/<src> as pyinfra renders it, with the layers' environment (the unit filters)."""
    return render_parity.render(src, **variables)


class Refusal(str):
    """An output refused from the value, naming it: a host program exits, a template stops rendering; nothing ran."""


def rendered_or_refused(src: str, variables: Mapping[str, Any]) -> Output:
    """templates/<src> rendered, or a Refusal where the template refuses a value: it looks up a key naming the
    refusal, which fails under StrictUndefined (templates/apt/source.list.j2), or a unit filter refuses it
    (cnctl/unitescape.py, raised as a template error: templates/systemd/*.j2)."""
    try:
        return render_template(src, variables)
    except jinja2.UndefinedError as exc:
        if " refused" not in str(exc):
            raise
        return Refusal(f"templates/{src}: {exc}")
    except jinja2.TemplateRuntimeError as exc:
        if not str(exc).startswith(("systemd command line", "systemd unit setting")):
            raise
        return Refusal(f"templates/{src}: {exc}")


def _templates_of(src: str) -> Callable[[Scene], dict[str, Output]]:
    def render(sc: Scene) -> dict[str, Output]:
        return {f"{label}:{r.dest}": rendered_or_refused(r.src, r.variables)
                for label, rec in sc.recordings.items() for r in rec.templates if r.src == src}

    return render


def _commands_of(builder: str) -> Callable[[Scene], dict[str, Output]]:
    def render(sc: Scene) -> dict[str, Output]:
        out: dict[str, Output] = {}
        for label, rec in sc.recordings.items():
            for i, (where, text) in enumerate(c for c in rec.commands if c[0] == builder):
                out[f"{label}#{i}"] = text
        return out

    return render


def _probe_scripts(sc: Scene) -> dict[str, Output]:
    """The roles read the same facts in one round trip (deploy/rules/probe.py `script`, their `cnctl_probe_script`): the
    facts the layers read, with the same arguments, and the pipeline role's units (roles/pipeline `active`)."""
    from deploy.rules import pipeline, probe
    from deploy.steps import role_data

    out: dict[str, Output] = {}
    for host in sc.hosts:
        rec = sc.recordings.get(host.label)
        if rec is None:
            continue
        probes = {f"p{i}": [name, kwargs] for i, (name, kwargs) in enumerate(rec.facts) if name in probe.FACTS}
        units = pipeline.units(role_data("pipeline"), host.vars.get("cn_camera"), host.vars.get("cn_pipeline_input"))
        probes["active"] = ["UnitsActive", {"units": units}]
        out[host.label] = probe.script(probes)
    return out


@functools.cache
def _scratch() -> Path:
    """A directory for the files the sinks' readers need (pipeline settings, ansible-runner's), gone at exit."""
    path = Path(tempfile.mkdtemp(prefix="cnctl-sinks-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def _settings_files(sc: Scene) -> Iterator[tuple[str, Path]]:
    """Each host's pipeline settings (templates/pipeline/pipeline.json.j2) written where its scripts read them."""
    for label, rec in sc.recordings.items():
        for r in rec.templates:
            if r.src == "pipeline/pipeline.json.j2":
                path = _scratch() / f"{label.replace('/', '_')}-pipeline.json"
                path.write_text(render_template(r.src, r.variables))
                yield label, path


def _capture_argv(sc: Scene) -> dict[str, Output]:
    from cnhost import capture

    out: dict[str, Output] = {}
    for label, path in _settings_files(sc):
        if json.loads(path.read_text()).get("capture") is None:
            continue  # a server: no camera
        try:
            settings = capture.load_settings(path)
        except capture.SettingsError as exc:
            out[label] = Refusal(f"capture.py: {exc}")
            continue
        if settings.source in ("v4l2", "rtsp"):
            out[label] = capture.ffmpeg_argv("ffmpeg", settings)
    return out


def _client_argv(sc: Scene) -> dict[str, Output]:
    from cnhost import pipeline_run

    return {label: pipeline_run.client_argv(pipeline_run.load(str(path)), Path("/var/lib/circularnet/work/b1"))
            for label, path in _settings_files(sc)}


def _inventory_text(engine: str) -> Callable[[Scene], dict[str, Output]]:
    def render(sc: Scene) -> dict[str, Output]:
        hosts = [h for _, h in sc.inventory]
        if not hosts:
            return {}
        stack = sc.cfg.environment
        if engine == "ansible":
            return {"controller/inventory.yml": ansible_inventory_text(stack, hosts)}
        if engine == "pyinfra":
            groups = pyinfra_groups(hosts, Path("/home/operator/.cache/cnctl/ssh") / f"{stack}.config")
            return {"controller/inventory.py": pyinfra_module_text(stack, groups)}
        return {"controller/ssh_config": ssh_config_text(hosts)}

    return render


def extravars_command(sc: Scene) -> list[str]:
    """The ansible-playbook command line ansible-runner builds for a deploy of `sc`'s fleet (cnctl/engines: the
    target's extra vars, through ansible_runner's own RunnerConfig), from `cnctl deploy --engine ansible`'s path."""
    import ansible_runner

    from cnctl.engines import ansible as engine
    from cnctl.engines.target import for_stack

    # the inventory file it writes is the Ansible inventory sink: not written (nor dumped) a second time here
    with mock.patch("cnctl.engines.target.write_ansible_inventory", return_value=_scratch() / "inventory.yml"):
        target = for_stack(sc.cfg)
    workdir = _scratch() / "runner"
    engine.write_extravars(target, workdir)  # env/extravars: ansible-runner passes it as `-e @file`
    args = {k: v for k, v in engine.runner_args(target, workdir, dry=False).items() if k != "quiet"}
    config = ansible_runner.RunnerConfig(**args)
    config.prepare()
    return [str(part) for part in config.command]


def extravars_of(command: list[str]) -> list[str]:
    """The values of every `-e` in an ansible-playbook command line."""
    return [command[i + 1] for i, part in enumerate(command[:-1]) if part in ("-e", "--extra-vars")]


def extravars_texts(command: list[str]) -> list[str]:
    """What each `-e` of an ansible-playbook command line gives Ansible: a file's text (`@file`) or the value."""
    return [Path(extra[1:]).read_text() if extra.startswith("@") else extra for extra in extravars_of(command)]


def _extravars(sc: Scene) -> dict[str, Output]:
    if not sc.inventory or not (sc.cfg.fleets.edge or sc.cfg.fleets.servers):
        return {}  # `cnctl deploy` deploys fleets (cloud VMs through hosts/cloud.py, pyinfra)
    return {f"controller/-e#{i}": text for i, text in enumerate(extravars_texts(extravars_command(sc)))}


def _refused_or(build: Callable[[], Output]) -> Output:
    """`build()`, or a Refusal where the controller's code refuses the value (exit 2, naming the field)."""
    try:
        return build()
    except UsageProblem as exc:
        return Refusal(f"{type(exc).__name__}: {exc}")


def _refused_or_value_error(build: Callable[[], Output]) -> Output:
    """`build()`, or a Refusal where the renderer refuses a value, naming it (ValueError: nothing is rendered)."""
    try:
        return build()
    except ValueError as exc:
        return Refusal(f"{type(exc).__name__}: {exc}")


def _health_commands(sc: Scene) -> dict[str, Output]:
    from cnctl.rollout import health_command

    return {label: _refused_or(functools.partial(health_command, h)) for label, h in sc.inventory if h.group != "cloud"}


def _ssh_commands(sc: Scene) -> dict[str, Output]:
    from cnctl.remote import ssh_argv
    from cnctl.rollout import health_command
    from cnctl.status import remote_command

    out: dict[str, Output] = {}
    for label, h in sc.inventory:
        out[f"{label}:status"] = ssh_argv(h.ssh, remote_command())
        if h.group != "cloud":
            out[f"{label}:rollout"] = _refused_or(functools.partial(lambda host: ssh_argv(host.ssh, health_command(host)), h))
    return out


def _status_command(sc: Scene) -> dict[str, Output]:
    from cnctl.status import remote_command

    return {label: remote_command() for label, _ in sc.inventory}


def _proxy_commands(sc: Scene) -> dict[str, Output]:
    return {h.label: iap_proxy_command(h.entry) for h in sc.hosts if h.entry in sc.vms}


def _startup(workers: bool) -> Callable[[Scene], dict[str, Output]]:
    def render(sc: Scene) -> dict[str, Output]:
        cfg = sc.cfg
        if cfg.gcp is None or cfg.compute is None or (workers and cfg.compute.mode != "group") or \
                (not workers and cfg.compute.mode != "vms"):
            return {}
        # the Ops Agent's apt source (templates/apt/source.list.j2) refuses a mirror it cannot hold as one field
        return {"cloud/startup-script": _refused_or_value_error(lambda: render_startup_script(cfg, workers=workers))}

    return render


def _template_kind(src: str) -> str:
    if src.startswith("systemd/"):
        return "unit"
    if src.endswith(".json.j2"):
        return "json"
    if src.endswith(".yml.j2"):
        return "yaml"
    return "apt-source" if src == "apt/source.list.j2" else "lines"


STARTUP_TEMPLATE = "gce-startup.sh.j2"


def host_templates() -> list[str]:
    """Every template the host layers render (all of templates/ but the startup script), by path."""
    return sorted(str(p.relative_to(TEMPLATES_DIR)) for p in TEMPLATES_DIR.rglob("*.j2")
                  if p.name != STARTUP_TEMPLATE)


# The host layers' commands: this repository's pyinfra operations (what they yield) and facts (their command()),
# each with the builders they call. pyinfra's own operations and facts quote their arguments themselves.
HOST_COMMANDS: dict[str, tuple[str, ...]] = {
    "deploy/steps.py:refused": ("deploy/steps.py:fail",),
    "deploy/steps.py:verified": ("deploy/steps.py:fail",),
    "deploy/steps.py:key_installed": (),
    # the layers that give after_change its restart commands (shlex.join of a unit name)
    "deploy/steps.py:after_change": ("deploy/inference.py:inference", "deploy/pipeline.py:_running", "deploy/pull.py:pull",
                                     "deploy/verify.py:verify", "deploy/monitoring.py:monitoring",
                                     "deploy/monitoring.py:_running", "deploy/monitoring.py:site_results"),
    "deploy/steps.py:index_refreshed": (),
    "deploy/steps.py:held": (),
    "deploy/nvidia.py:driver_settled": (),
    "deploy/jetson.py:power_mode": (),
    "deploy/container.py:nvidia_runtime_configured": ("deploy/rules/container.py:configure_command",),
    "deploy/model.py:model_synced": ("deploy/rules/scripts.py:model_command", "deploy/rules/scripts.py:command_line",
                                     "deploy/rules/scripts.py:program", "deploy/rules/scripts.py:unless_absent"),
    "deploy/inference.py:image_pulled": (),
    "deploy/inference.py:venv_created": (),
    "deploy/inference.py:wheels_installed": ("deploy/rules/inference.py:pip_install_command",),
    "deploy/inference.py:model_served": ("deploy/rules/scripts.py:serve_command", "deploy/rules/scripts.py:command_line",
                                         "deploy/rules/scripts.py:program", "deploy/rules/scripts.py:unless_absent"),
    "deploy/pipeline.py:archive_fetched": (),
    "deploy/pipeline.py:archive_unpacked": ("deploy/rules/pipeline.py:unpack_command",),
    "deploy/pipeline.py:wheels_installed": ("deploy/rules/pipeline.py:install_command", "deploy/rules/inference.py:pip_install_command"),
    "deploy/pull.py:tree_pruned": (),
    "deploy/verify.py:healthy": ("deploy/steps.py:fail",),
    "deploy/rules/facts.py:OsIdentity": ("deploy/rules/facts.py:OsIdentity.command",),
    "deploy/rules/facts.py:NvidiaGpus": ("deploy/rules/facts.py:NvidiaGpus.command", "deploy/rules/facts.py:NvidiaGpus.requires_command"),
    "deploy/rules/facts.py:NvccRelease": ("deploy/rules/facts.py:NvccRelease.command",),
    "deploy/rules/facts.py:TegraRelease": ("deploy/rules/facts.py:TegraRelease.command",),
    "deploy/rules/facts.py:SecureBoot": ("deploy/rules/facts.py:SecureBoot.command",),
    "deploy/rules/facts.py:LoadedModules": ("deploy/rules/facts.py:LoadedModules.command",),
    "deploy/rules/facts.py:AptHolds": ("deploy/rules/facts.py:AptHolds.command", "deploy/rules/facts.py:AptHolds.requires_command"),
    "deploy/rules/facts.py:DpkgVersions": ("deploy/rules/facts.py:DpkgVersions.command",
                                     "deploy/rules/facts.py:DpkgVersions.requires_command"),
    "deploy/rules/facts.py:NvpmodelMode": ("deploy/rules/facts.py:NvpmodelMode.command",
                                     "deploy/rules/facts.py:NvpmodelMode.requires_command"),
    "deploy/rules/facts.py:DockerRuntimes": ("deploy/rules/facts.py:DockerRuntimes.command",
                                       "deploy/rules/facts.py:DockerRuntimes.requires_command"),
    "deploy/rules/facts.py:ModelRepository": ("deploy/rules/facts.py:ModelRepository.command",),
    "deploy/rules/facts.py:HostPython": ("deploy/rules/facts.py:HostPython.command",),
    "deploy/rules/facts.py:DockerImage": ("deploy/rules/facts.py:DockerImage.command", "deploy/rules/facts.py:DockerImage.requires_command"),
    "deploy/rules/facts.py:InterfaceAddress": ("deploy/rules/facts.py:InterfaceAddress.command",),
    "deploy/rules/facts.py:TritonServing": ("deploy/rules/facts.py:TritonServing.command",),
    "deploy/rules/facts.py:VenvPackages": ("deploy/rules/facts.py:VenvPackages.command",),
    "deploy/rules/facts.py:NvidiaCtkDaemonJson": ("deploy/rules/facts.py:NvidiaCtkDaemonJson.command",
                                            "deploy/rules/facts.py:NvidiaCtkDaemonJson.requires_command"),
    "deploy/platform.py:SudoUid": ("deploy/platform.py:SudoUid.command",),
    "deploy/platform.py:SystemdState": ("deploy/platform.py:SystemdState.command",),
    "deploy/pull.py:PathsPresent": ("deploy/pull.py:PathsPresent.command", "deploy/rules/pull.py:present_command"),
    "deploy/pull.py:TreePaths": ("deploy/pull.py:TreePaths.command", "deploy/pull.py:tree_command"),
    "deploy/verify.py:HealthReport": ("deploy/verify.py:HealthReport.command", "deploy/rules/verify.py:check_command",
                                      "deploy/rules/scripts.py:program", "deploy/rules/scripts.py:unless_absent"),
}


# the startup script's renderer, the filters every value of it goes through (quoted words, base64), and what its Ops
# Agent section writes (the apt source and pin from templates/apt/, the agent's config)
STARTUP_BUILDERS = ("cnctl/cloud/startup.py:render_startup_script", "cnctl/cloud/startup.py:render_script",
                    "cnctl/cloud/startup.py:sh", "cnctl/cloud/startup.py:sh_words", "cnctl/cloud/startup.py:b64",
                    "cnctl/cloud/startup.py:ops_agent_bootstrap", "cnctl/cloud/ops_agent.py:agent_config",
                    "cnctl/cloud/ops_agent.py:scrape_target")
ANSIBLE_INVENTORY = "Ansible inventory (cnctl inventory --engine ansible)"
EXTRA_VARS = "Ansible extra vars (cnctl deploy --engine ansible, through ansible-runner)"


def _sinks() -> list[Sink]:
    sinks = [Sink(f"templates/{src}", HOST, _template_kind(src), (f"templates/{src}",), _templates_of(src),
                  engines=("pyinfra", "ansible")) for src in host_templates()]
    sinks += [Sink(f"host command {builder}", f"{HOST}, over SSH (pyinfra) or as the roles' tasks (Ansible)", "shell",
                   (builder, *extra), _commands_of(builder)) for builder, extra in HOST_COMMANDS.items()]
    sinks += [
        Sink("host command deploy/rules/probe.py:script (the roles' facts in one round trip)", HOST, "shell",
             ("deploy/rules/probe.py:script", "deploy/rules/facts.py:UnitsActive.command",
              "deploy/rules/facts.py:DebArch.command", "deploy/rules/facts.py:DebArch.requires_command",
              "deploy/rules/facts.py:Fact.requires_command"), _probe_scripts),
        Sink("ffmpeg command line (cnhost/capture.py, no shell)", "each edge device with a v4l2 or rtsp camera, as the "
             "pipeline's user", "argv", ("cnhost/capture.py:ffmpeg_argv",), _capture_argv),
        Sink("client command line (cnhost/pipeline_run.py, no shell)", "each host's pipeline run, as the pipeline's user",
             "argv", ("cnhost/pipeline_run.py:client_argv",), _client_argv),
        Sink(ANSIBLE_INVENTORY, CONTROLLER, "yaml", ("cnctl/inventory.py:ansible_inventory_text",
                                                      "cnctl/inventory.py:ansible_vars"), _inventory_text("ansible"),
             slow=True),
        Sink("pyinfra inventory (cnctl inventory --engine pyinfra)", CONTROLLER, "python",
             ("cnctl/inventory.py:pyinfra_module_text",), _inventory_text("pyinfra"), slow=True),
        Sink("ssh_config of the cloud VMs (pyinfra's SSH client)", CONTROLLER, "lines",
             ("cnctl/inventory.py:ssh_config_text",), _inventory_text("ssh_config")),
        Sink(EXTRA_VARS, CONTROLLER, "yaml", ("cnctl/engines/ansible.py:runner_args", "cnctl/engines/ansible.py:write_extravars",
                                              "cnctl/engines/target.py:for_stack"), _extravars, slow=True),
        Sink("IAP ProxyCommand (cnctl/inventory.py)", f"{CONTROLLER}, run by ssh through the user's shell", "shell",
             ("cnctl/inventory.py:iap_proxy_command",), _proxy_commands, argv=True, controller=True),
        Sink("rollout health command (cnctl model rollout/rollback)", "each fleet host over SSH, its login shell, sudo",
             "shell", ("cnctl/rollout.py:health_command", "cnctl/rollout.py:health_command.<locals>.mark",
                      "cnctl/rollout.py:serve_where"), _health_commands, argv=True),
        Sink("status command (cnctl status)", "each host over SSH, its login shell, sudo", "shell",
             ("cnctl/status.py:remote_command",), _status_command, argv=True),
        Sink("ssh command lines (cnctl/remote.py: status and rollout)", f"{CONTROLLER} (no shell), then the host's",
             "ssh-argv", ("cnctl/remote.py:ssh_argv",), _ssh_commands, controller=True),
        Sink("GCE startup script of the fixed GPU VMs", "each cloud VM at every boot, as root", "shell",
             (*STARTUP_BUILDERS, f"templates/{STARTUP_TEMPLATE}"), _startup(False)),
        Sink("GCE startup script of the worker group (pull bootstrap)", "each worker VM at every boot, as root", "shell",
             (*STARTUP_BUILDERS, "cnctl/cloud/startup.py:pull_bootstrap", f"templates/{STARTUP_TEMPLATE}"),
             _startup(True)),
    ]
    return sinks


SINKS: list[Sink] = _sinks()
BY_NAME: dict[str, Sink] = {s.name: s for s in SINKS}


def shape(sink: Sink, output: Output) -> Any:
    """The structure of one output of `sink` (tests/unit/sink_shapes.py)."""
    if sink.kind == "argv":
        assert isinstance(output, list)
        return sink_shapes.argv_shape(output)
    if sink.kind == "ssh-argv":
        assert isinstance(output, list)
        proxy = [shell_shape.shape(a.removeprefix("ProxyCommand=")) for a in output if a.startswith("ProxyCommand=")]
        return (len(output), shell_shape.shape(output[-1]), tuple(proxy))
    assert isinstance(output, str)
    found = sink_shapes.SHAPES[sink.kind](output)
    if sink.argv:  # a command line the controller sends: shlex's and bash's grammar's views of its words too
        return (found, shell_shape.shlex_words(output), sink_shapes.command_lengths(output))
    return found


def render_all(sc: Scene, sinks: list[Sink] | None = None) -> dict[str, dict[str, Output]]:
    return {s.name: s.render(sc) for s in (sinks if sinks is not None else SINKS)}


# --- taint: which field reaches which sink --------------------------------------------------------------------

_TAG_ALPHABETS = ("abcdefghijklmnopqrstuvwxyz", "0123456789abcdef", "0123456789")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}")


def tag(index: int, alphabet: str, width: int = 3) -> str:
    """A marker unlikely anywhere else: `zq` + the index in letters + `x` (hex: `dead` + hex digits; digits:
    `864` + digits)."""
    head = {0: "zq", 1: "dead", 2: "864"}[_TAG_ALPHABETS.index(alphabet)]
    digits = ""
    for _ in range(width):
        index, rest = divmod(index, len(alphabet))
        digits += alphabet[rest]
    return head + digits[::-1] + ("x" if alphabet[0] == "a" else "")


def _candidates(value: str, index: int) -> Iterator[tuple[str, str]]:
    """(value, what to search for): values like `value` that carry a marker of field `index` (appended,
    prepended, in place of its tail, in a URL's host, inserted), and an IPv6 address made of it. A marker of
    digits is searched with the rest of the value around it (digits alone are everywhere)."""
    for alphabet in _TAG_ALPHABETS:
        marker = tag(index, alphabet)
        shapes = [value + marker, marker + value, value + "-" + marker, value + "." + marker, value + "/" + marker,
                  value + "_" + marker, value + " " + marker]
        if len(value) > len(marker):
            shapes += [value[: -len(marker)] + marker, marker + value[len(marker):]]
        if "://" in value:
            scheme, _, rest = value.partition("://")
            shapes += [f"{scheme}://{marker}.{rest}", f"{value.rstrip('/')}/{marker}"]
        shapes += [value[:i] + marker + value[i:] for i in sorted({1, len(value) // 2, len(value) - 1}) if 0 < i < len(value)]
        for candidate in [*shapes, marker]:
            yield candidate, (marker if alphabet != "0123456789" else candidate)
    group = f"d{index:03x}"
    yield f"fd00::{group}:{group}", f"{group}:{group}"


MAX_CHECKED = 6


def canary(fld: Field, name: str, loc: Loc, index: int) -> tuple[str, str] | None:
    """(value, what to search for): a value of `fld` the stack accepts at `loc` of base `name` that holds a
    marker of its own; None when there is none (a value from a fixed list, or one the marker cannot fit)."""
    value = str(value_at(raw_sections(name)[1], loc))
    checked = 0
    for candidate, needle in _candidates(value, index):
        try:
            fld.adapter.validate_python(candidate)
        except ValueError:
            continue
        try:
            with_field(name, loc, candidate)
        except StackConfigError:
            checked += 1
            if checked == MAX_CHECKED:  # the syntax is right, a rule across fields says no: a catalog's value
                return None
            continue
        return candidate, needle.lower()
    return None


def bypass_canary(value: str, index: int) -> tuple[str, str]:
    """A marked value past the schema: the value with the field's marker appended."""
    marker = tag(index, _TAG_ALPHABETS[0])
    return value + marker, marker


def trace_text(output: Output) -> str:
    """An output as searched for markers: lowercased, with its base64 runs decoded next to it."""
    text = "\x00".join(output) if isinstance(output, list) else output
    decoded = []
    for run in _BASE64_RUN.findall(text):
        try:
            decoded.append(base64.b64decode(run + "=" * (-len(run) % 4)).decode("utf-8", "replace"))
        except ValueError:
            continue
    return "\n".join([text, *decoded]).lower()


@dataclass
class Trace:
    """One field's way through the sinks: per base that sets it, where its value is and which outputs (by label,
    `<group>/<host index>...`) of which sink hold its marker. `canaries` are values the stack accepts;
    `bypassed` are the bases where no such value exists and the marker was placed past the schema; `refused`
    the bases where even that stops the code path (a catalog key not in the catalog)."""

    field: Field
    index: int
    places: dict[str, Loc] = dataclass_field(default_factory=dict)
    canaries: dict[str, tuple[str, str]] = dataclass_field(default_factory=dict)  # base -> (value, needle)
    bypassed: set[str] = dataclass_field(default_factory=set)
    refused: set[str] = dataclass_field(default_factory=set)
    reach: dict[str, dict[str, set[str]]] = dataclass_field(default_factory=dict)  # base -> sink -> labels

    @property
    def sinks(self) -> dict[str, set[str]]:
        """sink -> where it lands for this field: the host groups, or `controller`, over every base."""
        out: dict[str, set[str]] = {}
        for by_sink in self.reach.values():
            for sink, labels in by_sink.items():
                groups = {"controller"} if BY_NAME[sink].controller else {label.split("/")[0] for label in labels}
                out.setdefault(sink, set()).update(groups)
        return out

    def labels(self, base_name: str, sink: str) -> set[str]:
        return self.reach.get(base_name, {}).get(sink, set())

    def __repr__(self) -> str:  # hypothesis prints it with every falsifying example
        return f"Trace({self.field.path})"


@functools.cache
def traces() -> tuple[Trace, ...]:
    """`trace()` once per process: the suite's parametrization, its checks and the map all read it."""
    return tuple(trace())


def trace() -> list[Trace]:
    """Every string field with a marker of its own, in every base that sets it, and every sink rendered once per
    base with all the markers in at once: the sink map. A field that cannot hold a marker the stack accepts
    (an address, a catalog key) is marked past the schema, in a second rendering of the base."""
    traces = [Trace(fld, i) for i, fld in enumerate(string_fields())]
    for name in BASES:
        raw = raw_sections(name)[1]
        for t in traces:
            loc = place(name, t.field)
            if loc is None or _reference(raw_sections(name)[1], t.field, loc):
                continue
            t.places[name] = loc
            found = canary(t.field, name, loc, t.index)
            if found is not None:
                t.canaries[name] = found
                now = locate(raw, t.field.parts)  # a mapping key marked before moves its values' place
                assert now is not None
                raw = with_value(raw, now, found[0])
        cfg = validated({k: v for k, v in raw.items() if k != "environment"}, raw["environment"])
        needles = {t.index: t.canaries[name][1] for t in traces if name in t.canaries}
        cfg = _bypassed(traces, name, cfg, needles)
        marked = scene(cfg)
        if marked.refused:
            raise AssertionError(f"base {name} with every field marked: a layer refuses {marked.refused}")
        _mark(traces, name, marked, needles)
    return traces


# A field that names another entry (monitoring.server names a fleets.servers entry): its value lands nowhere of
# its own, and neither it nor the entry it names is marked, or the reference would break and hide every sink of
# what it enables (the site's Prometheus and Alertmanager). Other bases mark the entries' names.
REFERENCES = {"monitoring.server": "fleets.servers[].name"}


def _reference(raw: Mapping[str, Any], fld: Field, loc: Loc) -> bool:
    """Is `fld` at `loc` of the raw base a reference, or the entry a reference of the base names?"""
    if fld.path in REFERENCES:
        return True
    if fld.path not in REFERENCES.values():
        return False
    named = {str(value_at(raw, where)) for path, target in REFERENCES.items() if target == fld.path
             for where in [locate(raw, tuple(path.split(".")))] if where is not None}
    return str(value_at(raw, loc)) in named


def _bypassed(traces: list[Trace], name: str, cfg: StackConfig, needles: dict[int, str]) -> StackConfig:
    """`cfg` with a marker past the schema in each field of base `name` that has no canary, unless that alone
    stops the code path (the field's `refused`); their needles added to `needles`."""
    for t in traces:
        if name not in t.places or name in t.canaries:
            continue
        value, needle = bypass_canary(str(value_at(raw_sections(name)[1], t.places[name])), t.index)
        try:
            stopped = bool(scene(bypassing(base(name), t.places[name], value)).refused)
        except NotRendered:
            stopped = True
        if stopped:  # a catalog lookup or a layer refuses it: nothing of it is written anywhere
            t.refused.add(name)
            continue
        t.bypassed.add(name)
        cfg = bypassing(cfg, locate(_sections(cfg), t.field.parts) or t.places[name], value)
        needles[t.index] = needle
    return cfg


def _sections(cfg: StackConfig) -> dict[str, Any]:
    return cfg.model_dump(by_alias=True, exclude_none=True)


def _mark(traces: list[Trace], name: str, sc: Scene, needles: dict[int, str]) -> None:
    """Record, for each field of `needles` (index -> the string its marker is), the outputs that hold it."""
    texts = {sink: {label: trace_text(out) for label, out in by_label.items()}
             for sink, by_label in render_all(sc).items()}
    for t in traces:
        needle = needles.get(t.index)
        if needle is None:
            continue
        for sink, by_label in texts.items():
            labels = {label for label, text in by_label.items() if needle in text}
            if labels:
                t.reach.setdefault(name, {})[sink] = labels


# --- what a base renders, for comparing a hostile rendering with ------------------------------------------------

HOST_LABEL = re.compile(r"^(edge|servers|cloud)/\d+")


def host_of(label: str) -> str | None:
    """The scene host an output label belongs to (None: a controller-wide output such as an inventory)."""
    match = HOST_LABEL.match(label)
    return match.group() if match else None


@functools.cache
def benign(name: str, slow: bool = False) -> dict[str, dict[str, Any]]:
    """sink -> label -> shape of base `name` as it is (`slow`: the slow sinks too)."""
    sc = scene(base(name))
    chosen = [s for s in SINKS if slow or not s.slow]
    return {sink: {label: shape(BY_NAME[sink], out) for label, out in by_label.items()}
            for sink, by_label in render_all(sc, chosen).items()}
