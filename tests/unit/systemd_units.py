"""Units read back the way systemd reads them, for tests: systemd's own parser (systemd-analyze on this machine,
systemd 252) for command lines and exposure, and a small reader of a unit file's lines for its keys.

- `load(*units)`, `command_lines(unit)`: each Exec*= setting's argv lists as systemd loaded them, the lines it
  ignored, or that it refused the unit. `systemd-analyze verify` at
  debug level dumps the loaded unit, each command line quoted as systemd quotes it (a word with anything
  special in double quotes, `\\ " $ \\``  escaped with a backslash); the `$$` that stands for `$` is undone as
  systemd undoes it when it runs the command (no command of ours uses the `:` prefix that turns this off).
- `settings(text)`: (section, key, value) of each assignment, per systemd.syntax(7): comments, sections, a
  trailing backslash joining the next line.
- `exposure(unit)`: the overall exposure level `systemd-analyze security --offline=true` gives the unit.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

EXEC_KEYS = ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop", "ExecStopPost")


def _words(line: str) -> list[str]:
    """The words of one command line as systemd's dump writes it (shell-style double quotes, backslash escapes)."""
    words, word, quoted, escaped, started = [], [], False, False, False
    for ch in line:
        if escaped:
            word.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = started = True
        elif ch == '"':
            quoted, started = not quoted, True
        elif ch == " " and not quoted:
            if started:
                words.append("".join(word))
            word, started = [], False
        else:
            word.append(ch)
            started = True
    assert not (quoted or escaped), f"unterminated word in {line!r}"
    if started:
        words.append("".join(word))
    return [w.replace("$$", "$") for w in words]


@dataclass(frozen=True)
class Loaded:
    """A unit as systemd loaded it: each Exec*= setting's argv lists, and the lines it ignored (a bad value)."""

    commands: dict[str, list[list[str]]]
    ignored: frozenset[int]


def load(*units: Path) -> dict[str, Loaded | None]:
    """{unit name: Loaded, or None when systemd refused to load it} for each of `units` (unique names), in one
    run of systemd-analyze (units they refer to and systemd cannot find are only warned about)."""
    result = subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True,
                            check=False, timeout=120, env={**os.environ, "SYSTEMD_LOG_LEVEL": "debug"})
    found: dict[str, dict[str, list[list[str]]]] = {}
    fatal: set[str] = set()
    ignored: dict[str, set[int]] = {}
    unit, key = None, None
    for line in (result.stdout + result.stderr).splitlines():
        header = re.fullmatch(r"\t*-> Unit (\S+):", line)
        exec_header = re.fullmatch(r"\t+-> (Exec\w+):", line)
        warning = re.match(r"/\S*/([^/\s]+):(\d+): .*ignoring", line)
        if header:
            unit, key = header[1], None
            found.setdefault(unit, {})
        elif exec_header and unit:
            key = exec_header[1]
        elif unit and key and line.lstrip("\t").startswith("Command Line: "):
            found[unit].setdefault(key, []).append(_words(line.lstrip("\t").removeprefix("Command Line: ")))
        else:
            key = None
        if warning:
            ignored.setdefault(warning[1], set()).add(int(warning[2]))
        elif line.endswith(": Unit configuration has fatal error, unit will not be started."):
            fatal.add(line.partition(":")[0])
    return {path.name: None if path.name in fatal or path.name not in found
            else Loaded(found[path.name], frozenset(ignored.get(path.name, ()))) for path in units}


def command_lines(unit: Path) -> dict[str, list[list[str]]]:
    """{"ExecStart": [argv, ...], ...} of a unit systemd loads."""
    loaded = load(unit)[unit.name]
    assert loaded is not None, f"systemd refused {unit}"
    return loaded.commands


def settings(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of every assignment of a unit file, in order."""
    found, section, pending = [], "", ""
    for raw in text.split("\n"):
        line = pending + raw
        if line.endswith("\\") and (len(line) - len(line.rstrip("\\"))) % 2:
            pending = line[:-1] + " "
            continue
        pending = ""
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1]
            continue
        key, sep, value = stripped.partition("=")
        assert sep, f"not an assignment: {line!r}"
        found.append((section, key.strip(), value.strip()))
    return found


def exposure(unit: Path) -> float:
    """The unit's overall exposure level under `systemd-analyze security --offline=true` (0.0 to 10.0)."""
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)], capture_output=True, text=True,
                            check=False, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    return float(match[1])
