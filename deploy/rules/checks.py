"""The host layers' verdicts, as plain functions of found facts and the host's wishes (its cn_* variables).

Both engines call these same functions: pyinfra from deploy/<layer>.py, Ansible through the filters of
the collection's filters (collection/plugins/filter/). Facts are the values of deploy/facts.py's `process()`; wishes are
the host variables of cnctl.hostvars. Each function returns the problem in words ("" / None / [] when
there is none), naming what was found and what is wanted, so a refusal needs no second lookup.

GOOD/BAD tables of every verdict: tests/unit/test_layers_checks.py.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

from . import matrix

Facts = Mapping[str, Any]
Wishes = Mapping[str, Any]


# --- platform: is this host what its fleet entry says, and does the matrix support it? -----------


def _os_words(os: Mapping[str, Any] | None) -> str:
    if not os:
        return "an unknown OS (no /etc/os-release)"
    codename = f" ({os['codename']})" if os.get("codename") else ""
    return f"{os.get('id')} {os.get('version')}{codename}"


def _supported_words(wishes: Wishes) -> str:
    """The matrix's OS list for this platform, with a declared substitution marked as such."""
    sub = wishes.get("cn_os_substitution")
    words = []
    for os in wishes["cn_supported_os"]:
        is_sub = sub is not None and (os["id"], os["version"]) == (sub["id"], sub["version"])
        words.append(_os_words(os) + (" (declared substitution: sandbox.jetsonOs)" if is_sub else ""))
    return ", ".join(words)


def os_problem(found: Facts, wishes: Wishes) -> str:
    """The host's OS must be one the matrix supports for its platform (or the stack's declared substitute)."""
    os = found.get("os")
    supported = {(o["id"], o["version"]) for o in wishes["cn_supported_os"]}
    if os and (os.get("id"), os.get("version")) in supported:
        return ""
    return (f"runs {_os_words(os)}; the platform matrix supports {_supported_words(wishes)} on a "
            f"{wishes['cn_platform']} (OS upgrades are not cnctl's job: reinstall or re-flash the host)")


def arch_problem(found: Facts, wishes: Wishes) -> str:
    """The dpkg architecture must be the platform's (arm64 on a Jetson, amd64 on a server)."""
    arch = found.get("dpkg_arch")
    if arch == wishes["cn_arch"]:
        return ""
    return f"is {arch or 'of unknown architecture'}; a {wishes['cn_platform']} must be {wishes['cn_arch']}"


def _jetpack_of(l4t: str | None) -> str:
    release = matrix.by_l4t(l4t) if l4t else None
    return f"JetPack {release['jetpack']}" if release else "a JetPack the matrix does not list"


def l4t_problem(found: Facts, wishes: Wishes) -> str:
    """A Jetson's L4T (/etc/nv_tegra_release, and nvidia-l4t-core where installed) must be the fleet entry's
    JetPack's; a server must not be a Jetson."""
    tegra = found.get("tegra")
    if wishes["cn_platform"] != "jetson":
        if tegra is None:
            return ""
        return f"is a Jetson (/etc/nv_tegra_release: L4T {tegra.get('l4t') or tegra.get('line')}) but its fleet lists it as a server"
    supported = ", ".join(f"{r['l4t']} (JetPack {r['jetpack']})" for r in matrix.jetson_releases())
    wanted = f"the fleet entry wants JetPack {wishes['cn_jetpack']} (L4T {wishes['cn_l4t']}); the matrix supports L4T {supported}"
    if tegra is None:
        return f"has no /etc/nv_tegra_release (not a flashed Jetson); {wanted}"
    l4t = tegra.get("l4t")
    if l4t is None:
        return f"has an /etc/nv_tegra_release that does not parse ({tegra.get('line')!r}); {wanted}"
    if l4t != wishes["cn_l4t"]:
        return (f"runs L4T {l4t} ({_jetpack_of(l4t)}); {wanted}. L4T upgrades are not cnctl's job: re-flash the "
                "device or change its fleet entry's jetpack")
    core = (found.get("l4t_core") or {}).get("nvidia-l4t-core")  # DpkgVersions: {} where not installed
    if core and not core.startswith(f"{l4t}-"):
        return f"has nvidia-l4t-core {core}, not of the L4T {l4t} its /etc/nv_tegra_release names; {wanted}"
    return ""


def engine_problem(found: Facts, wishes: Wishes) -> str:
    """The container engine must have pins for this OS release (docker.io is pinned per release)."""
    pins = wishes["cn_docker_pins"]
    codename = (found.get("os") or {}).get("codename")
    if "*" in pins or codename in pins:
        return ""
    return (f"runs {codename or 'an OS without a codename'}, for which the platform matrix pins no "
            f"{wishes['cn_docker_source']} packages (pinned for: {', '.join(sorted(pins))})")


