"""The TF-generation client's pinned wheels (catalog pipeline.yaml `client_tf`): together with the uploader's they
are a closed list, so `pip install --no-deps --require-hashes` of both gives upstream's client and the official.*
modules it imports everything they import, on every host Python and architecture, except what tools/pin_wheels.py
OMIT names (unused, no usable wheel). What SOURCES names (trackpy: PyPI has no usable wheel of it) is pinned by
its sdist (`sdist: true`) and counts as pinned: its PKG-INFO's requirements must be pinned wheels of the set, and
so must setuptools and wheel, which build it on the host (`--no-build-isolation`); one test really builds it so,
offline, from the catalog's hashes.

Unlike the worker's and the agent's sets these wheels are not in the site's wheelhouse (TensorFlow alone is about
600 MB a file), so the closure is judged from each pinned file's METADATA read off PyPI with HTTP Range requests
(the zip's directory and that one member: a few hundred KB even of TensorFlow's wheels; the index this runs
against serves no PEP 658 metadata files), per architecture; the rest is judged offline from the catalog.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.tags import parse_tag
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from cnctl.catalog import CATALOG_DIR, catalog
from tests.unit.test_site_pipeline import _metadata, unmet_requirements
from tools.pin_wheels import ARCHES, BUILD_TOOLS, OMIT, SIMPLE, SOURCES, sdist_requires, supported

Pins = dict[str, tuple[str, list[str]]]
SETS = ("uploader", "worker", "agent", "client_tf")
# Where the build test keeps the files it fetches from PyPI: the cache the site content is built into (outside
# the repository), so a warm run is offline.
CACHE = Path(os.environ.get("CNCTL_CACHE", "/var/cache/cnctl")) / "client_tf-sources"


def _pins(section: str) -> Pins:
    return {str(canonicalize_name(p.name)): (p.version, list(p.sha256))
            for p in getattr(catalog().pipeline, section).packages}


def _sdists(section: str) -> set[str]:
    """The packages of `section` pinned by their source archive (`sdist: true`)."""
    return {str(canonicalize_name(p.name)) for p in getattr(catalog().pipeline, section).packages if p.sdist}


def test_client_pins_are_well_formed_and_apart_from_the_uploaders() -> None:
    client, uploader = catalog().pipeline.client_tf, catalog().pipeline.uploader
    assert client.pythons == uploader.pythons  # one venv: every Python the uploader's wheels serve
    names = [p.name for p in client.packages]
    assert names == sorted(names) and len(set(map(canonicalize_name, names))) == len(names)
    pins = _pins("client_tf")
    assert not set(pins) & set(_pins("uploader"))  # one pin per package across the venv
    hashes = [h for p in client.packages for h in p.sha256]
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes) and len(set(hashes)) == len(hashes)
    # What the client imports (the rest are their dependencies) ...
    assert {"tensorflow", "tf-keras", "opencv-python-headless", "pandas", "scikit-image", "scikit-learn", "natsort",
            "ffmpeg-python", "tritonclient", "webcolors", "pillow", "matplotlib", "gin-config"} <= set(pins)
    assert pins["webcolors"][0] == "1.13"  # color_and_property_extractor uses its 1.13 API
    assert pins["tf-keras"][0].split(".")[:2] == pins["tensorflow"][0].split(".")[:2]  # tf-keras follows TF's minor
    # ... and what this toolkit replaces or leaves out: no GUI OpenCV, no BigQuery, no tf-models-official tree.
    assert not {"opencv-python", "tf-models-official", "tensorflow-text", "google-cloud-bigquery",
                "pandas-gbq"} & set(pins)
    assert not set(OMIT.get("client_tf", {})) & set(pins)
    # object_tracking imports trackpy; tensorflow_datasets' extractor imports promise
    assert _sdists("client_tf") == set(SOURCES["client_tf"]) == {"trackpy", "promise"}


def test_every_sdist_has_one_hash_and_its_build_tools_as_wheels_of_the_same_set() -> None:
    """A host builds each sdist right after its set's wheels with --no-build-isolation: the set itself must carry
    setuptools (>= 70.1: its own bdist_wheel) and wheel as wheels, or pip would build with whatever the venv has."""
    for section in SETS:
        packages, sdists = getattr(catalog().pipeline, section).packages, _sdists(section)
        assert sdists == set(SOURCES.get(section, {})), section  # the catalog is what tools/pin_wheels.py writes
        for p in packages:
            if p.sdist:
                assert len(p.sha256) == 1 and re.fullmatch(r"[0-9a-f]{64}", p.sha256[0]), p.name
        if sdists:
            wheels = {str(canonicalize_name(p.name)): p.version for p in packages if not p.sdist}
            for tool in map(Requirement, BUILD_TOOLS):
                assert tool.name in wheels and tool.specifier.contains(wheels[tool.name]), f"{section}: {tool}"
            assert Version(wheels["setuptools"]) >= Version("70.1")


def _comment_tags() -> dict[str, list[str]]:
    """{package: the tag comment of each of its sha256 lines} of the `client_tf` section, read from the file."""
    text = (CATALOG_DIR / "pipeline.yaml").read_text()
    section = text[text.index("\nclient_tf:\n"):]
    tags: dict[str, list[str]] = {}
    name = ""
    for line in section.splitlines():
        if m := re.fullmatch(r"    - name: (\S+)", line):
            name = str(canonicalize_name(m[1]))
        elif m := re.fullmatch(r"        - [0-9a-f]{64}  # (\S+)", line):
            tags.setdefault(name, []).append(m[1])
    return tags


def test_every_client_package_has_a_wheel_for_every_python_and_architecture() -> None:
    """Judged from the tag comments tools/pin_wheels.py writes: the hosts never build from source."""
    comments, pythons = _comment_tags(), catalog().pipeline.client_tf.pythons
    assert set(comments) == set(_pins("client_tf"))
    for name, found in comments.items():
        assert len(found) == len(_pins("client_tf")[name][1])
        if name in _sdists("client_tf"):  # built on the host: one source archive for every Python and architecture
            assert found == ["sdist"], name
            continue
        tags = {tag for comment in found for tag in parse_tag(comment)}
        for python in pythons:
            for arch in ARCHES:
                assert tags & supported(python, arch), f"{name}: no wheel for CPython {python} on {arch}"


# --- closed together with the uploader's, from PyPI's metadata ------------------------------------------------


@cache
def _files(name: str) -> tuple[dict, ...]:
    req = urllib.request.Request(SIMPLE.format(name), headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return tuple(json.load(resp)["files"])


class _RemoteFile(io.RawIOBase):
    """A file on PyPI, read by HTTP Range requests where zipfile seeks: no wheel is downloaded whole."""

    def __init__(self, url: str) -> None:
        self.url, self.pos = url, 0
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=60) as resp:
            self.size = int(resp.headers["Content-Length"])

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.pos = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence] + offset
        return self.pos

    def readinto(self, buffer) -> int:  # buffer: a writable bytes-like object, as io.RawIOBase's
        if self.pos >= self.size:
            return 0
        end = min(self.pos + len(buffer), self.size) - 1
        req = urllib.request.Request(self.url, headers={"Range": f"bytes={self.pos}-{end}"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            data = resp.read()
            served = resp.headers.get("Content-Range", "")
        # A whole file, another representation or a cut answer would make zipfile misread: fail saying so.
        assert resp.status == 206 and served == f"bytes {self.pos}-{end}/{self.size}", f"{self.url}: {served!r}"
        assert len(data) == end + 1 - self.pos, f"{self.url}: {len(data)} bytes of {end + 1 - self.pos}"
        buffer[:len(data)] = data
        self.pos += len(data)
        return len(data)


@cache
def _sdist_requires(url: str, sha256: str) -> tuple[str, ...]:
    return sdist_requires(url, sha256)


@cache
def _requires_dist(url: str, sha256: str) -> tuple[str, ...]:
    """Requires-Dist of the wheel at `url` (its .dist-info/METADATA, read where it lies in the zip), kept in
    CACHE by the file's sha256 (a pinned file never changes). A read the CDN cut or mixed up (BadZipFile, a
    range answered wrong) is tried again, three times at most."""
    kept = CACHE / "metadata" / f"{sha256}.json"
    if kept.exists():
        return tuple(json.loads(kept.read_text()))
    problem: Exception | None = None
    for _ in range(3):
        try:
            lines = tuple(_metadata(io.BufferedReader(_RemoteFile(url), buffer_size=1 << 18)))  # type: ignore[arg-type]
            break
        except (zipfile.BadZipFile, AssertionError, OSError) as exc:
            problem = exc
    else:
        raise AssertionError(f"{url}: METADATA not read in 3 tries: {problem!r}")
    kept.parent.mkdir(parents=True, exist_ok=True)
    partial = kept.with_name(kept.name + f".{os.getpid()}.partial")
    partial.write_text(json.dumps(lines))
    partial.replace(kept)
    return lines


def _wheel_requirements(pins: Pins, arch: str) -> dict[tuple[str, str], list[str]]:
    """{(name, version): Requires-Dist} of every pinned file a host of `arch` takes (one per Python, or the
    pure-Python one), fetched in parallel; only files the catalog pins, by their sha256."""
    pythons = catalog().pipeline.client_tf.pythons

    def one(name: str) -> tuple[tuple[str, str], list[str]]:
        version, hashes = pins[name]
        lines: list[str] = []
        for f in _files(name):
            if f["hashes"].get("sha256") not in hashes:
                continue
            if not f["filename"].endswith(".whl"):  # a pinned sdist: its PKG-INFO (same on every architecture)
                lines += [line for line in _sdist_requires(f["url"], f["hashes"]["sha256"]) if line not in lines]
                continue
            wheel_tags = parse_wheel_filename(f["filename"])[3]
            if not any(wheel_tags & supported(python, arch) for python in pythons):
                continue
            lines += [line for line in _requires_dist(f["url"], f["hashes"]["sha256"]) if line not in lines]
        return (name, version), lines

    with ThreadPoolExecutor(max_workers=16) as pool:
        return dict(pool.map(one, sorted(pins)))


@pytest.mark.parametrize("arch", ARCHES)
def test_client_and_uploader_pins_together_are_closed(arch: str) -> None:
    pins = {**_pins("uploader"), **_pins("client_tf")}
    requires = _wheel_requirements(pins, arch)
    problems = unmet_requirements({n: (v, set(h)) for n, (v, h) in pins.items()},
                                  lambda name, version: requires[(name, version)], missing_ok=OMIT.get("client_tf", {}))
    assert not problems, "\n".join(problems)
    # trackpy counts as pinned (its sdist) and what its PKG-INFO requires is pinned too (numpy, scipy, pandas,
    # PyYAML, matplotlib, looseversion): the check above read them.
    trackpy = requires[("trackpy", pins["trackpy"][0])]
    assert {str(canonicalize_name(Requirement(line).name)) for line in trackpy} >= {
        "numpy", "scipy", "pandas", "pyyaml", "matplotlib", "looseversion"}
    # The client asks for tritonclient's grpc extra, whose requirements the check above (no extra) skips.
    env = {key: str(value) for key, value in default_environment().items()}
    env.update(python_version="3.10", platform_machine=arch, sys_platform="linux", platform_system="Linux",
               extra="grpc")
    tritonclient = requires[("tritonclient", pins["tritonclient"][0])]
    grpc = [Requirement(line) for line in tritonclient if "extra" in line]
    assert grpc  # tritonclient still declares the extra
    for req in grpc:
        if req.marker is not None and req.marker.evaluate(env):
            dep = str(canonicalize_name(req.name))
            assert dep in pins and req.specifier.contains(pins[dep][0], prereleases=True), str(req)


def test_source_packages_are_still_wanted_and_still_without_a_usable_wheel() -> None:
    """SOURCES are not stale: tensorflow-datasets still declares promise, which has no Python 3 wheel, and
    trackpy's only wheel is still 0.3.3 (a usable wheel would replace its sdist); each pinned sdist is the file
    PyPI has for its version."""
    tfds = _pins("client_tf")["tensorflow-datasets"]
    tfds_file = next(f for f in _files("tensorflow-datasets") if f["hashes"].get("sha256") in tfds[1])
    declared = _requires_dist(tfds_file["url"], tfds_file["hashes"]["sha256"])
    assert any(Requirement(line).name == "promise" for line in declared)
    pythons = catalog().pipeline.client_tf.pythons
    assert not [f["filename"] for f in _files("promise") if f["filename"].endswith(".whl")
                and parse_wheel_filename(f["filename"])[3] & supported(pythons[0], ARCHES[0])]  # 2.1's is py2 only
    trackpy_wheels = {str(parse_wheel_filename(f["filename"])[1])
                      for f in _files("trackpy") if f["filename"].endswith(".whl")}
    assert trackpy_wheels <= {"0.3.3"}, f"trackpy has new wheels {trackpy_wheels}: pin it (tools/pin_wheels.py)"
    for name in SOURCES["client_tf"]:
        version, hashes = _pins("client_tf")[name]
        assert [f["filename"] for f in _files(name) if f["hashes"].get("sha256") in hashes] == [
            f"{name}-{version}.tar.gz"]


def test_the_catalog_names_the_packages_pinned_by_source() -> None:
    text = (CATALOG_DIR / "pipeline.yaml").read_text()
    comment = text[:text.index("\nclient_tf:\n")].rsplit("\n\n", 1)[-1]
    assert all(name in comment for name in [*OMIT.get("client_tf", {}), *SOURCES["client_tf"]])
    assert yaml.safe_load(text)["client_tf"]["pythons"] == ["3.10", "3.11"]


# --- the sdist builds offline from the set's own build tools ---------------------------------------------------


def _fetched(name: str, sha256: str) -> Path:
    """The PyPI file of `name` with this sha256, fetched once into CACHE (checked: the hash is the catalog's).
    Not `pip download`: for an sdist it prepares metadata in an isolated build, fetching unpinned setuptools."""
    f = next(f for f in _files(name) if f["hashes"].get("sha256") == sha256)
    path = CACHE / f["filename"]
    if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
        with urllib.request.urlopen(f["url"], timeout=120) as resp:
            data = resp.read()
        assert hashlib.sha256(data).hexdigest() == sha256, f["url"]
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(data)
        partial.replace(path)
    return path


def test_trackpy_sdist_builds_offline_from_the_sets_pinned_setuptools_and_wheel(tmp_path: Path) -> None:
    """The hosts' two phases in a fresh venv: the build tools' wheels with `pip install --no-deps
    --require-hashes`, then the sdist with `--no-build-isolation` too, both with --no-index from the catalog's
    hashes. trackpy's own imports (numpy, ...) are not installed, so the proof is its dist-info."""
    pins, sdists = _pins("client_tf"), _sdists("client_tf")
    tools = [str(canonicalize_name(Requirement(t).name)) for t in BUILD_TOOLS]
    for name in [*tools, *sorted(sdists)]:
        for sha in pins[name][1]:
            _fetched(name, sha)
    wheels, sources = tmp_path / "wheels.txt", tmp_path / "sources.txt"
    wheels.write_text("".join(f"{n}=={pins[n][0]} --hash=sha256:{pins[n][1][0]}\n" for n in tools))
    sources.write_text("".join(f"{n}=={pins[n][0]} --hash=sha256:{pins[n][1][0]}\n" for n in sorted(sdists)))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # --isolated: no pip.conf or PIP_* variable can add an index; --no-cache-dir: the sdist is really built
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--isolated", "--disable-pip-version-check",
           "--no-cache-dir", "--no-index", "--find-links", str(CACHE), "--no-deps", "--require-hashes"]
    outputs = []
    for extra in (["-r", str(wheels)], ["--no-build-isolation", "-r", str(sources)]):
        res = subprocess.run(pip + extra, capture_output=True, text=True, timeout=300, check=False)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        outputs.append(res.stdout + res.stderr)
    assert "Building wheel for trackpy" in outputs[1]
    assert not [out for out in outputs if "Looking in indexes" in out or "Downloading" in out]  # no index reached
    site = next((venv / "lib").glob("python3.*/site-packages"))
    assert (site / f"trackpy-{pins['trackpy'][0]}.dist-info").is_dir()
    for name in tools:  # the build used the set's versions, not the venv's bundled setuptools
        assert [d.name for d in site.glob(f"{name}-*.dist-info")] == [f"{name}-{pins[name][0]}.dist-info"]
