"""deploy/rules/facts.py for Ansible: the same commands in one shell round trip, the same `process()` on the output.

pyinfra reads each fact with `host.get_fact`. The roles cannot, so they run `script(probes)` (one task, one
round trip) and turn its output into the same values with `parse(lines, probes)`, through the collection's
filters (cnctl_probe_script, cnctl_probe_parse). A probe is `label: [FactName]` or `label: [FactName, {kwargs}]`.
Facts that declare a required command get pyinfra's treatment: where the command is missing, the fact's
default value ("absent" is a finding).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from . import facts

MARK = "@@cnctl-probe "
MISSING = "@@cnctl-missing"

# The facts a probe may name: every fact of deploy/rules/facts.py.
FACTS: dict[str, type[facts.Fact]] = {name: getattr(facts, name) for name in facts.__all__}


Probes = Mapping[str, Sequence[Any]]


def _spec(probe: Sequence[Any]) -> tuple[facts.Fact, dict[str, Any]]:
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
