"""The training data pipeline: prepared data sets (with pseudo-labels where asked), class weights, augmentation,
mixup, and the tf.data datasets with per-task label masks."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtfer.core.preprocess import PreprocessConfig
from mtfer.core.tasks import TASK_NAMES, TASKS
from mtfer.datasets.cache import prepare
from mtfer.datasets.splits import Split
from mtfer.train.config import AUGMENTATIONS, CLASS_WEIGHTINGS, TrainConfig, augmentation_level
from mtfer.train.pseudo import apply_pseudo_labels


def with_pseudo_labels(
    config: TrainConfig, splits: dict[str, Split], run: Path
) -> tuple[dict[str, Split], list[dict] | None]:
    """The splits with config.pseudo_labels filling the TRAINING split's missing labels (val and test keep their
    true labels; mtfer.train.pseudo.apply_pseudo_labels, recorded in the run's pseudo_labels.json), and that record;
    (splits, None) for a run without pseudo-labels."""
    if not config.pseudo_labels:
        return splits, None

    return apply_pseudo_labels(
        splits,
        config.pseudo_labels,
        run,
        datasets=config.datasets,
        tasks=config.tasks,
        soft=config.pseudo_targets == "soft",
        distill=config.distill,
    )


def load_prepared(config: TrainConfig, progress: Callable[[int, int, int], None] | None = None) -> list[Any]:
    """The prepared (cached) data sets of `config`. `progress(index, done, total)`: the cache's progress of data
    set number `index` (0-based), with `done` of `total` faces framed (called only while a data set is framed,
    after a first call with 0 of 0 when its turn comes)."""

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
