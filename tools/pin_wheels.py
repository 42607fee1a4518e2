"""Pin the pipeline's wheels: resolve, then write every file's sha256 into cnctl/catalog/pipeline.yaml.

    .venv/bin/python tools/pin_wheels.py            # resolve the newest versions, rewrite every set's `packages`
    .venv/bin/python tools/pin_wheels.py --only client_tf   # one set; the uploader's pins stay as they are
    .venv/bin/python tools/pin_wheels.py --check    # resolve again, exit 1 if the catalog differs (no write)

A maintainer's tool (network: PyPI only), not part of any deploy. Four sets, each installed with
`pip install --no-deps --require-hashes`:

- `uploader` (every host): TOP_LEVEL["uploader"], closed on its own;
- `worker` (only hosts whose input is the images bucket: deploy/bucket_worker.py): TOP_LEVEL["worker"] with
  the uploader's pins as constraints, minus the uploader's pins, so that the uploader plus the worker is closed
  and an edge device never installs grpc;
- `agent` (pull-mode hosts: the pull layer's venv, /opt/circularnet/pull/venv, which runs cnctl.bundle.agent
  and `pyinfra @local deploy.py`): pyinfra, pydantic and PyYAML at exactly the versions uv.lock locks (the
  deploy code is written and tested against those), with the uploader's pins as constraints and minus them,
  like `worker`, so that the uploader plus the agent is closed (the agent reads the bucket with the uploader's
  store clients). The worker's pins are not constraints: the two sets never share a venv;
- `client_tf` (hosts whose client is upstream's TF-generation client: the pipeline venv, beside the uploader's):
  CLIENT_TF, what that client and the official.* modules it imports need (TensorFlow, OpenCV headless, ...), with
  the uploader's pins as constraints and minus them, like `worker`; OMIT names what it needs but PyPI has no
  usable wheel of (trackpy), left out of the resolve and the pins.

Each set is one `uv pip compile` for the oldest Python of its `pythons` on x86_64, re-resolved with those
versions as constraints for every other (Python, architecture) pair, which must need nothing outside it. For
each pinned version, every wheel PyPI has that a CPython of `pythons` on manylinux x86_64 or aarch64 accepts
(pure-Python wheels included) is listed by sha256 (PyPI's simple JSON API), with its tags as a comment; a
package lacking a wheel for one of those platforms is an error (the hosts never build from source).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
from pathlib import Path

import yaml
from packaging import tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

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
# What a set's closure names but PyPI has no usable wheel of, with why: dropped from every requirement of the
# resolve (an override whose marker is never true) and never pinned, so the set is closed except for these; the
# catalog's comment on the set names them, and the closure test allows exactly these.
OMIT = {"client_tf": {
    "trackpy": "object_tracking's `import trackpy`: its only wheel is 0.3.3, which fails to import on Python 3.10+ "
               "(`from collections import Iterable`); 0.4 to 0.7 are sdists only",
    "promise": "tensorflow-datasets declares it, no Python 3 wheel; `import tensorflow_datasets` (all "
               "official.core.input_reader does) works without it, only TFDS downloads use it",
}}
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
                    extra = {n: v for n, v in other.items() if base.get(n) != v}
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
        hits = {key for key, tagset in wanted.items() if wheel_tags & tagset}
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


def render(pins: dict[str, str], pythons: list[str]) -> str:
    lines = [MARKER]
    for name in sorted(pins):
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


def top_level(section: str) -> tuple[str, ...]:
    """What a set resolves from: the agent's at uv.lock's exact versions, the others at their newest."""
    return locked(TOP_LEVEL[section]) if section == "agent" else TOP_LEVEL[section]


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
        pins = resolve(pythons, top_level(section), uploader, tuple(OMIT.get(section, ())))
        if uploader is not None:  # the worker's, the agent's and the client's sets: what the uploader's pins lack
            pins = {n: v for n, v in pins.items() if n not in uploader}
        block = render(pins, pythons)
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
