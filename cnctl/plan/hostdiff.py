"""What a change does to the hosts, between two revisions of the repo: the pins each host would move to,
and the host-file templates that change for the host groups that receive them.

A revision is a directory holding a checkout (CI plans `base/` and `head/`) or a git ref of a repository.
Each revision's own stack file and catalog are read, and each host's variables come from the one
function the deploy uses (`cnctl.hostvars.host_vars`), so a pin here is exactly what the host layers
would install. A driver branch or JetPack change cannot be applied without rebooting the host: such
changes are marked, so a reviewer sees which plants lose their inference for a reboot.

Which templates a group receives is read from the revision's own layers (`playbooks/site.yml`: group ->
roles; each role's tasks name their templates), the same layers both engines apply. The templates are
compared as sources, not rendered per host: what a host's values change is in its pins.
"""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cnctl.catalog import Catalog, load_catalog
from cnctl.config import StackConfig, StackConfigError, load_stack
from cnctl.config.loader import ROOT
from cnctl.hostvars import CloudVm, Group, host_vars

# host variable -> how the preview names it; the model pin comes from the stack itself.
PINS: Mapping[str, str] = {
    "cn_driver_branch": "driver branch",
    "cn_cuda": "CUDA",
    "cn_jetpack": "JetPack",
    "cn_triton_image": "Triton image",
}
MODEL = "model"
# Pins whose change needs the host rebooted (a new kernel driver; a new L4T/JetPack release).
REBOOT = frozenset({"driver branch", "JetPack"})
# What a revision must hold for its hosts to be previewed (the last three for its host files).
REVISION_PATHS = ("stacks", "cnctl/catalog", "templates", "roles", "playbooks")
# A role task's template source: `{{ <role>_templates_dir }}/<path>`, where `{{ item }}` stands for each item of
# the task's loop (`systemd/circularnet-health.{{ item }}.j2` over [service, timer]).
_TEMPLATE_REF = re.compile(r"_templates_dir \}\}/((?:[\w./-]|\{\{ item \}\})+\.j2)")
_ITEM = "{{ item }}"

Pins = dict[tuple[str, str], dict[str, str]]


class RevisionProblem(Exception):
    """A revision that cannot be read (no such ref, a stack or catalog that does not load)."""


@dataclass(frozen=True)
class PinChange:
    """One pin of one host that moves between base and head (None: the host is new, or gone)."""

    group: str
    host: str
    pin: str
    before: str | None
    after: str | None

    @property
    def reboot(self) -> bool:
        """A host that exists on both sides and changes a pin in REBOOT must reboot to apply it."""
        return self.pin in REBOOT and self.before is not None and self.after is not None


@dataclass(frozen=True)
class FileChange:
    """A template whose source differs between base and head, and the host group that receives it."""

    group: str
    template: str
    hosts: int  # hosts of the group in the head stack (base, if the group is gone)
    kind: str  # changed, added or removed


@dataclass(frozen=True)
class Revision:
    """What one revision gives its hosts: pins per host, and template sources per host group."""

    pins: Pins
    templates: dict[str, dict[str, bytes]]


@dataclass(frozen=True)
class HostPreview:
    pins: list[PinChange]
    files: list[FileChange]

    @property
    def empty(self) -> bool:
        return not (self.pins or self.files)


def host_pins(cfg: StackConfig, cat: Catalog) -> Pins:
    """(group, host) -> {pin name: value} for every host of the stack, cloud VMs included."""
    entries: list[tuple[Group, Any]] = [("edge", d) for d in cfg.fleets.edge]
    entries += [("servers", s) for s in cfg.fleets.servers]
    if cfg.compute is not None and cfg.gcp is not None:
        entries += [("cloud", _vm(cfg, i)) for i in range(cfg.compute.instances)]
    model = f"{cfg.model.key} v{cfg.model.version}"
    out: dict[tuple[str, str], dict[str, str]] = {}
    for group, entry in entries:
        variables = host_vars(cfg, group, entry, cat)
        pins = {label: str(variables[var]) for var, label in PINS.items() if variables.get(var) is not None}
        out[(group, entry.name)] = {**pins, MODEL: model}
    return out