PLATFORM_RULES = (os_problem, arch_problem, l4t_problem, engine_problem)


def platform_refusal(found: Facts, wishes: Wishes) -> str:
    """"" if the host is what its fleet entry says on a platform the matrix supports, else the one-line
    refusal: the host, every problem found, and that nothing was changed."""
    problems = [p for rule in PLATFORM_RULES if (p := rule(found, wishes))]
    if not problems:
        return ""
    return (f"{wishes['cn_host']}: platform refused: it " + "; it ".join(problems)
            + ". Nothing was changed on this host.")


def pins_for(wishes: Wishes, codename: str | None) -> list[dict[str, Any]]:
    """The container engine's pins for one OS release (the release's own, else those for any)."""
    pins = wishes["cn_docker_pins"]
    return list(pins.get(codename or "", pins.get("*", [])))


# --- packages: pinned versions and holds ----------------------------------------------------------


def unpinned(installed: Mapping[str, str], pins: Sequence[Mapping[str, Any]]) -> list[str]:
    """Packages of `pins` that are missing or installed at a version other than their pin (apt globs)."""
    wrong = []
    for pin in pins:
        for package in pin["packages"]:
            version = installed.get(package)
            if version is None or not fnmatchcase(version, pin["version"]):
                wrong.append(f"{package} {version or 'not installed'} (pinned: {pin['version']})")
    return wrong


def installed_matching(installed: Mapping[str, str], patterns: Sequence[str]) -> list[str]:
    """Installed packages whose names match any of `patterns` (shell globs), sorted."""
    return sorted(name for name in installed if any(fnmatchcase(name, p) for p in patterns))


# --- nvidia: the driver answers --------------------------------------------------------------------


def driver_problem(gpus: Sequence[Mapping[str, Any]], wishes: Wishes, secure_boot: bool | None = None) -> str:
    """nvidia-smi must list GPUs at the driver version the stack pins (image-provided: of its branch). With
    Secure Boot on, a driver that does not load is most likely unsigned: say so (it fails silently)."""
    want = wishes.get("cn_driver_version")
    branch = wishes["cn_driver_branch"]
    if not gpus:
        hint = ("; Secure Boot is on and the driver's modules are not signed for it: enroll the DKMS signing key "
                "(MOK) or turn Secure Boot off" if secure_boot else "")
        return f"nvidia-smi lists no GPU (driver not loaded, or no GPU){hint}"
    versions = sorted({g["driver_version"] for g in gpus})
    if want is not None and versions != [want]:
        return f"nvidia-smi reports driver {', '.join(versions)}, the stack pins {want}"
    if want is None and any(not v.startswith(f"{branch}.") for v in versions):
        return f"nvidia-smi reports driver {', '.join(versions)}, the image family's branch is {branch}"
    return ""


def nvcc_problem(nvcc: Mapping[str, str] | None, wishes: Wishes) -> str:
    """nvcc must be the pinned toolkit's (or, on an image that brings CUDA, of the image's CUDA release)."""
    want, cuda = wishes.get("cn_nvcc_version"), wishes["cn_cuda"]
    if nvcc is None:
        return f"nvcc is missing (CUDA {cuda} wanted)"
    if want is not None and nvcc["version"] != want:
        return f"nvcc is {nvcc['version']}, the stack pins {want}"
    if want is None and nvcc["release"] != cuda:
        return f"nvcc is CUDA {nvcc['release']}, the image family brings {cuda}"
    return ""


# --- container: the engine runs with NVIDIA's runtime ---------------------------------------------


def docker_problem(info: Mapping[str, Any] | None, wishes: Wishes) -> str:
    """`docker info` must answer with the nvidia runtime (and as the default runtime on a Jetson)."""
    if info is None:
        return "docker info gave no answer (docker missing?)"
    if not info["running"]:
        return f"the Docker engine is not running: {'; '.join(info['errors']) or 'no server version'}"
    if "nvidia" not in info["runtimes"]:
        return f"docker info lists runtimes {', '.join(info['runtimes'])}, without nvidia"
    if wishes["cn_platform"] == "jetson" and info["default_runtime"] != "nvidia":
        return f"docker's default runtime is {info['default_runtime']}, not nvidia (Jetson containers need it)"
    return ""


# --- model: the stack pins the archive every host fetches ------------------------------------------


