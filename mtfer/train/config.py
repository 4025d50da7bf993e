"""Training settings: TrainConfig (everything needed to rerun a run; the defaults are the paper's) and the one
preset table that the Train page and `mtfer train --preset` share."""

from __future__ import annotations

import dataclasses
import logging
import platform
from dataclasses import dataclass, field
from typing import Any

from mtfer.core.model import ARCHITECTURES
from mtfer.core.tasks import PAPER_LOSS_WEIGHTS, TASK_NAMES
from mtfer.datasets.base import DatasetSpec
from mtfer.datasets.splits import DEFAULT_PROTOCOL, DEFAULT_SEED, DEFAULT_VAL_FRACTION

log = logging.getLogger("mtfer.train")  # one logger for training, whichever module speaks

PROTOCOLS = ("holdout", "paper")
PRECISIONS = ("auto", "bfloat16", "float32")
STRATEGIES = ("default", "mirrored", "multiworker")
LR_SCHEDULES = ("plateau", "cosine", "onecycle")
CLASS_WEIGHTINGS = ("none", "balanced", "sqrt")
AUGMENTATIONS = ("none", "light", "strong")
LOSS_WEIGHTS_MODES = ("fixed", "learned")  # "learned": uncertainty weighting (mtfer.train.loss_weights)
PSEUDO_TARGETS = ("hard", "soft")  # pseudo-labels as the teacher's top class, or its probabilities
ONECYCLE_WARMUP = 0.3  # fraction of all steps spent warming up in the "onecycle" schedule
PAPER_EARLY_STOPPING_PATIENCE = 11  # not given in the paper; long enough for two learning-rate drops
REMOVED_SETTINGS = ("blur_sigma", "blur_threshold")  # old runs' configs may still carry these


@dataclass
class TrainConfig:
    """Everything needed to rerun a training run; defaults are the paper's (its training section)."""

    datasets: list[DatasetSpec] = field(default_factory=list)  # [{"format": "fer2013", "root": "..."}]
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
    protocol: str = DEFAULT_PROTOCOL
    val_fraction: float = DEFAULT_VAL_FRACTION
    seed: int = DEFAULT_SEED
    # The seed that carves the validation faces, when it must differ from `seed` (None: `seed`): runs that differ
    # in `seed` only (weights, order, augmentation) but share this one hold out the same faces, so they can be
    # compared and averaged into an ensemble (mtfer.train.ensemble) honestly.
    split_seed: int | None = None
    augment: bool | str = True  # True/"light": flips, shifts, turns, zooms; "strong": plus photometric; False/"none"
    precision: str = "auto"
    strategy: str = "default"
    devices: list[str] | None = None  # for MirroredStrategy, e.g. ["/cpu:0", "/cpu:1"]
    init_from: str | None = None  # run id or bundle to start from (sequential training, paper Table 1)
    limit: int | None = None  # cap on samples per data set (quick runs)
    steps_per_epoch: int | None = None  # cap on steps per epoch (quick runs, tests)
    image_size: int = 50
    # Face detector that frames the training crops, saved with the model and used on photos: "blazeface" (default)
    # or "haar" (the paper's preprocessing; mtfer.core.faces.PreprocessConfig.named).
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
    # "fixed": loss_weights as given; "learned": one trainable log-variance per task (mtfer.train.loss_weights)
    loss_weights_mode: str = "fixed"
    # Pseudo-labels filling the TRAINING split's missing labels: "auto" or folders (mtfer.train.pseudo); None: none
    pseudo_labels: list[str] | None = None
    # "hard": a pseudo-labelled face's target is the teacher's top class; "soft": the teacher's probabilities (the
    # same faces either way: those above the confidence threshold)
    pseudo_targets: str = "hard"
    # > 0: knowledge distillation. On faces WITH a true label, the target is (1 - distill) * that label + distill *
    # the teacher's probabilities (from the soft pseudo-label sets, which store them for every task the teacher
    # predicts): a strong teacher (an ensemble) passes on which classes a face resembles, not only its label.
    distill: float = 0.0
    name: str = ""
    run_id: str | None = None

    def __post_init__(self) -> None:

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
        if not 0 <= self.distill <= 1:
            raise ValueError(f"distill must be between 0 and 1, got {self.distill}")
        if self.distill > 0 and (not self.pseudo_labels or self.pseudo_targets != "soft"):
            raise ValueError("distill needs the teacher's probabilities: pseudo_labels with pseudo_targets 'soft'")
        for d in self.datasets:
            if not isinstance(d, dict) or "format" not in d or "root" not in d:
                raise ValueError(f"each data set needs a 'format' and a 'root', got {d!r}")

    @property
    def carving_seed(self) -> int:
        """The seed the validation faces are carved with."""
        return self.seed if self.split_seed is None else self.split_seed

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
        return PRESETS[preset].config(**overrides)


@dataclass(frozen=True)
class Preset:
    """A named set of training settings: what the Train page offers and `mtfer train --preset NAME` uses."""

    label: str
    description: str
    settings: dict[str, Any]

    def config(self, **overrides: Any) -> TrainConfig:
        return TrainConfig(**{**self.settings, **overrides})


# "paper": the paper's settings (the defaults). "recipe": the shipped recipe, a faster network with a modern
# training recipe; its early stopping never triggers, so the cosine schedule runs to its end (best epoch restored).
_PAPER: dict[str, Any] = {
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
}
_RECIPE: dict[str, Any] = {
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
}

# The one preset table, in the Train page's order. "recipe" runs 30 epochs, as the shipped model was trained.
PRESETS: dict[str, Preset] = {
    # A network trained from scratch for 3 epochs on 8,000 faces answers at chance (emotion 26-35%): the demo
    # starts from the shipped model's weights (recorded in the lineage) at a tenth of the recipe's learning rate,
    # so it shows the whole flow in minutes with a model that still answers sensibly.
    "demo": Preset(
        "Quick demo (minutes)",
        "Starts from the shipped model and trains it further for 3 short epochs on about 4,000 faces per data set: "
        "the whole flow in minutes. The result answers about as well as the shipped model (it cannot learn much "
        "more in minutes); to build a better model, train a full run.",
        {**_RECIPE, "epochs": 3, "limit": 4000, "init_from": "default", "learning_rate": 2e-4, "warmup_epochs": 0.2},
    ),
    "recipe": Preset(
        "Recipe",
        "The settings of the shipped model: the fast network with a modern recipe (cosine learning-rate schedule, "
        "weight decay, label smoothing, strong augmentation, mirrored test faces), 30 epochs on every face.",
        {**_RECIPE, "epochs": 30},
    ),
    "paper": Preset(
        "Paper",
        "The paper's settings: its network, Haar face detection, Adam at 3e-4, batch 32, up to 100 epochs with "
        "early stopping. Hours on a CPU.",
        {**_PAPER, "epochs": 100},
    ),
}
DEFAULT_PRESET = "paper"  # the Train page and `mtfer train` start from the paper's settings


def augmentation_level(augment: bool | str) -> str:
    """TrainConfig.augment as one of AUGMENTATIONS: True is "light" (the original pipeline), False "none"."""
    if augment is True:
        return "light"
    if augment is False:
        return "none"
    if isinstance(augment, str) and augment in AUGMENTATIONS:
        return augment
    raise ValueError(f"unknown augment {augment!r}; expected true, false or one of {list(AUGMENTATIONS)}")


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
