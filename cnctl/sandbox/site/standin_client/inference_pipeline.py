"""STAND-IN for the sandbox, not CircularNet's client: the TF generation's entry point, flags and output rows.

The pipeline runner calls this as it would upstream's Triton_TF_Cloud_Deployment/client/inference_pipeline.py,
once per batch of frames:

    python3 inference_pipeline.py --input_directory <batch>/frames --output_directory <batch>/out \
        --model=circularnet --score=0.4 --height=1024 --width=1024 ...

For each `*.jpg` of --input_directory (by name) it asks Triton (HTTP/REST, binary tensor extension) for the
model's detections and writes one JSON object per detection above --score to
`<output_directory>/detections.ndjson` (atomically), with exactly the TF generation's BigQuery columns
(cnctl/catalog/models.yaml `generations.tf.bigquery_schema`). Standard library only, Python 3.10+.

What is NOT upstream's behaviour:
  * Frames are not decoded (no image library): the input tensor (UINT8 [1, --height, --width, 3]) is a 4x4
    mosaic whose 16 colours are 48 bytes sampled evenly from the file. Each frame gives the sandbox's stand-in
    model (cnctl/sandbox/site/standin_model) a distinct, deterministic picture to find objects in, where the
    file's bytes repeated to size would average out to one flat grey and no detections at all.
  * No tracking: `particle` is a running object number within the batch (0, 1, ...); --search_range_x,
    --search_range_y and --memory are accepted and unused. So are --tracking_visualization and
    --cropped_objects (nothing but the rows is written) and --project_id, --bq_dataset_id, --bq_table_id
    (the pipeline's uploader ships the rows; this client never talks to BigQuery).
  * Boxes are in the model input's pixels (ymin, xmin, ymax, xmax); class names are `standin_<id>`.
  * --input_directory and --output_directory are local directories.
Triton: $CIRCULARNET_TRITON_URL (default http://127.0.0.1:8000). Exit 0 when the rows are written (an existing
detections.ndjson is kept unless --overwrite), 1 when Triton is unreachable or answers an error (the runner
retries the batch), 2 on bad flags or directories.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import struct
import sys
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_TRITON_URL = "http://127.0.0.1:8000"
INPUT_NAME = "inputs"
OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
GRID = 4
# Upstream frame names: <prefix>_<YYYYMMDD>_<HHMMSSxx>.jpg (xx: hundredths of a second).
FRAME_NAME = re.compile(r"^(?P<prefix>.+)_(?P<date>\d{8})_(?P<time>\d{8})\.jpe?g$", re.IGNORECASE)
DTYPES = {"FP32": ("f", 4), "INT32": ("i", 4), "INT64": ("q", 8), "FP64": ("d", 8), "UINT8": ("B", 1)}
TIMEOUT = 120.0


class TritonError(Exception):
    """Triton is unreachable or answered an error: the batch failed, retry later."""


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "t", "y"):
        return True
    if value in ("false", "0", "no", "f", "n"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true/false)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="inference_pipeline.py",
        description="STAND-IN CircularNet client (sandbox only): frames -> Triton -> detections.ndjson")
    parser.add_argument("--input_directory", required=True, help="local directory of *.jpg frames")
    parser.add_argument("--output_directory", required=True, help="local directory for detections.ndjson")
    parser.add_argument("--height", type=int, default=1024, help="model input height")
    parser.add_argument("--width", type=int, default=1024, help="model input width")
    parser.add_argument("--model", default="circularnet", help="model name in Triton")
    parser.add_argument("--score", type=float, default=0.4, help="keep detections scoring at least this")
    parser.add_argument("--search_range_x", type=int, default=150, help="accepted, unused (no tracking)")
    parser.add_argument("--search_range_y", type=int, default=20, help="accepted, unused (no tracking)")
    parser.add_argument("--memory", type=int, default=20, help="accepted, unused (no tracking)")
    parser.add_argument("--project_id", default=None, help="accepted, unused (no BigQuery)")
    parser.add_argument("--bq_dataset_id", default=None, help="accepted, unused (no BigQuery)")
    parser.add_argument("--bq_table_id", default=None, help="accepted, unused (no BigQuery)")
    # absl-style booleans: --flag, --flag=true|false, --noflag
    for flag, help_text in (("overwrite", "replace an existing detections.ndjson"),
                            ("tracking_visualization", "accepted, unused"), ("cropped_objects", "accepted, unused")):
        parser.add_argument(f"--{flag}", type=_bool, nargs="?", const=True, default=False, help=help_text)
        parser.add_argument(f"--no{flag}", dest=flag, action="store_false", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.height < GRID or args.width < GRID:
        parser.error(f"--height and --width must be at least {GRID}")
    for name in ("input_directory", "output_directory"):
        if "://" in getattr(args, name):
            parser.error(f"--{name} must be a local directory (this stand-in reads and writes no bucket)")
    if not Path(args.input_directory).is_dir():
        parser.error(f"--input_directory {args.input_directory} is not a directory")
    return args


def frames(directory: Path) -> list[Path]:
    """The batch's frames, by name; files starting with "." are someone else's work in progress."""
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in (".jpg", ".jpeg"))


def input_tensor(data: bytes, height: int, width: int) -> bytes:
    """UINT8 [height, width, 3]: a GRID x GRID mosaic of 48 bytes sampled evenly from the file (not decoded)."""
    cells = GRID * GRID * 3
    sample = bytes(data[i * len(data) // cells] for i in range(cells)) if data else bytes(cells)
    rows: list[bytes] = []
    for gy in range(GRID):
        line = b"".join(sample[(gy * GRID + gx) * 3:(gy * GRID + gx) * 3 + 3] * _span(width, gx) for gx in range(GRID))
        rows.append(line * _span(height, gy))
    return b"".join(rows)


def _span(size: int, cell: int) -> int:
    """Pixels of cell `cell` along an axis of `size` (the last cell takes the remainder)."""
    part = size // GRID
    return part if cell < GRID - 1 else size - part * (GRID - 1)


def infer(base_url: str, model: str, tensor: bytes, height: int, width: int) -> dict[str, list]:
    """One inference through Triton's binary tensor extension; returns the OUTPUTS as flat lists."""
    header = json.dumps({
        "inputs": [{"name": INPUT_NAME, "datatype": "UINT8", "shape": [1, height, width, 3],
                    "parameters": {"binary_data_size": len(tensor)}}],
        "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in OUTPUTS],
    }).encode()
    url = f"{base_url.rstrip('/')}/v2/models/{model}/infer"
    req = urllib.request.Request(url, data=header + tensor, method="POST", headers={
        "Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            body = resp.read()
            json_length = resp.headers.get("Inference-Header-Content-Length")
    except urllib.error.HTTPError as exc:
        raise TritonError(f"Triton at {base_url} answered {exc.code} for model {model!r}: {_error_text(exc)}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TritonError(f"Triton at {base_url} is unreachable: {reason}") from None
    return parse_response(body, json_length)


def _error_text(exc: urllib.error.HTTPError) -> str:
    raw = exc.read()[:2000]
    try:
        return str(json.loads(raw).get("error", raw.decode(errors="replace")))
    except (ValueError, AttributeError):
        return raw.decode(errors="replace").strip() or exc.reason


def parse_response(body: bytes, json_length: str | None) -> dict[str, list]:
    """The outputs of an inference response: a JSON header, then each binary output's bytes in header order."""
    try:
        length = int(json_length) if json_length is not None else len(body)
        head = json.loads(body[:length])
        out: dict[str, list] = {}
        offset = length
        for item in head["outputs"]:
            code, size = DTYPES[item["datatype"]]
            if "data" in item:  # answered as JSON after all
                out[item["name"]] = list(item["data"])
                continue
            nbytes = int(item["parameters"]["binary_data_size"])
            out[item["name"]] = list(struct.unpack(f"<{nbytes // size}{code}", body[offset:offset + nbytes]))
            offset += nbytes
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise TritonError(f"Triton's answer could not be read: {exc!r}") from None
    missing = [name for name in OUTPUTS if name not in out]
    if missing:
        raise TritonError(f"Triton's answer lacks outputs {missing}")
    return out


def creation_time(frame: Path) -> str:
    """`YYYY-MM-DD HH:MM:SS.xx` from an upstream frame name, else from the file's mtime (UTC)."""
    match = FRAME_NAME.match(frame.name)
    if match:
        d, t = match["date"], match["time"]
        try:
            datetime.datetime.strptime(d + t[:6], "%Y%m%d%H%M%S")
            return f"{d[:4]}-{d[4:6]}-{d[6:]} {t[:2]}:{t[2:4]}:{t[4:6]}.{t[6:]}"
        except ValueError:
            pass
    utc = datetime.timezone.utc  # noqa: UP017 - datetime.UTC is 3.11+, this runs on 3.10 too
    stamp = datetime.datetime.fromtimestamp(frame.stat().st_mtime, tz=utc)
    return stamp.strftime("%Y-%m-%d %H:%M:%S.") + f"{stamp.microsecond // 10000:02d}"


def source_name(frame: Path, input_directory: Path) -> str:
    """The camera's frame prefix from an upstream frame name, else the input directory's name."""
    match = FRAME_NAME.match(frame.name)
    return match["prefix"] if match else input_directory.resolve().name


def rows_for(frame: Path, out: dict[str, list], first_particle: int, args: argparse.Namespace,
             input_directory: Path) -> list[dict]:
    count = int(out["num_detections"][0])
    boxes, scores, classes = out["detection_boxes"], out["detection_scores"], out["detection_classes"]
    rows: list[dict] = []
    for n in range(min(count, len(scores))):
        score = float(scores[n])
        if score < args.score:
            continue
        cls = int(classes[n])
        ymin, xmin, ymax, xmax = (round(v) for v in boxes[4 * n:4 * n + 4])
        rows.append({
            "particle": first_particle + len(rows), "source_name": source_name(frame, input_directory),
            "image_name": frame.name, "detection_scores": score, "creation_time": creation_time(frame),
            "bbox_0": ymin, "bbox_1": xmin, "bbox_2": ymax, "bbox_3": xmax,
            "detection_classes": cls, "detection_classes_names": f"standin_{cls}",
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    input_directory, output = Path(args.input_directory), Path(args.output_directory)
    target = output / "detections.ndjson"
    if target.exists() and not args.overwrite:
        print(f"inference_pipeline (STAND-IN): {target} exists; kept (--overwrite replaces it)", file=sys.stderr)
        return 0
    base_url = os.environ.get("CIRCULARNET_TRITON_URL") or DEFAULT_TRITON_URL
    rows: list[dict] = []
    batch = frames(input_directory)
    try:
        for frame in batch:
            out = infer(base_url, args.model, input_tensor(frame.read_bytes(), args.height, args.width),
                        args.height, args.width)
            rows += rows_for(frame, out, len(rows), args, input_directory)
    except TritonError as exc:
        print(f"inference_pipeline (STAND-IN): {exc}", file=sys.stderr)
        return 1
    try:
        output.mkdir(parents=True, exist_ok=True)
        tmp = output / ".detections.ndjson.tmp"
        tmp.write_text("".join(json.dumps(row, sort_keys=False) + "\n" for row in rows), encoding="utf-8")
        os.replace(tmp, target)
    except OSError as exc:
        print(f"inference_pipeline (STAND-IN): cannot write {target}: {exc}", file=sys.stderr)
        return 2
    print(f"inference_pipeline (STAND-IN): {len(batch)} frames, {len(rows)} detections -> {target}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
