"""How a photo's faces become the network's input: the detector, framing, alignment cap and size, as one
setting saved with every model (metadata.json `preprocessing`), so a bundle carries its own preprocessing."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import cv2


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that decides what the network sees; saved with a model's weights (to_dict / from_dict)."""

    size: int = 50  # side of the network's square input
    max_rotation: float = 10.0  # never rotate by more than this many degrees (either way)
    # "blazeface" (MediaPipe's BlazeFace, boxes and eye keypoints; mtfer.core.detectors) or "haar" (OpenCV's Haar face
    # and eye cascades, the paper's preprocessing: PreprocessConfig.paper()).
    detector: str = "blazeface"
    # Framing: the crop is a square of side margin * (box side), centred on the box centre moved down by
    # shift_y * (box side). BlazeFace's box runs from the brows to the chin; 1.16 / -0.09 frames the face the way
    # FER2013's 48x48 crops are cut (the median BlazeFace box on them). Haar: 1.0 / 0.0, the Haar box itself.
    margin: float = 1.16
    shift_y: float = -0.09
    # BlazeFace: the photo is searched with blazeface_model ("full": faces up to ~5 m away, i.e. small faces in
    # group photos too); each face is then refined by the short-range model on a patch around it, the same way
    # data-set crops are framed (frame_crop), so training and photos are framed alike.
    blazeface_model: str = "full"
    min_score: float = 0.3  # first-stage confidence (low: busy backgrounds lower it; the refinement confirms)
    refine_score: float = 0.6  # the short-range model must confirm the face with at least this confidence ...
    keep_score: float = 0.85  # ... unless the first stage alone was this sure
    # A second look (one scan of the photo at 0.7) for faces too small for the whole-photo pass (small_faces);
    # a candidate found there is kept when its score and a confirming look's average at least small_face_score.
    small_faces: bool = True
    small_face_score: float = 0.4
    # Face detection in photos.
    face_cascade: str = "haarcascade_frontalface_default.xml"
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_face: int = 32  # smallest face side in pixels, at detection scale
    # A detection without an eye pair is kept only if this second cascade also sees a face there (None: keep all).
    verify_cascade: str | None = "haarcascade_frontalface_alt.xml"
    verify_min_neighbors: int = 2
    max_detect_side: int = 1280  # larger photos are detected on a downscaled copy
    min_detect_side: int = 160  # smaller photos are upscaled to this short side before detection
    # Face detection on data-set crops (frame_crop): the face is known to fill most of the crop.
    crop_detect_side: int = 96
    crop_min_neighbors: int = 3
    crop_box_range: tuple[float, float] = (0.6, 1.4)  # accepted box side / crop side
    # centre x, centre y, side as fractions of the crop: the detector's median box on FER2013 crops
    fallback_box: tuple[float, float, float] = (0.5, 0.58, 0.86)
    # Eye detection inside the face box, on a copy of the face resized to eye_face_side pixels.
    eye_cascade: str = "haarcascade_eye.xml"
    eye_face_side: int = 120
    eye_rows: tuple[float, float] = (0.15, 0.6)  # search band, fractions of the face box height
    eye_scale_factor: float = 1.08
    eye_min_neighbors: int = 2
    eye_distance: tuple[float, float] = (0.25, 0.65)  # plausible eye distance, fractions of the face box side
    eye_max_tilt: float = 30.0  # a pair tilted more than this is treated as not found

    def __post_init__(self) -> None:
        try:
            self._check()
        except (TypeError, ValueError) as e:
            message = str(e).removeprefix("PreprocessConfig: ")
            raise ValueError(f"PreprocessConfig: {message}") from None

    def _check(self) -> None:
        for name in ("crop_box_range", "fallback_box", "eye_rows", "eye_distance"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        checks = [
            (self.size >= 8, "size must be at least 8"),
            (0 <= self.max_rotation <= 45, "max_rotation must be between 0 and 45 degrees"),
            (self.margin > 0, "margin must be positive"),
            (self.scale_factor > 1 and self.eye_scale_factor > 1, "scale factors must be greater than 1"),
            (self.min_neighbors >= 0 and self.crop_min_neighbors >= 0, "min_neighbors must be >= 0"),
            (self.min_face >= 8, "min_face must be at least 8 pixels"),
            (self.max_detect_side >= self.min_detect_side > 0, "need 0 < min_detect_side <= max_detect_side"),
            (self.crop_detect_side >= 24, "crop_detect_side must be at least 24"),
            (
                len(self.crop_box_range) == 2 and 0 < self.crop_box_range[0] < self.crop_box_range[1],
                "bad crop_box_range",
            ),
            (
                len(self.fallback_box) == 3 and self.fallback_box[2] > 0,
                "fallback_box must be (cx, cy, side>0)",
            ),
            (self.eye_face_side >= 40, "eye_face_side must be at least 40"),
            (len(self.eye_rows) == 2 and 0 <= self.eye_rows[0] < self.eye_rows[1] <= 1, "bad eye_rows"),
            (
                len(self.eye_distance) == 2 and 0 < self.eye_distance[0] < self.eye_distance[1],
                "bad eye_distance",
            ),
            (0 < self.eye_max_tilt <= 90, "eye_max_tilt must be in (0, 90]"),
            (self.detector in DETECTORS, f"detector must be one of {list(DETECTORS)}, got {self.detector!r}"),
            (self.blazeface_model in ("short", "full"), "blazeface_model must be 'short' or 'full'"),
            (
                all(0 < v < 1 for v in (self.min_score, self.refine_score, self.keep_score, self.small_face_score)),
                "min_score, refine_score, keep_score and small_face_score must be between 0 and 1",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"PreprocessConfig: {message}")
        for name in (self.face_cascade, self.eye_cascade, self.verify_cascade or self.face_cascade):
            if Path(name).name != name or not (Path(cv2.data.haarcascades) / name).is_file():
                raise ValueError(f"PreprocessConfig: {name!r} is not a cascade file in cv2.data.haarcascades")

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def crop_settings(self) -> dict:
        """:meth:`to_dict` without the settings that only photos use (:data:`PHOTO_ONLY`): what decides how a
        data-set crop is framed, so that changing a photo-only setting keeps prepared data sets."""
        return {k: v for k, v in self.to_dict().items() if k not in PHOTO_ONLY}

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError (they mean a different preprocessing).
        Settings saved before the detector was a setting (no ``detector`` key) were the Haar pipeline."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing settings {unknown}; known: {sorted(known)}")
        if "detector" not in d:
            return cls.paper(**d)
        return cls(**d)

    @classmethod
    def paper(cls, **overrides: object) -> PreprocessConfig:
        """The paper's preprocessing: Haar face and eye cascades, the crop is the Haar box."""
        return cls(**{**PAPER_PREPROCESSING, **overrides})  # type: ignore[arg-type]

    @classmethod
    def named(cls, name: str, **overrides: object) -> PreprocessConfig:
        """``"blazeface"`` (the default) or ``"haar"`` / ``"paper"`` (the paper's Haar pipeline)."""
        if name == "blazeface":
            return cls(**overrides)  # type: ignore[arg-type]
        if name in ("haar", "paper"):
            return cls.paper(**overrides)
        raise ValueError(f"unknown preprocessing {name!r}; expected 'blazeface' or 'haar' (the paper's)")


DETECTORS = ("blazeface", "haar")
PHOTO_ONLY = ("small_faces", "small_face_score")  # the second look for small faces in photos (frame_crop: unused)


# What differs in the paper's (Haar) pipeline from the default one.
PAPER_PREPROCESSING: dict[str, object] = {
    "detector": "haar",
    "margin": 1.0,
    "shift_y": 0.0,
    "fallback_box": (0.5, 0.5, 0.96),
}
