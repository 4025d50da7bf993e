"""The shared trainer: masked multi-task loss, the paper's callbacks, protocols, precision, distribution.

One trainer serves the CLI, `training/` scripts and the app's Train page (through a background job)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import platform
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtfer import runs
from mtfer.tasks import PAPER_LOSS_WEIGHTS, TASK_NAMES

log = logging.getLogger("mtfer.training")

PROTOCOLS = ("holdout", "paper")
PRECISIONS = ("auto", "bfloat16", "float32")
STRATEGIES = ("default", "mirrored", "multiworker")
LR_SCHEDULES = ("plateau", "cosine", "onecycle")
CLASS_WEIGHTINGS = ("none", "balanced", "sqrt")
AUGMENTATIONS = ("none", "light", "strong")
LOSS_WEIGHTS_MODES = ("fixed", "learned")  # "learned": uncertainty weighting (mtfer.loss_weights)
PSEUDO_TARGETS = ("hard", "soft")  # pseudo-labels as the teacher's top class, or its probabilities
ONECYCLE_WARMUP = 0.3  # fraction of all steps spent warming up in the "onecycle" schedule
PAPER_EARLY_STOPPING_PATIENCE = 11  # not given in the paper; long enough for two learning-rate drops
REMOVED_SETTINGS = ("blur_sigma", "blur_threshold")  # old runs' configs may still carry these


@dataclass
class TrainConfig:
    """Everything needed to rerun a training run; defaults are the paper's (SPEC section 2)."""

    datasets: list[dict] = field(default_factory=list)  # [{"format": "fer2013", "root": "..."}]
    tasks: list[str] = field(default_factory=lambda: list(TASK_NAMES))
    architecture: str = "paper"
    loss_weights: dict[str, float] = field(default_factory=lambda: dict(PAPER_LOSS_WEIGHTS))
    learning_rate: float = 3e-4
    batch_size: int = 32
    epochs: int = 100
    # Epochs without improvement of the monitored validation accuracy before stopping (the best epoch is restored
    # either way). None: 11 with "plateau" (long enough for two learning-rate drops), `epochs` with a schedule,
    # which should run to its end: with "cosine"/"onecycle" set it >= epochs.
    early_stopping_patience: int | None = None
    plateau_patience: int = 5
    plateau_factor: float = 0.2
    min_learning_rate: float = 1e-6  # stop once the learning rate falls below this
    protocol: str = "holdout"
    val_fraction: float = 0.1
    seed: int = 1337
    augment: bool | str = True  # True/"light": flips, shifts, turns, zooms; "strong": plus photometric; False/"none"
    precision: str = "auto"
    strategy: str = "default"
    devices: list[str] | None = None  # for MirroredStrategy, e.g. ["/cpu:0", "/cpu:1"]
    init_from: str | None = None  # run id or bundle to start from (sequential training, paper Table 1)
    limit: int | None = None  # cap on samples per data set (quick runs)
    steps_per_epoch: int | None = None  # cap on steps per epoch (quick runs, tests)
    image_size: int = 50
    # Face detector that frames the training crops, saved with the model and used on photos: "blazeface" (default)
    # or "haar" (the paper's preprocessing; mtfer.faces.PreprocessConfig.named).
    preprocessing: str = "blazeface"
    # Training recipe beyond the paper; every default is the paper's behaviour.
    label_smoothing: float = 0.0  # CategoricalCrossentropy(label_smoothing=...) on every head
    lr_schedule: str = "plateau"  # "plateau" (paper): ReduceLROnPlateau; "cosine"/"onecycle": warmup, cosine decay
    warmup_epochs: float = 1.0  # linear warmup of the "cosine" schedule ("onecycle" warms up over 30% of the steps)
    weight_decay: float = 0.0  # > 0: AdamW (decoupled decay, lr * weight_decay per step) instead of Adam
    class_weighting: str = "none"  # emotion head only: "balanced" or "sqrt" (its square root), mean weight 1
    mixup: float = 0.0  # > 0: mixup with Beta(mixup, mixup) within each training batch
    ema: float = 0.0  # > 0: validate, keep and save the exponential moving average of the weights (this momentum)
    tta_flip: bool = False  # evaluate and predict on the mean of each face and its mirror image
    # "fixed": loss_weights as given; "learned": one trainable log-variance per task (mtfer.loss_weights)
    loss_weights_mode: str = "fixed"
    # Pseudo-labels filling the TRAINING split's missing labels: "auto" or folders (mtfer.pseudo); None: none
    pseudo_labels: list[str] | None = None
    # "hard": a pseudo-labelled face's target is the teacher's top class; "soft": the teacher's probabilities (the
    # same faces either way: those above the confidence threshold)
    pseudo_targets: str = "hard"
    name: str = ""
    run_id: str | None = None

    def __post_init__(self) -> None:
        from mtfer.model import ARCHITECTURES

        if not self.tasks or any(t not in TASK_NAMES for t in self.tasks):
            raise ValueError(f"tasks must be a non-empty subset of {list(TASK_NAMES)}, got {self.tasks}")
        self.tasks = [t for t in TASK_NAMES if t in self.tasks]
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}; expected one of {sorted(ARCHITECTURES)}")
        for name, value, choices in (
            ("protocol", self.protocol, PROTOCOLS),
            ("precision", self.precision, PRECISIONS),
            ("strategy", self.strategy, STRATEGIES),
            ("preprocessing", self.preprocessing, ("blazeface", "haar")),
        ):
            if value not in choices:
                raise ValueError(f"unknown {name} {value!r}; expected one of {list(choices)}")
        unknown = set(self.loss_weights) - set(TASK_NAMES)
        if unknown:
            raise ValueError(f"loss weights for unknown tasks {sorted(unknown)}")
        for label, value in (("learning_rate", self.learning_rate), ("batch_size", self.batch_size)):
            if value <= 0:
                raise ValueError(f"{label} must be positive, got {value}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be between 0 and 1, got {self.val_fraction}")
        for name, value, choices in (
            ("lr_schedule", self.lr_schedule, LR_SCHEDULES),
            ("class_weighting", self.class_weighting, CLASS_WEIGHTINGS),
            ("loss_weights_mode", self.loss_weights_mode, LOSS_WEIGHTS_MODES),
            ("pseudo_targets", self.pseudo_targets, PSEUDO_TARGETS),
        ):
            if value not in choices:
                raise ValueError(f"unknown {name} {value!r}; expected one of {list(choices)}")
        augmentation_level(self.augment)
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema (the moving average's momentum) must be in [0, 1), e.g. 0.999; got {self.ema}")
        for label, value in (
            ("warmup_epochs", self.warmup_epochs),
            ("weight_decay", self.weight_decay),
            ("mixup", self.mixup),
        ):
            if value < 0:
                raise ValueError(f"{label} must be >= 0, got {value}")
        if self.early_stopping_patience is None:
            self.early_stopping_patience = (
                PAPER_EARLY_STOPPING_PATIENCE if self.lr_schedule == "plateau" else self.epochs
            )
        if self.early_stopping_patience < 0:
            raise ValueError(f"early_stopping_patience must be >= 0, got {self.early_stopping_patience}")
        if self.loss_weights_mode == "learned" and len(self.tasks) < 2:
            raise ValueError(f"learned loss weights need at least two tasks, got {self.tasks}")
        if isinstance(self.pseudo_labels, str):
            self.pseudo_labels = [self.pseudo_labels]
        if self.pseudo_labels is not None:
            if not all(isinstance(x, str) and x.strip() for x in self.pseudo_labels):
                raise ValueError(f"pseudo_labels must be 'auto' or pseudo-label folders, got {self.pseudo_labels!r}")
            self.pseudo_labels = list(self.pseudo_labels) or None
        for d in self.datasets:
            if not isinstance(d, dict) or "format" not in d or "root" not in d:
                raise ValueError(f"each data set needs a 'format' and a 'root', got {d!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """A saved config; settings that were removed since (REMOVED_SETTINGS) are dropped with a warning."""
        data = dict(data)
        if float(data.get("blur_sigma") or 0.0):
            log.warning(
                "ignoring blur_sigma=%s: blurring faces to match a blurred training set is no longer supported",
                data["blur_sigma"],
            )
        for name in REMOVED_SETTINGS:
            data.pop(name, None)
        data.setdefault("preprocessing", "haar")  # saved before the detector was a setting: the Haar pipeline
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown training settings {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def from_preset(cls, preset: str, /, **overrides: Any) -> TrainConfig:
        """The settings of PRESETS[preset], with `overrides` on top (any field, `name` included)."""
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[preset], **overrides})


# "paper": the paper's settings (the defaults). "recipe": the shipped recipe, a faster network with a modern
# training recipe; its early stopping never triggers, so the cosine schedule runs to its end (best epoch restored).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "architecture": "paper",
        "preprocessing": "haar",
        "precision": "auto",
        "batch_size": 32,
        "learning_rate": 3e-4,
        "lr_schedule": "plateau",
        "warmup_epochs": 1.0,
        "weight_decay": 0.0,
        "label_smoothing": 0.0,
        "class_weighting": "none",
        "augment": True,
        "mixup": 0.0,
        "ema": 0.0,
        "tta_flip": False,
        # early_stopping_patience: left to its default, 11 with the plateau rule, `epochs` with a schedule
    },
    "recipe": {
        "architecture": "fast",
        "preprocessing": "blazeface",
        "precision": "auto",
        "batch_size": 64,
        "learning_rate": 2e-3,
        "lr_schedule": "cosine",
        "warmup_epochs": 1.0,
        "weight_decay": 1e-2,
        "label_smoothing": 0.1,
        "class_weighting": "sqrt",
        "augment": "strong",
        "mixup": 0.0,
        "ema": 0.0,
        "tta_flip": True,
        "early_stopping_patience": 1000,
    },
}
# "demo": the recipe on about 4,000 faces per data set for 3 epochs: a whole run in minutes on a CPU, to show the
# flow (its accuracy is far below a full run's).
PRESETS["demo"] = {**PRESETS["recipe"], "epochs": 3, "limit": 4000}


def augmentation_level(augment: bool | str) -> str:
    """TrainConfig.augment as one of AUGMENTATIONS: True is "light" (the original pipeline), False "none"."""
    if augment is True:
        return "light"
    if augment is False:
        return "none"
    if isinstance(augment, str) and augment in AUGMENTATIONS:
        return augment
    raise ValueError(f"unknown augment {augment!r}; expected true, false or one of {list(AUGMENTATIONS)}")


# --- data ----------------------------------------------------------------------------------------------


@dataclass
class Split:
    """Arrays of one split: uint8 faces (N,S,S), labels int (N,4) with -1 = missing, per-sample source and set.

    soft: optional soft targets per task, float32 (N, classes), a row of NaN where the face has none (its target is
    then the one-hot of its label); set by soft pseudo-labels (mtfer.pseudo) on the training split only."""

    images: np.ndarray
    labels: np.ndarray
    sources: np.ndarray
    datasets: np.ndarray
    soft: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray) -> Split:
        soft = None if self.soft is None else {t: v[index] for t, v in self.soft.items()}
        return Split(self.images[index], self.labels[index], self.sources[index], self.datasets[index], soft)

    @staticmethod
    def concat(parts: Sequence[Split]) -> Split:
        if not parts:
            raise ValueError("nothing to concatenate")
        if any(p.soft is not None for p in parts):
            raise ValueError("splits with soft targets cannot be concatenated (soft targets are added after splitting)")
        return Split(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in ("images", "labels", "sources", "datasets"))
        )


def carve(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of range(n) into (keep, carved) with round(n * fraction) carved."""
    order = np.random.default_rng(seed).permutation(n)
    k = int(round(n * fraction))
    return np.sort(order[k:]), np.sort(order[:k])


def make_splits(prepared: Sequence[Any], protocol: str, val_fraction: float, seed: int) -> dict[str, Split]:
    """holdout: validation carved (seeded) from each set's train split, test untouched until the end.
    paper: everything pooled, seeded 90/10, the 10% both monitors and reports (optimistic, as in the paper)."""
    out: dict[str, list[Split]] = {"train": [], "val": [], "test": []}
    for p in prepared:
        whole = Split(p.images, p.labels.astype(np.int64), p.sources.astype(str), np.full(len(p.images), p.name))
        splits = np.asarray(p.splits).astype(str)
        if protocol == "paper":
            keep, held = carve(len(whole), val_fraction, seed)
            out["train"].append(whole.subset(keep))
            out["val"].append(whole.subset(held))
            continue
        train_idx = np.flatnonzero(splits == "train")
        keep, held = carve(len(train_idx), val_fraction, seed)
        out["train"].append(whole.subset(train_idx[keep]))
        out["val"].append(whole.subset(np.concatenate([train_idx[held], np.flatnonzero(splits == "val")])))
        out["test"].append(whole.subset(np.flatnonzero(splits == "test")))
    return {k: Split.concat(v) for k, v in out.items() if v and sum(len(s) for s in v)}


def with_pseudo_labels(
    config: TrainConfig, splits: dict[str, Split], run: Path
) -> tuple[dict[str, Split], list[dict] | None]:
    """The splits with config.pseudo_labels filling the TRAINING split's missing labels (val and test keep their
    true labels; mtfer.pseudo.apply_pseudo_labels, recorded in the run's pseudo_labels.json), and that record;
    (splits, None) for a run without pseudo-labels."""
    if not config.pseudo_labels:
        return splits, None
    from mtfer.pseudo import apply_pseudo_labels

    return apply_pseudo_labels(
        splits,
        config.pseudo_labels,
        run,
        datasets=config.datasets,
        tasks=config.tasks,
        soft=config.pseudo_targets == "soft",
    )


def load_prepared(config: TrainConfig, progress: Callable[[int, int, int], None] | None = None) -> list[Any]:
    """The prepared (cached) data sets of `config`. `progress(index, done, total)`: the cache's progress of data
    set number `index` (0-based), with `done` of `total` faces framed (called only while a data set is framed,
    after a first call with 0 of 0 when its turn comes)."""
    from mtfer.datasets.cache import prepare
    from mtfer.faces import PreprocessConfig

    if not config.datasets:
        raise ValueError("no data sets chosen: give at least one {'format': ..., 'root': ...}")
    pre = PreprocessConfig.named(config.preprocessing, size=config.image_size)
    prepared = []
    for index, d in enumerate(config.datasets):
        callback = None
        if progress is not None:
            progress(index, 0, 0)
            callback = functools.partial(progress, index)
        prepared.append(prepare(d["format"], d["root"], config=pre, limit=config.limit, progress=callback))
    return prepared


class TrainingStopped(Exception):  # noqa: N818 - a signal to unwind, not an error
    """Raised inside the trainer when a stop was asked for (SIGTERM): unwinds data preparation or model.fit at
    once, without validating or recording an unfinished epoch."""


class PreparationProgress:
    """The cache's progress callback for a run (:func:`load_prepared`): data set, faces done / total, rate and time
    left go into progress.json with ``phase="preparing"``, at most every `interval` seconds (and always at the
    start and end of a data set). Raises TrainingStopped once `stop` is set, so that a stop during the (long) first
    preparation of a data set takes effect within a chunk of faces."""

    def __init__(
        self,
        run: str | os.PathLike,
        names: Sequence[str],
        stop: StopRequested | None = None,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        write: Callable[..., Any] = runs.write_progress,
    ) -> None:
        self.run, self.names, self.stop = Path(run), list(names), stop
        self.interval, self.clock, self.write = interval, clock, write
        self.started: dict[int, float] = {}
        self.last = -float("inf")

    def fields(self, index: int, done: int, total: int) -> dict:
        """What goes into progress.json: rate in faces/s and eta_s once some faces are done."""
        now = self.clock()
        if total and (not done or index not in self.started):  # prepare() starts each data set with (0, total)
            self.started[index] = now
        elapsed = now - self.started.get(index, now)
        rate = done / elapsed if done and elapsed > 0 else None
        eta = (total - done) / rate if rate else None
        return {
            "state": "running",
            "phase": "preparing",
            "dataset": self.names[index],
            "dataset_index": index + 1,
            "datasets": len(self.names),
            "done": int(done),
            "total": int(total),
            "rate": None if rate is None else round(rate, 1),
            "eta_s": None if eta is None else round(eta),
        }

    def __call__(self, index: int, done: int, total: int) -> None:
        if self.stop is not None and self.stop.flag:
            raise TrainingStopped("stopped while preparing the data sets")
        now = self.clock()
        edge = done == 0 or done >= total
        if not edge and now - self.last < self.interval:
            return
        self.last = now
        self.write(self.run, **self.fields(index, done, total))


def class_weights_for(labels: np.ndarray, mode: str, num_classes: int) -> np.ndarray | None:
    """Per-class loss weights from one task's training labels (-1 = missing): sklearn's "balanced" weights
    (n / (classes * count)) or their square root ("sqrt"), scaled so that the mean weight over the labelled
    training samples is 1. Classes without training samples (never weighed) get 1. None for "none" or without
    labels."""
    from sklearn.utils.class_weight import compute_class_weight

    if mode not in CLASS_WEIGHTINGS:
        raise ValueError(f"unknown class_weighting {mode!r}; expected one of {list(CLASS_WEIGHTINGS)}")
    y = np.asarray(labels)
    y = y[y >= 0]
    if mode == "none" or not len(y):
        return None
    classes = np.unique(y)
    present = compute_class_weight("balanced", classes=classes, y=y)
    present = np.sqrt(present) if mode == "sqrt" else present
    present /= np.sum(present * np.bincount(y)[classes]) / len(y)  # mean weight over the labelled samples: 1
    weights = np.ones(num_classes, np.float32)
    weights[classes] = present
    return weights


def make_augmenter(level: str, seed: int) -> Callable[[Any], Any] | None:
    """A batch (B,S,S,1) float32 in [0,1] -> the same, augmented; None for "none".

    light: horizontal flip, translation 0.08, rotation +-8 degrees, zoom 0.08 (the original pipeline).
    strong: flip, translation 0.1, rotation +-10 degrees, zoom 0.1; then, for other cameras and lighting:
    brightness +-0.2, contrast 0.7-1.3, gamma 0.7-1.4, Gaussian noise (sigma up to 0.03), a Gaussian blur (p=0.15)
    or a downscale-upscale to 40-70% of the size (low resolution, p=0.15), and random erasing of a small
    rectangle (p=0.25)."""
    import keras
    import tensorflow as tf

    if level not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {level!r}; expected one of {list(AUGMENTATIONS)}")
    if level == "none":
        return None
    shift, degrees, zoom = (0.08, 8, 0.08) if level == "light" else (0.1, 10, 0.1)
    float32 = {"dtype": "float32", "seed": seed}  # float32 even under a mixed-precision policy
    geometric = keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", **float32),
            keras.layers.RandomTranslation(shift, shift, fill_mode="nearest", **float32),
            keras.layers.RandomRotation(degrees / 360, fill_mode="nearest", **float32),
            keras.layers.RandomZoom(zoom, fill_mode="nearest", **float32),
        ],
        name="augment",
    )
    if level == "light":
        return lambda x: geometric(x, training=True)

    photometric = keras.Sequential(
        [
            keras.layers.RandomBrightness(0.2, value_range=(0.0, 1.0), **float32),
            keras.layers.RandomContrast(0.3, value_range=(0.0, 1.0), **float32),
        ],
        name="photometric",
    )
    blur = keras.layers.RandomGaussianBlur(
        factor=(0.15, 0.15), kernel_size=5, sigma=(0.5, 1.2), value_range=(0.0, 1.0), **float32
    )
    erase = keras.layers.RandomErasing(factor=(0.25, 0.25), scale=(0.02, 0.15), value_range=(0.0, 1.0), **float32)
    gamma_range = np.log([0.7, 1.4]).astype(np.float32)

    def strong(x):
        x = photometric(geometric(x, training=True), training=True)
        batch, size = tf.shape(x)[0], tf.shape(x)[1]
        gamma = tf.exp(tf.random.uniform([batch, 1, 1, 1], gamma_range[0], gamma_range[1]))
        x = tf.pow(tf.clip_by_value(x, 0.0, 1.0), gamma)
        x = blur(x, training=True)
        small = tf.cast(tf.cast(size, tf.float32) * tf.random.uniform([], 0.4, 0.7), tf.int32)
        lowres = tf.image.resize(tf.image.resize(x, [small, small], "area"), [size, size], "bilinear")
        x = tf.where(tf.random.uniform([batch, 1, 1, 1]) < 0.15, lowres, x)
        x = x + tf.random.normal(tf.shape(x)) * tf.random.uniform([batch, 1, 1, 1], 0.0, 0.03)
        x = erase(tf.clip_by_value(x, 0.0, 1.0), training=True)
        return tf.clip_by_value(x, 0.0, 1.0)

    return strong


