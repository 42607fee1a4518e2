"""STAND-IN for tests, not CircularNet: a Triton python-backend model with the TF generation's tensors.

The cnctl sandbox serves this instead of the real Mask R-CNN SavedModel (real Triton, CPU build, python
backend). It takes `inputs` UINT8 [1, H, W, 3] and returns the six outputs the upstream client asks for, with
fixed shapes taken from config.pbtxt. Detections are deterministic and derived from the image, not random:
the image is cut into a 4x4 grid and every cell whose mean colour stands out from the whole image (up to five
of them) becomes one detection: its box (pixels, ymin/xmin/ymax/xmax, 10 % margin), a score from the contrast,
a class from the cell's dominant colour, and an elliptic box-relative mask. A uniform image yields none.

Config parameters (strings): `labels` (class ids are 1..labels), `standin_revision` (shifts class ids, so a
second revision of the archive answers differently), `standin_fail_load` ("true": refuse to load, to test
that a failed load keeps the old model serving).
"""

import json

# Both exist only where Triton runs the model (numpy from the wheelhouse, the utils from the python backend).
import numpy as np  # type: ignore[import-not-found, unused-ignore]
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found, unused-ignore]

GRID = 4
MAX_OBJECTS = 5
MIN_CONTRAST = 0.05


def _params(config):
    return {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}


def _ellipse(size):
    """A size x size float mask: 1.0 inside the inscribed ellipse."""
    axis = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    return (yy**2 + xx**2 <= 1.0).astype(np.float32)


def detect(image, labels, revision, max_detections, mask_size):
    """The stand-in's detections for one HxWx3 image, padded to `max_detections` like the real model."""
    height, width = image.shape[:2]
    ch, cw = height // GRID, width // GRID
    pixels = image[: ch * GRID, : cw * GRID].astype(np.float32)
    cells = pixels.reshape(GRID, ch, GRID, cw, 3).mean(axis=(1, 3))  # [GRID, GRID, 3]
    contrast = np.abs(cells - pixels.mean(axis=(0, 1))).sum(axis=-1) / (3 * 255.0)
    order = np.argsort(-contrast, axis=None, kind="stable")
    picked = [int(i) for i in order if contrast.flat[i] > MIN_CONTRAST][: min(MAX_OBJECTS, max_detections)]

    boxes = np.zeros((max_detections, 4), np.float32)
    scores = np.zeros((max_detections,), np.float32)
    classes = np.zeros((max_detections,), np.int32)
    masks = np.zeros((max_detections, mask_size, mask_size), np.float32)
    ellipse = _ellipse(mask_size)
    for n, flat in enumerate(picked):
        row, col = divmod(flat, GRID)
        my, mx = ch * 0.1, cw * 0.1
        boxes[n] = (row * ch + my, col * cw + mx, (row + 1) * ch - my, (col + 1) * cw - mx)
        scores[n] = min(0.99, 0.5 + float(contrast[row, col]))
        r, g, b = (cells[row, col] // 64).astype(int)
        classes[n] = (r * 16 + g * 4 + b + revision - 1) % labels + 1
        masks[n] = ellipse
    info = np.array([[height, width], [height, width], [1.0, 1.0], [0.0, 0.0]], np.float32)
    return {
        "detection_boxes": boxes[None],
        "detection_scores": scores[None],
        "detection_classes": classes[None],
        "detection_masks": masks[None],
        "image_info": info[None],
        "num_detections": np.array([len(picked)], np.int32),
    }


class TritonPythonModel:
    """Triton's python-backend entry points."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = _params(config)
        if params.get("standin_fail_load") == "true":
            raise RuntimeError("STAND-IN model: this archive variant refuses to load (standin_fail_load=true)")
        self.labels = int(params.get("labels", "1"))
        self.revision = int(params.get("standin_revision", "1"))
        self.input_name = config["input"][0]["name"]
        self.outputs = {
            out["name"]: pb_utils.triton_string_to_numpy(out["data_type"]) for out in config["output"]
        }
        dims = {out["name"]: [int(d) for d in out["dims"]] for out in config["output"]}
        self.max_detections = dims["detection_scores"][-1]
        self.mask_size = dims["detection_masks"][-1]

    def execute(self, requests):
        responses = []
        for request in requests:
            batch = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            result = detect(batch[0], self.labels, self.revision, self.max_detections, self.mask_size)
            tensors = [
                pb_utils.Tensor(name, result[name].astype(dtype)) for name, dtype in self.outputs.items()
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
