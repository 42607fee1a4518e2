"""The pyinfra host layers run for one host without a host: what they would write and run there, recorded.

Each layer's deploy function (deploy/*.py, the `_inner` of its `@deploy`) runs as `deploy.py` runs it, with
the host's real variables (`cnctl.hostvars.host_vars`) as host data. pyinfra itself is replaced where it would
reach a host:

- `host.get_fact` answers from FACTS (a fresh host: nothing installed, nothing running), so every branch that
  installs something is taken; the command a fact of this repository would run is recorded (its `command()`);
- pyinfra's own operations (files, apt, systemd, server) record their arguments and run nothing; a
  `files.template` call is a template with the variables the layer gives it;
- this repository's operations (`@operation` in deploy/*.py) run their generator (`_inner`), and the commands
  they yield are recorded, as in a real run (`state.is_executing` is True);
- a layer that refuses the host (`steps.refused`) ends its run there: `Recording.refused` says why; so does a
  builder that stops it on a value it cannot use (a ValueError, e.g. cnhost/triton_endpoint.py on an address that
  is no address): the run stops before pyinfra executes anything.

The recording is what both engines put on a host: the roles call the same builders through their filter
plugins (the collection's plugins/filter, docs/ansible.md) and render the same templates with the same variables (the parity tests).
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

from pyinfra.api import FactBase, StringCommand

from cnctl.layers import LAYERS, for_platform
from cnctl.paths import TEMPLATES_DIR

# The layer modules run in deploy.py's order (cnctl/layers.py); the platform layer's refusal is not run (FACTS
# would not pass it).
PYINFRA_OPERATIONS = ("files", "apt", "systemd", "server", "python")
# files.template's own arguments: everything else it is given is a template variable.
TEMPLATE_ARGS = {"name", "src", "dest", "user", "group", "mode", "create_remote_dir", "jinja_env_kwargs", "_sudo"}
MISSING = "__pyinfra_missing_command__"  # what pyinfra's guard echoes where the fact's command is absent


class Refused(Exception):
    """A layer refused the host (deploy/steps.py `refused`): nothing would be written or run on it."""


@dataclass(frozen=True)
class Rendering:
    """One file a layer writes from templates/: the template and the variables the layer gives it."""

    src: str  # under templates/
    dest: str
    variables: dict[str, Any]


@dataclass
class Recording:
    """What the layers would do on one host."""

    templates: list[Rendering] = field(default_factory=list)
    commands: list[tuple[str, str]] = field(default_factory=list)  # (builder "deploy/x.py:name", shell text)
    facts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (fact class name, its arguments)
    refused: str | None = None  # why a layer refused the host (deploy/steps.py `refused`); the run stopped there


def _facts(data: dict[str, Any]) -> dict[str, Any]:
    """A fresh host of the platform the host's variables name: what each fact reads there."""
    pythons = [p for p in data.get("cn_triton_pythons") or [] if p in (data.get("cn_pipeline_pythons") or [])]
    os_release = (data.get("cn_supported_os") or [{}])[0]
    return {
        "SudoUid": 0, "SystemdState": {"state": "running", "failed": []},
        "OsIdentity": {k: os_release.get(k) for k in ("id", "version", "codename")},
        "TegraRelease": {"l4t": data.get("cn_l4t")} if data.get("cn_platform") == "jetson" else None,
        "DebArch": data.get("cn_arch"), "File": None, "Sha256File": None, "DpkgVersions": {}, "AptHolds": [],
        "NvidiaGpus": [], "LoadedModules": [], "KernelModules": {}, "SecureBoot": False, "NvccRelease": None,
        "NvpmodelMode": None, "DockerImage": None,
        "DockerRuntimes": {"running": True, "server_version": "27.5.1", "runtimes": ["nvidia", "runc"],
                           "default_runtime": "nvidia", "errors": []},
        "HostPython": (pythons or data.get("cn_pipeline_pythons") or ["3"])[0],
        "InterfaceAddress": "10.20.0.5", "VenvPackages": {}, "TritonServing": None, "ModelRepository": None,
        "SystemdStatus": {}, "TreePaths": ["cnctl/stale.py"], "PathsPresent": [],
        "HealthReport": {"healthy": False, "problems": ["Triton is not ready"]},
        "UnitsActive": {}, "NvidiaCtkDaemonJson": False,
    }


def _secrets(wants: dict[str, Any]) -> dict[str, Any]:
    """deploy/rules/monitoring.py controller_secrets as the deploying machine's files would give them, all present."""
    site = wants.get("cn_monitoring_site") or {}
    return {"problem": "", "password": "site-password", "smtp_password": "relay-password",
            "tokens": ["token" if hook["token_file"] else None for hook in site.get("webhooks", [])]}


def _text(command: Any) -> str:
    """A yielded command as the shell gets it (a StringCommand's pieces joined with spaces)."""
    if isinstance(command, StringCommand):
        return " ".join(_text(bit) for bit in command.bits)
    return str(command)


@functools.cache
def _where(function: Any) -> str:
    """`deploy/x.py:name` of a function or class of this repository."""
    module = sys.modules[function.__module__]
    path = Path(str(module.__file__)).resolve()
    return f"{path.relative_to(TEMPLATES_DIR.parent)}:{function.__qualname__}"


class _Op:
    """What an operation call returns: it changed something (a fresh host), so after_change runs its commands."""

    changed = True


class _FakeData:
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def dict(self) -> dict[str, Any]:
        return dict(self._data)

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def __getattr__(self, key: str) -> Any:
        return self._data.get(key)