def mix_batch(x, y: Mapping[str, Any], w: Mapping[str, Any], lam, perm) -> tuple[Any, dict, dict]:
    """Mixup of a batch with its permutation `perm`, weight `lam` on the sample itself.

    Images: lam * x_i + (1 - lam) * x_j. Per task, the sample weight (mask, times any class weight) is mixed the
    same way, lam * w_i + (1 - lam) * w_j: 0 when neither sample has the task's label. The labels are mixed only
    where both samples have one (lam * y_i + (1 - lam) * y_j); where only one has a label, that label is the
    target and the weight is its share (lam * w_i or (1 - lam) * w_j)."""
    import tensorflow as tf

    lam = tf.cast(lam, tf.float32)
    x = lam * x + (1.0 - lam) * tf.gather(x, perm)
    mixed_y, mixed_w = {}, {}
    for t in y:
        wi, wj = w[t], tf.gather(w[t], perm)
        yi, yj = y[t], tf.gather(y[t], perm)
        a = (lam * tf.cast(wi > 0, tf.float32))[:, None]
        b = ((1.0 - lam) * tf.cast(wj > 0, tf.float32))[:, None]
        mixed_y[t] = tf.where(a + b > 0, (a * yi + b * yj) / tf.maximum(a + b, 1e-12), yi)
        mixed_w[t] = lam * wi + (1.0 - lam) * wj
    return x, mixed_y, mixed_w


