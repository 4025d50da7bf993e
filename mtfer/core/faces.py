"""Find faces and eyes, align (rotation capped at 10 degrees) and crop to the network's input.

The paper's preprocessing: detect the face (OpenCV Haar cascade), find both eye centres (Haar eye cascade),
rotate so that the eye line is horizontal but never by more than ``max_rotation`` degrees, crop, grayscale,
resize to ``size`` x ``size`` and scale to [0, 1]. Photos go through :func:`find_faces`; data-set images that
are already face crops go through :func:`frame_crop`, which frames the face the same way, so that training
input matches what the app sees. The measurements behind the framing are in ``docs/preprocessing.md``.

Sign convention: ``Face.rotation`` is in degrees, positive = the image content was turned counter-clockwise
(as displayed), the convention of ``cv2.getRotationMatrix2D``. It equals the eye-line tilt ``atan2(dy, dx)``
measured in image coordinates (y down, from the image-left eye to the image-right eye), clipped to
``max_rotation``.

All functions are thread-safe: each thread gets its own cascade classifiers.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

from mtfer.core import detectors, small_faces
from mtfer.core.decoding import ImageError, to_bgr8
from mtfer.core.preprocess import PreprocessConfig

T = TypeVar("T", bound=Any)  # a face, or a prediction for one: anything with a .box

__all__ = [
    "Face",
    "PreprocessConfig",
    "align",
    "alignment_matrix",
    "crop_face_box",
    "eye_tilt",
    "find_eyes",
    "find_faces",
    "frame_crop",
    "to_gray",
    "to_network_input",
]


Box = tuple[int, int, int, int]


Point = tuple[float, float]


Eyes = tuple[Point, Point]


@dataclass
class Face:
    box: Box  # x, y, w, h in original image coordinates (clipped to the image)
    eyes: Eyes | None  # (image-left eye, image-right eye) centres in original coordinates, or None
    rotation: float  # degrees actually applied, |rotation| <= max_rotation; see the module docstring for the sign
    aligned: np.ndarray  # uint8 (size, size) grayscale: what the network sees
    detected: bool = True  # False only from frame_crop when the detector found nothing (fallback_box framing)


_local = threading.local()


def _cascade(name: str) -> cv2.CascadeClassifier:
    cache = _local.__dict__.setdefault("cascades", {})
    if name not in cache:
        clf = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / name))
        if clf.empty():
            raise RuntimeError(f"could not load OpenCV cascade {name!r} from {cv2.data.haarcascades}")
        cache[name] = clf
    return cache[name]


def _clahe() -> cv2.CLAHE:
    if not hasattr(_local, "clahe"):
        _local.clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4))
    return _local.clahe


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 grayscale view of a BGR, BGRA or gray array (uint8 or uint16)."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.size == 0 or a.ndim not in (2, 3) or a.ndim == 3 and a.shape[2] not in (2, 3, 4):
        raise ImageError(f"expected a non-empty HxW or HxWx3 image array, got shape {a.shape}")
    if a.dtype != np.uint8 or a.ndim == 3 and a.shape[2] != 3:
        a = to_bgr8(a)
    return np.ascontiguousarray(a) if a.ndim == 2 else cv2.cvtColor(a, cv2.COLOR_BGR2GRAY)


def _resize(gray: np.ndarray, scale: float) -> np.ndarray:
    h, w = gray.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _square_patch(gray: np.ndarray, cx: float, cy: float, side: float, out: int) -> np.ndarray:
    """The axis-aligned square (centre, side) resized to out x out; pixels past the edge are replicated."""
    half = side / 2
    x0, y0 = math.floor(cx - half), math.floor(cy - half)
    x1, y1 = math.ceil(cx + half), math.ceil(cy + half)
    h, w = gray.shape
    patch = gray[max(y0, 0) : max(min(y1, h), 0), max(x0, 0) : max(min(x1, w), 0)]
    if patch.size == 0:  # the square lies wholly outside the image
        return np.full((out, out), int(gray.mean()), np.uint8)
    top, left = max(0, -y0), max(0, -x0)
    bottom, right = max(0, y1 - h), max(0, x1 - w)
    if top or left or bottom or right:
        patch = cv2.copyMakeBorder(patch, top, bottom, left, right, cv2.BORDER_REPLICATE)
    interp = cv2.INTER_AREA if patch.shape[0] > out else cv2.INTER_CUBIC
    return cv2.resize(patch, (out, out), interpolation=interp)


def eye_tilt(eyes: Eyes) -> float:
    """Angle of the eye line in degrees (image coordinates, y down): positive when the image-right eye is
    lower."""
    (lx, ly), (rx, ry) = eyes
    return math.degrees(math.atan2(ry - ly, rx - lx))


def find_eyes(gray: np.ndarray, box: Box, config: PreprocessConfig = PreprocessConfig()) -> Eyes | None:
    """Both eye centres inside a face box (original coordinates), or None when no plausible pair is found.

    Searches the band ``eye_rows`` of the box with the Haar eye cascade and picks the best pair with one eye
    in each half of the box, at a plausible distance and tilted by at most ``eye_max_tilt``."""
    gray = to_gray(gray)
    x, y, w, h = box
    side = float(max(w, h))
    n = config.eye_face_side
    face = _square_patch(gray, x + w / 2, y + h / 2, side, n)
    r0, r1 = round(config.eye_rows[0] * n), round(config.eye_rows[1] * n)
    band = _clahe().apply(face[r0:r1])
    found = _cascade(config.eye_cascade).detectMultiScale(
        band,
        scaleFactor=config.eye_scale_factor,
        minNeighbors=config.eye_min_neighbors,
        minSize=(round(0.12 * n),) * 2,
        maxSize=(round(0.4 * n),) * 2,
    )
    # Sorted so that equal-scoring pairs resolve the same way whatever order the detector's threads list them in.
    centres = sorted((ex + ew / 2, r0 + ey + eh / 2) for ex, ey, ew, eh in found)
    dmin, dmax = config.eye_distance[0] * n, config.eye_distance[1] * n
    best: tuple[float, Point, Point] | None = None
    for left in centres:
        if left[0] >= n / 2:
            continue
        for right in centres:
            if right[0] < n / 2:
                continue
            dist = math.hypot(right[0] - left[0], right[1] - left[1])
            tilt = abs(eye_tilt((left, right)))
            if not dmin <= dist <= dmax or tilt > config.eye_max_tilt:
                continue
            mid = (left[0] + right[0]) / 2
            score = tilt / config.eye_max_tilt + abs(dist / n - 0.4) / 0.2 + abs(mid / n - 0.5) / 0.2
            if best is None or score < best[0]:
                best = (score, left, right)
    if best is None:
        return None
    scale = side / n
    x0, y0 = x + w / 2 - side / 2, y + h / 2 - side / 2
    left, right = ((x0 + px * scale, y0 + py * scale) for px, py in best[1:])
    return left, right


def _crop_square(box: Box, config: PreprocessConfig) -> tuple[float, float, float]:
    x, y, w, h = box
    side = config.margin * max(w, h)
    return x + w / 2, y + h / 2 + config.shift_y * max(w, h), side


def alignment_matrix(
    box: Box, rotation: float, config: PreprocessConfig = PreprocessConfig(), size: int | None = None
) -> np.ndarray:
    """2x3 affine matrix taking original image coordinates to the aligned (size x size) crop: rotation by
    ``rotation`` degrees (counter-clockwise positive, cv2 convention) about the crop centre, then scaling."""
    size = size or config.size
    cx, cy, side = _crop_square(box, config)
    m = cv2.getRotationMatrix2D((cx, cy), rotation, size / side)
    m[:, 2] += (size / 2 - cx, size / 2 - cy)
    return m


def align(
    image: np.ndarray,
    box: Box,
    rotation: float,
    config: PreprocessConfig = PreprocessConfig(),
    size: int | None = None,
) -> np.ndarray:
    """The aligned uint8 (size, size) grayscale crop of the face in ``box``, rotated by ``rotation``."""
    gray = to_gray(image)
    size = size or config.size
    m = alignment_matrix(box, rotation, config, size)
    cx, cy, side = _crop_square(box, config)
    if side > 2 * size:  # shrink the neighbourhood first (INTER_AREA) so that the warp does not alias
        reach = side * 0.75  # > side / sqrt(2): the crop stays inside at any rotation
        x0, y0 = max(0, math.floor(cx - reach)), max(0, math.floor(cy - reach))
        x1, y1 = min(gray.shape[1], math.ceil(cx + reach)), min(gray.shape[0], math.ceil(cy + reach))
        if x1 > x0 and y1 > y0:
            gray = _resize(gray[y0:y1, x0:x1], 2 * size / side)
            sx, sy = gray.shape[1] / (x1 - x0), gray.shape[0] / (y1 - y0)
            # original = (small + 0.5) / s - 0.5 + origin, with OpenCV's pixel-centre convention for resize
            back = np.array([[1 / sx, 0, x0 + 0.5 / sx - 0.5], [0, 1 / sy, y0 + 0.5 / sy - 0.5], [0, 0, 1]])
            m = m @ back
    return cv2.warpAffine(gray, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


_NO_EYES = object()  # sentinel: look the eyes up with the Haar eye cascade


def _face(gray: np.ndarray, box: Box, config: PreprocessConfig, eyes: Eyes | None | object = _NO_EYES) -> Face:
    if eyes is _NO_EYES:
        eyes = find_eyes(gray, box, config)
    rotation = 0.0
    if eyes is not None:
        rotation = float(np.clip(eye_tilt(eyes), -config.max_rotation, config.max_rotation))
    aligned = align(gray, box, rotation, config)
    h, w = gray.shape
    x, y, bw, bh = box
    x0, y0, x1, y1 = max(0, x), max(0, y), min(w, x + bw), min(h, y + bh)
    return Face(box=(x0, y0, x1 - x0, y1 - y0), eyes=eyes, rotation=rotation, aligned=aligned)


def find_faces(image: np.ndarray, config: PreprocessConfig = PreprocessConfig()) -> list[Face]:
    """Every face in a photo, largest first. No face -> []. Tiny images are upscaled (and padded) before
    detection; very large images are detected on a downscaled copy and boxes mapped back. Accepts BGR, BGRA or
    grayscale arrays."""
    gray = to_gray(image)
    if config.detector == "blazeface":
        return _blaze_faces(image, gray, config)
    h, w = gray.shape
    long_side, short_side = max(h, w), min(h, w)
    scale = 1.0
    if long_side > config.max_detect_side:
        scale = config.max_detect_side / long_side
    elif short_side < config.min_detect_side:
        scale = min(config.min_detect_side / short_side, config.max_detect_side / long_side)
    det = _resize(gray, scale) if scale != 1.0 else gray
    pad = 0
    if min(det.shape) < 2 * config.min_detect_side:  # a small photo is often a tight crop: give the face a margin
        pad = round(0.25 * min(det.shape))
        det = cv2.copyMakeBorder(det, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    min_face = min(config.min_face, min(det.shape))
    found = _cascade(config.face_cascade).detectMultiScale(
        det, scaleFactor=config.scale_factor, minNeighbors=config.min_neighbors, minSize=(min_face, min_face)
    )
    boxes: list[Box] = []
    for bx, by, bw, bh in found:
        boxes.append((round((bx - pad) / scale), round((by - pad) / scale), round(bw / scale), round(bh / scale)))
    boxes.sort(key=lambda b: b[2] * b[3], reverse=True)
    kept: list[Box] = []
    for box in boxes:  # a smaller box mostly inside a kept one is a part of that face (an eye, a mouth)
        if all(_overlap(box, k) < 0.5 for k in kept):
            kept.append(box)
    faces = [_face(gray, box, config) for box in kept]
    return [f for f in faces if f.eyes is not None or _confirmed(gray, f.box, config)]


def reading_order(boxes: Sequence[Box]) -> list[int]:
    """Indices of the boxes as people read a group photo: rows top to bottom, each row left to right. A face joins
    the row above it when its centre is within half a face's height of that row's centre (heads in a row are
    rarely level)."""
    rows: list[list[int]] = []
    for i in sorted(range(len(boxes)), key=lambda i: boxes[i][1] + boxes[i][3] / 2):
        centre, height = boxes[i][1] + boxes[i][3] / 2, boxes[i][3]
        if rows:
            row = rows[-1]
            row_centre = float(np.mean([boxes[j][1] + boxes[j][3] / 2 for j in row]))
            row_height = float(np.median([boxes[j][3] for j in row]))
            if abs(centre - row_centre) < 0.5 * min(height, row_height):
                row.append(i)
                continue
        rows.append([i])
    return [i for row in rows for i in sorted(row, key=lambda j: boxes[j][0] + boxes[j][2] / 2)]


def shown_faces(found: Sequence[T], largest_only: bool = False) -> list[T]:
    """The faces (anything with a `.box`) in the order they are numbered everywhere (page, CSV, JSON, CLI): the
    largest alone when `largest_only`, else all of them in reading order (:func:`reading_order`)."""
    if largest_only:
        return [max(found, key=lambda f: f.box[2] * f.box[3])] if found else []
    return [found[i] for i in reading_order([f.box for f in found])]


def _color(image: np.ndarray) -> np.ndarray:
    """uint8 BGR (or gray) view for the BlazeFace detector."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.dtype == np.uint8 and (a.ndim == 2 or a.shape[2] == 3):
        return a
    return to_bgr8(a)


