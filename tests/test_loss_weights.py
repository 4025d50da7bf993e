"""Learned loss weights (homoscedastic uncertainty weighting, mtfer.train.loss_weights): the loss, the masks, training."""

from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np
import pandas as pd
import pytest
from helpers import random_split

from mtfer.core import backends, bundles
from mtfer.core.model import build_model
from mtfer.core.tasks import TASK_NAMES
from mtfer.datasets.splits import Split
from mtfer.store import runs
from mtfer.train.config import TrainConfig
from mtfer.train.loss_weights import (
    METADATA_KEY,
    LearnedLossWeightsModel,
    inference_model,
    learned_weights,
    uncertainty_total,
    with_learned_weights,
)
from mtfer.train.pipeline import make_dataset
from mtfer.train.trainer import compile_model, train


def _learned_model(tasks=TASK_NAMES, size: int = 50) -> LearnedLossWeightsModel:
    model = with_learned_weights(build_model("fast", tasks, size))
    compile_model(model, TrainConfig(architecture="fast", tasks=list(tasks), loss_weights_mode="learned"))
    return model


def _batch(split: Split, tasks=TASK_NAMES):
    return next(iter(make_dataset(split, tasks, len(split), training=False, augment=False, seed=0)))


def test_uncertainty_total_is_kendalls_sum_over_tasks_with_labels():
    losses, s = np.array([0.5, 2.0, 1.0]), np.array([0.0, 0.7, -0.3])
    expected = np.exp(-s) * losses + s
    assert float(uncertainty_total(losses, [True, True, True], s)) == pytest.approx(expected.sum(), rel=1e-6)
    assert float(uncertainty_total(losses, [True, False, True], s)) == pytest.approx(expected[[0, 2]].sum(), rel=1e-6)
    assert float(uncertainty_total(losses, [False, False, False], s)) == 0.0


def test_masked_samples_add_nothing_to_the_learned_loss():
    """Each task's loss is the mean over its labelled samples: changing the faces or targets of samples without a
    task's label does not change that task's loss, nor the total when those samples have no label at all."""
    model = _learned_model()
    split = random_split(16)
    split.labels[[3, 12]] = -1  # two samples without any label
    x, y, w = _batch(split)
    y_pred = model(x, training=False)
    losses, present = model.task_losses(y, y_pred, w)
    base_total = float(model.compute_loss(x, y, y_pred, w, training=False))
    # By hand: the masked mean of the cross-entropy of each task over its labelled samples.
    for i, task in enumerate(model.task_names):
        labelled = split.labels[:, TASK_NAMES.index(task)] >= 0
        ce = -np.log(np.clip(y_pred[task].numpy()[labelled, split.labels[labelled, TASK_NAMES.index(task)]], 1e-7, 1))
        assert float(losses[i]) == pytest.approx(ce.mean(), rel=1e-4), task
    assert bool(np.all(present))

    rng = np.random.default_rng(5)
    changed = split.images.copy()
    emotion_only = (split.labels[:, 0] >= 0) & (split.labels[:, 1:] < 0).all(axis=1)
    unlabelled = (split.labels < 0).all(axis=1)
    changed[emotion_only | unlabelled] = rng.integers(0, 256, changed[emotion_only | unlabelled].shape, np.uint8)
    x2, y2, w2 = _batch(Split(changed, split.labels, split.sources, split.datasets))
    y_pred2 = model(x2, training=False)
    losses2, _ = model.task_losses(y2, y_pred2, w2)
    for i, task in enumerate(model.task_names):
        if task == "emotion":
            assert abs(float(losses2[i]) - float(losses[i])) > 1e-6  # its labelled faces changed
        else:  # gender, race, age: only faces without their label changed
            assert float(losses2[i]) == pytest.approx(float(losses[i]), rel=1e-6), task

    # Faces without any label: new faces and new (ignored) targets leave the total loss as it was.
    only_unlabelled = split.images.copy()
    only_unlabelled[unlabelled] = 255 - only_unlabelled[unlabelled]
    x3, y3, w3 = _batch(Split(only_unlabelled, split.labels, split.sources, split.datasets))
    y3 = {t: v.numpy() for t, v in y3.items()}
    y3["emotion"][unlabelled] = np.eye(7)[[1, 4]]
    assert float(model.compute_loss(x3, y3, model(x3, training=False), w3, training=False)) == pytest.approx(
        base_total, rel=1e-6
    )

    # A batch without any label adds no loss and no gradient, to the network or to the log-variances.
    import tensorflow as tf

    empty = random_split(8)
    empty.labels[:] = -1
    xe, ye, we = _batch(empty)
    with tf.GradientTape() as tape:
        loss = model.compute_loss(xe, ye, model(xe, training=True), we, training=True)
    grads = tape.gradient(loss, model.trainable_variables)
    assert float(loss) == 0.0
    assert all(g is None or float(tf.reduce_max(tf.abs(g))) == 0.0 for g in grads)


