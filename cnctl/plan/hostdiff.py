"""What a change does to the hosts: the pins each host would move to, between two revisions of the repo.

A revision is a directory holding a checkout (CI plans `base/` and `head/`) or a git ref of a repository.
Each revision's own stack file and catalog are read, and each host's variables come from the one
function the deploy uses (`cnctl.hostvars.host_vars`), so a pin here is exactly what the host layers
would install. A driver branch or JetPack change cannot be applied without rebooting the host: such
changes are marked, so a reviewer sees which plants lose their inference for a reboot.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
# What a revision must hold for its hosts to be previewed.
REVISION_PATHS = ("stacks", "cnctl/catalog")


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


def host_pins(cfg: StackConfig, cat: Catalog) -> dict[tuple[str, str], dict[str, str]]:
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


def revision_pins(source: str, stack: str, repo: Path = ROOT, *, missing_ok: bool = True) -> dict[tuple[str, str], dict[str, str]]:
    """The host pins of `stack` as revision `source` has it: a directory (a checkout) or a git ref of `repo`.

    A revision without this stack file has no hosts (the stack is new there), unless `missing_ok` is False.
    """
    with _revision_dir(source, repo) as directory:
        path = directory / "stacks" / f"Pulumi.{stack}.yaml"
        if not path.is_file():
            if missing_ok:
                return {}
            raise RevisionProblem(f"revision {source}: has no stacks/Pulumi.{stack}.yaml; give the checkout of the change")
        try:
            cat = load_catalog(directory / "cnctl" / "catalog")
            cfg = load_stack(str(path), stacks_dir=directory / "stacks", cat=cat)
        except StackConfigError as exc:
            raise RevisionProblem(f"revision {source}: {exc.render()}") from None
        except (OSError, ValueError) as exc:  # a catalog this code cannot read (pydantic errors are ValueErrors)
            raise RevisionProblem(f"revision {source}: its catalog does not load ({str(exc).splitlines()[0]})") from None
        return host_pins(cfg, cat)


def render_text(changes: list[PinChange]) -> Iterator[str]:
    """Plain lines, per host group: `edge belt-1-orin: JetPack 6.0 → 6.2 (reboot)`."""
    if not changes:
        yield "host pins: no changes"
        return
    yield f"host pins: {len(changes)} change(s), {sum(c.reboot for c in changes)} needing a reboot"
    for c in changes:
        yield f"  {c.group} {c.host}: {c.pin} {_shown(c.before)} → {_shown(c.after)}" + (" (reboot)" if c.reboot else "")


def render_markdown(changes: list[PinChange]) -> str:
    """The comment's section on host pins: a table per host group, reboots in bold."""
    if not changes:
        return "\n#### Host pins\n\nNo changes.\n"
    lines = ["", "#### Host pins", ""]
    for group in dict.fromkeys(c.group for c in changes):
        lines += [f"**{group}**", "", "| host | pin | base | head | |", "|---|---|---|---|---|"]
        for c in (c for c in changes if c.group == group):
            mark = "**reboot**" if c.reboot else ""
            lines.append(f"| `{c.host}` | {c.pin} | `{_shown(c.before)}` | `{_shown(c.after)}` | {mark} |")
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
        archive = subprocess.run(["git", "-C", str(self.repo), "archive", "--format=tar", self.source, "--", *REVISION_PATHS],
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