def _blaze_faces(image: np.ndarray, gray: np.ndarray, config: PreprocessConfig) -> list[Face]:
    """Two stages: BlazeFace (``blazeface_model``) finds faces in the whole photo, then the short-range model
    refines each on a patch around it, exactly as :func:`frame_crop` frames a data-set crop (so a face is framed
    alike in training and in photos, with eye keypoints seen at a useful resolution). A face the refinement does
    not confirm is kept only when the first stage was at least ``keep_score`` sure. Small faces that the whole-photo
    pass cannot resolve get a second look (:mod:`mtfer.core.small_faces`), switched by ``small_faces``."""
    color = _color(image)
    h, w = gray.shape
    pad = 0
    if min(h, w) < 2 * config.min_detect_side:  # a small photo is often a tight crop: give the face a margin
        pad = round(0.25 * min(h, w))
        color = cv2.copyMakeBorder(color, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    found = detectors.blazeface(color, config.blazeface_model, config.min_score)
    whole = _checked(color, found, config, small=False)
    # Small faces are looked for in the photo itself: replicated edges make face-like streaks at that size. A
    # whole-photo detection that the refinement dropped is not excluded from the look: it gets a second chance there.
    confirmed = [] if pad else small_faces.second_look(color, found, config, known=whole)
    if not found and not confirmed and not pad:  # a close-up whose face touches the edges: again with a margin
        pad = round(0.25 * min(h, w))
        color = cv2.copyMakeBorder(color, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        found = detectors.blazeface(color, config.blazeface_model, config.min_score)
        whole = _checked(color, found, config, small=False)
    results: list[tuple[Box, Eyes | None, float]] = []
    for face in whole + _checked(color, confirmed, config, small=True):
        (rx, ry, rw, rh), eyes = face.box, face.eyes
        box = (round(rx) - pad, round(ry) - pad, round(rw), round(rh))
        eyes = None if eyes is None else tuple((ex - pad, ey - pad) for ex, ey in eyes)  # type: ignore[assignment]
        results.append((box, eyes, face.score))
    results.sort(key=lambda r: r[0][2] * r[0][3], reverse=True)
    kept: list[tuple[Box, Eyes | None, float]] = []
    for r in results:  # two first-stage boxes refined onto the same face
        if all(_overlap(r[0], k[0]) < 0.5 and _overlap(k[0], r[0]) < 0.5 for k in kept):
            kept.append(r)
    return [_face(gray, box, config, eyes) for box, eyes, _ in kept]


def _checked(
    color: np.ndarray, detections: Sequence[detectors.Detection], config: PreprocessConfig, small: bool
) -> list[detectors.Detection]:
    """The detections as the short-range refinement frames them (:func:`_refine`). One it does not confirm is kept
    as found when the first stage was at least ``keep_score`` sure, unless it is `small` (from the small-face look:
    the short-range model must see it too, and it must be at least ``small_faces.MIN_SIDE``)."""
    usable = [d for d in detections if max(d.box[2:]) >= config.min_face / 4]
    looks = [((d.box[0] + d.box[2] / 2, d.box[1] + d.box[3] / 2), max(d.box[2:])) for d in usable]
    out = []
    for det, refined in zip(usable, _refine(color, looks, config), strict=True):
        if refined is None:
            if small or det.score < config.keep_score:
                continue
            refined = det
        if small and max(refined.box[2:]) < small_faces.MIN_SIDE:
            continue
        out.append(refined)
    return out


def _refine(
    color: np.ndarray, looks: Sequence[tuple[Point, float]], config: PreprocessConfig
) -> list[detectors.Detection | None]:
    """For each (centre, face side): the short-range model on a square patch of 1.75 face sides around the centre
    (edge pixels repeated): the most central face of a plausible size, in photo coordinates, or None. The patches
    go through the network together (a group photo's faces in one batch; the same answers as one at a time)."""
    patches, frames = [], []
    for centre, side in looks:
        patch_side = 1.75 * side
        ix0, iy0 = math.floor(centre[0] - patch_side / 2), math.floor(centre[1] - patch_side / 2)
        n = math.ceil(patch_side)
        sub = detectors.square(color, ix0, iy0, n)
        scale = 1.0
        if sub is not None and n > 4 * 128:  # the model sees 128 px anyway: shrink big patches first (cheaper, same)
            scale = 4 * 128 / n
            sub = cv2.resize(sub, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        if sub is not None:
            patches.append(sub)
        frames.append(None if sub is None else (ix0, iy0, scale, sub.shape[1], sub.shape[0]))
    seen = iter(detectors.blazeface_many(patches, "short", config.refine_score))
    out: list[detectors.Detection | None] = []
    for frame in frames:
        best = None if frame is None else _central(next(seen), frame[3], frame[4], config)
        if frame is None or best is None:
            out.append(None)
            continue
        ix0, iy0, scale = frame[:3]
        bx, by, bw, bh = (v / scale for v in best.box)
        eyes = None if best.eyes is None else tuple((ex / scale + ix0, ey / scale + iy0) for ex, ey in best.eyes)
        out.append(detectors.Detection((bx + ix0, by + iy0, bw, bh), best.score, eyes))  # type: ignore[arg-type]
    return out


def _central(
    found: list[detectors.Detection], w: int, h: int, config: PreprocessConfig, crop_side: float | None = None
) -> detectors.Detection | None:
    """The detection nearest the centre of a (padded) crop whose side is ``crop_box_range`` times the face's
    expected side (``crop_side``, default: the patch side / 1.75) and whose centre is within 0.2 sides."""
    expected = crop_side if crop_side is not None else min(w, h) / 1.75
    lo, hi = (f * expected for f in config.crop_box_range)
    best: tuple[float, detectors.Detection] | None = None
    for d in found:
        x, y, bw, bh = d.box
        off = math.hypot(x + bw / 2 - w / 2, y + bh / 2 - h / 2) / expected
        if lo * 0.6 <= max(bw, bh) <= hi and off <= 0.3 and (best is None or off < best[0]):
            best = (off, d)
    return None if best is None else best[1]


def _confirmed(gray: np.ndarray, box: Box, config: PreprocessConfig) -> bool:
    """Whether ``verify_cascade`` also finds a face of about this size here (Haar false positives on texture
    rarely pass two cascades)."""
    if config.verify_cascade is None:
        return True
    x, y, w, h = box
    side = 72  # the face is looked for at about this size in a patch 1.5 times the box
    patch = _square_patch(gray, x + w / 2, y + h / 2, 1.5 * max(w, h), round(1.5 * side))
    found = _cascade(config.verify_cascade).detectMultiScale(
        patch,
        scaleFactor=config.scale_factor,
        minNeighbors=config.verify_min_neighbors,
        minSize=(round(0.7 * side),) * 2,
        maxSize=(round(1.4 * side),) * 2,
    )
    return len(found) > 0


def _overlap(small: Box, big: Box) -> float:
    """Share of ``small``'s area that lies inside ``big``."""
    ix = max(0, min(small[0] + small[2], big[0] + big[2]) - max(small[0], big[0]))
    iy = max(0, min(small[1] + small[3], big[1] + big[3]) - max(small[1], big[1]))
    return ix * iy / max(1, small[2] * small[3])


def frame_crop(image: np.ndarray, config: PreprocessConfig = PreprocessConfig()) -> Face:
    """For data-set images that are already face crops (FER2013 48x48 gray, UTKFace 200x200 chips, RAF-DB
    aligned 100x100): the face framed the SAME way find_faces frames a face in a photo (the Haar box, eyes
    levelled within ``max_rotation``), so that training input matches what the app sees. The face detector
    runs on the crop, restricted to boxes of ``crop_box_range`` times the crop side near its centre; when it
    finds none, the crop is framed by ``fallback_box`` (the detector's typical box on such crops). Never fails
    on a valid image."""
    gray = to_gray(image)
    if config.detector == "blazeface":
        box, detected, eyes = _blaze_crop_box(_color(image), config)
        face = _face(gray, box, config, eyes)
    else:
        box, detected = crop_face_box(gray, config)
        face = _face(gray, box, config)
    face.detected = detected
    return face


def _fallback(w: int, h: int, config: PreprocessConfig) -> Box:
    fx, fy, fs = config.fallback_box
    side = fs * min(h, w)
    return round(fx * w - side / 2), round(fy * h - side / 2), round(side), round(side)


def _blaze_crop_box(color: np.ndarray, config: PreprocessConfig) -> tuple[Box, bool, Eyes | None]:
    """BlazeFace (short range) on the crop padded by 25%: the most central face of a plausible size, its eyes,
    and whether it was found (else the ``fallback_box`` framing and no eyes)."""
    h, w = color.shape[:2]
    short_side = min(h, w)
    pad = round(0.375 * short_side)  # the padded crop is 1.75 crop sides, like a photo face's refinement patch
    padded = cv2.copyMakeBorder(color, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    found = detectors.blazeface(padded, "short", config.refine_score)
    best = _central(found, padded.shape[1], padded.shape[0], config, crop_side=short_side)
    if best is None:
        return _fallback(w, h, config), False, None
    x, y, bw, bh = best.box
    eyes = None if best.eyes is None else tuple((ex - pad, ey - pad) for ex, ey in best.eyes)
    return (round(x) - pad, round(y) - pad, round(bw), round(bh)), True, eyes  # type: ignore[return-value]


def crop_face_box(gray: np.ndarray, config: PreprocessConfig = PreprocessConfig()) -> tuple[Box, bool]:
    """The face box that :func:`frame_crop` uses on a face crop, and whether the detector found it (False: the
    ``fallback_box`` framing)."""
    if config.detector == "blazeface":
        box, found, _ = _blaze_crop_box(_color(gray), config)
        return box, found
    gray = to_gray(gray)
    h, w = gray.shape
    short_side = min(h, w)
    scale = config.crop_detect_side / short_side
    det = _resize(gray, scale)
    pad = round(0.25 * config.crop_detect_side)
    det = cv2.copyMakeBorder(det, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    lo, hi = (round(f * config.crop_detect_side) for f in config.crop_box_range)
    found = _cascade(config.face_cascade).detectMultiScale(
        det,
        scaleFactor=config.scale_factor,
        minNeighbors=config.crop_min_neighbors,
        minSize=(lo, lo),
        maxSize=(hi, hi),
    )
    best: tuple[float, Box] | None = None
    for bx, by, bw, bh in found:
        box = (round((bx - pad) / scale), round((by - pad) / scale), round(bw / scale), round(bh / scale))
        off = math.hypot(box[0] + box[2] / 2 - w / 2, box[1] + box[3] / 2 - h / 2) / short_side
        if off <= 0.2 and (best is None or off < best[0]):
            best = (off, box)
    if best is not None:
        return best[1], True
    return _fallback(w, h, config), False


def to_network_input(faces: Sequence[np.ndarray] | np.ndarray, size: int | None = None) -> np.ndarray:
    """uint8 (N,S,S) or list of (S,S) -> float32 (N,S,S,1) scaled to [0,1]. An empty list needs ``size``."""
    if isinstance(faces, np.ndarray):
        batch = faces
    elif len(faces) == 0:
        if size is None:
            raise ValueError("no faces to convert (pass size= to get an empty batch)")
        return np.zeros((0, size, size, 1), np.float32)
    else:
        shapes = {np.shape(f) for f in faces}
        if len(shapes) > 1:
            raise ValueError(f"faces have different shapes {sorted(shapes)}; align them to one size first")
        batch = np.stack([np.asarray(f) for f in faces])
    if batch.ndim == 4 and batch.shape[-1] == 1:
        batch = batch[..., 0]
    if batch.ndim == 2:
        batch = batch[None]
    if batch.ndim != 3 or batch.shape[1] != batch.shape[2]:
        raise ValueError(f"expected square grayscale faces (N,S,S), got shape {batch.shape}")
    if batch.dtype != np.uint8:
        raise ValueError(f"expected uint8 faces (as Face.aligned), got {batch.dtype}")
    if size is not None and batch.shape[1] != size:
        raise ValueError(f"faces are {batch.shape[1]}x{batch.shape[1]}, the model expects {size}x{size}")
    return (batch.astype(np.float32) / 255.0)[..., None]
