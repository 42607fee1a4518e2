"""The wheelhouse sandbox hosts install from: a real (CPU) Triton and the pipeline's wheels, with every dependency.

Two sets of wheels, both pinned in the catalog (the one copy of each pin): the native runtime's
(`platforms.yaml` `native_triton`: nvidia-pytriton, numpy; their other dependencies resolved by pip) and the
pipeline's (`pipeline.yaml` `uploader.packages`: google-cloud-storage, boto3; `worker.packages`: the bucket
worker's google-cloud-pubsub and grpcio; `agent.packages`: the pull agent's pyinfra, pydantic and PyYAML; with the
closed list of their dependencies, downloaded with `--no-deps --require-hashes` against the catalog's sha256).
Every pinned wheel is checked against the catalog's sha256 once downloaded.
`pip download` from PyPI for the hosts' interpreter (Debian bookworm: CPython 3.11, glibc 2.36), for both
architectures (x86_64 servers, aarch64 Jetsons), whatever the machine building it runs. The artifact server serves it two ways:
  * PEP 503 simple index:  pip install --index-url <artifacts_url>wheelhouse/simple/ nvidia-pytriton
  * flat links page:       pip install --no-index --find-links <artifacts_url>wheelhouse/ nvidia-pytriton
The nvidia-pytriton wheel carries tritonserver 2.51 (pytriton/tritonserver/bin) and the python-backend stubs;
see cnctl/sandbox/site/triton.py for how to run it.
"""

from __future__ import annotations

import hashlib
import html
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from cnctl.catalog import PinnedWheel, catalog

# The hosts' interpreter and libc. nvidia-pytriton is manylinux_2_35; pip does not widen an explicit
# --platform to older manylinux tags, so list the ones the dependencies use.
PYTHON_VERSION = "3.11"
ABI = "cp311"
_MANYLINUX = ("manylinux_2_36", "manylinux_2_35", "manylinux_2_28", "manylinux_2_17", "manylinux2014")
# dpkg architecture -> the wheel platform tags its hosts accept
PLATFORMS: dict[str, tuple[str, ...]] = {
    "amd64": (*(f"{tag}_x86_64" for tag in _MANYLINUX), "manylinux_2_5_x86_64", "manylinux1_x86_64"),
    "arm64": tuple(f"{tag}_aarch64" for tag in _MANYLINUX),
}
WHEEL_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}


def normalize(project: str) -> str:
    """PEP 503 project name normalisation."""
    return re.sub(r"[-_.]+", "-", project).lower()


def triton_pins() -> list[PinnedWheel]:
    """The native runtime's pinned wheels (catalog platforms.yaml `native_triton`)."""
    return list(catalog().platforms.native_triton.packages)


def pipeline_pins() -> list[PinnedWheel]:
    """Every pinned wheel of the catalog's pipeline.yaml the hosts install from the site's index: the uploader's,
    the bucket worker's and the pull agent's (`uploader.packages`, `worker.packages`, `agent.packages`; the
    latter two each closed together with the uploader's, with no package in common)."""
    pipeline = catalog().pipeline
    return [*pipeline.uploader.packages, *pipeline.worker.packages, *pipeline.agent.packages]


def requirements() -> tuple[str, ...]:
    """`name==version` of every pinned wheel the wheelhouse carries (Triton's first, then the pipeline's)."""
    return tuple(f"{p.name}=={p.version}" for p in [*triton_pins(), *pipeline_pins()])


def _hashed_requirements(pins: list[PinnedWheel]) -> str:
    return "".join(f"{p.name}=={p.version}" + "".join(f" --hash=sha256:{h}" for h in p.sha256) + "\n" for p in pins)


def _pip_download(arch: str, dest: Path, args: list[str]) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", str(dest),
           "--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", ABI]
    for plat in PLATFORMS[arch]:
        cmd += ["--platform", plat]
    res = subprocess.run([*cmd, *args], check=False, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"pip download for {arch} failed (PyPI reachable?):\n{res.stderr.strip()[-2000:]}")


def download(dest: Path) -> list[Path]:
    """pip download the pinned wheels (and the Triton wheels' dependencies) for the hosts into `dest`.

    Done on the machine for every architecture (an emulated host's CA store may not know the machine's proxy).
    The pipeline's list is closed and hashed: `--no-deps --require-hashes`, exactly as the hosts install it.
    """
    triton = [f"{p.name}=={p.version}" for p in triton_pins()]
    with tempfile.TemporaryDirectory(prefix="cnctl-wheelhouse-") as tmp:
        pipeline = Path(tmp) / "pipeline.txt"
        pipeline.write_text(_hashed_requirements(pipeline_pins()))
        for arch in PLATFORMS:
            _pip_download(arch, dest, triton)
            if pipeline_pins():
                _pip_download(arch, dest, ["--no-deps", "--require-hashes", "-r", str(pipeline)])
    verify(dest)
    return sorted(dest.glob("*.whl"))


