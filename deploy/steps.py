"""Steps the pyinfra host layers share: signed apt repositories, pins, a fail-closed index refresh, pinned
installs, holds, and checks that fail with the reason. Each role under roles/ has the same steps as tasks.

Names, paths and timeouts come from the roles' own defaults (roles/<layer>/defaults/main.yml): one copy
for both engines. A layer's wishes are the host's cn_* variables (cnctl.hostvars), read from host data.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment
from jinja2.exceptions import TemplateRuntimeError
from jinja2.ext import Extension
from pyinfra import host, state
from pyinfra.api import StringCommand, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import File
from pyinfra.operations import apt, files

import cnhost
from cnctl import unitescape
from cnctl.paths import REPO_ROOT, TEMPLATES_DIR
from deploy.facts import BY_NAME, AptHolds, DpkgVersions
from deploy.rules import FILTER_PREFIX, checks, roles


@cache
def role_data(role: str) -> dict[str, Any]:
    """roles/<role>/defaults/main.yml and vars/main.yml of the repository (deploy/rules/roles.py)."""
    return roles.role_data(REPO_ROOT / "roles", role)


def host_settings(role: str) -> dict[str, Any]:
    """roles/<role>'s defaults, with the host's own <role>_* values over them (its inventory, or `--data`): the
    precedence Ansible gives the role, so a value set for one host holds in both engines."""
    data = dict(role_data(role))
    data.update({key: value for key, value in host.data.dict().items() if key in data})
    return data


def directory(name: str, path: str, mode: str = "755", user: str = "root", group: str = "root") -> OperationMeta:
    """A directory on the host, root's unless said (the roles' ansible.builtin.file `state: directory` tasks)."""
    return files.directory(name=name, path=path, present=True, mode=mode, user=user, group=group)


def read(probes: dict[str, list[Any]]) -> dict[str, Any]:
    """{label: fact value} of a role's probes (deploy/rules/probe.py), read the pyinfra way: one fact at a time."""
    values = {}
    for label, spec in probes.items():
        kwargs = dict(spec[1]) if len(spec) > 1 else {}
        values[label] = host.get_fact(BY_NAME[spec[0]], **kwargs)
    return values


def wishes() -> dict[str, Any]:
    """This host's cn_* variables: what the stack wants on it."""
    data = host.data.dict()
    missing = [name for name in ("cn_host", "cn_platform") if name not in data]
    if missing:
        raise ValueError(f"{host.name}: the inventory gives no {', '.join(missing)}; use hosts/edge.py, hosts/servers.py "
                         "or hosts/cloud.py (their host data come from cnctl.hostvars)")
    return {key: value for key, value in data.items() if key.startswith("cn_")}


def fail(message: str) -> StringCommand:
    """A command that prints `message` and fails the operation (pyinfra shows its stderr)."""
    return StringCommand("echo", shlex.quote(message), ">&2;", "exit", "1")


@operation(is_idempotent=True)
def refused(message: str):
    """Fail this host with `message`: nothing else is applied to it."""
    yield fail(message)


@operation(is_idempotent=True)
def verified(check: Callable[[], str]):
    """Ensure `check()` finds no problem once the operations before this one have run (changes nothing)."""
    if not state.is_executing:
        return
    problem = check()
    if problem:
        yield fail(f"{host.name}: {problem}")


