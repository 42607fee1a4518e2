"""The hosts of a stack's fleet: its `fleets` entries, or the hosts a fleet file lists (docs/fleet-files.md).

A fleet file is a stack's fleet as data another tool wrote: which edge devices and servers exist and how to
reach them. The sandbox writes one for the local stack at `cnctl sandbox up`; a provisioning tool (Terraform, a
lab's DHCP leases, an asset database export) can write one for any stack:

    {"format": 1, "stack": "local", "writtenBy": "cnctl sandbox up",
     "ssh": {"key": "/run/cnctl/sandbox/ssh/id_ed25519", "knownHosts": "/run/cnctl/sandbox/ssh/known_hosts",
             "strictHostKeyChecking": "yes"},
     "hosts": [{"name": "belt-1-orin", "group": "edge", "address": "172.31.254.11", "jetpack": "6.0"},
               {"name": "gpu-server-3", "group": "servers", "address": "172.31.254.23", "driverBranch": "550"}]}

Which file: a stack whose `fleets.file` is set takes its fleet from that file, or from the one CNCTL_FLEET_FILE
names (another copy of the fleet: a second sandbox, a test session); a stack without it ignores the variable,
and its `fleets` entries are the fleet, reached with the user's own SSH setup. With a file, its hosts ARE the
stack's edge devices and servers. Each takes the settings of the stack's entry of its name (runtime, camera,
reboot policy...) or, for a host the stack does not list, those of its group's first entry (else the defaults);
the file's own values (address, sshUser, sshPort, site, jetpack, driverBranch) win, and the merged entries pass
the stack's own rules. The file's `ssh` (for all hosts, or per host) says which key, known_hosts and host key
checking reach them. The file must name the stack it was written for.

Nothing here knows who wrote the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from cnctl.config import StackConfig
from cnctl.config.checks import check
from cnctl.config.errors import Problem, StackConfigError
from cnctl.config.schema import ControllerPath, EdgeDevice, Fleets, HostAddress, HostName, Section, Server
from cnctl.errors import UsageProblem

FLEET_FILE_ENV = "CNCTL_FLEET_FILE"
FORMAT = 1
MAX_BYTES = 1 << 20
Group = Literal["edge", "servers"]


class FleetFileProblem(UsageProblem):
    """The fleet file cannot be used (missing, unreadable, of another stack): the user fixes it (exit 2)."""


@dataclass(frozen=True)
class Member:
    """One host of the fleet: its group, its (merged) fleet entry, and the SSH settings beyond the entry's
    address, user and port (None: the user's own SSH setup decides)."""

    group: Group
    entry: EdgeDevice | Server
    key: str | None = None
    known_hosts: str | None = None
    strict_host_key_checking: str | None = None


# --- the file's schema -------------------------------------------------------------------------


class SshAccess(Section):
    """How to reach the hosts beyond address, user and port: absolute paths on the deploying machine."""

    key: ControllerPath | None = Field(None, description="the private key to log in with (no agent, no other key)")
    known_hosts: ControllerPath | None = Field(None, description="the known_hosts file that holds the hosts' keys")
    strict_host_key_checking: Literal["yes", "accept-new", "no"] | None = None


class ListedHost(Section):
    """One host as the fleet file lists it. The values the stack's rules check (user, port, site, platform)
    are checked on the merged entry (`members`)."""

    name: HostName
    group: Group
    address: HostAddress
    ssh_user: str | None = None
    ssh_port: int | None = None
    site: str | None = None
    jetpack: str | None = Field(None, description="edge devices only")
    driver_branch: str | None = Field(None, description="servers only")
    ssh: SshAccess = Field(default_factory=SshAccess)


class FleetDocument(Section):
    format: Literal[1]
    stack: str = Field(pattern=r"^[a-z][a-z0-9-]{0,19}$", description="the stack the file was written for")
    written_by: str = Field("", max_length=200, description="free text shown in messages (the tool, its command)")
    ssh: SshAccess = Field(default_factory=SshAccess)
    hosts: list[ListedHost] = Field(max_length=4096)


# --- which file --------------------------------------------------------------------------------


def file_of(cfg: StackConfig, environ: Mapping[str, str] | None = None) -> tuple[Path, str] | None:
    """(the fleet file of `cfg`, how it was named), or None when the stack's fleet is its `fleets` entries: a
    stack says its fleet comes from a file (`fleets.file`); CNCTL_FLEET_FILE only says which file this time."""
    if not cfg.fleets.file:
        return None
    environ = os.environ if environ is None else environ
    if environ.get(FLEET_FILE_ENV):
        return Path(environ[FLEET_FILE_ENV]).expanduser(), FLEET_FILE_ENV
    return Path(cfg.fleets.file).expanduser(), "fleets.file"


# --- the members ---------------------------------------------------------------------------------


def members(cfg: StackConfig, environ: Mapping[str, str] | None = None) -> list[Member]:
    """The hosts of `cfg`'s fleet, edge devices first as the stack lists them, or in the fleet file's order."""
    named = file_of(cfg, environ)
    if named is None:
        return [Member("edge", e) for e in cfg.fleets.edge] + [Member("servers", s) for s in cfg.fleets.servers]
    path, origin = named
    document = read(path, f"{origin} of stack {cfg.environment}", _not_found_hint(cfg))
    if document.stack != cfg.environment:
        raise FleetFileProblem(
            f"fleet file {path}{_by(document)} lists the hosts of stack {document.stack!r}, not {cfg.environment!r}: "
            f"give stack {cfg.environment}'s own ({FLEET_FILE_ENV}, or its fleets.file)"
        )
    result = _merged_members(cfg, document, path)
    _require_readable(path, result)
    return result


def with_members(cfg: StackConfig, found: Sequence[Member]) -> StackConfig:
    """`cfg` with its fleets as `found` (its `members`): what the stack's cross-host settings refer to (the
    monitoring server by name, the hosts the site scrapes) is then the fleet as it is, a fleet file's hosts
    included, not only the entries the stack lists."""
    fleets = Fleets(edge=[m.entry for m in found if m.group == "edge" and isinstance(m.entry, EdgeDevice)],
                    servers=[m.entry for m in found if m.group == "servers" and isinstance(m.entry, Server)],
                    file=cfg.fleets.file)
    return cfg.model_copy(update={"fleets": fleets})


def as_fleet(cfg: StackConfig, environ: Mapping[str, str] | None = None) -> StackConfig:
    """`cfg` with its fleets as `members` finds them (its fleet file's hosts, when it has one)."""
    return with_members(cfg, members(cfg, environ))


def read(path: Path, origin: str, hint: str = "") -> FleetDocument:
    """The fleet file at `path`, schema-checked; FleetFileProblem (one line) or StackConfigError (every field)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FleetFileProblem(f"no fleet file {path} ({origin}){hint}") from None
    except OSError as exc:
        raise FleetFileProblem(f"fleet file {path} ({origin}): cannot be read ({exc.strerror or exc}); "
                               "check the path and its permissions") from None
    if len(data) > MAX_BYTES:
        raise FleetFileProblem(f"fleet file {path}: is {len(data)} bytes; a fleet file is a few kilobytes (limit {MAX_BYTES})")
    try:
        raw = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FleetFileProblem(f"fleet file {path}: is not JSON ({exc}); write it as one JSON object") from None
    if not isinstance(raw, dict):
        raise FleetFileProblem(f"fleet file {path}: is not a JSON object; write it as one object with format, stack, hosts")
    if raw.get("format") != FORMAT:
        raise FleetFileProblem(f"fleet file {path}: format {raw.get('format')!r} is not {FORMAT}, the one this cnctl reads")
    try:
        return FleetDocument.model_validate(raw)
    except ValidationError as exc:
        raise StackConfigError(f"fleet file {path}", [_problem("", err) for err in exc.errors()]) from None


def _merged_members(cfg: StackConfig, document: FleetDocument, path: Path) -> list[Member]:
    """Each listed host merged into its entry under the stack's schema and rules; StackConfigError naming the
    file's `hosts[i]` for every problem."""
    problems: list[Problem] = []
    found: list[tuple[int, Member]] = []
    first: dict[str, int] = {}
    for i, host in enumerate(document.hosts):
        listing = _listing_problems(cfg, host, f"hosts[{i}]", first.setdefault(host.name, i))
        if listing:
            problems += listing
            continue
        try:
            entry = _merged(cfg, host)
        except ValidationError as exc:
            problems += [_problem(f"hosts[{i}].", err) for err in exc.errors()]
            continue
        ssh = {**document.ssh.model_dump(exclude_none=True), **host.ssh.model_dump(exclude_none=True)}
        found.append((i, Member(host.group, entry, ssh.get("key"), ssh.get("known_hosts"),
                                ssh.get("strict_host_key_checking"))))
    problems = problems or _rules(cfg, found)
    if problems:
        raise StackConfigError(f"fleet file {path}{_by(document)}", problems)
    return [member for _, member in found]


def _listing_problems(cfg: StackConfig, host: ListedHost, where: str, first: int) -> list[Problem]:
    """What is wrong with how the file lists `host` (`first`: the index it was first listed at)."""
    problems = []
    if not where.endswith(f"[{first}]"):
        problems.append(Problem(f"{where}.name", host.name, f"is listed twice (also hosts[{first}]); list each host once"))
    listed = {e.name: "edge" for e in cfg.fleets.edge} | {s.name: "servers" for s in cfg.fleets.servers}
    if listed.get(host.name, host.group) != host.group:
        problems.append(Problem(f"{where}.group", host.group, f"but stack {cfg.environment} lists {host.name} in "
                                f"fleets.{listed[host.name]}; write the group the stack gives it"))
    foreign = "driverBranch" if host.group == "edge" and host.driver_branch else (
        "jetpack" if host.group == "servers" and host.jetpack else None)
    if foreign:
        problems.append(Problem(f"{where}.{foreign}", None, f"is not a setting of a host of group {host.group}; remove it"))
    return problems


def _merged(cfg: StackConfig, host: ListedHost) -> EdgeDevice | Server:
    """The stack's entry of `host`'s name (else its group's first, else the defaults) with the file's values."""
    entries: Sequence[EdgeDevice | Server] = cfg.fleets.edge if host.group == "edge" else cfg.fleets.servers
    base = next((e for e in entries if e.name == host.name), entries[0] if entries else None)
    own = {"name": host.name, "address": host.address, "sshUser": host.ssh_user, "sshPort": host.ssh_port,
           "site": host.site, "jetpack": host.jetpack, "driverBranch": host.driver_branch}
    data = {**(base.model_dump(by_alias=True) if base else {}), **{k: v for k, v in own.items() if v is not None}}
    model = EdgeDevice if host.group == "edge" else Server
    return model.model_validate(data)


def _rules(cfg: StackConfig, found: list[tuple[int, Member]]) -> list[Problem]:
    """The stack's cross-field rules on the fleet as the file makes it; a fleet entry's path becomes the
    file's `hosts[i]` of that host."""
    edge = [(i, m) for i, m in found if m.group == "edge"]
    servers = [(i, m) for i, m in found if m.group == "servers"]
    origin = {f"fleets.edge[{j}]": i for j, (i, _) in enumerate(edge)}
    origin |= {f"fleets.servers[{j}]": i for j, (i, _) in enumerate(servers)}
    problems = []
    for problem in check(with_members(cfg, [m for _, m in [*edge, *servers]])):
        head, dot, rest = problem.path.partition("].")
        index = origin.get(head + "]") if dot else None
        path = f"hosts[{index}].{rest}" if index is not None else problem.path
        problems.append(Problem(path, problem.value, problem.message))
    return problems


def _require_readable(path: Path, found: Sequence[Member]) -> None:
    for key in sorted({m.key for m in found if m.key}):
        if not os.access(Path(key).expanduser(), os.R_OK):
            raise FleetFileProblem(f"cannot read the SSH key {key} that fleet file {path} names: run as a user who "
                                   "may read it (sudo, for a root-owned one)")


def _not_found_hint(cfg: StackConfig) -> str:
    if cfg.sandbox is not None:  # the stack declares a sandbox: its `up` writes the file
        return ": the sandbox is not up; run `cnctl sandbox up` or `make demo`"
    return ": the tool that provisions this fleet writes it; or remove fleets.file to use the stack's entries"


def _by(document: FleetDocument) -> str:
    return f" (written by {document.written_by!r})" if document.written_by else ""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ValueError(f"key {twice[0]!r} is written twice in one object; JSON would keep only the last")
    return dict(pairs)


def _problem(prefix: str, err: Any) -> Problem:
    """One pydantic error as a Problem at `prefix` + its location (aliases, as the file spells them)."""
    path = prefix
    for part in err["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path and not path.endswith(".") else str(part))
    if err["type"] == "extra_forbidden":
        return Problem(path, None, "is not a known key (a typo?)")
    if err["type"] == "missing":
        return Problem(path, None, "is required")
    value = err.get("input")
    message = err["msg"].removeprefix("Value error, ")
    if isinstance(value, str) and message.startswith(repr(value)):
        message = message[len(repr(value)):].lstrip()
    return Problem(path, None if isinstance(value, (dict, list)) else value, message)