def model_problem(wishes: Wishes) -> str:
    """The model layer fetches only a pinned archive over http(s): "" when the stack gives one, else the fix."""
    key, stack = wishes.get("cn_model_key"), wishes.get("cn_stack")
    if not wishes.get("cn_model_sha256"):
        return (f"model {key} has no sha256 pin in stack {stack}; run `cnctl model pin --stack {stack}` and "
                "review the stack file's diff")
    url = wishes.get("cn_model_url") or ""
    if not url.startswith(("http://", "https://")):
        return (f"model {key}: hosts fetch the archive over http(s), not {url or 'no URL'}; set model.url in "
                f"stack {stack} to a mirror they can reach")
    return ""


# --- inference: the runtime fits the host ---------------------------------------------------------------


def inference_problem(found: Facts, wishes: Wishes) -> str:
    """"" when the host can run the stack's Triton runtime on the address it names, else what to change.

    found: {"python": "3.11" or None, "address": the bind interface's IPv4 or None}."""
    host, runtime = wishes.get("cn_host"), wishes.get("cn_inference_runtime")
    if runtime == "native":
        pythons = list(wishes.get("cn_triton_pythons") or [])
        if found.get("python") not in pythons:
            return (f"{host}: the native inference runtime's pinned wheels are for Python {', '.join(pythons)}; this "
                    f"host has {found.get('python') or 'no python3'}: pin wheels for it under native_triton in the "
                    "platform matrix, or use the container runtime (inference.runtime or the fleet entry's "
                    "inferenceRuntime)")
    return bind_interface_problem(found, wishes)


def bind_interface_problem(found: Facts, wishes: Wishes) -> str:
    """"" unless the stack names a bind interface (Triton's and the exporters') that has no IPv4 address here.

    found: {"address": the interface's IPv4 or None}."""
    interface = wishes.get("cn_inference_bind_interface")
    if interface and not found.get("address"):
        return (f"{wishes.get('cn_host')}: interface {interface} (inference.bindInterface) has no IPv4 address here; "
                "name a private interface this host has, or bind an address (inference.bindAddress)")
    return ""


def inference_address(found: Facts, wishes: Wishes) -> str:
    """The address Triton (and the monitoring layer's exporter) binds: the named interface's, else the stack's."""
    if wishes.get("cn_inference_bind_interface"):
        return str(found.get("address"))
    return str(wishes.get("cn_inference_bind_address") or "127.0.0.1")


def missing_wheels(installed: Mapping[str, str], wheels: Sequence[Mapping[str, Any]]) -> list[str]:
    """The pinned wheels (`name==version`) the venv lacks at their version; installed names are normalized."""
    return [f"{w['name']}=={w['version']}" for w in wheels
            if installed.get(re.sub(r"[-_.]+", "-", str(w["name"])).lower()) != str(w["version"])]


def pipeline_problem(found: Facts, wishes: Wishes) -> str:
    """"" when the host can run the stack's pipeline, else what to change (before anything changes on it).

    found: {"python": "3.11" or None, "credentials": {"exists": bool, "mode": int} or None (the deploying
    machine's credentials file, when the stack names one)}."""
    host, client = wishes.get("cn_host"), wishes.get("cn_pipeline_client")
    if not wishes.get("cn_pipeline_client_url") or not wishes.get("cn_pipeline_client_sha256"):
        return (f"{host}: the pipeline client {client} has no pinned archive: set pipeline.clientUrl and "
                "pipeline.clientSha256 (sha256sum of the zip) in the stack")
    if wishes.get("cn_pipeline_client_wheels") is None:
        return (f"{host}: the pipeline client {client} has no pinned requirements in catalog/pipeline.yaml "
                "(clients.<key>.requirements); pin them before deploying it")
    pythons = list(wishes.get("cn_pipeline_pythons") or [])
    if found.get("python") not in pythons:
        return (f"{host}: the pipeline's pinned wheels are for Python {', '.join(pythons) or 'none'}; this host has "
                f"{found.get('python') or 'no python3'}: pin wheels for it under `uploader` in catalog/pipeline.yaml")
    camera = wishes.get("cn_camera") or {}
    if camera.get("source") == "replay" and not (camera.get("replay_url") and camera.get("replay_sha256")):
        return f"{host}: the replay camera needs camera.replayUrl and camera.replaySha256 in its fleet entry"
    path = wishes.get("cn_storage_credentials_file")
    credentials = found.get("credentials")
    if path and (not credentials or not credentials.get("exists")):
        return (f"{host}: storage.credentialsFile {path} does not exist on the deploying machine: put the "
                "uploader's credentials there (mode 0600), or remove the field to use the host's own identity")
    if path and credentials and int(credentials.get("mode", 0)) & 0o077:
        return (f"{host}: storage.credentialsFile {path} is readable by others (mode "
                f"{int(credentials['mode']) & 0o777:04o}): chmod 600 {path}")
    return ""