class UnitFilters(Extension):
    """cnctl.unitescape's filters in pyinfra's Jinja environment, under the names the collection's filter plugin
    gives them (collection/plugins/filter/units.py, by FQCN): templates/systemd/*.j2 render the same in both engines."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        escapes = unitescape.filters(TemplateRuntimeError)
        environment.filters.update({FILTER_PREFIX + name: escape for name, escape in escapes.items()})


def jinja_env_kwargs() -> dict[str, Any]:
    """What every rendering of templates/ passes to pyinfra's `get_template` (a new dict each time: pyinfra pops
    `loader` from it). pyinfra caches a template by its file name, so every rendering must pass the same."""
    return {"extensions": [UnitFilters]}


def template(name: str, src: str, dest: str, mode: str = "644", group: str = "root", **variables: Any) -> OperationMeta:
    """One file of templates/ on the host, root-owned, of `group` (the roles' ansible.builtin.template tasks)."""
    return files.template(name=name, src=str(TEMPLATES_DIR / src), dest=dest, mode=mode, user="root", group=group,
                          jinja_env_kwargs=jinja_env_kwargs(), **variables)


# Fetched with the host's python3 (present wherever Ansible runs; minimal hosts lack curl and wget), as
# Ansible's get_url does: same bytes, same "fetched once, kept while present" rule.
_FETCH = ("import shutil, sys, urllib.request\n"
          "with urllib.request.urlopen(sys.argv[1], timeout=60) as r, open(sys.argv[2], 'wb') as f:\n"
          "    shutil.copyfileobj(r, f)")


@operation(is_idempotent=True)
def key_installed(url: str, dest: str):
    """Ensure `dest` holds the key published at `url` (fetched once; kept while present), root-owned 0644."""
    if host.get_fact(File, path=dest) is not None:
        return
    partial = f"{dest}.cnctl-partial"
    yield (f"python3 -c {shlex.quote(_FETCH)} {shlex.quote(url)} {shlex.quote(partial)} && "
           f"install -m 644 -o root -g root {shlex.quote(partial)} {shlex.quote(dest)}; "
           f"status=$?; rm -f {shlex.quote(partial)}; exit $status")


def apt_repository(name: str, key_url: str, keyring: str, source: str, sources: list[dict[str, Any]]) -> list[OperationMeta]:
    """A signed apt repository: its key (fetched once) and its source naming the key in signed-by."""
    files.directory(name=f"{name}: keyring directory", path=str(Path(keyring).parent), present=True, mode="755",
                    user="root", group="root")
    key = key_installed(name=f"{name}: signing key", url=key_url, dest=keyring)
    listed = template(f"{name}: apt source", "apt/source.list.j2", source, description=name, sources=sources)
    return [key, listed]


def apt_pins(name: str, dest: str, pins: list[dict[str, Any]]) -> OperationMeta:
    """apt preferences pinning `pins` (the matrix's versions) at priority 1001."""
    return template(f"{name}: apt pins", "apt/preferences.j2", dest, description=name, pins=pins)


@operation(is_idempotent=True)
def after_change(changed: list[OperationMeta], commands: list[str]):
    """Run `commands` only when one of the `changed` operations changed something (also right in --dry)."""
    if any(op.changed for op in changed):
        yield from commands


def pinned_names(pins: Sequence[dict[str, Any]]) -> list[str]:
    return [package for pin in pins for package in pin["packages"]]


@operation(is_idempotent=True)
def index_refreshed(changed: list[OperationMeta], packages: list[str], timeout: int):
    """Ensure the package index is fresh before installing: `apt-get update --error-on=any` (a bad signature
    or an unreachable source fails instead of warning) when a source or pin changed or a package is missing."""
    installed = host.get_fact(DpkgVersions, packages=packages)
    if any(op.changed for op in changed) or set(packages) - set(installed):
        yield f"timeout {int(timeout)} apt-get update --error-on=any -q"


def install_pinned(name: str, pins: list[dict[str, Any]]) -> None:
    """The pinned packages installed (the pins choose the versions), then proven to be at their pins."""
    packages = pinned_names(pins)
    apt.packages(name=f"{name}: packages", packages=packages, no_recommends=True)
    verified(name=f"{name}: installed at their pinned versions",
             check=lambda: "; ".join(checks.unpinned(host.get_fact(DpkgVersions, packages=packages), pins)))


@operation(is_idempotent=True)
def held(packages: list[str], patterns: Iterable[str] = ()):
    """Ensure `packages`, and the installed packages matching `patterns`, are on hold (apt-mark)."""
    patterns = list(patterns)
    installed = host.get_fact(DpkgVersions, packages=patterns) if patterns else {}
    wanted = sorted(set(packages) | set(checks.installed_matching(installed, patterns)))
    missing = [p for p in wanted if p not in host.get_fact(AptHolds)]
    if missing:
        yield "apt-mark hold " + " ".join(shlex.quote(p) for p in missing)


def programs_shipped(layer: str, home: str) -> list[Any]:
    """The host programs on the host: the package cnhost (all of cnhost.FILES) in `<home>/cnhost/`, root's, 0644,
    run as `env PYTHONPATH=<home> python3 -m cnhost.<program>`. Every layer that runs a program ships the whole
    package (the programs import each other; a second layer's copy changes nothing), as the roles copy the package
    directory's *.py."""
    package = f"{home}/cnhost"
    files.directory(name=f"{layer}: the host programs' package", path=package, present=True, mode="755",
                    user="root", group="root")
    return [files.put(name=f"{layer}: the host program cnhost/{name}", src=str(Path(cnhost.__file__).parent / name),
                      dest=f"{package}/{name}", mode="644", user="root", group="root") for name in cnhost.FILES]