def make_dataset(
    split: Split,
    tasks: Sequence[str],
    batch_size: int,
    *,
    training: bool,
    augment: bool | str,
    seed: int,
    class_weights: Mapping[str, np.ndarray] | None = None,
    mixup: float = 0.0,
):
    """tf.data pipeline: (face float32 in [0,1], one-hot labels per task, per-task masks as sample weights).

    Training only: augmentation (see make_augmenter), mixup with Beta(mixup, mixup) (see mix_batch).
    class_weights {task: (classes,)} multiply that task's mask: unlabelled samples keep weight 0."""
    import tensorflow as tf

    from mtfer.tasks import TASKS

    columns = [TASK_NAMES.index(t) for t in tasks]
    soft_tasks = [t for t in tasks if split.soft is not None and t in split.soft]
    arrays = (split.images, split.labels[:, columns].astype(np.int32))
    if soft_tasks:  # only then a third element, so that hard-label pipelines stay exactly as they were
        arrays += (tuple(np.asarray(split.soft[t], np.float32) for t in soft_tasks),)
    ds = tf.data.Dataset.from_tensor_slices(arrays)
    if training:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    augmenter = make_augmenter(augmentation_level(augment), seed) if training else None
    per_class = {t: tf.constant(v, tf.float32) for t, v in (class_weights or {}).items() if t in tasks}
    mixup = float(mixup) if training else 0.0

    def to_inputs(images, labels, soft=()):
        x = tf.cast(images, tf.float32)[..., None] / 255.0
        if augmenter is not None:
            x = augmenter(x)
        y, w = {}, {}
        targets = dict(zip(soft_tasks, soft, strict=True))
        for i, t in enumerate(tasks):
            label = labels[:, i]
            y[t] = tf.one_hot(tf.maximum(label, 0), TASKS[t].num_classes)
            if t in targets:  # a soft target where the face has one (its row is not NaN), else the one-hot label
                has = tf.logical_not(tf.math.is_nan(targets[t][:, :1]))
                y[t] = tf.where(has, tf.where(tf.math.is_nan(targets[t]), 0.0, targets[t]), y[t])
            w[t] = tf.cast(label >= 0, tf.float32)
            if t in per_class:
                w[t] = w[t] * tf.gather(per_class[t], tf.maximum(label, 0))
        if mixup > 0:
            g1, g2 = tf.random.gamma([], mixup), tf.random.gamma([], mixup)
            lam = g1 / tf.maximum(g1 + g2, 1e-12)
            x, y, w = mix_batch(x, y, w, lam, tf.random.shuffle(tf.range(tf.shape(x)[0])))
        return x, y, w

    return ds.map(to_inputs, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


# --- precision, strategy, model --------------------------------------------------------------------------


def cpu_has_bf16() -> bool:
    """AMX (Intel) or AVX512-BF16 (AMD Zen 4+/Intel): oneDNN runs bfloat16 convolutions natively."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return platform.machine() == "arm64"
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(flag: str) -> str:
    import tensorflow as tf

    if flag == "auto":
        return "bfloat16" if tf.config.list_physical_devices("GPU") or cpu_has_bf16() else "float32"
    return flag


def make_strategy(name: str, devices: Sequence[str] | None = None):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=list(devices) if devices else None)
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def monitor_metric(tasks: Sequence[str], val: Split | None) -> str:
    """val emotion accuracy when the run has emotion labels; otherwise the mean validation accuracy of its tasks."""
    if "emotion" in tasks and val is not None and (val.labels[:, TASK_NAMES.index("emotion")] >= 0).any():
        return "val_emotion_accuracy"
    return "val_mean_accuracy"


def make_learning_rate(config: TrainConfig, steps_per_epoch: int | None = None):
    """The learning rate: a float for "plateau" (ReduceLROnPlateau changes it), else a Keras schedule over
    steps_per_epoch * epochs steps: linear warmup from 0 ("cosine", warmup_epochs) or from lr/25 ("onecycle", 30%
    of the steps) to learning_rate, then cosine decay to 0."""
    import keras

    if config.lr_schedule == "plateau":
        return config.learning_rate
    if not steps_per_epoch or steps_per_epoch < 1:
        raise ValueError(f"the {config.lr_schedule!r} schedule needs steps_per_epoch >= 1, got {steps_per_epoch}")
    total = steps_per_epoch * config.epochs
    if config.lr_schedule == "onecycle":
        start, warmup = config.learning_rate / 25, int(round(total * ONECYCLE_WARMUP))
    else:
        start, warmup = 0.0, int(round(config.warmup_epochs * steps_per_epoch))
    warmup = min(warmup, total - 1)
    if warmup <= 0:
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=total, alpha=0.0)
    return keras.optimizers.schedules.CosineDecay(
        start, decay_steps=total - warmup, alpha=0.0, warmup_target=config.learning_rate, warmup_steps=warmup
    )


def make_optimizer(config: TrainConfig, steps_per_epoch: int | None = None):
    """Adam (paper), AdamW when weight_decay > 0; with ema > 0 the optimizer keeps a moving average of the weights."""
    import keras

    learning_rate = make_learning_rate(config, steps_per_epoch)
    ema: dict[str, Any] = {"use_ema": True, "ema_momentum": config.ema} if config.ema > 0 else {}
    if config.weight_decay > 0:
        return keras.optimizers.AdamW(learning_rate, weight_decay=config.weight_decay, **ema)
    return keras.optimizers.Adam(learning_rate, **ema)


def current_learning_rate(optimizer) -> float:
    """The rate the optimizer applies now. Keras' `learning_rate` property evaluates a schedule at
    optimizer.iterations (the steps taken so far)."""
    return float(np.asarray(optimizer.learning_rate))


def compile_model(model, config: TrainConfig, steps_per_epoch: int | None = None) -> None:
    """steps_per_epoch: needed by the "cosine" and "onecycle" schedules."""
    import keras

    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss={t: keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing) for t in config.tasks},
        loss_weights={t: float(config.loss_weights.get(t, PAPER_LOSS_WEIGHTS[t])) for t in config.tasks},
        weighted_metrics={t: ["accuracy"] for t in config.tasks},
    )


# --- callbacks -----------------------------------------------------------------------------------------


class StopRequested:
    """Set by SIGTERM; checked after every training step."""

    def __init__(self) -> None:
        self.flag = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.flag = True


def stop_point(epoch: int, step: int, steps: int, completed_epochs: int, phase: str = "training") -> dict:
    """Where a stopped run stopped, as progress.json's ``stop``: during (1-based) `epoch` after `step` of `steps`
    steps, with `completed_epochs` complete epochs kept in the checkpoint and history.csv (a resumed run starts
    with epoch completed_epochs + 1). `phase`: "training", or "preparing" (the data sets; no step then)."""
    return {
        "phase": phase,
        "epoch": int(epoch),
        "step": int(step),
        "steps": int(steps),
        "completed_epochs": int(completed_epochs),
    }


def completed_epochs(run: str | os.PathLike) -> int:
    """Complete epochs saved in a run's checkpoint (0 without one)."""
    try:
        return int(runs.read_json(Path(run) / runs.CHECKPOINT_DIR / "state.json").get("completed_epochs", 0))
    except (runs.RunError, TypeError, ValueError):
        return 0


def _callbacks_module():
    import keras

    class RunCallback(keras.callbacks.Callback):
        """Mean validation accuracy, progress.json, history.csv, checkpoints, graceful stop, LR floor."""

        def __init__(self, run: Path, config: TrainConfig, steps: int, stop: StopRequested, state: dict):
            super().__init__()
            self.run, self.config, self.steps, self.stop = run, config, steps, stop
            self.state = state  # epoch, best, ... persisted in checkpoint/state.json
            self.early: Any = None
            self.plateau: Any = None
            self.swap: Any = None  # SwapEMAWeights with ema > 0
            self.epoch = 0
            self.epoch_start = time.time()
            self.last_write = 0.0
            self.stopped = False
            self.stop_at: dict | None = None  # where a stop took effect (stop_point)
            self.history_rows: list[dict] = state.get("history", [])
            self.started = time.time()

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            self.epoch_start = time.time()

        def on_train_batch_end(self, batch, logs=None):
            now = time.time()
            name_single_task_logs(logs or {}, self.config)
            if self.stop.flag and not self.stopped:
                # Inside an epoch: keep the last complete epoch's checkpoint and history (a resumed run continues
                # from there) and leave model.fit at once, without validating or recording this unfinished epoch.
                self.stopped = True
                self.stop_at = stop_point(self.epoch + 1, batch + 1, self.steps, self.epoch)
                runs.write_progress(self.run, state="stopping", step=batch + 1)
                raise TrainingStopped(f"stopped during epoch {self.epoch + 1} at step {batch + 1}")
            if now - self.last_write > 2.0:
                self.last_write = now
                rate = (batch + 1) / max(now - self.epoch_start, 1e-6)
                remaining = (self.steps - batch - 1) + self.steps * (self.config.epochs - self.epoch - 1)
                runs.write_progress(
                    self.run,
                    state="running",
                    epoch=self.epoch + 1,
                    epochs=self.config.epochs,
                    step=batch + 1,
                    steps=self.steps,
                    eta_s=round(remaining / rate),
                    batch_metrics={k: float(v) for k, v in (logs or {}).items()},
                )

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            name_single_task_logs(logs, self.config)
            accs = [logs[f"val_{t}_accuracy"] for t in self.config.tasks if f"val_{t}_accuracy" in logs]
            logs["val_mean_accuracy"] = float(np.mean(accs)) if accs else 0.0
            # The plateau callback runs after this one; record the rate used during this epoch (a schedule's now).
            logs["learning_rate"] = current_learning_rate(self.model.optimizer)

        def after_epoch(self, epoch, logs):
            """Called by a second instance placed after EarlyStopping / ReduceLROnPlateau."""
            row = {
                "epoch": epoch + 1,
                **{k: float(v) for k, v in logs.items()},
                "seconds": time.time() - self.epoch_start,
            }
            self.history_rows.append(row)
            write_history(self.run, self.history_rows)
            self.save_checkpoint(completed_epochs=epoch + 1)
            lr = current_learning_rate(self.model.optimizer)
            # Only the plateau rule lowers the rate step by step; a schedule ends near 0 by design.
            if self.config.lr_schedule == "plateau" and lr < self.config.min_learning_rate:
                log.info("learning rate %.2e fell below %.0e: stopping", lr, self.config.min_learning_rate)
                self.model.stop_training = True
            runs.write_progress(
                self.run,
                state="running",
                epoch=epoch + 1,
                epochs=self.config.epochs,
                step=self.steps,
                steps=self.steps,
                metrics=row,
                best=float(self.early.best) if self.early is not None else None,
                best_epoch=int(self.early.best_epoch) + 1 if self.early is not None else None,
            )
            if self.stop.flag and not self.stopped:  # asked during validation: this epoch is complete and saved
                self.stopped = True
                self.stop_at = stop_point(epoch + 1, self.steps, self.steps, epoch + 1)
                self.model.stop_training = True

        def save_checkpoint(self, completed_epochs: int) -> None:
            ckpt = self.run / runs.CHECKPOINT_DIR
            with runs.atomic_path(ckpt / "model.keras") as tmp:
                self.model.save(tmp)
            if self.early is not None and self.early.best_weights is not None:
                with runs.atomic_path(ckpt / "best.npz") as tmp, open(tmp, "wb") as f:
                    np.savez(f, *self.early.best_weights)
            state = {
                "completed_epochs": completed_epochs,
                "early": _callback_state(self.early, ("best", "wait", "best_epoch")),
                "plateau": _callback_state(self.plateau, ("best", "wait", "cooldown_counter")),
                # After an epoch SwapEMAWeights leaves the EMA weights in the model and the training weights in
                # the optimizer's average slots; a resumed run must swap them back first.
                "ema_in_model": bool(self.swap is not None and self.swap._ema_weights_in_model),  # noqa: SLF001
                "history": self.history_rows,
                "seconds": time.time() - self.started,
            }
            runs.atomic_write_json(ckpt / "state.json", state)

    class AfterEpoch(keras.callbacks.Callback):
        def __init__(self, owner):
            super().__init__()
            self.owner = owner

        def on_epoch_end(self, epoch, logs=None):
            self.owner.after_epoch(epoch, logs or {})

    return RunCallback, AfterEpoch


def name_single_task_logs(logs: dict, config: TrainConfig) -> None:
    """Keras names a single-output model's logs `accuracy`/`loss`; give them the task's name like multi-task runs."""
    if len(config.tasks) != 1:
        return
    task = config.tasks[0]
    weight = float(config.loss_weights.get(task, PAPER_LOSS_WEIGHTS[task])) or 1.0
    for prefix in ("", "val_"):
        if f"{prefix}accuracy" in logs:
            logs[f"{prefix}{task}_accuracy"] = logs.pop(f"{prefix}accuracy")
        if f"{prefix}loss" in logs and f"{prefix}{task}_loss" not in logs:
            logs[f"{prefix}{task}_loss"] = float(logs[f"{prefix}loss"]) / weight


def _callback_state(cb: Any, names: Sequence[str]) -> dict:
    if cb is None:
        return {}
    state = {}
    for n in names:
        value = getattr(cb, n, None)
        state[n] = None if value is None else float(value) if n == "best" else int(value)
    return state


def write_history(run: Path, rows: list[dict]) -> None:
    import pandas as pd

    with runs.atomic_path(run / runs.HISTORY_FILE) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def paper_callbacks(config: TrainConfig, monitor: str) -> tuple[Any, Any]:
    """EarlyStopping restoring the best epoch and ReduceLROnPlateau x0.2 after 5 epochs, both on `monitor`.
    With a learning-rate schedule ("cosine", "onecycle") there is no plateau callback (None)."""
    import keras

    early = keras.callbacks.EarlyStopping(
        monitor=monitor, mode="max", patience=config.early_stopping_patience, restore_best_weights=True
    )
    if config.lr_schedule != "plateau":
        return early, None
    plateau = keras.callbacks.ReduceLROnPlateau(
        monitor=monitor,
        mode="max",
        factor=config.plateau_factor,
        patience=config.plateau_patience,
        min_lr=0.0,
    )
    return early, plateau


# --- the trainer ---------------------------------------------------------------------------------------


def setup_logging(run: Path) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True)


