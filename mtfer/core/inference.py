"""Predictor: photo -> faces -> every head's probabilities, with the model loaded once."""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtfer.core import backends, bundles, decoding, faces, preprocess
from mtfer.core.backends import predict_arrays
from mtfer.core.tasks import TASKS


def face_batch(found: Sequence[faces.Face]) -> np.ndarray:
    """Aligned faces stacked into one batch for the network (an empty batch when there are none)."""
    return np.stack([f.aligned for f in found]) if found else np.zeros((0, 1, 1), np.uint8)


def by_class(row: Mapping[str, np.ndarray], classes: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """One face's probabilities ({task: 1-D array}) by class name: {task: {class: p}}, in the model's task order."""
    return {t: dict(zip(names, map(float, row[t]), strict=True)) for t, names in classes.items() if t in row}


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

    @property
    def note(self) -> str | None:
        """A caution for a face smaller than the network's input: it was enlarged, so detail the model learnt
        from (wrinkles, the shape of the mouth) is missing and its answers are less sure."""
        side, size = max(self.box[2], self.box[3]), np.asarray(self.aligned).shape[0]
        if side >= size:
            return None
        return f"small face ({side} px): enlarged to {size} px for the model, so its answers are less sure"

    def to_dict(self) -> dict:
        return {
            "box": {"x": self.box[0], "y": self.box[1], "w": self.box[2], "h": self.box[3]},
            **({"note": self.note} if self.note else {}),
            "eyes": [list(map(float, e)) for e in self.eyes] if self.eyes else None,
            "rotation": round(float(self.rotation), 2),
            **{t: {c: round(float(p), 6) for c, p in probs.items()} for t, probs in self.probabilities.items()},
            "top": {t: self.top(t)[0] for t in self.probabilities},
        }


def predictions(
    found: Sequence[faces.Face], probabilities: Sequence[dict[str, dict[str, float]]]
) -> list[FacePrediction]:
    """The faces of one photo with their probabilities (one group of :meth:`Predictor.predict_groups`)."""
    return [FacePrediction(f.box, f.eyes, f.rotation, f.aligned, p) for f, p in zip(found, probabilities, strict=True)]


BACKENDS = ("auto", "litert", "keras")
SERVING_THREADS = min(4, os.cpu_count() or 1)  # a batch of faces (a folder, a crowd) spreads over the cores


class Predictor:
    """Loads a bundle once; safe to call from several threads (the app serves many sessions).

    backend: "auto" runs the network with LiteRT when the bundle has its LiteRT file (bundles.SERVING_FILE) and
    ai-edge-litert is installed, without importing TensorFlow, else with Keras; "litert" or "keras" insist (ValueError
    when LiteRT cannot serve this bundle). Both give the same probabilities (within 1e-5 for a float32 model) through
    one post-processing (mtfer.core.backends.run_network). `backend` then says which one runs.

    small_faces: None keeps the model's own setting (metadata `preprocessing.small_faces`); False skips the second
    look for small faces (faster on group photos, misses faces under ~60 px); True asks for it."""

    def __init__(
        self,
        bundle: str | os.PathLike | bundles.Bundle | None = None,
        backend: str = "auto",
        small_faces: bool | None = None,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        if not isinstance(bundle, bundles.Bundle):
            bundle = bundles.load_bundle(bundles.resolve_model(bundle), keras=backend == "keras")
        self.bundle = bundle
        self.tasks: list[str] = bundle.tasks
        # Today's class lists: an older bundle's narrower heads come back padded (mtfer.core.backends.padded).
        self.classes: dict[str, list[str]] = {t: list(TASKS[t].classes) for t in bundle.metadata["tasks"]}
        self.config = preprocess.PreprocessConfig.from_dict(bundle.metadata["preprocessing"])
        if small_faces is not None and self.config.detector == "blazeface":
            self.config = dataclasses.replace(self.config, small_faces=small_faces)
        # Older bundles may carry input.blur_sigma/blur_threshold (a removed blur-matching step): ignored.
        self.flip = bool(bundle.metadata["input"].get("tta_flip", False))
        # Temperature scaling per head (metadata calibration.temperature); {} for a bundle never calibrated.
        self.temperatures: dict[str, float] = backends.temperatures(bundle.metadata)
        self._lock = threading.Lock()
        self._lite: backends.LiteNetwork | None = None
        if backend == "litert" or (backend == "auto" and bundle.serving_file is not None):
            try:
                self._lite = backends.LiteNetwork(self, num_threads=SERVING_THREADS)
            except (ImportError, ValueError) as error:
                if backend == "litert":
                    raise ValueError(f"LiteRT cannot serve {bundle.path.name}: {error}") from None
        self.backend = "litert" if self._lite is not None else "keras"

    @property
    def path(self) -> Path:
        return self.bundle.path

    def predict_faces(
        self, aligned: np.ndarray, progress: Callable[[int, int], None] | None = None, calibrate: bool = True
    ) -> dict[str, np.ndarray]:
        """Aligned uint8 faces (N,S,S) -> {task: probabilities (N, classes)}; `progress(done, total)` after each
        batch of faces. `calibrate=False`: the network's own probabilities, before the bundle's temperatures (an
        evaluation measures both)."""
        if len(aligned) == 0:
            return {t: np.zeros((0, len(c)), np.float32) for t, c in self.classes.items()}
        temperatures = self.temperatures if calibrate else None
        with self._lock:  # one forward pass at a time keeps memory bounded under many sessions
            if self._lite is not None:
                return self._lite(np.asarray(aligned), progress=progress, calibrate=calibrate)
            return predict_arrays(
                self.bundle.model, np.asarray(aligned), flip=self.flip, temperatures=temperatures, progress=progress
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
        found = [self.find(image, largest_only) for image in images]
        return [predictions(fs, probs) for fs, probs in zip(found, self.predict_groups(found), strict=True)]

    def find(self, image: bytes | str | os.PathLike | np.ndarray, largest_only: bool = False) -> list[faces.Face]:
        """The first half of :meth:`predict_image`: the photo's faces, found and aligned as this model frames them,
        in the order they are numbered (:func:`mtfer.core.faces.shown_faces`). Raises faces.ImageError."""
        array = image if isinstance(image, np.ndarray) else decoding.decode_image(image)
        return faces.shown_faces(faces.find_faces(array, self.config), largest_only)

    def predict_groups(self, groups: Sequence[Sequence[faces.Face]]) -> list[list[dict[str, dict[str, float]]]]:
        """The faces of several photos or frames through the network in shared batches: each face's probabilities
        by class name ({task: {class: p}}), group by group. Photos, folders and videos all come here."""
        flat = [f for group in groups for f in group]
        probs = self.predict_faces(face_batch(flat))
        out: list[list[dict[str, dict[str, float]]]] = []
        i = 0
        for group in groups:
            out.append([by_class({t: p[i + k] for t, p in probs.items()}, self.classes) for k in range(len(group))])
            i += len(group)
        return out
