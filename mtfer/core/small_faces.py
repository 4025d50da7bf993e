"""A second look for small faces: BlazeFace's full-range model run over the whole photo at a useful scale.

Shrunk whole to the model's 192 px input, a 960x720 group photo turns a 50 px face into 10 px, below what the model
resolves: the whole-photo pass finds few faces under 60 px. Here the same model runs over the photo shrunk only to
``SCALE`` of its size, in one pass (its graph edited to take any size: :mod:`mtfer.core.any_size`), so the same face
arrives at ~35 px. This was done on overlapping 400 px tiles before; one pass computes no overlap twice, splits no
face at a tile border and resizes the photo once, so at the same cost it affords a larger scale, which finds more
small faces.

Scan detections are weaker evidence (busy backgrounds make face-like blobs at that size), so each candidate is
confirmed by the full-range model again on a patch of 2.5 face sides around it (kept when the mean of the two scores
reaches ``small_face_score``), then, like every face, by the short-range refinement (``refine_score``) that also
places the eyes. The scale and thresholds were chosen on hard composites built from UTKFace's training split and are
reported on its test split (``benchmarks/detection.py --hard-only``, with ``--split train`` for choosing).

The pass is skipped where it cannot help, so that such photos cost no more than the whole-photo pass: a photo that
the whole-photo pass already sees at ``SCALE`` or larger, and a close-up (a face found a fifth of the photo's long
side or larger: a portrait, whose subject is not in the background). Photos larger than ``MAX_SIDE`` are looked at
on a shrunk copy, which keeps the cost bounded at the price of faces under ~30 px in that copy.
"""

from __future__ import annotations

import functools
import logging
import math

import cv2
import numpy as np

from mtfer.core import any_size, detectors
from mtfer.core.detectors import Detection
from mtfer.core.preprocess import PreprocessConfig

__all__ = ["MAX_SIDE", "MIN_SIDE", "SCALE", "candidates", "confirm", "needed", "second_look"]

SCALE = 0.7  # the scan sees the photo (at most MAX_SIDE) at this scale: a 40 px face reaches the model at 28 px
MAX_SIDE = 1280  # larger photos are looked at on a copy shrunk to this long side
CLOSE_UP = 0.2  # a found face this large (share of the photo's long side): a portrait, not a crowd
PATCH = 2.5  # the confirming look sees this many face sides around a candidate
MIN_SIDE = 20  # px: smaller candidates were background texture in every case seen, never a face worth labelling


def candidates(
    image: np.ndarray, found: list[Detection], min_score: float, min_side: float = MIN_SIDE
) -> list[Detection]:
    """Faces the scan at ``SCALE`` finds in ``image`` that the whole-photo pass (``found``) did not, highest score
    first, each at least ``min_side`` px."""
    known = np.array([_corners(d) for d in found], np.float32).reshape(-1, 4)
    try:
        scanned = detectors.blazeface_scan(image, SCALE, min_score)
    except any_size.GraphError as error:  # another release of the detector's model: photos still get the first pass
        _warn_no_look(str(error))
        return []
    out = []
    for candidate in scanned:
        overlaps = len(known) and detectors._iou(np.array(_corners(candidate), np.float32), known).max() >= 0.3
        if max(candidate.box[2:]) >= min_side and not overlaps:
            out.append(candidate)
    return out


def confirm(color: np.ndarray, candidates: list[Detection], threshold: float) -> list[Detection]:
    """The candidates that a second look confirms, each as that look sees it (photo coordinates, its own eyes).

    The look is the full-range model on a patch of ``PATCH`` face sides around each candidate (edge pixels
    repeated), where the face fills a fifth of the model's input instead of a few pixels of the scan. A candidate is
    confirmed when the mean of its score and the look's reaches ``threshold``. (Four patches to one input cost a
    quarter as much but let through four times as many false faces on busy backgrounds.)"""
    looks = []
    for candidate in candidates:
        x, y, w, h = candidate.box
        side = max(w, h)
        n = math.ceil(PATCH * side)
        x0, y0 = math.floor(x + w / 2 - n / 2), math.floor(y + h / 2 - n / 2)
        patch = detectors.square(color, x0, y0, n)
        if patch is not None:
            looks.append((candidate, side, n, x0, y0, patch))
    seen = detectors.blazeface_many([look[-1] for look in looks], "full", 0.05)
    confirmed = []
    for (candidate, side, n, x0, y0, _), detections in zip(looks, seen, strict=True):
        best: Detection | None = None
        for d in detections:
            bx, by, bw, bh = d.box
            central = math.hypot(bx + bw / 2 - n / 2, by + bh / 2 - n / 2) <= 0.3 * side
            if central and 0.36 * side <= max(bw, bh) <= 1.4 * side and (best is None or d.score > best.score):
                best = d
        if best is not None and (best.score + candidate.score) / 2 >= threshold:
            confirmed.append(_scaled(best, 1.0, x0, y0))
    return confirmed


def needed(shape: tuple[int, ...], found: list[Detection], config: PreprocessConfig) -> bool:
    """Whether a photo of this shape, where the whole-photo pass found ``found``, gets the second look (never for
    a sliver narrower than the smallest face kept, once shrunk to ``MAX_SIDE``)."""
    long_side = max(shape[:2])
    if not config.small_faces or long_side * SCALE <= detectors.BLAZEFACE_MODELS["full"].side:
        return False  # the whole-photo pass sees this photo at SCALE or larger already
    if min(shape[:2]) * min(1.0, MAX_SIDE / long_side) < MIN_SIDE:
        return False
    return all(max(d.box[2], d.box[3]) < CLOSE_UP * long_side for d in found)


def second_look(
    color: np.ndarray, found: list[Detection], config: PreprocessConfig, known: list[Detection] | None = None
) -> list[Detection]:
    """Confirmed faces other than ``known`` (default: the whole-photo pass's ``found``), in photo coordinates; []
    when the second look is switched off or cannot help (:func:`needed`, which judges by ``found``)."""
    if not needed(color.shape, found, config):
        return []
    scale = min(1.0, MAX_SIDE / max(color.shape[:2]))
    small = color if scale == 1.0 else cv2.resize(color, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    shrunk = [_scaled(d, scale) for d in (found if known is None else known)]
    looked = candidates(small, shrunk, config.min_score, MIN_SIDE * scale)
    return [_scaled(face, 1 / scale) for face in confirm(small, looked, config.small_face_score)]


@functools.cache
def _warn_no_look(reason: str) -> None:
    logging.getLogger(__name__).warning(
        "the small-face look is off (the installed BlazeFace model cannot be made to scan a photo: %s)", reason
    )


def _corners(d: Detection) -> tuple[float, float, float, float]:
    x, y, w, h = d.box
    return x, y, x + w, y + h


def _scaled(d: Detection, s: float, dx: float = 0.0, dy: float = 0.0) -> Detection:
    """``d`` scaled by ``s``, then moved by (dx, dy)."""
    x, y, w, h = d.box
    eyes = None if d.eyes is None else tuple((ex * s + dx, ey * s + dy) for ex, ey in d.eyes)
    return Detection((x * s + dx, y * s + dy, w * s, h * s), d.score, eyes)  # type: ignore[arg-type]
