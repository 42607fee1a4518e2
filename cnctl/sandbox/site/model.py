"""The STAND-IN CircularNet model archives (catalog key `sandbox_standin`) the sandbox's artifact server serves.

Each archive is a zip in the upstream Triton repository layout, `<model_name>/config.pbtxt` plus
`<model_name>/1/model.py` (the python-backend model in `standin_model/`), with config.pbtxt rendered from the
one template `templates/triton/config.pbtxt.j2` and the catalog's input spec. Zips are byte-for-byte
reproducible (fixed timestamps and order), so their sha256 only changes when their recipe does.

Variants: `sandbox_standin.zip` (the one a stack pins), `sandbox_standin-v2.zip` (answers with shifted class
ids: a second version to roll out and back) and `sandbox_standin-broken.zip` (refuses to load: a failed
rollout must keep the old version serving).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import jinja2

from cnctl.catalog import CatalogModel, catalog
from cnctl.paths import TEMPLATES_DIR

CATALOG_KEY = "sandbox_standin"
MODEL_NAME = "circularnet"
MODEL_SOURCE = Path(__file__).parent / "standin_model" / "model.py"
TEMPLATES = TEMPLATES_DIR
CONFIG_TEMPLATE = TEMPLATES / "triton" / "config.pbtxt.j2"

# The stand-in's output tensors. The catalog names them; their types and shapes are this stand-in's choice,
# modelled on a TF Model Garden Mask R-CNN export (100 detections, box-relative 28x28 masks).
MAX_DETECTIONS = 100
MASK_SIZE = 28
OUTPUT_SPECS = {
    "detection_classes": ("INT32", [1, MAX_DETECTIONS]),
    "detection_masks": ("FP32", [1, MAX_DETECTIONS, MASK_SIZE, MASK_SIZE]),
    "detection_boxes": ("FP32", [1, MAX_DETECTIONS, 4]),
    "image_info": ("FP32", [1, 4, 2]),
    "num_detections": ("INT32", [1]),
    "detection_scores": ("FP32", [1, MAX_DETECTIONS]),
}
# variant -> extra config parameters
VARIANTS: dict[str, dict[str, str]] = {
    "": {"standin_revision": "1"},
    "v2": {"standin_revision": "2"},
    "broken": {"standin_revision": "1", "standin_fail_load": "true"},
}


@dataclass(frozen=True)
class ModelArchive:
    """One built archive: where it is, its path under the artifacts URL, and its sha256."""

    variant: str
    path: Path
    url_path: str
    sha256: str
    model_name: str = MODEL_NAME

    def to_json(self) -> dict:
        return {"variant": self.variant, "path": str(self.path), "url_path": self.url_path,
                "sha256": self.sha256, "model_name": self.model_name}


def standin_entry() -> CatalogModel:
    return catalog().models.models[CATALOG_KEY]


def render_config(entry: CatalogModel, params: dict[str, str]) -> str:
    """config.pbtxt for the stand-in, from the shared template."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             loader=jinja2.FileSystemLoader(str(TEMPLATES)))
    missing = set(entry.outputs) - set(OUTPUT_SPECS)
    if missing:
        raise ValueError(f"catalog outputs without a stand-in spec: {sorted(missing)}")
    outputs = [{"name": n, "datatype": OUTPUT_SPECS[n][0], "dims": OUTPUT_SPECS[n][1]} for n in entry.outputs]
    return env.get_template("triton/config.pbtxt.j2").render(
        name=MODEL_NAME, platform=entry.triton_platform, max_batch_size=0,
        inputs=[{"name": entry.input.name, "datatype": entry.input.datatype, "dims": entry.input.shape}],
        outputs=outputs, instance_kind="KIND_CPU",
        parameters={"labels": str(entry.labels), **params},
    )


def archive_bytes(entry: CatalogModel, params: dict[str, str]) -> bytes:
    """The zip, reproducibly: fixed entry order, timestamps and permissions."""
    members = {
        f"{MODEL_NAME}/": None,
        f"{MODEL_NAME}/config.pbtxt": render_config(entry, params).encode(),
        f"{MODEL_NAME}/1/": None,
        f"{MODEL_NAME}/1/model.py": MODEL_SOURCE.read_bytes(),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = ((0o40755 if data is None else 0o100644) << 16) | (0x10 if data is None else 0)
            info.compress_type = zipfile.ZIP_STORED if data is None else zipfile.ZIP_DEFLATED
            zf.writestr(info, data or b"")
    return buf.getvalue()


def archive_name(variant: str) -> str:
    return f"{CATALOG_KEY}{'-' + variant if variant else ''}.zip"


def build_models(models_dir: Path) -> None:
    """Write every variant's archive and its `<archive>.sha256` (sha256sum format) into `models_dir`."""
    entry = standin_entry()
    for variant, params in VARIANTS.items():
        data = archive_bytes(entry, params)
        name = archive_name(variant)
        (models_dir / name).write_bytes(data)
        (models_dir / f"{name}.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  {name}\n")


def read_archives(models_dir: Path, url_prefix: str = "models/") -> dict[str, ModelArchive]:
    """The built archives by variant ("" is the primary one), with their recorded sha256."""
    out = {}
    for variant in VARIANTS:
        name = archive_name(variant)
        sha = (models_dir / f"{name}.sha256").read_text().split()[0]
        out[variant] = ModelArchive(variant, models_dir / name, url_prefix + name, sha)
    return out


def recipe_inputs() -> list:
    """What the archives are made of, for the cache's recipe hash."""
    return [standin_entry().model_dump_json(), MODEL_SOURCE, CONFIG_TEMPLATE, Path(__file__), repr(VARIANTS)]