def pin_changes(base: Mapping[tuple[str, str], Mapping[str, str]], head: Mapping[tuple[str, str], Mapping[str, str]]) -> list[PinChange]:
    """Every pin that differs, per host, in group then host order (a host on one side only: all its pins)."""
    changes: list[PinChange] = []
    for group, host in sorted(base.keys() | head.keys()):
        before, after = base.get((group, host), {}), head.get((group, host), {})
        for pin in sorted(before.keys() | after.keys()):
            if before.get(pin) != after.get(pin):
                changes.append(PinChange(group, host, pin, before.get(pin), after.get(pin)))
    return changes


def revision_pins(source: str, stack: str, repo: Path = ROOT, *, missing_ok: bool = True) -> Pins:
    """The host pins of `stack` as revision `source` has it (see read_revision)."""
    return read_revision(source, stack, repo, missing_ok=missing_ok).pins


def read_revision(source: str, stack: str, repo: Path = ROOT, *, missing_ok: bool = True) -> Revision:
    """`stack` as revision `source` has it: a directory (a checkout) or a git ref of `repo`.

    A revision without this stack file has no hosts (the stack is new there), unless `missing_ok` is False.
    """
    with _revision_dir(source, repo) as directory:
        templates = group_templates(directory)
        path = directory / "stacks" / f"Pulumi.{stack}.yaml"
        if not path.is_file():
            if missing_ok:
                return Revision({}, templates)
            raise RevisionProblem(f"revision {source}: has no stacks/Pulumi.{stack}.yaml; give the checkout of the change")
        try:
            cat = load_catalog(directory / "cnctl" / "catalog")
            cfg = load_stack(str(path), stacks_dir=directory / "stacks", cat=cat)
        except StackConfigError as exc:
            raise RevisionProblem(f"revision {source}: {exc.render()}") from None
        except (OSError, ValueError) as exc:  # a catalog this code cannot read (pydantic errors are ValueErrors)
            raise RevisionProblem(f"revision {source}: its catalog does not load ({str(exc).splitlines()[0]})") from None
        return Revision(host_pins(cfg, cat), templates)


def group_templates(directory: Path) -> dict[str, dict[str, bytes]]:
    """host group -> {template path under templates/: its bytes}, from the revision's site playbook and roles."""
    site = directory / "playbooks" / "site.yml"
    if not site.is_file():
        return {}
    out: dict[str, dict[str, bytes]] = {}
    for play in yaml.safe_load(site.read_text(encoding="utf-8")) or []:
        # a role by FQCN (circularnet.fleet.<role>, the collection roles/ is assembled into) or by its name
        roles = [str(r["role"] if isinstance(r, dict) else r).rsplit(".", 1)[-1] for r in play.get("roles", [])]
        used = {ref for role in roles for ref in role_templates(directory / "roles" / role)}
        for group in str(play.get("hosts", "")).split(":"):
            files = out.setdefault(group, {})
            for ref in used:
                template = directory / "templates" / ref
                files[ref] = template.read_bytes() if template.is_file() else b""
    return out


def role_templates(role: Path) -> set[str]:
    """The paths under templates/ that a role's tasks render (tasks/*.yml), a looped task's once per item."""
    found: set[str] = set()
    for tasks in sorted((role / "tasks").glob("*.yml")):
        found.update(_task_templates(yaml.safe_load(tasks.read_text(encoding="utf-8"))))
    return found


def _task_templates(node: Any) -> Iterator[str]:
    """The template sources in a task list, its blocks included: a task holding a module whose `src` is under
    the role's templates directory gives that path, `{{ item }}` replaced by each of the task's loop items."""
    if isinstance(node, list):
        for child in node:
            yield from _task_templates(child)
        return
    if not isinstance(node, dict):
        return
    for value in node.values():
        src = value.get("src") if isinstance(value, dict) else None
        ref = _TEMPLATE_REF.search(src) if isinstance(src, str) else None
        if ref is None:
            yield from _task_templates(value)
        elif _ITEM not in ref[1]:
            yield ref[1]
        else:
            yield from (ref[1].replace(_ITEM, item) for item in node.get("loop") or [] if isinstance(item, str))


