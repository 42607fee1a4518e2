"""The GCE startup script, the cloud VMs' bootstrap: rendered once per stack from templates/gce-startup.sh.j2."""

from __future__ import annotations

import base64
import importlib
import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import jinja2

from cnctl.bundle import namespace, prefix
from cnctl.bundle.signing import allowed_signers
from cnctl.catalog import catalog
from cnctl.cloud import ops_agent
from cnctl.config.loader import ROOT
from cnctl.config.schema import StackConfig
from cnctl.hostvars import CloudVm, host_vars, mirrored, pulls_from_startup, stack_vars
from cnctl.paths import REPO_ROOT

TEMPLATES = ROOT / "templates"
STARTUP_TEMPLATE = "gce-startup.sh.j2"

# Where the script records the stack (`stack.json`) and its bootstrap result (`bootstrap.json`) on a VM,
# for the host layers and operators.
STACK_DIR = "/etc/circularnet"

# How long the script waits for `nvidia-smi`: a Deep Learning VM image's first-boot driver install
# takes a few minutes; 60 tries 10 s apart bound the wait at ten minutes.
NVIDIA_ATTEMPTS = 60
NVIDIA_WAIT_SECONDS = 10

# A worker group's VM fills its own name and zone into the agent's config at boot (they are known only there;
# the script's sed takes them as patterns: letters, digits, `_` and `@` only).
VM_NAME_PLACEHOLDER = "@CNCTL_VM_NAME@"
VM_ZONE_PLACEHOLDER = "@CNCTL_VM_ZONE@"
# The Ops Agent (cnctl/cloud/ops_agent.py): where its repository's key, source and pin go, the placeholder of the
# VM's codename in its source (known at boot; letters, digits, `_` and `@` only: a sed pattern), and how long apt
# may take: a few bounded tries of each step, each under a timeout, so a VM that cannot reach the repository still
# boots in bounded time (the failure is recorded, never fatal).
OPS_AGENT_KEYRING = "/etc/apt/keyrings/google-cloud-ops-agent.gpg"
OPS_AGENT_SOURCE = "/etc/apt/sources.list.d/google-cloud-ops-agent.list"
OPS_AGENT_PINS = "/etc/apt/preferences.d/google-cloud-ops-agent"
CODENAME_PLACEHOLDER = "@CNCTL_CODENAME@"
OPS_AGENT_APT_TRIES = 3
OPS_AGENT_APT_TIMEOUT = 120
OPS_AGENT_APT_WAIT_SECONDS = 5  # between tries
GCS_API = "https://storage.googleapis.com"
METADATA = "http://metadata.google.internal"
PULL_CHANNEL = "stable"  # a group has no canaries: every VM of it runs the same version (cnctl.hostvars)


def stack_record(cfg: StackConfig) -> dict[str, Any]:
    """What a cloud VM knows about its stack: the model pin, how inference listens, where data goes."""
    model = catalog().models.models[cfg.model.key]
    buckets = cfg.storage.buckets
    return {
        "environment": cfg.environment,
        "project": cfg.gcp.project if cfg.gcp else None,
        "model": {
            "key": cfg.model.key,
            "version": cfg.model.version,
            "sha256": cfg.model.sha256,
            "url": cfg.model.url or model.url,
            "generation": model.generation,
        },
        "inference": {
            "bindAddress": cfg.inference.bind_address,
            "ports": cfg.inference.ports.model_dump(by_alias=True),
        },
        "buckets": {"images": buckets.images, "results": buckets.results, "models": buckets.models},
        # the table the deployed model's client generation appends to (docs/cloud.md, generation upgrade)
        "bigquery": {"dataset": cfg.analytics.dataset, "table": cfg.analytics.table_of(model.generation)},
    }


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # a shell script, not HTML
    )


class ShellText(str):
    """Text that may stand in a shell script as it is: quoted words (shlex.quote) or base64."""


def sh(value: str | int) -> ShellText:
    """`value` as one shell word, whatever it holds."""
    return ShellText(shlex.quote(str(value)))


def sh_words(values: Sequence[str]) -> ShellText:
    """`values` as shell words, one each (inside `( )`: a bash array)."""
    return ShellText(" ".join(shlex.quote(str(v)) for v in values))


def b64(text: str) -> ShellText:
    """`text` (a file) as base64: one word of [A-Za-z0-9+/=], which `base64 -d` turns back into the same bytes."""
    return ShellText(base64.b64encode(text.encode()).decode("ascii"))


