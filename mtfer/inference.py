"""Predictor: photo -> faces -> every head's probabilities, with the model loaded once."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtfer import calibration, faces, runs

PREDICT_BATCH = 256


_FORWARD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _forward(model: Any):
    """The model's inference pass as one traced tf.function (any batch size): ~8x faster than eager calls."""
    fn = _FORWARD.get(model)
    if fn is None:
        import tensorflow as tf

        size = int(model.input.shape[1])
        spec = tf.TensorSpec([None, size, size, 1], tf.float32)
        fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        _FORWARD[model] = fn
    return fn


def predict_arrays(
    model: Any,
    images: np.ndarray,
    batch_size: int = PREDICT_BATCH,
    *,
    flip: bool = False,
    temperatures: Mapping[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """uint8 faces (N,S,S) -> {task: (N, classes) float32 probabilities}.

    flip: test-time augmentation, the mean of the probabilities of each face and of its mirror image.
    temperatures: a bundle's calibration ({task: T}, mtfer.calibration.temperatures), applied to the log of the
    (averaged) probabilities; the heads it scales come back as float64, their top classes unchanged."""
    names = list(model.output)
    out: dict[str, list[np.ndarray]] = {t: [] for t in names}
    forward = _forward(model)
    for start in range(0, len(images), batch_size):
        x = faces.to_network_input(images[start : start + batch_size])
        result = forward(x)
        mirrored = forward(np.ascontiguousarray(x[:, :, ::-1])) if flip else None
        for t in names:
            probs = np.asarray(result[t], dtype=np.float32)
            if mirrored is not None:
                probs = (probs + np.asarray(mirrored[t], dtype=np.float32)) / 2
            out[t].append(probs)
    probs = {
        t: np.concatenate(v) if v else np.zeros((0, int(model.output[t].shape[-1])), np.float32) for t, v in out.items()
    }
    return calibration.calibrated(probs, temperatures) if temperatures else probs


@dataclass
class FacePrediction:
    """One face of a photo: where it is, what the network saw, and each head's probabilities by class name."""

    box: tuple[int, int, int, int]
    eyes: tuple[tuple[float, float], tuple[float, float]] | None
    rotation: float
    aligned: np.ndarray
    probabilities: dict[str, dict[str, float]] = field(default_factory=dict)

    def top(self, task: str) -> tuple[str, float]:
        probs = self.probabilities[task]
        label = max(probs, key=probs.__getitem__)
        return label, probs[label]

    def to_dict(self) -> dict:
        return {
            "box": {"x": self.box[0], "y": self.box[1], "w": self.box[2], "h": self.box[3]},
            "eyes": [list(map(float, e)) for e in self.eyes] if self.eyes else None,
            "rotation": round(float(self.rotation), 2),
            **{t: {c: round(float(p), 6) for c, p in probs.items()} for t, probs in self.probabilities.items()},
            "top": {t: self.top(t)[0] for t in self.probabilities},
        }


class Predictor:
    """Loads a bundle once; safe to call from several threads (the app serves many sessions)."""

    def __init__(self, bundle: str | os.PathLike | runs.Bundle | None = None):
        if not isinstance(bundle, runs.Bundle):
            bundle = runs.load_bundle(runs.resolve_model(bundle))
        self.bundle = bundle
        self.tasks: list[str] = bundle.tasks
        self.classes: dict[str, list[str]] = {t: list(c) for t, c in bundle.metadata["tasks"].items()}
        self.config = faces.PreprocessConfig.from_dict(bundle.metadata["preprocessing"])
        # Older bundles may carry input.blur_sigma/blur_threshold (a removed blur-matching step): ignored.
        self.flip = bool(bundle.metadata["input"].get("tta_flip", False))
        # Temperature scaling per head (metadata calibration.temperature); {} for a bundle never calibrated.
        self.temperatures: dict[str, float] = calibration.temperatures(bundle.metadata)
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.bundle.path

    def predict_faces(self, aligned: np.ndarray) -> dict[str, np.ndarray]:
        """Aligned uint8 faces (N,S,S) -> {task: probabilities (N, classes)}."""
        if len(aligned) == 0:
            return {t: np.zeros((0, len(c)), np.float32) for t, c in self.classes.items()}
        with self._lock:  # one forward pass at a time keeps memory bounded under many sessions
            return predict_arrays(
                self.bundle.model, np.asarray(aligned), flip=self.flip, temperatures=self.temperatures
            )

    def predict_image(
        self, image: bytes | str | os.PathLike | np.ndarray, largest_only: bool = False
    ) -> list[FacePrediction]:
        """Every face in one photo (bytes, path or decoded BGR array). Raises faces.ImageError on a bad file."""
        return self.predict_images([image], largest_only=largest_only)[0]

    def predict_images(
        self, images: Iterable[bytes | str | os.PathLike | np.ndarray], largest_only: bool = False
    ) -> list[list[FacePrediction]]:
        """Many photos; the faces of all of them go through the network in shared batches."""
        found: list[list[faces.Face]] = []
        for image in images:
            array = image if isinstance(image, np.ndarray) else faces.decode_image(image)
            detected = faces.find_faces(array, self.config)
            found.append(detected[:1] if largest_only else detected)
        flat = [f for fs in found for f in fs]
        batch = np.stack([f.aligned for f in flat]) if flat else np.zeros((0, 1, 1), np.uint8)
        probs = self.predict_faces(batch)
        results: list[list[FacePrediction]] = []
        i = 0
        for fs in found:
            preds = []
            for f in fs:
                p = {t: dict(zip(self.classes[t], map(float, probs[t][i]), strict=True)) for t in self.tasks}
                preds.append(FacePrediction(f.box, f.eyes, f.rotation, f.aligned, p))
                i += 1
            results.append(preds)
        return results


# --- the CSV of photos, folders and videos ----------------------------------------------------------------------

PHOTO_COLUMNS = ("source", "face", "x", "y", "w", "h")
VIDEO_COLUMNS = ("source", "time_s", "frame", "track", "face", "x", "y", "w", "h")
ERROR_COLUMN = "error"  # photo tables: why a file could not be read (empty when it was)
_INTEGER_COLUMNS = ("frame", "track", "face", "x", "y", "w", "h")


def table_columns(classes: Mapping[str, Sequence[str]], video: bool = False, error: bool = False) -> list[str]:
    """The CSV's columns: where the face is (VIDEO_COLUMNS or PHOTO_COLUMNS), then the top label and its confidence
    per task (`emotion`, `emotion_confidence`, ...), then every class probability (`emotion_happy`, ...), then
    `error` when asked (photo tables)."""
    tops = [name for task in classes for name in (task, f"{task}_confidence")]
    probabilities = [f"{task}_{c}" for task, names in classes.items() for c in names]
    return [*(VIDEO_COLUMNS if video else PHOTO_COLUMNS), *tops, *probabilities, *([ERROR_COLUMN] if error else [])]


def face_columns(probabilities: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """One face's top label and confidence per task, then every class probability, under table_columns' names."""
    row: dict[str, Any] = {}
    for task, probs in probabilities.items():
        label = max(probs, key=probs.__getitem__)
        row[task] = label
        row[f"{task}_confidence"] = round(float(probs[label]), 4)
    for task, probs in probabilities.items():
        for c, v in probs.items():
            row[f"{task}_{c}"] = round(float(v), 6)
    return row


def box_columns(box: Sequence[int]) -> dict[str, int]:
    x, y, w, h = (int(v) for v in box)
    return {"x": x, "y": y, "w": w, "h": h}


def photo_rows(source: str, preds: Sequence[FacePrediction], error: str | None = None) -> list[dict[str, Any]]:
    """The rows of one photo: one per face (numbered from 1, largest first); a photo without a face, or one that
    could not be read (`error`), is one row with the face columns empty."""
    if error is not None:
        return [{"source": source, ERROR_COLUMN: error}]
    if not preds:
        return [{"source": source}]
    return [
        {"source": source, "face": k, **box_columns(p.box), **face_columns(p.probabilities)}
        for k, p in enumerate(preds, start=1)
    ]


def rows_frame(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]):
    """A DataFrame of `rows` with exactly `columns`, in that order; counts and pixels as integers that may be empty
    (so a CSV says 3, not 3.0, and nothing where a frame had no face)."""
    import pandas as pd

    frame = pd.DataFrame(list(rows), columns=list(columns))
    for name in _INTEGER_COLUMNS:
        if name in frame:
            frame[name] = frame[name].astype("Int64")
    return frame


def predictions_table(
    named: Sequence[tuple[str, Sequence[FacePrediction]]],
    classes: Mapping[str, Sequence[str]] | None = None,
    errors: Sequence[tuple[str, str]] = (),
):
    """The photo CSV (the columns of `mtfer predict DIR --csv`): one row per face with `source, face, x, y, w, h`,
    the top label and confidence per task, every class probability (`emotion_happy`, ...) and `error`; a photo
    without a face is one row with the face columns empty, and each (file, reason) of `errors` one row with its
    reason. `classes` ({task: class names}, a Predictor's) fixes the columns; by default, those of the first face."""
    if classes is None:
        first = next((p for _, preds in named for p in preds), None)
        classes = {t: list(probs) for t, probs in first.probabilities.items()} if first else {}
    rows = [row for name, preds in named for row in photo_rows(name, preds)]
    rows += [row for name, reason in errors for row in photo_rows(name, [], reason)]
    return rows_frame(rows, table_columns(classes, error=True))
