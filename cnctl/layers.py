"""The host layers: the one list. Data only, no imports, so that every reader can take it cheaply.

Each layer is a pyinfra deploy (`deploy/<name>.py`) and an Ansible role (`roles/<name>`) of the same name.
deploy.py applies them in this order (CNCTL_LAYERS chooses some); playbooks/site.yml lists its roles in this
order, tagged with these names (tests/unit/test_deploy_layers.py holds it to this module); `cnctl deploy
--layers` checks its option against it; a rollout applies ROLLOUT.

`platform` always applies (the Ansible tag `always`): it detects the host and refuses an unsupported one before
anything changes. `jetson` applies to Jetson hosts only, `nvidia` to servers and cloud VMs only (their
`cn_platform`). `pull` is last: it installs (pull hosts) or removes (push hosts) the agent that applies the
stack's signed bundle, once the host is otherwise configured and healthy.
"""

from __future__ import annotations

LAYERS = ("platform", "jetson", "nvidia", "container", "model", "inference", "pipeline", "monitoring", "verify", "pull")
ALWAYS = "platform"
# The layers only one platform (a host's cn_platform) takes; every other layer applies to both.
PLATFORM_ONLY = {"jetson": "jetson", "nvidia": "server"}
# What `cnctl model rollout` and `rollback` apply to each batch: the model, Triton serving it, the health report.
ROLLOUT = ("model", "inference", "verify")


class UnknownLayers(ValueError):
    """A layer list names no layer, or one that is not a host layer. The message names them and the choices."""


def chosen(text: str) -> tuple[str, ...]:
    """The layers a comma list names (CNCTL_LAYERS, `--layers`), in the order they apply, platform always
    among them; UnknownLayers when the list is empty or names a layer that does not exist."""
    names = {name.strip() for name in text.split(",") if name.strip()}
    unknown = sorted(names - set(LAYERS))
    if unknown or not names:
        raise UnknownLayers(f"{', '.join(unknown) or 'no layer'} is not a host layer; choose from {', '.join(LAYERS)}")
    return tuple(name for name in LAYERS if name in names | {ALWAYS})


def for_platform(platform: str | None, layers: tuple[str, ...] = LAYERS) -> tuple[str, ...]:
    """Of `layers`, those a host of `platform` (`jetson` or `server`) takes, in order."""
    return tuple(name for name in layers if PLATFORM_ONLY.get(name, platform) == platform)