def shell_only(value: object) -> object:
    """Every `{{ }}` of the script: a ShellText or a number, else TypeError naming it (a value left unquoted)."""
    if isinstance(value, ShellText) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise TypeError(f"{STARTUP_TEMPLATE} puts {value!r} into the script as it is: pass it through | sh, | sh_words "
                    "or | b64")


def _script_environment() -> jinja2.Environment:
    """The startup script's Jinja: every value goes in through `sh`, `sh_words` or `b64` (or is a number)."""
    env = _environment()
    env.filters.update(sh=sh, sh_words=sh_words, b64=b64)
    env.finalize = shell_only
    return env


def object_path(*parts: str) -> str:
    """A Cloud Storage object name (`/`-joined `parts`) as the JSON API takes it in a URL path: every byte but
    unreserved ones percent-encoded, `/` too."""
    return quote("/".join(parts), safe="")


def _pull_layer() -> tuple[Any, Any, Any]:
    """deploy/rules/pull.py (its `wheels` and `agent_config`), the roles' settings (deploy/rules/roles.py) and
    deploy/rules/inference.py's `pip_index_args`: the pull layer's own builders, pyinfra-free, so the startup script
    installs what the layer installs. The repository root goes on sys.path (the `cnctl` console script runs from
    anywhere)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    # by name at run time: deploy/ is the host side, which `mypy cnctl` does not check
    pull, roles, inference = (importlib.import_module(f"deploy.rules.{name}") for name in ("pull", "roles", "inference"))
    return pull, lambda role: roles.role_data(REPO_ROOT / "roles", role), inference.pip_index_args


def pull_bootstrap(cfg: StackConfig) -> dict[str, Any] | None:
    """What a worker group's VM needs to apply the stack's bundle at boot (templates/gce-startup.sh.j2's pull
    section), None for a stack whose cloud VMs are configured by push (`cnctl.hostvars.pulls_from_startup`).

    Every value is the pull layer's: its paths (roles/pull defaults), its wheels and requirements template, its
    agent config builder (rendered through templates/pull/agent.json.j2 with the VM's name and zone left as
    placeholders the script fills in), and the stack's signers as `cnctl.bundle.signing.allowed_signers` writes
    them."""
    if not pulls_from_startup(cfg):
        return None
    assert cfg.gcp is not None and cfg.bundle is not None
    if cfg.storage.kind != "gcs":  # the stack checks refuse this in a stack with a `gcp` section
        raise ValueError(f"stack {cfg.environment}: a worker group's VMs read bundles from Cloud Storage only")
    layer, role_data, pip_index_args = _pull_layer()
    data = role_data("pull")
    vm = CloudVm(name=VM_NAME_PLACEHOLDER, zone=VM_ZONE_PLACEHOLDER, project=cfg.gcp.project, internal_ip="",
                 ssh_user="root")
    wants = host_vars(cfg, "cloud", vm)
    assert wants["cn_deploy_mode"] == "pull" and wants["cn_pull_channel"] == PULL_CHANNEL
    env = _environment()
    config = layer.agent_config(wants, data, role_data("pipeline")["pipeline_credentials"])
    bucket, objects = cfg.storage.buckets.models, prefix(cfg.environment)
    return {
        "stack": cfg.environment,
        "bucket": bucket,
        "bucket_path": object_path(bucket),
        "channel": PULL_CHANNEL,
        "channel_json": json.dumps(PULL_CHANNEL),  # as pull.json carries it
        "prefix": objects,
        "pointer_object": object_path(objects, "channels", f"{PULL_CHANNEL}.json"),
        "versions_object": object_path(objects, ""),
        "namespace": namespace(cfg.environment),
        "gcs_api": (cfg.storage.endpoint or GCS_API).rstrip("/"),
        "metadata": METADATA,
        "allowed_signers": allowed_signers(cfg.bundle.signers, namespace(cfg.environment)),
        "requirements": env.get_template("triton/requirements.txt.j2").render(wheels=layer.wheels(wants)),
        "pip_args": pip_index_args(wants["cn_python_index_url"]),
        "agent_config": env.get_template("pull/agent.json.j2").render(agent_config=config),
        "name_placeholder": VM_NAME_PLACEHOLDER,
        "zone_placeholder": VM_ZONE_PLACEHOLDER,
        "apt_packages": list(data["pull_apt_packages"]),
        "venv": data["pull_venv"],
        "requirements_path": data["pull_requirements"],
        "config": data["pull_config"],
        "state": data["pull_state"],
        "timer": f"/etc/systemd/system/{data['pull_unit']}.timer",
    }


def ops_agent_bootstrap(cfg: StackConfig) -> dict[str, Any]:
    """What the script's Ops Agent section installs and writes (templates/gce-startup.sh.j2): the catalog's package
    and version pin, its key's URL and fingerprints, the apt source and pin as the host layers write theirs
    (templates/apt/source.list.j2 and preferences.j2, rendered here: the VM's codename left as a placeholder), the
    stack's mirrors.opsAgentApt in place of Google's base URL, and the agent's config (cnctl/cloud/ops_agent.py)
    scraping node-exporter where the stack's inference binds (`cn_inference_bind_address`, or the address of
    `cn_inference_bind_interface` at boot). ValueError naming the mirror when the apt source refuses it."""
    agent = catalog().gcp.ops_agent
    if agent is None:
        raise ValueError("the catalog (cnctl/catalog/gcp.yaml) has no ops_agent section")
    mirror = cfg.mirrors.ops_agent_apt
    base = mirrored(agent.base_url, agent.base_url, mirror)
    wants = stack_vars(cfg)
    env = _environment()
    source = {"uri": base, "suite": agent.suite.format(codename=CODENAME_PLACEHOLDER), "components": [agent.component],
              "signed_by": OPS_AGENT_KEYRING}
    try:
        source_list = env.get_template("apt/source.list.j2").render(
            description="Google Cloud Ops Agent (written by the GCE startup script)", sources=[source])
    except jinja2.UndefinedError as exc:  # a value with whitespace or `#`: the template names it
        raise ValueError(f"mirrors.opsAgentApt {mirror!r}: {exc}") from None
    pins = env.get_template("apt/preferences.j2").render(
        description="Google Cloud Ops Agent: its major version (written by the GCE startup script)",
        pins=[{"packages": [agent.package], "version": agent.version}])
    interface = wants["cn_inference_bind_interface"]
    return {
        "package": agent.package,
        "version": agent.version,
        "key_url": mirrored(agent.key_url, agent.base_url, mirror),
        "fingerprints": list(agent.key_fingerprints),
        "source": source_list,
        "pins": pins,
        "config": ops_agent.agent_config(ops_agent.job_name(cfg.environment),
                                         ops_agent.scrape_target(wants["cn_inference_bind_address"], interface,
                                                                 wants["cn_monitoring_exporter_port"])),
        "interface": interface or "",
        "address_placeholder": ops_agent.ADDRESS_PLACEHOLDER,
        "codename_placeholder": CODENAME_PLACEHOLDER,
        "keyring": OPS_AGENT_KEYRING,
        "source_path": OPS_AGENT_SOURCE,
        "pins_path": OPS_AGENT_PINS,
        "config_path": ops_agent.CONFIG_PATH,
        "service": ops_agent.SERVICE,
    }


def template_values(cfg: StackConfig, workers: bool = False) -> dict[str, Any]:
    """What templates/gce-startup.sh.j2 is rendered with (see `render_startup_script`)."""
    return {
        "environment": cfg.environment,
        "stack_dir": STACK_DIR,
        "stack_json": json.dumps(stack_record(cfg), indent=2, sort_keys=True) + "\n",
        "os_login": "TRUE" if cfg.security.os_login else "FALSE",
        "nvidia_attempts": NVIDIA_ATTEMPTS,
        "nvidia_wait_seconds": NVIDIA_WAIT_SECONDS,
        "ops_agent": ops_agent_bootstrap(cfg),
        "ops_agent_apt_tries": OPS_AGENT_APT_TRIES,
        "ops_agent_apt_timeout": OPS_AGENT_APT_TIMEOUT,
        "ops_agent_apt_wait_seconds": OPS_AGENT_APT_WAIT_SECONDS,
        "pull": pull_bootstrap(cfg) if workers else None,
    }


def render_script(values: Mapping[str, Any]) -> str:
    """templates/gce-startup.sh.j2 with `values`, every one of them quoted or base64 (`shell_only`)."""
    return _script_environment().get_template(STARTUP_TEMPLATE).render(**values)


def render_startup_script(cfg: StackConfig, workers: bool = False) -> str:
    """The bootstrap for the stack's GPU VMs (all fixed VMs of a stack get the same one). `workers`: the script of
    the worker group's template, which also applies the stack's bundle when the stack has a `bundle` section
    (`pull_bootstrap`); otherwise it is the fixed VMs' script, byte for byte."""
    return render_script(template_values(cfg, workers))