def train(
    config: TrainConfig,
    run: str | os.PathLike,
    *,
    splits: dict[str, Split] | None = None,
    resume: bool = False,
    install_signal_handler: bool = True,
) -> Path:
    """Train `config` into the run folder `run`. `splits` (train/val/test arrays) bypasses the data set cache.
    Returns the run folder; its progress.json ends as finished, stopped or failed."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    if not (run / runs.CONFIG_FILE).exists():
        runs.atomic_write_json(run / runs.CONFIG_FILE, config.to_dict())
    stop = StopRequested()
    previous = None
    if install_signal_handler:
        previous = signal.signal(signal.SIGTERM, stop)
    runs.write_progress(
        run,
        state="running",
        phase="starting",
        stop=None,
        pid=os.getpid(),
        started=runs.now_iso(),
        epoch=0,
        epochs=config.epochs,
    )
    try:
        _train(config, run, splits, resume, stop)
    except BaseException as exc:
        runs.write_progress(run, state="failed", error=f"{type(exc).__name__}: {exc}"[:500])
        raise
    finally:
        if install_signal_handler:
            signal.signal(signal.SIGTERM, previous)
    return run


def _train(config: TrainConfig, run: Path, splits: dict[str, Split] | None, resume: bool, stop: StopRequested) -> None:
    import keras

    from mtfer import loss_weights  # registers the learned-weights model that checkpoints may hold
    from mtfer.faces import PreprocessConfig
    from mtfer.model import build_model
    from mtfer.tasks import EMOTION

    started = time.time()
    if splits is None:
        names = [d["format"] for d in config.datasets]
        log.info("loading data sets %s", names)
        try:
            prepared = load_prepared(config, PreparationProgress(run, names, stop))
        except TrainingStopped:
            _mark_stopped(run, stop_point(0, 0, 0, completed_epochs(run) if resume else 0, phase="preparing"))
            return
        splits = make_splits(prepared, config.protocol, config.val_fraction, config.seed)
    if "train" not in splits:
        raise ValueError("the chosen data sets have no training samples")
    splits, pseudo_record = with_pseudo_labels(config, splits, run)
    train_split, val_split = splits["train"], splits.get("val")
    log.info("samples: %s", {k: len(v) for k, v in splits.items()})

    precision = resolve_precision(config.precision)
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(config.strategy, config.devices)
    batch = config.batch_size * strategy.num_replicas_in_sync
    log.info("strategy %s with %d replica(s)", type(strategy).__name__, strategy.num_replicas_in_sync)

    class_weights = {}
    if "emotion" in config.tasks:
        emotion = class_weights_for(
            train_split.labels[:, TASK_NAMES.index("emotion")], config.class_weighting, len(EMOTION.classes)
        )
        if emotion is not None:
            class_weights["emotion"] = emotion
            log.info(
                "emotion class weights: %s", dict(zip(EMOTION.classes, np.round(emotion, 3).tolist(), strict=True))
            )
    train_ds = make_dataset(
        train_split,
        config.tasks,
        batch,
        training=True,
        augment=config.augment,
        seed=config.seed,
        class_weights=class_weights,
        mixup=config.mixup,
    )
    val_ds = None
    if val_split is not None:
        val_ds = make_dataset(val_split, config.tasks, batch, training=False, augment=False, seed=config.seed)
    steps = int(np.ceil(len(train_split) / batch))
    if config.steps_per_epoch:
        steps = min(steps, config.steps_per_epoch)
        train_ds = train_ds.repeat()

    ckpt = run / runs.CHECKPOINT_DIR
    state: dict = {}
    with strategy.scope():
        if resume and (ckpt / "model.keras").exists():
            state = runs.read_json(ckpt / "state.json")
            model = keras.saving.load_model(ckpt / "model.keras", safe_mode=True)
            log.info("resuming after epoch %d", state["completed_epochs"])
            write_history(run, state.get("history", []))  # complete epochs only, as the checkpoint has them
        else:
            if resume:  # stopped before the first epoch was complete: nothing to continue, start again
                log.info("run %s has no complete epoch to resume from: starting again from epoch 1", run.name)
                write_history(run, [])
            model = loss_weights.for_config(build_model(config.architecture, config.tasks, config.image_size), config)
            if config.init_from:
                init = runs.load_bundle(runs.resolve_model(config.init_from))
                _copy_matching_weights(init.model, model)
            compile_model(model, config, steps)

    monitor = monitor_metric(config.tasks, val_split)
    early, plateau = paper_callbacks(config, monitor)
    # EMA: validate on the moving average, and at each epoch's end leave it in the model (swap_on_epoch) so that
    # EarlyStopping keeps and restores the best epoch's EMA weights, which are the ones saved.
    swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True) if config.ema > 0 else None
    RunCallback, AfterEpoch = _callbacks_module()
    run_cb = RunCallback(run, config, steps, stop, state)
    run_cb.early, run_cb.plateau, run_cb.swap = early, plateau, swap
    run_cb.started = started - float(state.get("seconds", 0.0))  # include data loading; survive stop and resume
    if state:
        for cb, key in ((early, "early"), (plateau, "plateau")):
            for name, value in state.get(key, {}).items():
                if value is not None and cb is not None:
                    setattr(cb, name, value)
        if swap is not None:
            swap._ema_weights_in_model = bool(state.get("ema_in_model", False))  # noqa: SLF001
        if (ckpt / "best.npz").exists():
            with np.load(ckpt / "best.npz") as best:
                early.best_weights = [best[f"arr_{i}"] for i in range(len(best.files))]
    initial_epoch = int(state.get("completed_epochs", 0))

    log.info(
        "training %s on %d faces, %s precision, monitor %s",
        config.architecture,
        len(train_split),
        precision,
        monitor,
    )
    # What a time estimate needs (mtfer.planning reads it back): faces per epoch and the precision really used.
    runs.write_progress(
        run,
        state="running",
        phase="training",
        precision=precision,
        train_faces=len(train_split),
        epoch_faces=min(len(train_split), steps * batch),
        epoch=initial_epoch + 1,
        steps=steps,
        step=0,
        eta_s=None,  # the preparation's, until the first steps give the training's
    )
    if initial_epoch < config.epochs and not stop.flag:
        with contextlib.suppress(TrainingStopped):  # a stop inside an epoch: run_cb.stop_at says where
            model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=config.epochs,
                initial_epoch=initial_epoch,
                steps_per_epoch=steps if config.steps_per_epoch else None,
                callbacks=[cb for cb in (swap, run_cb, early, plateau, AfterEpoch(run_cb)) if cb is not None],
                shuffle=False,  # the tf.data pipeline shuffles; Keras' default True only warns about it
                verbose=2,
            )
    if stop.flag:
        # No stop_at: the stop came after model.fit had returned (its last epoch done, or early stopping), with
        # every epoch so far complete and checkpointed.
        done = len(run_cb.history_rows)
        after = stop_point(done, steps, steps, done) if done else stop_point(initial_epoch + 1, 0, steps, initial_epoch)
        _mark_stopped(run, run_cb.stop_at or after)
        return

    metadata = bundle_metadata(config, precision, splits, time.time() - run_cb.started, class_weights)
    metadata["replicas"] = int(strategy.num_replicas_in_sync)
    metadata["preprocessing"] = PreprocessConfig.named(config.preprocessing, size=config.image_size).to_dict()
    if pseudo_record is not None:
        metadata["pseudo_labels"] = pseudo_record
    model = loss_weights.inference_model(model, metadata)  # learned weights into the metadata, not the bundle
    runs.write_progress(run, state="running", phase="evaluating")
    temperatures = calibrate_at_end(model, config, splits, metadata)
    metadata["metrics"] = evaluate_splits(model, config, splits, run, temperatures)
    runs.save_bundle(model, metadata, run)
    choose_abstain_thresholds(run)
    runs.write_progress(run, state="finished", finished=runs.now_iso(), metrics=metadata["metrics"])
    log.info("finished: %s", json.dumps(metadata["metrics"]))


def choose_abstain_thresholds(run: Path) -> None:
    """The "not sure" thresholds (mtfer.abstain), chosen on the run's own calibrated validation evaluations and
    stored in its metadata. Never fails a run: without them the app uses each task's default threshold."""
    from mtfer import abstain

    try:
        chosen = abstain.thresholds_for_bundle(run, evaluations=sorted((run / runs.EVALUATION_DIR).glob("*-val")))
    except Exception:  # noqa: BLE001 - a bonus, like calibration: the trained model is already saved
        log.exception("choosing the 'not sure' thresholds failed: the app will use the defaults")
        return
    log.info("'not sure' thresholds: %s", {t: round(v.min_confidence, 3) for t, v in chosen.items()})


