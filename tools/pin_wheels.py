"""Pin the pipeline's wheels: resolve, then write every file's sha256 into cnctl/catalog/pipeline.yaml.

    .venv/bin/python tools/pin_wheels.py            # resolve the newest versions, rewrite every set's `packages`
    .venv/bin/python tools/pin_wheels.py --only client_tf   # one set; the uploader's pins stay as they are
    .venv/bin/python tools/pin_wheels.py --check    # resolve again, exit 1 if the catalog differs (no write)

A maintainer's tool (network: PyPI only), not part of any deploy. Four sets, each installed with
`pip install --no-deps --require-hashes`:

- `uploader` (every host): TOP_LEVEL["uploader"], closed on its own;
- `worker` (only hosts whose input is the images bucket: cnhost/bucket_worker.py): TOP_LEVEL["worker"] with
  the uploader's pins as constraints, minus the uploader's pins, so that the uploader plus the worker is closed
  and an edge device never installs grpc;
- `agent` (pull-mode hosts: the pull layer's venv, /opt/circularnet/pull/venv, which runs cnctl.bundle.agent
  and `pyinfra @local deploy.py`): pyinfra, pydantic and PyYAML at exactly the versions uv.lock locks (the
  deploy code is written and tested against those), with the uploader's pins as constraints and minus them,
  like `worker`, so that the uploader plus the agent is closed (the agent reads the bucket with the uploader's
  store clients). The worker's pins are not constraints: the two sets never share a venv;
- `client_tf` (hosts whose client is upstream's TF-generation client: the pipeline venv, beside the uploader's):
  CLIENT_TF, what that client and the official.* modules it imports need (TensorFlow, OpenCV headless, ...), with
  the uploader's pins as constraints and minus them, like `worker`; OMIT names what it needs but does not use
  (promise), left out of the resolve and the pins; SOURCES what it needs but PyPI has no usable wheel of
  (trackpy), pinned by its sdist instead (below).

Each set is one `uv pip compile` for the oldest Python of its `pythons` on x86_64, re-resolved with those
versions as constraints for every other (Python, architecture) pair, which must need nothing outside it. For
each pinned version, every wheel PyPI has that a CPython of `pythons` on manylinux x86_64 or aarch64 accepts
(pure-Python wheels included) is listed by sha256 (PyPI's simple JSON API), with its tags as a comment; a
package lacking a wheel for one of those platforms is an error (the hosts never build from source, but for
SOURCES).

SOURCES: a pure-Python package a set needs whose wheels PyPI lacks or are broken is pinned by the sha256 of its
newest release's sdist (`sdist: true`). The set is resolved without it but with its run-time requirements (its
sdist's PKG-INFO Requires-Dist) and with setuptools and wheel, so that what it imports and what builds it are
pinned wheels of the same set: the hosts install every wheel first, then the sdists with
`pip install --no-deps --require-hashes --no-build-isolation`, which builds with those and fetches nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import urllib.request
from email.parser import Parser
from pathlib import Path

import yaml
from packaging import tags
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

REPO = Path(__file__).resolve().parents[1]
CATALOG = REPO / "cnctl" / "catalog" / "pipeline.yaml"
UV = REPO / ".venv" / "bin" / "uv"
LOCK = REPO / "uv.lock"
# What upstream's TF-generation client (tensorflow/models official/projects/waste_identification_ml/
# Triton_TF_Cloud_Deployment/client, with model_inference/color_and_property_extractor.py) imports, and what the
# official.* modules it imports from the same source tree import in turn (mask_bbox_saver's
# official.vision.utils.object_detection.visualization_utils runs official/vision/__init__.py, which imports
# official.vision.configs and .tasks: official.core, official.modeling, the vision evaluators and models).
# Upstream's install line, minus what this toolkit replaces: no google-cloud-bigquery or pandas-gbq (the adapter
# writes big_query_ops' rows as NDJSON; no device writes BigQuery), opencv-python-headless (headless servers and
# Jetsons, no GUI libraries), tritonclient's grpc extra only (triton_server_inference uses tritonclient.grpc),
# and no tf-models-official: `official` is the pinned source archive on sys.path, and that package's own
# dependencies (tensorflow-text among them) have no aarch64 wheels. webcolors stays at 1.13: the colour
# extractor uses its 1.13 API (webcolors.CSS3_HEX_TO_NAMES), which later releases dropped.
CLIENT_TF = (
    "tensorflow",  # utils, visualization_utils, official.* throughout
    "tf-keras",  # utils (`import tensorflow as tf, tf_keras`), official.core and official.modeling
    "absl-py",  # inference_pipeline's flags, official.*'s logging
    "opencv-python-headless",  # cv2: utils, mask_bbox_saver, triton_server_inference, official.vision.ops.mask_ops
    "natsort",  # utils.files_paths
    "numpy",
    "pandas",  # feature_extraction, object_tracking, mask_bbox_saver, color_and_property_extractor
    "scikit-image",  # skimage: feature_extraction, color_and_property_extractor
    "scikit-learn",  # sklearn: color_and_property_extractor (KMeans, BallTree)
    "webcolors==1.13",  # color_and_property_extractor
    "ffmpeg-python",  # ffmpeg: ffmpeg_ops
    "Pillow",  # PIL: ffmpeg_ops, visualization_utils, official.vision.evaluation.coco_utils
    "tritonclient[grpc]",  # triton_server_inference
    "matplotlib",  # visualization_utils
    "six",  # visualization_utils, preprocess_ops, official.modeling.hyperparams
    "gin-config",  # gin: official.core (actions, base_trainer, train_utils)
    "PyYAML",  # yaml: official.modeling.hyperparams
    "tensorflow-datasets",  # official.core.input_reader imports it unconditionally
    "pycocotools",  # official.vision.evaluation.coco_evaluator, coco_utils (via official.vision.tasks)
    "immutabledict",  # official.vision.modeling.backbones.vit_specs
    "scipy",  # official.nlp.modeling.layers.mixing (via the vision backbones' nn_blocks)
)
# What a set's closure names but the set does not use and PyPI has no usable wheel of, with why: dropped from
# every requirement of the resolve (an override whose marker is never true) and never pinned, so the set is
# closed except for these; the catalog's comment on the set names them, and the closure test allows exactly these.
OMIT: dict[str, dict[str, str]] = {}
# What a set needs but PyPI has no usable wheel of, with why: pure-Python packages pinned by their newest sdist
# and built on the host from the set's own pinned setuptools and wheel (`--no-build-isolation`: nothing unpinned
# is fetched). Left out of the resolve like OMIT (their wheels are what is broken); their run-time requirements
# and BUILD_TOOLS join the set's top level instead, so both are pinned wheels of the same set.
SOURCES = {"client_tf": {
    "trackpy": "object_tracking's `import trackpy`: its only wheel is 0.3.3, which fails to import on Python 3.10+ "
               "(`from collections import Iterable`); 0.4 to 0.7 are sdists only (setup.py, pure Python)",
    "promise": "tensorflow-datasets declares it and its extractor imports it (`import tensorflow_datasets`, which "
               "official.core.input_reader does, logs the ImportError without it); its only wheel is Python 2's",
}}
# Upper bounds a set takes for another set's sake. The uploader's pins are every other set's constraints (one
# venv): tensorflow-metadata (client_tf, through tensorflow-datasets) accepts protobuf <= 6.32 on Python 3.10,
# the Jetsons' (JetPack 6, Ubuntu 22.04), so the uploader's protobuf may not be newer.
# A package's declared range can be wider than what works: tritonclient 2.73's generated code (gencode 6.33.5)
# refuses an older protobuf runtime at import; 2.71 imports under 6.32 (checked in a venv of these pins).
CAPS = {"uploader": ("protobuf<=6.32",), "client_tf": ("tritonclient<2.73",)}
# What builds SOURCES on the host. setuptools 70.1 is the first with its own bdist_wheel; `wheel` is pinned too,
# since pip's legacy setup.py path and older setuptools import it.
BUILD_TOOLS = ("setuptools>=70.1", "wheel")
# A pinned sdist: (version, file name, sha256, its run-time requirements).
Sdist = tuple[str, str, str, tuple[str, ...]]
TOP_LEVEL = {"uploader": ("google-cloud-storage", "boto3"), "worker": ("google-cloud-pubsub",),
             "agent": ("pyinfra", "pydantic", "PyYAML"), "client_tf": CLIENT_TF}
SECTIONS = ("uploader", "worker", "agent", "client_tf")
ARCHES = ("x86_64", "aarch64")
SIMPLE = "https://pypi.org/simple/{}/"
# The block this tool owns in each set: from this line to the next top-level key (or the end of the file).
MARKER = "  packages:"


def platforms(arch: str) -> list[str]:
    """Every manylinux tag of `arch`, newest first (the hosts' glibc decides which they take)."""
    legacy = ["manylinux2014", "manylinux2010", "manylinux1"] if arch == "x86_64" else ["manylinux2014"]
    return [f"manylinux_2_{minor}_{arch}" for minor in range(40, 4, -1)] + [f"{tag}_{arch}" for tag in legacy]


def supported(python: str, arch: str) -> set[tags.Tag]:
    version = tuple(int(p) for p in python.split("."))
    plats = platforms(arch)
    return {*tags.cpython_tags(version, platforms=plats), *tags.compatible_tags(version, platforms=plats)}


def compile_for(python: str, arch: str, constraints: Path | None, top: tuple[str, ...],
                omit: tuple[str, ...] = ()) -> dict[str, str]:
    """{canonical name: version} that uv resolves for `top` on this Python and architecture, without `omit`."""
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "in.txt"
        req.write_text("\n".join(top) + "\n")
        cmd = [str(UV), "pip", "compile", str(req), "--python-version", python,
               "--python-platform", f"{arch}-manylinux_2_28", "--only-binary", ":all:",
               "--no-header", "--no-annotate", "--quiet"]
        if constraints:
            cmd += ["--constraint", str(constraints)]
        if omit:  # an override's marker that no environment meets removes the package from every requirement
            overrides = Path(tmp) / "overrides.txt"
            overrides.write_text("".join(f"{name}; python_version < '0'\n" for name in omit))
            cmd += ["--override", str(overrides)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    pins = {}
    for line in out.splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[str(canonicalize_name(name))] = version.split(";")[0].strip()
    return pins


def resolve(pythons: list[str], top: tuple[str, ...], held: dict[str, str] | None = None,
            omit: tuple[str, ...] = ()) -> dict[str, str]:
    """The closed pins of `top`, every version in `held` kept (they are another set's pins, same venv), none of
    `omit` (OMIT: no usable wheel).

    One version per package for every (Python, architecture): when the first pair's resolve picks a version
    another pair has no wheel for (gevent's newest lacks aarch64 wheels for 3.10), that pair's own choice
    caps it and the first pair resolves again under the cap."""
    caps: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        for _ in range(10):
            fixed = {**caps, **(held or {})}
            constraints.write_text("".join(f"{n}=={v}\n" for n, v in fixed.items()))
            base = compile_for(pythons[0], ARCHES[0], constraints if fixed else None, top, omit)
            constraints.write_text("".join(f"{n}=={v}\n" for n, v in {**base, **(held or {})}.items()))
            capped = False
            for python in pythons:
                for arch in ARCHES:
                    try:
                        other = compile_for(python, arch, constraints, top, omit)
                    except subprocess.CalledProcessError:
                        constraints.write_text("".join(f"{n}=={v}\n" for n, v in fixed.items()))
                        own = compile_for(python, arch, constraints if fixed else None, top, omit)
                        lower = {n: v for n, v in own.items()
                                 if n in base and Version(v) < Version(base[n]) and n not in caps}
                        if not lower:
                            raise
                        caps.update(lower)
                        capped = True
                        break
                    # a marker may pull in, on one Python only, a package another set pins (the held ones)
                    extra = {n: v for n, v in other.items() if base.get(n) != v and (held or {}).get(n) != v}
                    if extra:
                        raise SystemExit(f"Python {python} on {arch} needs more than Python {pythons[0]} on "
                                         f"{ARCHES[0]}: {extra}")
                if capped:
                    break
            if not capped:
                return base
    raise SystemExit(f"no one set of versions of {', '.join(top)} fits every Python and architecture")


def wheel_files(name: str, version: str, pythons: list[str]) -> list[tuple[str, str]]:
    """(file name, sha256) of every wheel of name==version that some (Python, architecture) of the hosts takes."""
    req = urllib.request.Request(SIMPLE.format(name), headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        files = json.load(resp)["files"]
    wanted = {(py, arch): supported(py, arch) for py in pythons for arch in ARCHES}
    covered: set[tuple[str, str]] = set()
    picked = []
    for f in files:
        if not f["filename"].endswith(".whl") or f.get("yanked"):
            continue
        try:
            _, ver, _, wheel_tags = parse_wheel_filename(f["filename"])
        except InvalidWheelFilename:  # an old release's name no installer accepts (pydantic 0.18: py36+)
            continue
        if str(ver) != version:
            continue
        # A wheel whose tags fit may still refuse the Python (tensorflow-metadata 0.5.0: py2.py3, but <3): pip
        # honours Requires-Python, so must the pins.
        accepts = SpecifierSet(f.get("requires-python") or "")
        hits = {key for key, tagset in wanted.items() if wheel_tags & tagset and accepts.contains(f"{key[0]}.0")}
        if hits:
            covered |= hits
            picked.append((f["filename"], f["hashes"]["sha256"]))
    missing = sorted(set(wanted) - covered)
    if missing:
        raise SystemExit(f"{name} {version} has no wheel for {missing}: pin another version")
    return sorted(picked)


def _tags_comment(filename: str) -> str:
    """`<python>-<abi>-<first platform tag>` of a wheel's file name (short enough for a 120-column line)."""
    python, abi, plats = filename[:-4].split("-")[-3:]
    return f"{python}-{abi}-{plats.split('.')[0]}"


def sdist_file(name: str) -> tuple[str, str, str, str]:
    """(version, file name, url, sha256) of the newest final release of `name` that has a `.tar.gz` sdist."""
    req = urllib.request.Request(SIMPLE.format(name), headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        files = json.load(resp)["files"]
    found = []
    for f in files:
        if not f["filename"].endswith(".tar.gz") or f.get("yanked"):
            continue
        try:
            _, ver = parse_sdist_filename(f["filename"])
        except (InvalidSdistFilename, InvalidVersion):  # trackpy-unknown.tar.gz: an upload without a version
            continue
        if not ver.is_prerelease:
            found.append((ver, f))
    if not found:
        raise SystemExit(f"{name}: PyPI has no sdist of a final release")
    ver, f = max(found, key=lambda vf: vf[0])
    return str(ver), f["filename"], f["url"], f["hashes"]["sha256"]


def sdist_requires(url: str, sha256: str) -> tuple[str, ...]:
    """The run-time requirements (Requires-Dist, no extras) in the PKG-INFO of the sdist at `url`: what the
    package imports, which the set must pin as wheels since the sdist is installed with --no-deps."""
    with urllib.request.urlopen(url, timeout=60) as resp:
        data = resp.read()
    if hashlib.sha256(data).hexdigest() != sha256:  # read the requirements of the very file that is pinned
        raise SystemExit(f"{url}: not the sha256 PyPI's index gives ({sha256})")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        member = next(m for m in tar.getmembers() if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO"))
        pkg_info = tar.extractfile(member).read().decode()  # type: ignore[union-attr]
        # Older setuptools left Requires-Dist out of PKG-INFO but wrote install_requires to egg-info's
        # requires.txt: its lines before the first [section] are the unconditional ones (promise 2.3: six).
        egg = next((m for m in tar.getmembers() if m.name.count("/") == 2 and m.name.endswith(".egg-info/requires.txt")),
                   None)
        egg_requires = tar.extractfile(egg).read().decode() if egg else ""  # type: ignore[union-attr]
    requires = tuple(line for line in Parser().parsestr(pkg_info).get_all("Requires-Dist") or ()
                     if "extra" not in str(Requirement(line).marker or ""))
    if not requires:
        requires = tuple(line.strip() for line in egg_requires.split("\n[")[0].splitlines() if line.strip())
    if not requires:
        raise SystemExit(f"{url}: neither PKG-INFO nor egg-info names its requirements; add them by hand")
    return requires


def sources(section: str) -> dict[str, Sdist]:
    """{name: (version, file name, sha256, run-time requirements)} of each of the set's SOURCES, newest sdist."""
    found = {}
    for name in SOURCES.get(section, {}):
        version, filename, url, sha = sdist_file(name)
        found[str(canonicalize_name(name))] = (version, filename, sha, sdist_requires(url, sha))
    return found


def render(pins: dict[str, str], pythons: list[str], sdists: dict[str, Sdist] | None = None) -> str:
    """The `packages:` block: each wheel's sha256 with its tags, each of `sdists` with `sdist: true`."""
    lines = [MARKER]
    sdists = sdists or {}
    for name in sorted({*pins, *sdists}):
        if name in sdists:
            version, _, sha, _ = sdists[name]
            lines += [f"    - name: {name}", f'      version: "{version}"', "      sdist: true", "      sha256:",
                      f"        - {sha}  # sdist"]
            continue
        lines += [f"    - name: {name}", f'      version: "{pins[name]}"', "      sha256:"]
        lines += [f"        - {sha}  # {_tags_comment(fn)}" for fn, sha in wheel_files(name, pins[name], pythons)]
    return "\n".join(lines) + "\n"


def replace_packages(text: str, section: str, block: str) -> str:
    """`text` with the `packages:` block of top-level `section` replaced by `block`."""
    start = text.find(f"\n{section}:\n")
    if start < 0:
        raise SystemExit(f"{CATALOG}: no top-level {section!r}")
    at = text.find("\n" + MARKER + "\n", start)
    if at < 0:
        raise SystemExit(f"{CATALOG}: no {MARKER!r} line under {section!r}")
    nxt = re.search(r"\n(?=[A-Za-z#])", text[at + 1:])  # the next top-level key (or a comment opening one)
    end = at + 1 + nxt.start() + 1 if nxt else len(text)
    return text[:at + 1] + block + ("\n" if nxt else "") + text[end:]


def pins_of(block: str) -> dict[str, str]:
    return {str(canonicalize_name(p["name"])): p["version"] for p in yaml.safe_load("x:\n" + block)["x"]["packages"]}


def locked(names: tuple[str, ...]) -> tuple[str, ...]:
    """`name==version` of each of `names` as uv.lock locks it (the versions the repository is tested with)."""
    packages = {str(canonicalize_name(p["name"])): p["version"] for p in tomllib.loads(LOCK.read_text())["package"]}
    missing = [n for n in names if str(canonicalize_name(n)) not in packages]
    if missing:
        raise SystemExit(f"{LOCK.name} locks no {', '.join(missing)}")
    return tuple(f"{n}=={packages[str(canonicalize_name(n))]}" for n in names)


def top_level(section: str, sdists: dict[str, Sdist] | None = None) -> tuple[str, ...]:
    """What a set resolves from: the agent's at uv.lock's exact versions, the others at their newest (under
    CAPS); with SOURCES, what those sdists require at run time and what builds them (BUILD_TOOLS), as wheels of
    the set."""
    top = (locked(TOP_LEVEL[section]) if section == "agent" else TOP_LEVEL[section]) + CAPS.get(section, ())
    if sdists:
        top += tuple(req for _, _, _, requires in sdists.values() for req in requires) + BUILD_TOOLS
    return top


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the catalog is not what a resolve gives")
    parser.add_argument("--only", choices=SECTIONS,
                        help="re-pin one set (worker, agent, client_tf: the uploader's pins stay as they are)")
    args = parser.parse_args(argv)
    text = CATALOG.read_text()
    data = yaml.safe_load(text)
    new, uploader = text, None
    for section in SECTIONS:
        if args.only and section != args.only:
            if section == "uploader":
                uploader = {str(canonicalize_name(p["name"])): p["version"] for p in data["uploader"]["packages"]}
            continue
        pythons = data[section]["pythons"]
        sdists = sources(section)
        pins = resolve(pythons, top_level(section, sdists), uploader,
                       tuple(OMIT.get(section, ())) + tuple(SOURCES.get(section, ())))
        if uploader is not None:  # the worker's, the agent's and the client's sets: what the uploader's pins lack
            pins = {n: v for n, v in pins.items() if n not in uploader}
        # The build tools must be in this set itself, not only the uploader's: the hosts build SOURCES right
        # after this set's wheels, and the uploader's pins are free to drop them.
        missing = [t for t in BUILD_TOOLS if str(canonicalize_name(Requirement(t).name)) not in pins] if sdists else []
        if missing:
            raise SystemExit(f"{section}: the uploader's pins hold {missing}; the sdists' build tools must be "
                             "this set's own")
        block = render(pins, pythons, sdists)
        new = replace_packages(new, section, block)
        if section == "uploader":
            uploader = pins_of(block)
    if args.check:
        if new != text:
            print(f"{CATALOG.relative_to(REPO)}: a set's packages differ from a fresh resolve",
                  file=sys.stderr)
            return 1
        return 0
    CATALOG.write_text(new)
    print(f"wrote {CATALOG.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