class _FakeHost:
    """pyinfra's `host` for the host being recorded (`switch` points it at the next one)."""

    def switch(self, name: str, data: dict[str, Any], recording: Recording) -> None:
        self.name, self.data, self._recording = name, _FakeData(data), recording
        self._facts = _facts(data)

    def get_fact(self, fact: type[FactBase], **kwargs: Any) -> Any:
        kwargs = {k: v for k, v in kwargs.items() if not k.startswith("_")}
        self._recording.facts.append((fact.__name__, kwargs))
        if fact.__module__.startswith("deploy"):  # pyinfra's own facts quote their arguments themselves
            self._recording.commands.append((_where(_defining(fact)), _fact_command(fact, kwargs)))
        if fact.__name__ not in self._facts:
            raise KeyError(f"tests/unit/sink_recorder.py: no canned value for fact {fact.__name__}; add one to _facts")
        return self._facts[fact.__name__]


def _defining(fact: type[FactBase]) -> type:
    """The class whose `command` a fact runs: deploy/rules/facts.py's, which deploy/facts.py makes a pyinfra fact."""
    return next(cls for cls in fact.__mro__ if "command" in vars(cls))


def _fact_command(fact: type[FactBase], kwargs: dict[str, Any]) -> str:
    """The shell text pyinfra runs for a fact (pyinfra.api.facts: guarded by its `requires_command`)."""
    command, required = _text(fact().command(**kwargs)), fact().requires_command(**kwargs)
    if not required:
        return command
    return f"if command -v {_text(required)} >/dev/null 2>&1; then ( {command} ); else echo '{MISSING}'; fi"


@functools.cache
def _template_src(src: str) -> str:
    return str(Path(src).resolve().relative_to(TEMPLATES_DIR))


class _PyinfraOps:
    """A pyinfra operations module (files, apt, ...): each operation records its call and runs nothing."""

    def __init__(self, module: str, host: _FakeHost) -> None:
        self._module, self._host = module, host

    def __getattr__(self, op: str) -> Any:
        fake, module = self._host, self._module

        def call(*args: Any, **kwargs: Any) -> _Op:
            if (module, op) == ("files", "template"):
                variables = {k: v for k, v in kwargs.items() if k not in TEMPLATE_ARGS}
                fake._recording.templates.append(Rendering(_template_src(str(kwargs["src"])), str(kwargs["dest"]),
                                                           variables))
            return _Op()

        call._inner = lambda *args, **kwargs: iter(())  # type: ignore[attr-defined]  # e.g. server.reboot._inner
        return call


def _project_op(op: Any, fake: _FakeHost) -> Any:
    """An `@operation` of deploy/: its generator runs, its commands are recorded. `refused` ends the host's run."""
    where = _where(op._inner)

    def call(*args: Any, **kwargs: Any) -> _Op:
        kwargs = {k: v for k, v in kwargs.items() if k != "name" and not k.startswith("_")}
        for command in op._inner(*args, **kwargs):
            fake._recording.commands.append((where, _text(command)))
        if where.endswith(":refused"):
            raise Refused(str(kwargs.get("message")))
        return _Op()

    return call


def _layer_modules() -> list[ModuleType]:
    import deploy.steps  # noqa: F401  (the layers import it; listed for its operations)

    names = ["steps", *LAYERS]
    return [__import__(f"deploy.{name}", fromlist=["_"]) for name in names]


@contextlib.contextmanager
def recorder() -> Iterator[Callable[[str, dict[str, Any]], Recording]]:
    """pyinfra replaced in the layer modules (see the module doc) while the block runs; it gives `record`."""
    fake = _FakeHost()
    state = mock.Mock(is_executing=True)
    saved: list[tuple[ModuleType, str, Any]] = []
    for module in _layer_modules():
        values = vars(module)
        patches: dict[str, Any] = {}
        if "host" in values:
            patches["host"] = fake
        if "state" in values:
            patches["state"] = state
        for ops in PYINFRA_OPERATIONS:
            if isinstance(values.get(ops), ModuleType):
                patches[ops] = _PyinfraOps(ops, fake)
        for key, value in values.items():
            inner = getattr(value, "_inner", None)
            if inner is not None and getattr(inner, "__module__", "").startswith("deploy") and \
                    not hasattr(inner, "deploy_name"):
                patches[key] = _project_op(value, fake)
        if module.__name__ == "deploy.pipeline":  # the deploying machine's file: a controller-side check
            patches["credentials_found"] = lambda path: {"exists": True, "mode": 0o600} if path else None
        if module.__name__ == "deploy.monitoring":  # the deploying machine's secrets, and a hash of one (no stack value)
            patches["controller_secrets"] = _secrets
            patches["web_config"] = lambda password, host: {"basic_auth_users": {"circularnet": f"hash-of-{host}"}}
        for key, value in patches.items():
            saved.append((module, key, values[key]))
            setattr(module, key, value)
    modules = {m.__name__.rsplit(".", 1)[1]: m for m in _layer_modules()}

    def run(name: str, data: dict[str, Any]) -> Recording:
        recording = Recording()
        fake.switch(name, data, recording)
        try:
            for layer in for_platform(data.get("cn_platform")):
                getattr(modules[layer], layer)._inner()
        except Refused as exc:
            recording.refused = str(exc)
        except ValueError as exc:  # a builder that checks its input stopped the layer (triton_endpoint.reach)
            recording.refused = f"{type(exc).__name__}: {exc}"
        return recording

    try:
        yield run
    finally:
        for module, key, value in reversed(saved):
            setattr(module, key, value)


def record(name: str, data: dict[str, Any]) -> Recording:
    """What every layer deploy.py applies to a host with variables `data` would do there (its platform's layers)."""
    with recorder() as run:
        return run(name, data)