def _mark_stopped(run: Path, at: dict) -> None:
    """progress.json says the run stopped and where (stop_point); history.csv holds the complete epochs only."""
    runs.write_progress(run, state="stopped", stopped=runs.now_iso(), stop=at)
    if at["phase"] == "preparing":
        where = "while preparing the data sets"
    elif at["completed_epochs"] >= at["epoch"]:
        where = f"after epoch {at['epoch']}"
    else:
        where = f"during epoch {at['epoch']} at step {at['step']} of {at['steps']}"
    log.info(
        "stopped %s with %d complete epoch(s); resume with: mtfer train --resume %s", where, at["completed_epochs"], run
    )


def _copy_matching_weights(source, target) -> None:
    """Sequential training: copy every layer whose name and weight shapes match (trunk and shared heads)."""
    copied = 0
    by_name = {layer.name: layer for layer in source.layers}
    for layer in target.layers:
        other = by_name.get(layer.name)
        if other is None or not layer.weights:
            continue
        weights = other.get_weights()
        if [w.shape for w in weights] == [w.shape for w in layer.get_weights()]:
            layer.set_weights(weights)
            copied += 1
    if not copied:
        raise ValueError("the starting model shares no layers with this architecture")


def bundle_metadata(
    config: TrainConfig,
    precision: str,
    splits: dict[str, Split],
    seconds: float,
    class_weights: Mapping[str, np.ndarray] | None = None,
) -> dict:
    """input.tta_flip tells the Predictor and `mtfer evaluate` to average each face with its mirror image.
    lineage: the runs this one continued (init_from), oldest first, each with its epochs, time and history."""
    from mtfer.lineage import parent_lineage
    from mtfer.tasks import TASKS

    return {
        "format_version": runs.BUNDLE_FORMAT_VERSION,
        "tasks": {t: list(TASKS[t].classes) for t in config.tasks},
        "input": {
            "size": config.image_size,
            "channels": 1,
            "scale": [0.0, 1.0],
            "dtype": "float32",
            "tta_flip": bool(config.tta_flip),
        },
        "architecture": config.architecture,
        "datasets": config.datasets,
        "protocol": config.protocol,
        "optimistic": config.protocol == "paper",
        "precision": precision,
        "class_weights": {
            t: dict(zip(TASKS[t].classes, map(float, w), strict=True)) for t, w in (class_weights or {}).items()
        },
        "samples": {k: len(v) for k, v in splits.items()},
        "train_seconds": round(seconds, 1),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
        "created": runs.now_iso(),
        "config": config.to_dict(),
        "lineage": parent_lineage(config.init_from),
    }


