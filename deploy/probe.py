"""deploy/facts.py for Ansible: the same commands in one shell round trip, the same `process()` on the output.

pyinfra reads each fact with `host.get_fact`. The roles cannot, so they run `script(probes)` (one task, one
round trip) and turn its output into the same values with `parse(lines, probes)`, through the filters of
roles/platform/filter_plugins/cnctl.py. A probe is `label: [FactName]` or `label: [FactName, {kwargs}]`.
Facts that declare a required command get pyinfra's treatment: where the command is missing, the fact's
default value ("absent" is a finding).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from pyinfra.api import FactBase

from deploy import facts

MARK = "@@cnctl-probe "
MISSING = "@@cnctl-missing"

# The facts a probe may name: deploy/facts.py's, except those whose command needs pyinfra's host context.
FACTS: dict[str, type[FactBase]] = {name: getattr(facts, name) for name in facts.__all__ if name != "KernelModules"}


class LoadedModules(FactBase):
    """The names of the loaded kernel modules (/proc/modules' first column): the roles' KernelModules."""

    def command(self) -> str:
        return "cat /proc/modules 2>/dev/null || true"

    @staticmethod
    def default() -> list[str]:
        return []  # pyinfra gives a fact without output its default: none loaded (a container has none)

    def process(self, output: list[str]) -> list[str]:
        return sorted({line.split()[0] for line in output if line.strip()})


class NvidiaCtkDaemonJson(FactBase):
    """Whether Docker's daemon.json is exactly what `nvidia-ctk runtime configure` makes of the base file
    (cnctl's settings, templates/docker/daemon.json.j2) -- True, or False where it differs, either file is
    missing or nvidia-ctk is not installed. `--dry-run` prints the result and writes nothing."""

    def requires_command(self, base: str, target: str, set_default: bool) -> str:
        return "nvidia-ctk"

    def command(self, base: str, target: str, set_default: bool) -> str:
        flag = " --set-as-default" if set_default else ""
        return (f"want=$(nvidia-ctk runtime configure --runtime=docker {shlex.quote(f'--config={base}')} --dry-run{flag} "
                f"2>/dev/null) && have=$(cat {shlex.quote(target)} 2>/dev/null) && [ -n \"$want\" ] "
                "&& [ \"$want\" = \"$have\" ] && echo same || echo differs")

    @staticmethod
    def default() -> bool:
        return False

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[-1].strip() == "same"


class SecureBoot(FactBase):
    """Whether UEFI Secure Boot is on (the SecureBoot EFI variable's value byte): True, False, or None on a
    host without EFI variables (BIOS boot, containers). Unsigned (DKMS-built) driver modules do not load
    while it is on."""

    def command(self) -> str:
        return ("od -An -t u1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-e0e5bd6a9c2a "
                "2>/dev/null || true")

    def process(self, output: list[str]) -> bool | None:
        values = " ".join(output).split()
        return values[-1] == "1" if values else None


FACTS["LoadedModules"] = LoadedModules
FACTS["SecureBoot"] = SecureBoot
FACTS["NvidiaCtkDaemonJson"] = NvidiaCtkDaemonJson

Probes = Mapping[str, Sequence[Any]]


def _spec(probe: Sequence[Any]) -> tuple[FactBase, dict[str, Any]]:
    name, kwargs = probe[0], (dict(probe[1]) if len(probe) > 1 else {})
    if name not in FACTS:
        raise ValueError(f"unknown fact {name!r}; known: {', '.join(sorted(FACTS))}")
    return FACTS[name](), kwargs


def script(probes: Probes) -> str:
    """One POSIX shell script printing every probe's output after a `@@cnctl-probe <label>` line."""
    parts = []
    for label, probe in probes.items():
        fact, kwargs = _spec(probe)
        command = fact.command(**kwargs)
        required = fact.requires_command(**kwargs)
        if required:
            command = (f"if command -v {shlex.quote(required)} >/dev/null 2>&1; then ( {command} ); "
                       f"else echo {MISSING}; fi")
        parts.append(f"echo {shlex.quote(MARK + label)}\n( {command} )")
    return "\n".join(parts) + "\n"


def parse(lines: Sequence[str], probes: Probes) -> dict[str, Any]:
    """{label: the fact's value} from the output of `script(probes)`."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        if line.startswith(MARK):
            current = sections.setdefault(line[len(MARK):].strip(), [])
        elif current is not None:
            current.append(line)
    values = {}
    for label, probe in probes.items():
        fact, _ = _spec(probe)
        output = [line for line in sections.get(label, []) if line.strip()]
        # as pyinfra: a missing tool, or no output at all, gives the fact's default
        values[label] = fact.default() if output in ([MISSING], []) else fact.process(output)
    return values