def _wheel_name_version(wheel: Path) -> tuple[str, str]:
    name, version = wheel.name.split("-")[:2]
    return normalize(name), version


def verify(wheelhouse: Path) -> None:
    """Every pinned wheel is there for each architecture, and is the file the catalog pins (by sha256)."""
    by_key: dict[tuple[str, str], list[Path]] = {}
    for wheel in wheelhouse.glob("*.whl"):
        by_key.setdefault(_wheel_name_version(wheel), []).append(wheel)
    problems = []
    for pin in [*triton_pins(), *pipeline_pins()]:
        files = by_key.get((normalize(pin.name), pin.version), [])
        for wheel in files:
            if hashlib.sha256(wheel.read_bytes()).hexdigest() not in pin.sha256:
                problems.append(f"{wheel.name}: its sha256 is not one the catalog pins for {pin.name} {pin.version}")
        for arch, machine in WHEEL_ARCH.items():
            if not any(machine in w.name or w.name.endswith("-none-any.whl") for w in files):
                problems.append(f"{pin.name} {pin.version}: no wheel for {arch}")
    if problems:
        raise RuntimeError("the wheelhouse does not match the catalog's pins:\n  " + "\n  ".join(problems))


def wheel_for(wheelhouse: Path, project: str, arch: str) -> Path:
    """The wheelhouse's wheel of `project` for hosts of dpkg architecture `arch` (or a pure-Python one)."""
    wanted = WHEEL_ARCH[arch]
    found = sorted(w for w in wheelhouse.glob(f"{project}-*.whl")
                   if wanted in w.name or w.name.endswith("-none-any.whl"))
    if not found:
        raise FileNotFoundError(f"no {project} wheel for {arch} in {wheelhouse}: build the site content first")
    return found[-1]


def _page(title: str, links: list[tuple[str, str]]) -> str:
    body = "\n".join(f'    <a href="{html.escape(href)}">{html.escape(text)}</a><br/>' for href, text in links)
    return (f"<!DOCTYPE html>\n<html>\n  <head><meta name=\"pypi:repository-version\" content=\"1.0\">"
            f"<title>{html.escape(title)}</title></head>\n  <body>\n{body}\n  </body>\n</html>\n")


def write_indexes(wheelhouse: Path) -> None:
    """index.html (flat, for --find-links) and simple/ (PEP 503, for --index-url), with sha256 fragments."""
    wheels = sorted(wheelhouse.glob("*.whl"))
    sha = {w.name: hashlib.sha256(w.read_bytes()).hexdigest() for w in wheels}
    (wheelhouse / "index.html").write_text(
        _page("cnctl sandbox wheelhouse", [(f"{w.name}#sha256={sha[w.name]}", w.name) for w in wheels]))
    projects: dict[str, list[Path]] = {}
    for w in wheels:
        projects.setdefault(normalize(w.name.split("-")[0]), []).append(w)
    simple = wheelhouse / "simple"
    simple.mkdir(exist_ok=True)
    (simple / "index.html").write_text(_page("Simple index", [(f"{p}/", p) for p in sorted(projects)]))
    for project, files in projects.items():
        (simple / project).mkdir(exist_ok=True)
        (simple / project / "index.html").write_text(
            _page(f"Links for {project}", [(f"../../{w.name}#sha256={sha[w.name]}", w.name) for w in files]))
    (wheelhouse / "requirements.txt").write_text("\n".join(requirements()) + "\n")


def build_wheelhouse(dest: Path) -> None:
    """Fill the empty directory `dest` with the wheels and their indexes."""
    download(dest)
    write_indexes(dest)


# Bump when write_indexes() or download() change what they write. (The file itself is not hashed: a comment
# edit must not cost a 200 MB download.)
INDEX_FORMAT = "3"


def triton_recipe_inputs() -> list:
    """What the Triton wheels (nvidia-pytriton, numpy and their dependencies) depend on: the registry's images
    are built from them alone, so a pipeline pin does not rebuild them. ("2": the index format when the
    wheelhouse held only these, kept so that this digest, and the cached images, did not change.)"""
    return [repr(tuple(f"{p.name}=={p.version}" for p in triton_pins())), PYTHON_VERSION, ABI, repr(PLATFORMS), "2"]


def recipe_inputs() -> list:
    """The whole wheelhouse's recipe: every pin with its hashes (a re-pin of the same version to other files
    rebuilds it too), the hosts' interpreter and platforms, the index format."""
    return [_hashed_requirements([*triton_pins(), *pipeline_pins()]), PYTHON_VERSION, ABI, repr(PLATFORMS),
            INDEX_FORMAT]