def calibrate_at_end(model, config: TrainConfig, splits: dict[str, Split], metadata: dict) -> dict[str, float]:
    """Temperature scaling per head, fitted on the validation split (mtfer.calibration.fit_calibration on the
    probabilities the Predictor will compute, mirror-averaged when config.tta_flip) and stored as
    metadata["calibration"]; returns the temperatures ({} without validation faces). Never fails a run: on any
    error the model is saved uncalibrated, as before calibration existed, and the log says why."""
    val = splits.get("val")
    if val is None or not len(val):
        return {}
    try:
        from mtfer.calibration import fit_calibration
        from mtfer.inference import predict_arrays

        section = fit_calibration(predict_arrays(model, val.images, flip=config.tta_flip), val.labels)
        section["created"] = runs.now_iso()
    except Exception:  # noqa: BLE001 - calibration is a bonus; the trained model must still be saved
        log.exception("calibration failed: the model is saved uncalibrated (run `mtfer calibrate` on it later)")
        return {}
    metadata["calibration"] = section
    log.info("calibrated on %d validation faces: temperature %s, ECE %s -> %s", len(val), section["temperature"],
             section["ece_before"], section["ece_after"])  # fmt: skip
    return dict(section["temperature"])


def evaluate_splits(
    model, config: TrainConfig, splits: dict[str, Split], run: Path, temperatures: Mapping[str, float] | None = None
) -> dict:
    """Evaluate val and test per data set; saves evaluation/<set>-<split>/ and returns a summary for metadata.
    temperatures: the calibration (:func:`calibrate_at_end`), applied as the Predictor applies it."""
    from mtfer.evaluation import evaluate_calibrated, save_evaluation
    from mtfer.inference import predict_arrays

    summary: dict = {}
    for split_name in ("val", "test"):
        split = splits.get(split_name)
        if split is None:
            continue
        for ds_name in sorted(set(split.datasets)):
            part = split.subset(np.flatnonzero(split.datasets == ds_name))
            probs = predict_arrays(model, part.images, flip=config.tta_flip)
            ev = evaluate_calibrated(probs, part.labels, part.sources, [split_name] * len(part), temperatures)
            key = f"{ds_name}-{split_name}"
            save_evaluation(ev, run / runs.EVALUATION_DIR / key)
            summary[key] = {
                t: {"accuracy": m["accuracy"], "n": m["n"], "loss": m["loss"], "macro_f1": m["macro_f1"],
                    "ece": m.get("ece")}
                for t, m in ev.metrics["tasks"].items()
                if m["n"]
            }  # fmt: skip
    return summary