def _band_faces(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Faces whose class (0-2) is a bright horizontal band in one of three places, over faint noise."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 3, n)
    images = rng.integers(0, 40, (n, size, size), dtype=np.uint8)
    band = size // 3
    for i, c in enumerate(classes):
        images[i, c * band : (c + 1) * band] = 220
    return images, classes


def _two_task_split(n: int, seed: int, size: int = 16) -> Split:
    """race: the band's class (clean); gender: the same class with half of the labels replaced at random."""
    images, classes = _band_faces(n, size, seed)
    rng = np.random.default_rng(seed + 100)
    noisy = classes.copy()
    replaced = rng.random(n) < 0.5
    noisy[replaced] = rng.integers(0, 3, replaced.sum())
    labels = np.full((n, 4), -1, np.int64)
    labels[:, TASK_NAMES.index("race")] = classes
    labels[:, TASK_NAMES.index("gender")] = noisy
    return Split(images, labels, np.array([f"f{i}.png" for i in range(n)]), np.array(["synthetic"] * n))


def test_learned_weights_move_favour_the_clean_task_and_leave_a_plain_bundle(tmp_path):
    from mtfer.core.backends import predict_arrays
    from mtfer.core.inference import Predictor

    splits = {"train": _two_task_split(256, 0), "val": _two_task_split(64, 1), "test": _two_task_split(64, 2)}
    config = TrainConfig(
        architecture="fast",
        tasks=["gender", "race"],
        image_size=16,
        epochs=6,
        batch_size=32,
        learning_rate=1e-2,
        augment=False,
        loss_weights_mode="learned",
    )
    run = train(config, tmp_path / "run", splits=splits, install_signal_handler=False)

    history = pd.read_csv(run / bundles.HISTORY_FILE)
    weights = history[["weight_gender", "weight_race"]].to_numpy()
    assert np.all(np.isfinite(weights)) and "val_weight_race" not in history
    assert np.abs(weights[0] - 1.0).max() > 0.02  # they moved from 1 in the first epoch already
    assert np.abs(weights[-1] - weights[0]).max() > 0.05  # and kept moving
    assert weights[-1, 1] > weights[-1, 0]  # noisy gender labels: the smaller weight
    assert history["race_accuracy"].iloc[-1] > 0.8  # the clean task was learned

    meta = bundles.load_bundle(run).metadata
    learned = meta[METADATA_KEY]
    assert set(learned) == {"gender", "race"} and learned["race"] > learned["gender"]
    assert json.loads((run / bundles.CONFIG_FILE).read_text())["loss_weights_mode"] == "learned"

    # The checkpoint keeps the log-variances (Keras safe mode loads it); the bundle is the plain network, and the
    # Predictor gives the probabilities of the best epoch's training model.
    checkpoint = keras.saving.load_model(run / runs.CHECKPOINT_DIR / "model.keras", safe_mode=True)
    assert isinstance(checkpoint, LearnedLossWeightsModel)
    with np.load(run / runs.CHECKPOINT_DIR / "best.npz") as best:
        checkpoint.set_weights([best[f"arr_{i}"] for i in range(len(best.files))])
    assert learned_weights(checkpoint) == pytest.approx(learned, rel=1e-6)
    bundle = bundles.load_bundle(run)
    assert not isinstance(bundle.model, LearnedLossWeightsModel)
    assert len(bundle.model.get_weights()) == len(checkpoint.get_weights()) - 1
    faces = splits["test"].images
    # the bundle's calibration (fitted at the end of training) applied as the Predictor applies it
    expected = backends.calibrated(predict_arrays(checkpoint, faces), backends.temperatures(meta))
    got = Predictor(run).predict_faces(faces)
    for task in ("gender", "race"):
        np.testing.assert_allclose(got[task], expected[task], atol=1e-6)

    # A resumed run goes on from the checkpoint's log-variances (compiled as saved), not from weight 1.
    train(dataclasses.replace(config, epochs=7), run, splits=splits, resume=True, install_signal_handler=False)
    resumed = pd.read_csv(run / bundles.HISTORY_FILE)[["weight_gender", "weight_race"]].to_numpy()
    assert len(resumed) == 7 and np.allclose(resumed[:6], weights)
    assert np.abs(np.log(resumed[6]) - np.log(resumed[5])).max() < 0.2 and resumed[6, 1] > resumed[6, 0]


def test_inference_model_strips_the_log_variances_and_records_the_weights():
    model = _learned_model(["emotion", "age"], size=16)
    model.log_variances.assign([0.5, -1.0])
    metadata: dict = {}
    plain = inference_model(model, metadata)
    assert metadata[METADATA_KEY] == pytest.approx({"emotion": np.exp(-0.5), "age": np.exp(1.0)}, rel=1e-6)
    assert type(plain) is not LearnedLossWeightsModel and len(plain.get_weights()) == len(model.get_weights()) - 1
    images = random_split(4, size=16).images[..., None] / 255.0
    for task in ("emotion", "age"):
        np.testing.assert_allclose(plain(images)[task], model(images)[task], atol=1e-6)
    other = build_model("fast", ["emotion"], 16)
    assert inference_model(other, metadata) is other and learned_weights(other) is None


def test_learned_mode_settings_and_command_line():
    from mtfer.cli import build_parser
    from mtfer.cli.train_cmds import train_config_from_args

    def config(*argv):
        return train_config_from_args(build_parser().parse_args(["train", *argv]))

    assert TrainConfig().loss_weights_mode == "fixed"
    learned = config("--loss-weights", "learned")
    assert learned.loss_weights_mode == "learned" and learned.loss_weights == TrainConfig().loss_weights
    fixed = config("--loss-weights", "emotion=3")
    assert fixed.loss_weights_mode == "fixed" and fixed.loss_weights["emotion"] == 3.0
    assert TrainConfig.from_dict(learned.to_dict()) == learned
    with pytest.raises(ValueError, match="loss_weights_mode"):
        TrainConfig(loss_weights_mode="dynamic")
    with pytest.raises(ValueError, match="at least two tasks"):
        TrainConfig(tasks=["emotion"], loss_weights_mode="learned")
    with pytest.raises(ValueError, match="two task heads"):
        with_learned_weights(build_model("fast", ["emotion"], 16))
