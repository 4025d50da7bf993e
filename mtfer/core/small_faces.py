"""A second look for small faces: BlazeFace's full-range model on overlapping tiles of the photo.

Shrunk whole to the model's 192 px input, a 960x720 group photo turns a 50 px face into 10 px, below what the model
resolves: the whole-photo pass finds few faces under 60 px. Here each 400 px tile reaches the model at about half
its size instead, so the same face arrives at ~24 px. Tile detections are weaker evidence (busy backgrounds make
face-like blobs at that size), so each candidate is confirmed by the full-range model again on a patch of 2.5 face
sides around it (kept when the mean of the two scores reaches ``small_face_score``), then, like every face, by the
short-range refinement (``refine_score``) that also places the eyes. The thresholds and tile sizes
were chosen on hard composites built from UTKFace's training split and are reported on its test split
(``benchmarks/detection.py --hard-only``, with ``--split train`` for choosing).

The pass is skipped where it cannot help, so that such photos cost no more than the whole-photo pass: a photo no
larger than one tile, and a close-up (a face found a fifth of the photo's long side or larger: a portrait,
whose subject is not in the background). Photos larger than ``MAX_SIDE`` are tiled on a shrunk copy, which keeps the
cost bounded (at most 15 tiles) at the price of faces under ~36 px in that copy.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from mtfer.core import detectors
from mtfer.core.detectors import Detection
from mtfer.core.preprocess import PreprocessConfig

__all__ = ["MAX_SIDE", "MIN_SIDE", "OVERLAP", "TILE", "confirm", "needed", "second_look", "tiled", "tiles"]

TILE = 400  # px of the photo per tile: the model sees it at 192 px (x0.48)
OVERLAP = 120  # neighbouring tiles share this much, so any face up to 120 px lies whole in one tile
MAX_SIDE = 1280  # larger photos are tiled on a copy shrunk to this long side
CLOSE_UP = 0.2  # a found face this large (share of the photo's long side): a portrait, not a crowd
PATCH = 2.5  # the confirming look sees this many face sides around a candidate
MIN_SIDE = 20  # px: smaller candidates were background texture in every case seen, never a face worth labelling


def tiles(length: int, tile: int = TILE, overlap: int = OVERLAP) -> list[tuple[int, int, int, int]]:
    """Evenly spaced windows along one side of ``length`` px, each ``tile`` px long and overlapping its neighbour
    by at least ``overlap``: rows of (start, end, own_start, own_end), where the own ranges (split at the middle
    of each overlap) cover the side exactly once. A face no larger than ``overlap`` lies wholly inside the window
    that owns its centre, so keeping each window's detections by their centre finds every such face once."""
    if length <= tile:
        return [(0, length, 0, length)]
    count = math.ceil((length - overlap) / (tile - overlap))
    starts = [round(i * (length - tile) / (count - 1)) for i in range(count)]
    bounds = [0] + [(starts[i + 1] + starts[i] + tile) // 2 for i in range(count - 1)] + [length]
    return [(s, s + tile, bounds[i], bounds[i + 1]) for i, s in enumerate(starts)]


def tiled(image: np.ndarray, min_score: float, tile: int = TILE, overlap: int = OVERLAP) -> list[Detection]:
    """The full-range model on overlapping ``tile`` x ``tile`` windows; each window keeps the faces whose centre
    it owns (:func:`tiles`): one detection per face, across window borders too. Photo coordinates."""
    h, w = image.shape[:2]
    windows = [(y, x) for y in tiles(h, tile, overlap) for x in tiles(w, tile, overlap)]
    crops = [image[y0:y1, x0:x1] for (y0, y1, _, _), (x0, x1, _, _) in windows]
    found = []
    for ((y0, _, oy0, oy1), (x0, _, ox0, ox1)), detections in zip(
        windows, detectors.blazeface_many(crops, "full", min_score), strict=True
    ):
        for d in detections:
            bx, by, bw, bh = d.box
            if ox0 <= x0 + bx + bw / 2 < ox1 and oy0 <= y0 + by + bh / 2 < oy1:
                found.append(_scaled(d, 1.0, x0, y0))
    return sorted(found, key=lambda d: -d.score)


def confirm(color: np.ndarray, candidates: list[Detection], threshold: float) -> list[Detection]:
    """The candidates that a second look confirms, each as that look sees it (photo coordinates, its own eyes).

    The look is the full-range model on a patch of ``PATCH`` face sides around each candidate (edge pixels
    repeated), where the face fills a fifth of the model's input instead of a few pixels of a tile. A candidate is
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
    if not config.small_faces or max(shape[:2]) <= TILE:
        return False
    if min(shape[:2]) * min(1.0, MAX_SIDE / max(shape[:2])) < MIN_SIDE:
        return False
    return all(max(d.box[2], d.box[3]) < CLOSE_UP * max(shape[:2]) for d in found)


def second_look(color: np.ndarray, found: list[Detection], config: PreprocessConfig) -> list[Detection]:
    """Confirmed faces that the whole-photo pass (``found``) missed, in photo coordinates; [] when the second look
    is switched off or cannot help (:func:`needed`)."""
    if not needed(color.shape, found, config):
        return []
    scale = min(1.0, MAX_SIDE / max(color.shape[:2]))
    small = color if scale == 1.0 else cv2.resize(color, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    known = np.array([_corners(d, scale) for d in found], np.float32).reshape(-1, 4)
    candidates = []
    for candidate in tiled(small, config.min_score, TILE, OVERLAP):
        corners = np.array(_corners(candidate), np.float32)
        if max(candidate.box[2:]) >= MIN_SIDE * scale and not (
            len(known) and detectors._iou(corners, known).max() >= 0.3
        ):
            candidates.append(candidate)
    return [_scaled(face, 1 / scale) for face in confirm(small, candidates, config.small_face_score)]


def _corners(d: Detection, scale: float = 1.0) -> tuple[float, float, float, float]:
    x, y, w, h = (v * scale for v in d.box)
    return x, y, x + w, y + h


def _scaled(d: Detection, s: float, dx: float = 0.0, dy: float = 0.0) -> Detection:
    """``d`` scaled by ``s``, then moved by (dx, dy)."""
    x, y, w, h = d.box
    eyes = None if d.eyes is None else tuple((ex * s + dx, ey * s + dy) for ex, ey in d.eyes)
    return Detection((x * s + dx, y * s + dy, w * s, h * s), d.score, eyes)  # type: ignore[arg-type]