def finish(run: str | os.PathLike) -> Path:
    """Turn a stopped run into a finished one without training further: the weights of its best validation epoch
    (as early stopping would restore them) are evaluated on the validation and test splits and saved as the run's
    bundle. For a run whose schedule cannot end in the time at hand (`mtfer train --finish RUN`); the metadata
    says how many of the planned epochs were trained (``finished_early``)."""
    import keras

    from mtfer import loss_weights  # registers the learned-weights model that checkpoints may hold
    from mtfer.faces import PreprocessConfig
    from mtfer.model import build_model
    from mtfer.tasks import EMOTION

    run = Path(run)
    ckpt = run / runs.CHECKPOINT_DIR
    if not (ckpt / "model.keras").exists() or not (ckpt / "state.json").exists():
        raise runs.RunError(f"run {run.name} has no checkpoint to finish from")
    config = TrainConfig.from_dict(runs.read_json(run / runs.CONFIG_FILE))
    state = runs.read_json(ckpt / "state.json")
    precision = resolve_precision(config.precision)
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    trained = keras.saving.load_model(ckpt / "model.keras", safe_mode=True, compile=False)
    model = loss_weights.for_config(build_model(config.architecture, config.tasks, config.image_size), config)
    model.set_weights(trained.get_weights())
    best_epoch = None
    if (ckpt / "best.npz").exists():
        with np.load(ckpt / "best.npz") as best:
            model.set_weights([best[f"arr_{i}"] for i in range(len(best.files))])
        best_epoch = (state.get("early") or {}).get("best_epoch")
    splits = make_splits(load_prepared(config), config.protocol, config.val_fraction, config.seed)
    splits, pseudo_record = with_pseudo_labels(config, splits, run)  # the ones the run trained with
    class_weights = {}
    if "emotion" in config.tasks:
        emotion = class_weights_for(
            splits["train"].labels[:, TASK_NAMES.index("emotion")], config.class_weighting, len(EMOTION.classes)
        )
        if emotion is not None:
            class_weights["emotion"] = emotion
    metadata = bundle_metadata(config, precision, splits, float(state.get("seconds", 0.0)), class_weights)
    metadata["preprocessing"] = PreprocessConfig.named(config.preprocessing, size=config.image_size).to_dict()
    if pseudo_record is not None:
        metadata["pseudo_labels"] = pseudo_record
    model = loss_weights.inference_model(model, metadata)  # learned weights into the metadata, not the bundle
    metadata["finished_early"] = {
        "completed_epochs": int(state.get("completed_epochs", 0)),
        "planned_epochs": config.epochs,
        "best_epoch": None if best_epoch is None else int(best_epoch) + 1,
    }
    runs.write_progress(run, state="running", phase="evaluating")
    temperatures = calibrate_at_end(model, config, splits, metadata)
    metadata["metrics"] = evaluate_splits(model, config, splits, run, temperatures)
    runs.save_bundle(model, metadata, run)
    choose_abstain_thresholds(run)
    runs.write_progress(run, state="finished", finished=runs.now_iso(), metrics=metadata["metrics"])
    log.info("finished early after %d epochs: %s", metadata["finished_early"]["completed_epochs"], metadata["metrics"])
    return run
