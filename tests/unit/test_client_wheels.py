"""The TF-generation client's pinned wheels (catalog pipeline.yaml `client_tf`): together with the uploader's they
are a closed list, so `pip install --no-deps --require-hashes` of both gives upstream's client and the official.*
modules it imports everything they import, on every host Python and architecture, except what tools/pin_wheels.py
OMIT names (PyPI has no usable wheel of it).

Unlike the worker's and the agent's sets these wheels are not in the site's wheelhouse (TensorFlow alone is about
600 MB a file), so the closure is judged from each pinned file's METADATA read off PyPI with HTTP Range requests
(the zip's directory and that one member: a few hundred KB even of TensorFlow's wheels; the index this runs
against serves no PEP 658 metadata files), per architecture; the rest is judged offline from the catalog.
"""

from __future__ import annotations

import io
import json
import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.tags import parse_tag
from packaging.utils import canonicalize_name, parse_wheel_filename

from cnctl.catalog import CATALOG_DIR, catalog
from tests.unit.test_site_pipeline import _metadata, unmet_requirements
from tools.pin_wheels import ARCHES, OMIT, SIMPLE, supported

Pins = dict[str, tuple[str, list[str]]]


def _pins(section: str) -> Pins:
    return {str(canonicalize_name(p.name)): (p.version, list(p.sha256))
            for p in getattr(catalog().pipeline, section).packages}


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
    assert not set(OMIT["client_tf"]) & set(pins)


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
def _requires_dist(url: str) -> tuple[str, ...]:
    """Requires-Dist of the wheel at `url` (its .dist-info/METADATA, read where it lies in the zip)."""
    return tuple(_metadata(io.BufferedReader(_RemoteFile(url), buffer_size=1 << 18)))  # type: ignore[arg-type]


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
            wheel_tags = parse_wheel_filename(f["filename"])[3]
            if not any(wheel_tags & supported(python, arch) for python in pythons):
                continue
            lines += [line for line in _requires_dist(f["url"]) if line not in lines]
        return (name, version), lines

    with ThreadPoolExecutor(max_workers=16) as pool:
        return dict(pool.map(one, sorted(pins)))


@pytest.mark.parametrize("arch", ARCHES)
def test_client_and_uploader_pins_together_are_closed(arch: str) -> None:
    pins = {**_pins("uploader"), **_pins("client_tf")}
    requires = _wheel_requirements(pins, arch)
    problems = unmet_requirements({n: (v, set(h)) for n, (v, h) in pins.items()},
                                  lambda name, version: requires[(name, version)], missing_ok=OMIT["client_tf"])
    assert not problems, "\n".join(problems)
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


def test_omitted_packages_are_still_wanted_and_still_without_a_usable_wheel() -> None:
    """OMIT is not stale: tensorflow-datasets still declares promise, and trackpy's only wheel is still 0.3.3."""
    tfds = _pins("client_tf")["tensorflow-datasets"]
    tfds_file = next(f for f in _files("tensorflow-datasets") if f["hashes"].get("sha256") in tfds[1])
    assert any(Requirement(line).name == "promise" for line in _requires_dist(tfds_file["url"]))
    pythons = catalog().pipeline.client_tf.pythons
    assert not [f["filename"] for f in _files("promise") if f["filename"].endswith(".whl")
                and parse_wheel_filename(f["filename"])[3] & supported(pythons[0], ARCHES[0])]  # 2.1's is py2 only
    trackpy_wheels = {str(parse_wheel_filename(f["filename"])[1])
                      for f in _files("trackpy") if f["filename"].endswith(".whl")}
    assert trackpy_wheels <= {"0.3.3"}, f"trackpy has new wheels {trackpy_wheels}: pin it (tools/pin_wheels.py)"


def test_the_catalog_names_the_omitted_packages() -> None:
    text = (CATALOG_DIR / "pipeline.yaml").read_text()
    comment = text[:text.index("\nclient_tf:\n")].rsplit("\n\n", 1)[-1]
    assert all(name in comment for name in OMIT["client_tf"])
    assert yaml.safe_load(text)["client_tf"]["pythons"] == ["3.10", "3.11"]
