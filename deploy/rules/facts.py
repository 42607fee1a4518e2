"""The facts the host layers read: one command each, and a pure `process()` that turns its output into data.

Every `process()` here is a function of the command's output lines only, so tests/unit/test_facts.py feeds
it real outputs (nvidia-platform.md) and malformed ones, the way pyinfra tests its own facts. A fact whose
tool is missing, or whose output does not parse, gives its "nothing found" value (None, [] or {}): the
layers compare that with the stack's wishes and name what they found. The commands never fail on a host
that lacks the tool (`|| true`), because "absent" is a finding, not an error of the run.

Each fact is a plain class (`Fact`: pyinfra's FactBase protocol without pyinfra): deploy/facts.py makes each a
pyinfra fact for the deploys (`host.get_fact`), and deploy/rules/probe.py runs their commands in one round trip
for the roles. `DebArch` is pyinfra's own fact, the same command; `KernelModules` stays pyinfra's
(deploy/facts.py), the roles read /proc/modules with `LoadedModules`.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from typing import Any

from cnhost import triton_endpoint  # a host program: the collection carries it (cnctl/collection.py)

from . import scripts

__all__ = [
    "AptHolds",
    "DebArch",
    "DockerImage",
    "DockerRuntimes",
    "DpkgVersions",
    "HostPython",
    "InterfaceAddress",
    "LoadedModules",
    "ModelRepository",
    "NvccRelease",
    "NvidiaCtkDaemonJson",
    "NvidiaGpus",
    "NvpmodelMode",
    "OsIdentity",
    "SecureBoot",
    "TegraRelease",
    "TritonServing",
    "UnitsActive",
    "VenvPackages",
]

class Fact:
    """A fact: `command(**kwargs)` run on the host, `process(output lines)` its value, `default()` the value where
    the command printed nothing or `requires_command(**kwargs)` is not installed (pyinfra's FactBase protocol)."""

    command: Callable[..., str]

    def requires_command(self, *args: Any, **kwargs: Any) -> str | None:
        return None

    @staticmethod
    def default() -> Any:
        return None

    def process(self, output: list[str]) -> Any:
        return "\n".join(output)


class DebArch(Fact):
    """The dpkg architecture (`amd64`, `arm64`): pyinfra's fact of the same name, its command and tool."""

    def command(self) -> str:
        return "dpkg --print-architecture"

    def requires_command(self) -> str:
        return "dpkg"


NV_TEGRA_RELEASE = "/etc/nv_tegra_release"

# `# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 ...`
_TEGRA_FIRST_LINE = re.compile(r"^# R(?P<major>\d+) \(release\), REVISION: (?P<revision>\d+\.\d+), (?P<rest>.*)$")


class TegraRelease(Fact):
    """What L4T wrote to /etc/nv_tegra_release, or None where there is no such file (anything but a Jetson).

    `{"line": first line as written, "l4t": "36.4.3" or None if the line does not parse, "gcid", "board",
    "eabi", "date", "kernel_variant"}`. The L4T release is `<major>.<REVISION>` (R36 + 4.3 = 36.4.3).
    """

    def command(self) -> str:
        return f"cat {NV_TEGRA_RELEASE} 2>/dev/null || true"

    def process(self, output: list[str]) -> dict[str, Any] | None:
        lines = [line for line in output if line.strip()]
        if not lines:
            return None
        first = lines[0].strip()
        fact: dict[str, Any] = {"line": first, "l4t": None, "gcid": None, "board": None, "eabi": None, "date": None,
                                "kernel_variant": None}
        match = _TEGRA_FIRST_LINE.match(first)
        if match:
            fact["l4t"] = f"{match['major']}.{match['revision']}"
            fields = dict(part.split(": ", 1) for part in match["rest"].split(", ") if ": " in part)
            for key in ("gcid", "board", "eabi", "date"):
                fact[key] = fields.get(key.upper())
        for line in lines[1:]:
            if line.startswith("# KERNEL_VARIANT:"):
                fact["kernel_variant"] = line.partition(":")[2].strip() or None
        return fact


class OsIdentity(Fact):
    """The OS as the platform matrix names it: `{"id": "ubuntu", "version": "22.04", "codename": "jammy"}`
    from /etc/os-release (a value is None where the file lacks it); None without the file."""

    def command(self) -> str:
        return "cat /etc/os-release 2>/dev/null || true"

    def process(self, output: list[str]) -> dict[str, str | None] | None:
        items: dict[str, str] = {}
        for line in output:
            key, sep, value = line.strip().partition("=")
            if sep and key and not key.startswith("#"):
                items[key.lower()] = value.strip().strip("\"'")
        if not items:
            return None
        # Ubuntu writes both; Debian only VERSION_CODENAME; derivatives keep the base's in UBUNTU_CODENAME.
        codename = items.get("version_codename") or items.get("ubuntu_codename") or None
        return {"id": items.get("id") or None, "version": items.get("version_id") or None, "codename": codename}


NVIDIA_SMI_QUERY = "name,driver_version,memory.total,pci.bus_id"


class NvidiaGpus(Fact):
    """One row per GPU from `nvidia-smi --query-gpu=name,driver_version,memory.total,pci.bus_id`:
    `[{"name": "NVIDIA L4", "driver_version": "550.90.07", "memory_mib": 23034, "pci_bus_id": "00000000:00:03.0"}]`.

    [] where nvidia-smi is missing or cannot talk to a driver (it then prints a sentence, not rows). On a
    Jetson, memory and bus id are `[N/A]` (unified memory): those become None.
    """

    def requires_command(self) -> str:
        return "nvidia-smi"

    def command(self) -> str:
        return f"nvidia-smi --query-gpu={NVIDIA_SMI_QUERY} --format=csv,noheader,nounits 2>&1 || true"

    @staticmethod
    def default() -> list[dict[str, Any]]:
        return []

    def process(self, output: list[str]) -> list[dict[str, Any]]:
        rows = []
        for line in output:
            fields = [field.strip() for field in line.split(",")]
            if len(fields) != 4 or not re.fullmatch(r"\d+(\.\d+)+", fields[1]):
                continue  # "NVIDIA-SMI has failed because ...", "No devices were found", a header
            name, driver, memory, bus = fields
            rows.append({
                "name": name,
                "driver_version": driver,
                "memory_mib": int(memory) if memory.isdigit() else None,
                "pci_bus_id": None if bus.startswith("[") or bus == "N/A" else bus,
            })
        return rows


_NVCC_RELEASE = re.compile(r"release (?P<release>\d+\.\d+), V(?P<version>\d+(?:\.\d+)+)")


class NvccRelease(Fact):
    """The CUDA compiler on the host: `{"release": "12.4", "version": "12.4.131"}`, or None without nvcc.

    nvcc lives in /usr/local/cuda/bin, which is on no default PATH (not on Jetson either), so that is
    tried too.
    """

    def command(self) -> str:
        return 'PATH="$PATH:/usr/local/cuda/bin" nvcc --version 2>/dev/null || true'

    def process(self, output: list[str]) -> dict[str, str] | None:
        for line in output:
            match = _NVCC_RELEASE.search(line)
            if match:
                return {"release": match["release"], "version": match["version"]}
        return None


class AptHolds(Fact):
    """The packages `apt-mark showhold` lists, sorted ([] when none is held)."""

    def requires_command(self) -> str:
        return "apt-mark"

    def command(self) -> str:
        return "apt-mark showhold"

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return sorted({line.strip() for line in output if line.strip() and " " not in line.strip()})


class DpkgVersions(Fact):
    """`{package: version}` of the named packages that are installed; a package not installed is absent.

    `dpkg-query -W` also lists packages dpkg merely knows (removed with config files left: status `rc`,
    an empty or stale version), so the status is asked for and only installed ones (`?i`) count.
    """

    def requires_command(self, packages: list[str] | tuple[str, ...]) -> str:
        return "dpkg-query"

    def command(self, packages: list[str] | tuple[str, ...]) -> str:
        names = " ".join(shlex.quote(p) for p in packages)
        return f"dpkg-query -W -f='${{Package}} ${{Version}} ${{db:Status-Abbrev}}\\n' {names} 2>/dev/null || true"

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def process(self, output: list[str]) -> dict[str, str]:
        versions = {}
        for line in output:
            parts = line.split()
            if len(parts) == 3 and len(parts[2]) >= 2 and parts[2][1] == "i":
                versions[parts[0]] = parts[1]
        return versions


class NvpmodelMode(Fact):
    """The Jetson power mode `nvpmodel -q` reports: `{"name": "MAXN", "id": 0}`, or None without nvpmodel.

    `nvpmodel -q` prints `NV Power Mode: <name>` then the mode id on the next line; warnings
    (`NVPM WARN: ...`) may come before them.
    """

    def requires_command(self) -> str:
        return "nvpmodel"

    def command(self) -> str:
        return "nvpmodel -q 2>/dev/null || true"

    def process(self, output: list[str]) -> dict[str, Any] | None:
        lines = [line.strip() for line in output]
        for i, line in enumerate(lines):
            if line.startswith("NV Power Mode:"):
                name = line.partition(":")[2].strip()
                following = lines[i + 1] if i + 1 < len(lines) else ""
                if name and following.isdigit():
                    return {"name": name, "id": int(following)}
        return None


class DockerRuntimes(Fact):
    """The Docker engine's runtimes, from `docker info --format '{{json .}}'`.

    `{"running": True, "server_version": "27.5.1", "runtimes": ["io.containerd.runc.v2", "nvidia", "runc"],
    "default_runtime": "nvidia", "errors": []}`. With the daemon down the client still prints its JSON
    (empty `ServerVersion`) and says why on stderr (older clients: in `ServerErrors`): then `running` is
    False and `errors` holds the reason. None where docker is missing or prints no JSON.
    """

    def requires_command(self) -> str:
        return "docker"

    def command(self) -> str:
        return "docker info --format '{{json .}}' 2>&1 || true"

    def process(self, output: list[str]) -> dict[str, Any] | None:
        info: Any = None
        errors: list[str] = []
        for line in output:
            if info is None and line.lstrip().startswith("{"):
                try:
                    info = json.loads(line)
                    continue
                except ValueError:
                    pass
            if line.strip():
                errors.append(line.strip())
        if not isinstance(info, dict):
            return None
        errors = [str(e) for e in info.get("ServerErrors") or []] + errors
        runtimes = info["Runtimes"] if isinstance(info.get("Runtimes"), dict) else {}
        return {
            "running": not errors and bool(info.get("ServerVersion")),
            "server_version": info.get("ServerVersion") or None,
            "runtimes": sorted(runtimes),
            "default_runtime": info.get("DefaultRuntime") or None,
            "errors": errors,
        }


class ScriptReport(Fact):
    """The one JSON line a layer's host script prints in its read-only `check` mode (deploy/rules/scripts.py)."""

    def process(self, output: list[str]) -> dict[str, Any] | None:
        return scripts.reported(output)


class ModelRepository(ScriptReport):
    """What the model layer's script (cnhost/model_sync.py `check`) finds in the Triton model repository.

    `{"result": "ok" | "pending" | "failed", "changed": False, "reason": ..., "message": ...}`: "ok" when the
    pinned version is in place (its marker proves the pin), its config.pbtxt current, no surplus version and
    staging empty; "pending" with what a sync would do (also before the script is on the host). Reads files
    only: no download, not even a HEAD. None when the output is not the script's one JSON line.
    """

    def command(self, helper: str, options: dict[str, Any]) -> str:
        return scripts.model_command(helper, "check", options)


class HostPython(Fact):
    """The host's python3 as `X.Y` ("3.11"): which wheels and python-backend stub fit it. None without python3."""

    def command(self) -> str:
        return "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])' 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        line = output[-1].strip() if output else ""
        return line if re.fullmatch(r"\d+\.\d+", line) else None


class DockerImage(Fact):
    """The local ID (`sha256:<hex>`) of the image `image`, None when the engine does not hold it (or there is
    no docker)."""

    def requires_command(self, image: str) -> str:
        return "docker"

    def command(self, image: str) -> str:
        return f"docker image inspect --format '{{{{.Id}}}}' {shlex.quote(image)} 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        line = output[-1].strip() if output else ""
        return line if re.fullmatch(r"sha256:[0-9a-f]{64}", line) else None


class InterfaceAddress(Fact):
    """The first IPv4 address of the interface `interface` (`ip -4 -o addr show dev`), None when it has none."""

    def command(self, interface: str) -> str:
        return f"ip -4 -o addr show dev {shlex.quote(interface)} 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        return triton_endpoint.parse_ipv4(output)  # the one parser: the host scripts read `ip` as this fact does


class TritonServing(ScriptReport):
    """What the inference layer's script (cnhost/model_serve.py `check`) finds: does Triton serve the version
    the stack wants (the pin, or with `previous` the one served before it) from its recorded config?

    `{"result": "ok" | "pending", "message": ...}`; "pending" also before the script is on the host or while
    Triton does not answer. Reads files and asks Triton (GET); changes nothing. None when the output is not
    the script's one JSON line.
    """

    def command(self, helper: str, options: dict[str, Any], previous: bool = False) -> str:
        return scripts.serve_command(helper, "check", options, previous)


class VenvPackages(Fact):
    """The packages of the venv at `venv`, `{normalized name: version}` from its pip (`pip list --format=json`);
    {} where there is no venv (or its pip prints no JSON). Names are normalized as PEP 503 says (lowercase,
    runs of -_. as one -), so `nvidia_pytriton` and `nvidia-pytriton` are one name."""

    def command(self, venv: str) -> str:
        pip = shlex.quote(f"{venv}/bin/pip")
        return f"if [ -x {pip} ]; then {pip} list --format=json --disable-pip-version-check 2>/dev/null || true; fi"

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def process(self, output: list[str]) -> dict[str, str]:
        try:
            found = json.loads("".join(output)) if output else []
        except ValueError:
            return {}
        if not isinstance(found, list):
            return {}
        return {re.sub(r"[-_.]+", "-", str(p.get("name", ""))).lower(): str(p.get("version", ""))
                for p in found if isinstance(p, dict) and p.get("name")}


class UnitsActive(Fact):
    """`{unit: True/False}`: whether each named systemd unit is active now (`systemctl is-active`). The roles'
    handlers restart only what ran before the run, as the deploys do with pyinfra's `SystemdStatus`."""

    def command(self, units: list[str] | tuple[str, ...]) -> str:
        names = " ".join(shlex.quote(u) for u in units)
        return f'for u in {names}; do echo "$u $(systemctl is-active "$u" 2>/dev/null)"; done'

    @staticmethod
    def default() -> dict[str, bool]:
        return {}

    def process(self, output: list[str]) -> dict[str, bool]:
        found = {}
        for line in output:
            unit, _, state = line.strip().partition(" ")
            if unit:
                found[unit] = state.strip() == "active"
        return found


class LoadedModules(Fact):
    """The names of the loaded kernel modules (/proc/modules' first column): the roles' KernelModules."""

    def command(self) -> str:
        return "cat /proc/modules 2>/dev/null || true"

    @staticmethod
    def default() -> list[str]:
        return []  # pyinfra gives a fact without output its default: none loaded (a container has none)

    def process(self, output: list[str]) -> list[str]:
        return sorted({line.split()[0] for line in output if line.strip()})


class NvidiaCtkDaemonJson(Fact):
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


class SecureBoot(Fact):
    """Whether UEFI Secure Boot is on (the SecureBoot EFI variable's value byte): True, False, or None on a
    host without EFI variables (BIOS boot, containers). Unsigned (DKMS-built) driver modules do not load
    while it is on."""

    def command(self) -> str:
        return ("od -An -t u1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-e0e5bd6a9c2a "
                "2>/dev/null || true")

    def process(self, output: list[str]) -> bool | None:
        values = " ".join(output).split()
        return values[-1] == "1" if values else None
