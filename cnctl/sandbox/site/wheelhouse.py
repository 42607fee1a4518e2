"""The wheelhouse sandbox hosts install a real (CPU) Triton from: nvidia-pytriton, numpy and their dependencies.

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
from pathlib import Path

# Pinned so the wheelhouse (and what the sandbox tests) only changes when this line does.
REQUIREMENTS = ("nvidia-pytriton==0.7.0", "numpy==1.26.4")
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


def download(dest: Path) -> list[Path]:
    """pip download the pinned requirements and their dependencies as wheels for the hosts into `dest`.

    Done on the machine for every architecture (an emulated host's CA store may not know the machine's proxy).
    """
    for arch, platforms in PLATFORMS.items():
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", str(dest),
               "--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", ABI]
        for plat in platforms:
            cmd += ["--platform", plat]
        res = subprocess.run([*cmd, *REQUIREMENTS], check=False, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"pip download for {arch} failed (PyPI reachable?):\n{res.stderr.strip()[-2000:]}")
    return sorted(dest.glob("*.whl"))


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
    (wheelhouse / "requirements.txt").write_text("\n".join(REQUIREMENTS) + "\n")


def build_wheelhouse(dest: Path) -> None:
    """Fill the empty directory `dest` with the wheels and their indexes."""
    download(dest)
    write_indexes(dest)


# Bump when write_indexes() changes what it writes. (The file itself is not hashed: a comment edit must not
# cost a 100 MB download.)
INDEX_FORMAT = "2"


def recipe_inputs() -> list:
    return [repr(REQUIREMENTS), PYTHON_VERSION, ABI, repr(PLATFORMS), INDEX_FORMAT]