def preview(base: Revision, head: Revision) -> HostPreview:
    """The pins that move per host, and the templates that change for each group that has hosts."""
    counts = _hosts_per_group(head.pins) or {}
    gone = {g: n for g, n in _hosts_per_group(base.pins).items() if g not in counts}
    files: list[FileChange] = []
    for group, hosts in sorted({**counts, **gone}.items()):
        before, after = base.templates.get(group, {}), head.templates.get(group, {})
        for template in sorted(before.keys() | after.keys()):
            if before.get(template) != after.get(template):
                kind = "added" if template not in before else "removed" if template not in after else "changed"
                files.append(FileChange(group, template, hosts, kind))
    return HostPreview(pin_changes(base.pins, head.pins), files)


def _hosts_per_group(pins: Pins) -> dict[str, int]:
    counts: dict[str, int] = {}
    for group, _ in pins:
        counts[group] = counts.get(group, 0) + 1
    return counts


def render_text(changes: HostPreview) -> Iterator[str]:
    """Plain lines, per host group: `edge belt-1-orin: JetPack 6.0 → 6.2 (reboot)`, then the host files."""
    pins, files = changes.pins, changes.files
    if changes.empty:
        yield "host pins: no changes"
        yield "host files: no changes"
        return
    yield f"host pins: {len(pins)} change(s), {sum(c.reboot for c in pins)} needing a reboot" if pins else "host pins: no changes"
    for c in pins:
        yield f"  {c.group} {c.host}: {c.pin} {_shown(c.before)} → {_shown(c.after)}" + (" (reboot)" if c.reboot else "")
    yield f"host files: {len(files)} change(s)" if files else "host files: no changes"
    for f in files:
        yield f"  {f.group} ({f.hosts} host{'s' if f.hosts != 1 else ''}): templates/{f.template} {f.kind}"


def render_markdown(changes: HostPreview) -> str:
    """The comment's section on the hosts: per host group, its pin moves (reboots in bold) and its files."""
    lines = ["", "#### Hosts", ""]
    if changes.empty:
        return "\n".join([*lines, "No change to host pins or host files.", ""])
    for group in dict.fromkeys([*(c.group for c in changes.pins), *(f.group for f in changes.files)]):
        lines += [f"**{group}**", ""]
        pins = [c for c in changes.pins if c.group == group]
        if pins:
            lines += ["| host | pin | base | head | |", "|---|---|---|---|---|"]
            for c in pins:
                mark = "**reboot**" if c.reboot else ""
                lines.append(f"| `{c.host}` | {c.pin} | `{_shown(c.before)}` | `{_shown(c.after)}` | {mark} |")
            lines.append("")
        lines += [f"- `templates/{f.template}` {f.kind}" for f in changes.files if f.group == group]
        lines.append("")
    return "\n".join(lines)


def _shown(value: str | None) -> str:
    return "—" if value is None else value


def _vm(cfg: StackConfig, index: int) -> CloudVm:
    """A cloud VM as the stack plans it (its address and user are not known before `pulumi up`)."""
    assert cfg.gcp is not None
    return CloudVm(name=f"cn-{cfg.environment}-gpu-{index}", zone=cfg.gcp.zones[index % len(cfg.gcp.zones)],
                   project=cfg.gcp.project, internal_ip="", ssh_user="")


class _revision_dir:
    """A directory as it is, or a git ref's REVISION_PATHS extracted into a temporary directory."""

    def __init__(self, source: str, repo: Path) -> None:
        self.source, self.repo = source, repo
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Path:
        if Path(self.source).is_dir():
            return Path(self.source)
        # Only the paths this ref has (an older revision may lack roles/ or playbooks/).
        listed = subprocess.run(["git", "-C", str(self.repo), "ls-tree", "--name-only", self.source, "--", *REVISION_PATHS],
                                capture_output=True, text=True, check=False)
        present = listed.stdout.split() if listed.returncode == 0 else list(REVISION_PATHS)
        archive = subprocess.run(["git", "-C", str(self.repo), "archive", "--format=tar", self.source, "--", *present],
                                 capture_output=True, check=False)
        if archive.returncode != 0:
            reason = archive.stderr.decode(errors="replace").strip().splitlines()
            raise RevisionProblem(f"revision {self.source}: not a directory nor a git ref of {self.repo} ({reason[-1] if reason else 'git failed'})")
        self._tmp = tempfile.TemporaryDirectory(prefix="cnctl-rev-")
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(self._tmp.name, filter="data")
        return Path(self._tmp.name)

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
