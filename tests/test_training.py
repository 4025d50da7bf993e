"""The shared trainer: masked loss, the paper's callbacks, protocols, runs, SIGTERM and resume, strategies."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from helpers import random_split, tiny_run, write_fer_tree, write_utkface_tree

from mtfer.core import bundles
from mtfer.core.model import build_model, count_flops
from mtfer.core.tasks import PAPER_LOSS_WEIGHTS, TASK_NAMES
from mtfer.datasets.splits import Split, make_splits
from mtfer.store import jobs, runs
from mtfer.train.callbacks import paper_callbacks
from mtfer.train.config import PRESETS, TrainConfig
from mtfer.train.pipeline import class_weights_for, make_augmenter, make_dataset, mix_batch
from mtfer.train.trainer import compile_model, monitor_metric, train

REPO = Path(__file__).resolve().parents[1]


def test_paper_network_matches_the_published_architecture():
    model = build_model("paper", TASK_NAMES)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size) for c in convs] == [(64, (5, 5))] * 2 + [(128, (3, 3))] * 2 + [(256, (3, 3))] * 2
    assert all(c.activation.__name__ == "elu" for c in convs)
    dropouts = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert dropouts == [0.6, 0.5, 0.4, 0.4]
    assert model.get_layer("dense").units == 128
    # The paper's heads, but for race's fourth class, "other" (its three groups, then everyone else).
    assert {k: v.shape[-1] for k, v in model.output.items()} == {"emotion": 7, "gender": 3, "race": 4, "age": 5}
    assert model.input.shape[1:] == (50, 50, 1)
    single = build_model("paper", ["emotion"])
    assert list(single.output) == ["emotion"]


def test_fast_architecture_costs_far_fewer_flops():
    paper, fast = count_flops(build_model("paper")), count_flops(build_model("fast"))
    assert 0.9e9 < paper < 1.2e9  # ~1 GFLOP per face: the paper's network at 50x50
    assert fast < paper / 3


def test_config_defaults_are_the_papers_and_bad_settings_are_refused():
    c = TrainConfig()
    assert (c.learning_rate, c.batch_size, c.epochs) == (3e-4, 32, 100)
    assert c.loss_weights == {"emotion": 2.0, "gender": 0.1, "race": 1.5, "age": 4.0}
    assert (c.plateau_factor, c.plateau_patience, c.min_learning_rate) == (0.2, 5, 1e-6)
    assert TrainConfig.from_dict(c.to_dict()) == c
    for bad in ({"tasks": ["smile"]}, {"protocol": "cheat"}, {"learning_rate": 0}, {"architecture": "vgg99"}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    with pytest.raises(ValueError, match="unknown training settings"):
        TrainConfig.from_dict({"lr": 1})


def test_callbacks_and_compile_are_configured_as_the_paper_says():
    config = TrainConfig()
    early, plateau = paper_callbacks(config, "val_emotion_accuracy")
    assert early.monitor == plateau.monitor == "val_emotion_accuracy"
    assert early.restore_best_weights
    assert plateau.factor == pytest.approx(0.2) and plateau.patience == 5
    model = build_model("paper")
    compile_model(model, config)
    assert float(model.optimizer.learning_rate) == pytest.approx(3e-4)
    assert model._compile_loss._user_loss_weights == PAPER_LOSS_WEIGHTS  # noqa: SLF001


def test_monitor_falls_back_to_mean_accuracy_without_emotion_labels():
    split = random_split(20)
    assert monitor_metric(["emotion", "age"], split) == "val_emotion_accuracy"
    split.labels[:, 0] = -1
    assert monitor_metric(["emotion", "age"], split) == "val_mean_accuracy"
    assert monitor_metric(["gender", "age"], random_split(20)) == "val_mean_accuracy"


def _batch(split: Split, tasks):
    return next(iter(make_dataset(split, tasks, len(split), training=False, augment=False, seed=0)))


def test_masked_loss_ignores_missing_labels():
    """A task's loss and gradients do not depend on samples without that task's label."""
    model = build_model("fast", TASK_NAMES)
    compile_model(model, TrainConfig(architecture="fast"))
    split = random_split(16)
    x, y, w = _batch(split, TASK_NAMES)
    assert np.array_equal(w["emotion"].numpy(), (split.labels[:, 0] >= 0).astype("float32"))
    y_pred = model(x, training=False)
    base = float(model.compute_loss(x, y, y_pred, w, training=False))
    # Change the (ignored) targets of unlabelled samples: the loss is the same.
    scrambled = dict(y)
    missing = ~(split.labels[:, 0] >= 0)
    e = y["emotion"].numpy()
    e[missing] = np.eye(7)[np.random.default_rng(1).integers(0, 7, missing.sum())]
    scrambled["emotion"] = e
    assert float(model.compute_loss(x, scrambled, y_pred, w, training=False)) == pytest.approx(base, rel=1e-6)
    # A batch where no sample has any label adds no loss and no gradient.
    empty = random_split(8)
    empty.labels[:] = -1
    x2, y2, w2 = _batch(empty, TASK_NAMES)
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = model.compute_loss(x2, y2, model(x2, training=True), w2, training=True)
    grads = tape.gradient(loss, model.trainable_variables)
    assert float(loss) == 0.0
    assert all(g is None or float(tf.reduce_max(tf.abs(g))) == 0.0 for g in grads)


def test_masked_metrics_count_only_labelled_samples():
    model = build_model("fast", ["emotion"])
    compile_model(model, TrainConfig(architecture="fast", tasks=["emotion"]))
    split = random_split(32)
    ds = make_dataset(split, ["emotion"], 8, training=False, augment=False, seed=0)
    result = model.evaluate(ds, return_dict=True, verbose=0)
    probs = model.predict(split.images[..., None] / 255.0, verbose=0)["emotion"]
    labelled = split.labels[:, 0] >= 0
    expected = np.mean(probs[labelled].argmax(1) == split.labels[labelled, 0])
    assert result["accuracy"] == pytest.approx(expected, abs=1e-6)  # single output: Keras drops the task name


def test_holdout_carves_validation_from_train_and_paper_pools_everything():
    class P:  # a prepared data set
        name = "set"
        images = np.zeros((100, 4, 4), np.uint8)
        labels = np.zeros((100, 4), np.int16)
        sources = np.array([f"s{i}" for i in range(100)])
        splits = np.array(["train"] * 80 + ["test"] * 20)

    holdout = make_splits([P], "holdout", 0.1, seed=3)
    assert (len(holdout["train"]), len(holdout["val"]), len(holdout["test"])) == (72, 8, 20)
    assert not set(holdout["val"].sources) & set(holdout["train"].sources)
    assert set(holdout["test"].sources) == {f"s{i}" for i in range(80, 100)}
    assert make_splits([P], "holdout", 0.1, seed=3)["val"].sources.tolist() == holdout["val"].sources.tolist()
    paper = make_splits([P], "paper", 0.1, seed=3)
    assert (len(paper["train"]), len(paper["val"])) == (90, 10) and "test" not in paper


def test_tiny_run_gives_a_loadable_bundle_history_and_evaluations(tmp_path):
    run = tiny_run(tmp_path / "run", epochs=2)
    assert runs.read_progress(run)["state"] == "finished"
    bundle = bundles.load_bundle(run)
    assert bundle.tasks == list(TASK_NAMES) and bundle.input_size == 50
    meta = bundle.metadata
    assert meta["protocol"] == "holdout" and meta["preprocessing"]["size"] == 50
    assert meta["metrics"]["emo-test"]["emotion"]["n"] == 16
    assert "emotion" not in meta["metrics"]["attr-test"]  # no emotion labels there: not reported
    history = pd.read_csv(run / bundles.HISTORY_FILE)
    assert list(history["epoch"]) == [1, 2]
    for column in ("loss", "val_loss", "emotion_loss", "val_age_accuracy", "learning_rate"):
        assert column in history
    assert (run / "evaluation" / "emo-test" / "metrics.json").exists()
    assert json.loads((run / bundles.CONFIG_FILE).read_text())["epochs"] == 2


def test_single_task_run_logs_under_the_task_name(tmp_path):
    run = tiny_run(tmp_path / "run", tasks=["emotion"], epochs=2)
    history = pd.read_csv(run / bundles.HISTORY_FILE)
    assert {"emotion_accuracy", "val_emotion_accuracy", "emotion_loss"} <= set(history)
    assert bundles.load_bundle(run).tasks == ["emotion"]


def test_learning_rate_floor_stops_training(tmp_path):
    run = tiny_run(tmp_path / "run", epochs=6, min_learning_rate=1.0)
    assert len(pd.read_csv(run / bundles.HISTORY_FILE)) == 1


def test_sequential_training_starts_from_a_previous_run(tmp_path):
    from mtfer.train.trainer import _copy_matching_weights

    first = tiny_run(tmp_path / "first", tasks=["emotion"])
    source = bundles.load_bundle(first).model
    target = build_model("fast", TASK_NAMES)
    _copy_matching_weights(source, target)
    for name in ("stem_conv", "block1a_conv", "dense", "emotion_logits"):
        for a, b in zip(source.get_layer(name).get_weights(), target.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    second = tiny_run(tmp_path / "second", init_from=str(first), epochs=1)
    assert bundles.load_bundle(second).tasks == list(TASK_NAMES)
    with pytest.raises(ValueError, match="shares no layers"):
        _copy_matching_weights(source, keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="other")]))


def test_end_to_end_from_data_set_folders_with_partial_labels(tmp_path, monkeypatch):
    monkeypatch.setenv("MTFER_CACHE", str(tmp_path / "cache"))
    fer = write_fer_tree(tmp_path / "fer")
    utk = write_utkface_tree(tmp_path / "utk")
    config = TrainConfig(
        datasets=[{"format": "fer2013", "root": str(fer)}, {"format": "utkface", "root": str(utk)}],
        architecture="fast",
        epochs=1,
        batch_size=16,
    )
    run = train(config, tmp_path / "run", install_signal_handler=False)
    meta = bundles.load_bundle(run).metadata
    assert meta["metrics"]["fer2013-test"]["emotion"]["n"] == 28
    assert set(meta["metrics"]["utkface-val"]) <= {"gender", "race", "age"}
    assert meta["datasets"][0]["format"] == "fer2013"


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (value := predicate()) is not None and value is not False:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _write_npz_config(tmp_path: Path, **overrides) -> dict:
    """A config whose data is a generated utkface-style tree (the subprocess prepares it through the cache)."""
    utk = write_utkface_tree(tmp_path / "utk", n=64)
    return TrainConfig(
        datasets=[{"format": "utkface", "root": str(utk)}],
        tasks=["gender", "race", "age"],
        architecture="fast",
        epochs=3,
        batch_size=2,
        augment=False,
        **overrides,
    ).to_dict()


def test_sigterm_saves_and_stops_then_resume_finishes(tmp_path, monkeypatch):
    monkeypatch.setenv("MTFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MTFER_RUNS", str(tmp_path / "runs"))
    folder = jobs.start_job(_write_npz_config(tmp_path), tmp_path / "runs")
    with pytest.raises(bundles.RunError, match="already running"):
        jobs.start_job(_write_npz_config(tmp_path / "again"), tmp_path / "runs")
    _wait_for(lambda: runs.read_progress(folder).get("step", 0) >= 2 or None, 120, "training steps")
    assert jobs.stop_job(folder)
    _wait_for(lambda: runs.read_progress(folder)["state"] in ("stopped", "failed") or None, 60, "stop")
    progress = runs.read_progress(folder)
    assert progress["state"] == "stopped", runs.log_tail(folder)
    # The checkpoint is the last complete epoch's (none when the stop came inside the first epoch).
    complete = progress["stop"]["completed_epochs"]
    assert (folder / "checkpoint" / "model.keras").exists() == (complete > 0)
    assert not (folder / bundles.METADATA_FILE).exists()  # a stopped run never looks finished
    proc = subprocess.run(
        [sys.executable, "-m", "mtfer.cli", "train", "--resume", str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert runs.read_progress(folder)["state"] == "finished"
    history = pd.read_csv(folder / bundles.HISTORY_FILE)
    assert list(history["epoch"]) == list(range(1, len(history) + 1)) and len(history) == 3
    bundles.load_bundle(folder)


def test_killed_job_is_reported_failed_with_its_checkpoint_intact(tmp_path, monkeypatch):
    monkeypatch.setenv("MTFER_CACHE", str(tmp_path / "cache"))
    folder = jobs.start_job(_write_npz_config(tmp_path, name="kill"), tmp_path / "runs")
    _wait_for(lambda: (folder / "checkpoint" / "state.json").exists() or None, 180, "first checkpoint")
    pid = runs.read_progress(folder)["pid"]
    os.kill(pid, signal.SIGKILL)
    _wait_for(lambda: runs.read_progress(folder)["state"] == "failed" or None, 10, "failed state")
    state = json.loads((folder / "checkpoint" / "state.json").read_text())
    assert state["completed_epochs"] >= 1
    keras.saving.load_model(folder / "checkpoint" / "model.keras")
    assert jobs.active_jobs(tmp_path / "runs") == []
    # A run that cannot go on (out of time) is finished from its best checkpointed epoch without more training.
    from mtfer.train import finalize

    finalize.finish(folder)
    assert runs.read_progress(folder)["state"] == "finished"
    meta = bundles.read_json(folder / bundles.METADATA_FILE)
    assert meta["finished_early"]["completed_epochs"] == state["completed_epochs"]
    assert meta["finished_early"]["planned_epochs"] == 3
    assert set(meta["metrics"]["utkface-test"]) == {"gender", "race", "age"}
    bundles.load_bundle(folder)


MIRRORED_SCRIPT = """
import sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[2])
from helpers import tiny_splits
from mtfer.train.trainer import TrainConfig, train
config = TrainConfig(architecture="fast", epochs=1, batch_size=8, strategy="mirrored",
                     devices=["/cpu:0", "/cpu:1"], steps_per_epoch=3, precision="float32")
train(config, sys.argv[1], splits=tiny_splits(), install_signal_handler=False)
"""


def test_mirrored_strategy_over_two_logical_cpus(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, str(tmp_path / "run"), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert bundles.load_bundle(tmp_path / "run").metadata["replicas"] == 2
    assert runs.read_progress(tmp_path / "run")["state"] == "finished"


def test_cli_errors_are_one_line_and_non_zero(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "mtfer.cli", *args], capture_output=True, text=True, timeout=120)

    missing = cli("inspect", "--format", "utkface", "--data", str(tmp_path / "nope"))
    assert missing.returncode != 0 and "mtfer: error:" in missing.stderr and "Traceback" not in missing.stderr
    unknown = cli("inspect", "--format", "imagenet", "--data", str(tmp_path))
    assert unknown.returncode != 0 and "invalid choice" in unknown.stderr
    bad_bundle = tmp_path / "bundle"
    bad_bundle.mkdir()
    (bad_bundle / "metadata.json").write_text(json.dumps({"tasks": {"emotion": ["happy", "sad"]}}))
    wrong = cli("evaluate", "--model", str(bad_bundle), "--format", "utkface", "--data", str(tmp_path))
    assert wrong.returncode != 0 and "classes" in wrong.stderr and "Traceback" not in wrong.stderr
    bad_file = tmp_path / "notes.jpg"
    bad_file.write_text("not an image")
    run = tiny_run(tmp_path / "run")
    predicted = cli("predict", str(bad_file), "--json", "--model", str(run))
    assert predicted.returncode != 0
    assert predicted.stderr.strip().count("\n") == 0 and "not an image" in predicted.stderr  # exactly one line


def test_cli_predict_json_and_evaluate_split_all(tmp_path, shared_data):
    import cv2

    chip = sorted((shared_data / "utkface" / "UTKFace").glob("3*_1_0_*.jpg"))[0]
    canvas = np.full((400, 400, 3), 128, np.uint8)
    canvas[100:300, 100:300] = cv2.imread(str(chip))
    photo = tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), canvas)
    run = tiny_run(tmp_path / "run")
    env = {**os.environ, "MTFER_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "mtfer.cli", "predict", str(photo), "--json", "--model", str(run)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert len(result["faces"]) >= 1
    face = result["faces"][0]
    for task in TASK_NAMES:
        assert sum(face[task].values()) == pytest.approx(1.0, abs=1e-3)
    utk = write_utkface_tree(tmp_path / "utk", n=12)
    out = tmp_path / "eval"
    proc = subprocess.run(
        [sys.executable, "-m", "mtfer.cli", "evaluate", "--model", str(run), "--format", "utkface"]
        + ["--data", str(utk), "--split", "all", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tasks"]["gender"]["n"] == 12 and metrics["tasks"]["emotion"]["n"] == 0


def _learnable_split(n: int, seed: int) -> Split:
    """Emotion = which of 7 horizontal bands is bright: easy to learn, so precision differences would show."""
    rng = np.random.default_rng(seed)
    labels = np.full((n, 4), -1, dtype=np.int64)
    labels[:, 0] = rng.integers(0, 7, n)
    images = rng.integers(0, 60, (n, 50, 50), dtype=np.uint8)
    for i, k in enumerate(labels[:, 0]):
        images[i, 7 * k : 7 * k + 7] += 150
    return Split(images, labels, np.array([f"s{i}" for i in range(n)]), np.array(["bands"] * n))


def test_bfloat16_training_reaches_the_accuracy_of_float32(tmp_path):
    splits = {"train": _learnable_split(384, 0), "val": _learnable_split(128, 1), "test": _learnable_split(128, 2)}
    accuracy = {}
    for precision in ("float32", "bfloat16"):
        config = TrainConfig(
            architecture="fast",
            tasks=["emotion"],
            epochs=4,
            batch_size=32,
            augment=False,
            precision=precision,
            learning_rate=1e-3,
        )
        run = train(config, tmp_path / precision, splits=splits, install_signal_handler=False)
        meta = bundles.load_bundle(run).metadata
        assert meta["precision"] == precision
        accuracy[precision] = meta["metrics"]["bands-test"]["emotion"]["accuracy"]
    keras.mixed_precision.set_global_policy("float32")
    assert accuracy["float32"] > 0.9, accuracy
    assert accuracy["bfloat16"] > accuracy["float32"] - 0.05, accuracy


def test_cli_inspect_prints_counts_and_the_skip_report(tmp_path):
    utk = write_utkface_tree(tmp_path / "utk", n=10)
    proc = subprocess.run(
        [sys.executable, "-m", "mtfer.cli", "inspect", "--format", "utkface", "--data", str(utk), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["total"] == 10 and summary["skipped"]["total"] == 1
    assert summary["tasks"]["gender"]["labelled"] == 10
    wrong = subprocess.run(
        [sys.executable, "-m", "mtfer.cli", "inspect", "--format", "fer2013", "--data", str(utk)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1 and "fer2013" in wrong.stderr


# --- training recipe options (label smoothing, schedules, AdamW, class weights, augmentation, mixup, EMA, TTA) ----


def test_old_configs_with_blur_settings_still_load(caplog):
    old = {**TrainConfig().to_dict(), "blur_sigma": 3.0, "blur_threshold": 50.0}
    with caplog.at_level("WARNING", logger="mtfer.train"):
        assert TrainConfig.from_dict(old) == TrainConfig()
    assert "blur_sigma" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="mtfer.train"):
        assert TrainConfig.from_dict({**old, "blur_sigma": 0.0}) == TrainConfig()
    assert not caplog.text


def _differing_settings(a: TrainConfig, b: TrainConfig) -> set[str]:
    return {k for k, v in a.to_dict().items() if b.to_dict()[k] != v}


def test_presets_and_the_recipe_settings_are_checked():
    # The paper preset is the defaults, except for the face detector (the paper's Haar pipeline).
    assert _differing_settings(TrainConfig.from_preset("paper"), TrainConfig()) <= {"preprocessing"}
    recipe = TrainConfig.from_preset("recipe", epochs=3)
    assert recipe == TrainConfig(**{**PRESETS["recipe"].settings, "epochs": 3})
    assert (recipe.architecture, recipe.batch_size, recipe.learning_rate, recipe.epochs) == ("fast", 64, 2e-3, 3)
    assert (recipe.lr_schedule, recipe.warmup_epochs, recipe.weight_decay) == ("cosine", 1.0, 1e-2)
    assert (recipe.label_smoothing, recipe.class_weighting, recipe.augment) == (0.1, "sqrt", "strong")
    assert (recipe.mixup, recipe.ema, recipe.tta_flip, recipe.early_stopping_patience) == (0.0, 0.0, True, 1000)
    assert TrainConfig.from_dict(recipe.to_dict()) == recipe
    # Early stopping waits 11 epochs under the plateau rule; a schedule runs to its end unless told otherwise.
    assert TrainConfig().early_stopping_patience == 11
    assert TrainConfig(lr_schedule="cosine", epochs=30).early_stopping_patience == 30
    assert TrainConfig(lr_schedule="cosine", early_stopping_patience=5).early_stopping_patience == 5
    with pytest.raises(ValueError, match="unknown preset"):
        TrainConfig.from_preset("sota")
    for bad in (
        {"lr_schedule": "step"},
        {"class_weighting": "inverse"},
        {"augment": "medium"},
        {"label_smoothing": 1.0},
        {"ema": 1.5},
        {"mixup": -0.1},
        {"weight_decay": -1e-4},
    ):
        with pytest.raises(ValueError):
            TrainConfig(**bad)


def test_cli_preset_sets_defaults_that_flags_override():
    from mtfer.cli import build_parser
    from mtfer.cli.train_cmds import train_config_from_args

    def config(*argv):
        return train_config_from_args(build_parser().parse_args(["train", *argv]))

    assert config() == TrainConfig()
    assert config("--preset", "paper") == TrainConfig.from_preset("paper")
    assert config("--preset", "recipe", "--epochs", "3") == TrainConfig.from_preset("recipe", epochs=3)
    overridden = config(
        "--preset", "recipe", "--augment", "light", "--no-tta-flip", "--lr-schedule", "onecycle", "--mixup", "0.2"
    )
    assert (overridden.augment, overridden.tta_flip, overridden.lr_schedule, overridden.mixup) == (
        "light",
        False,
        "onecycle",
        0.2,
    )
    assert overridden.batch_size == 64 and overridden.label_smoothing == 0.1  # the rest stays the recipe's
    flags = config(
        "--label-smoothing", "0.05", "--lr-schedule", "cosine", "--warmup-epochs", "0.5", "--weight-decay", "1e-3",
        "--class-weighting", "balanced", "--ema", "0.99", "--tta-flip", "--epochs", "7",
    )  # fmt: skip
    assert (flags.label_smoothing, flags.warmup_epochs, flags.weight_decay) == (0.05, 0.5, 1e-3)
    assert (flags.class_weighting, flags.ema, flags.tta_flip) == ("balanced", 0.99, True)
    assert flags.early_stopping_patience == 7 and flags.architecture == "paper"
    assert config("--no-augment").augment is False
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--augment", "strong", "--no-augment"])


def test_optimizer_and_callbacks_follow_the_recipe_options():
    model = build_model("fast", ["emotion"])
    config = TrainConfig(architecture="fast", tasks=["emotion"], weight_decay=1e-4, ema=0.9, lr_schedule="cosine")
    with pytest.raises(ValueError, match="steps_per_epoch"):
        compile_model(model, config)
    compile_model(model, config, steps_per_epoch=10)
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.AdamW) and optimizer.weight_decay == pytest.approx(1e-4)
    assert optimizer.use_ema and optimizer.ema_momentum == pytest.approx(0.9)
    assert isinstance(optimizer._learning_rate, keras.optimizers.schedules.CosineDecay)  # noqa: SLF001
    early, plateau = paper_callbacks(config, "val_emotion_accuracy")
    assert plateau is None and early.restore_best_weights and early.patience == config.epochs
    compile_model(model, TrainConfig(architecture="fast", tasks=["emotion"]))
    assert type(model.optimizer) is keras.optimizers.Adam and not model.optimizer.use_ema


def test_label_smoothing_changes_the_loss_as_keras_computes_it():
    model = build_model("fast", TASK_NAMES)
    x, y, w = _batch(random_split(16), TASK_NAMES)
    y_pred = model(x, training=False)
    losses = {}
    for smoothing in (0.0, 0.2):
        compile_model(model, TrainConfig(architecture="fast", label_smoothing=smoothing))
        losses[smoothing] = float(model.compute_loss(x, y, y_pred, w, training=False))
    expected = 0.0
    for task in TASK_NAMES:
        target = y[task].numpy() * 0.8 + 0.2 / y[task].shape[-1]
        cross_entropy = -(target * np.log(np.clip(y_pred[task].numpy(), 1e-7, 1.0))).sum(axis=1)
        expected += PAPER_LOSS_WEIGHTS[task] * float((cross_entropy * w[task].numpy()).sum()) / len(cross_entropy)
    assert losses[0.2] == pytest.approx(expected, rel=1e-4)
    assert abs(losses[0.2] - losses[0.0]) > 1e-3


def test_class_weights_favour_rare_emotions_and_keep_unlabelled_samples_at_zero():
    labels = np.array([0] * 60 + [1] * 30 + [3] * 10 + [-1] * 20)
    labelled = labels[labels >= 0]
    balanced = class_weights_for(labels, "balanced", 7)
    root = class_weights_for(labels, "sqrt", 7)
    for weights in (balanced, root):
        assert weights.shape == (7,) and weights[3] > weights[1] > weights[0]
        assert weights[labelled].mean() == pytest.approx(1.0, rel=1e-6)
        assert weights[2] == weights[6] == 1.0  # never seen in training
    assert balanced[3] / balanced[0] == pytest.approx(6.0, rel=1e-5)  # ten times rarer: 60/10
    assert root[3] / root[0] == pytest.approx(np.sqrt(6.0), rel=1e-5)
    assert class_weights_for(labels, "none", 7) is None
    assert class_weights_for(np.full(5, -1), "balanced", 7) is None
    split = random_split(16)
    weights = np.arange(1, 8, dtype=np.float32)
    ds = make_dataset(split, TASK_NAMES, 16, training=False, augment=False, seed=0, class_weights={"emotion": weights})
    _, _, w = next(iter(ds))
    emotion = split.labels[:, 0]
    expected = np.where(emotion >= 0, weights[np.maximum(emotion, 0)], 0.0)
    np.testing.assert_allclose(w["emotion"].numpy(), expected)
    np.testing.assert_array_equal(w["age"].numpy(), (split.labels[:, 3] >= 0).astype(np.float32))


def test_strong_augmentation_changes_faces_within_range():
    import tensorflow as tf

    x = tf.constant(random_split(64).images[..., None] / 255.0, tf.float32)
    for level in ("light", "strong"):
        out = make_augmenter(level, seed=0)(x)
        assert out.shape == x.shape and out.dtype == tf.float32
        assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 1.0
        changed = np.abs(out.numpy() - x.numpy()).reshape(len(x), -1).max(axis=1) > 1e-3
        assert changed.mean() > 0.9, level
    # Photometric changes: the strong pipeline moves each face's mean brightness, the light one barely.
    flat = tf.fill([64, 50, 50, 1], 0.5)
    light_means = make_augmenter("light", seed=0)(flat).numpy().mean(axis=(1, 2, 3))
    strong_means = make_augmenter("strong", seed=0)(flat).numpy().mean(axis=(1, 2, 3))
    assert np.allclose(light_means, 0.5, atol=1e-3)
    assert strong_means.std() > 0.03
    assert make_augmenter("none", seed=0) is None
    split = random_split(32)
    images, _, _ = next(iter(make_dataset(split, TASK_NAMES, 32, training=True, augment="strong", seed=0)))
    assert images.shape == (32, 50, 50, 1) and images.dtype == tf.float32
    assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) <= 1.0


def test_mixup_mixes_labels_only_where_present_and_keeps_unlabelled_pairs_at_zero():
    import tensorflow as tf

    x = tf.constant(np.arange(4, dtype=np.float32)[:, None, None, None] * tf.ones([4, 2, 2, 1]))
    eye = np.eye(3, dtype=np.float32)
    y = {"emotion": tf.constant(eye[[0, 1, 2, 0]]), "race": tf.constant(eye[[0, 0, 0, 2]])}
    w = {"emotion": tf.constant([1.0, 1.0, 0.0, 0.0]), "race": tf.constant([0.0, 0.0, 0.0, 2.0])}
    mx, my, mw = mix_batch(x, y, w, 0.7, tf.constant([1, 0, 3, 2]))
    np.testing.assert_allclose(mx.numpy()[:, 0, 0, 0], [0.3, 0.7, 2.3, 2.7], rtol=1e-6)
    np.testing.assert_allclose(my["emotion"].numpy()[0], 0.7 * eye[0] + 0.3 * eye[1], rtol=1e-6)
    np.testing.assert_allclose(mw["emotion"].numpy(), [1.0, 1.0, 0.0, 0.0], rtol=1e-6)  # samples 2, 3: neither
    np.testing.assert_allclose(mw["race"].numpy(), [0.0, 0.0, 0.3 * 2.0, 0.7 * 2.0], rtol=1e-6)
    np.testing.assert_allclose(my["race"].numpy()[2:], eye[[2, 2]], rtol=1e-6)  # only sample 3's label counts
    # In the pipeline: race labelled on one sample only -> at most two samples (it and its partner) carry weight.
    split = random_split(16)
    split.labels[:, 2] = -1
    split.labels[5, 2] = 1
    _, my, mw = next(iter(make_dataset(split, TASK_NAMES, 16, training=True, augment=False, seed=0, mixup=0.4)))
    race = mw["race"].numpy()
    assert 1 <= np.count_nonzero(race) <= 2 and race.sum() == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(my["emotion"].numpy().sum(axis=1), 1.0, rtol=1e-5)
    assert float(mw["emotion"].numpy().min()) >= 0.0 and float(mw["emotion"].numpy().max()) <= 1.0


def test_predict_arrays_with_flip_averages_the_face_and_its_mirror():
    from mtfer.core.backends import predict_arrays

    model = build_model("fast", TASK_NAMES)
    images = random_split(7).images
    plain = predict_arrays(model, images, batch_size=3)
    mirror = predict_arrays(model, images[:, :, ::-1].copy(), batch_size=3)
    flipped = predict_arrays(model, images, batch_size=3, flip=True)
    for task in TASK_NAMES:
        np.testing.assert_allclose(flipped[task], (plain[task] + mirror[task]) / 2, atol=1e-6)
        assert not np.allclose(flipped[task], plain[task], atol=1e-5)


def test_recipe_run_warms_up_then_decays_and_records_its_settings(tmp_path):
    from helpers import tiny_splits

    from mtfer.core.backends import predict_arrays

    run = tiny_run(
        tmp_path / "run",
        epochs=4,
        learning_rate=1e-2,
        lr_schedule="cosine",
        warmup_epochs=2,
        weight_decay=1e-4,
        label_smoothing=0.1,
        class_weighting="sqrt",
        augment="strong",
        mixup=0.2,
        tta_flip=True,
    )
    history = pd.read_csv(run / bundles.HISTORY_FILE)
    # 64 faces in batches of 16: 4 steps an epoch, 8 of warmup; the LR-floor stop does not end the schedule.
    np.testing.assert_allclose(history["learning_rate"], [5e-3, 1e-2, 5e-3, 0.0], rtol=1e-4, atol=1e-9)
    config = json.loads((run / bundles.CONFIG_FILE).read_text())
    assert (config["lr_schedule"], config["augment"], config["early_stopping_patience"]) == ("cosine", "strong", 4)
    meta = bundles.load_bundle(run).metadata
    assert meta["input"]["tta_flip"] is True
    emotion = tiny_splits()["train"].labels[:, 0]
    expected = class_weights_for(emotion, "sqrt", 7)
    assert list(meta["class_weights"]["emotion"].values()) == pytest.approx(expected.tolist())
    # The recorded test accuracy is that of the face averaged with its mirror image.
    test = tiny_splits()["test"]
    emo = test.subset(np.flatnonzero(test.datasets == "emo"))
    probs = predict_arrays(bundles.load_bundle(run).model, emo.images, flip=True)["emotion"]
    accuracy = float(np.mean(probs.argmax(axis=1) == emo.labels[:, 0]))
    assert meta["metrics"]["emo-test"]["emotion"]["accuracy"] == pytest.approx(accuracy)


def test_ema_validates_and_saves_the_moving_average_of_the_best_epoch(tmp_path):
    from helpers import tiny_splits

    histories, weights = {}, {}
    for ema in (0.0, 0.5):
        run = tiny_run(tmp_path / f"ema{ema}", epochs=3, learning_rate=3e-3, ema=ema)
        histories[ema] = pd.read_csv(run / bundles.HISTORY_FILE)
        model = bundles.load_bundle(run).model
        weights[ema] = model.get_weights()
        # The saved model is the one validated at the best epoch: evaluating it again gives that epoch's numbers.
        compile_model(model, TrainConfig(architecture="fast"))
        val = make_dataset(tiny_splits()["val"], TASK_NAMES, 16, training=False, augment=False, seed=0)
        again = model.evaluate(val, return_dict=True, verbose=0)
        best = int(histories[ema]["val_emotion_accuracy"].to_numpy().argmax())
        assert again["loss"] == pytest.approx(histories[ema]["val_loss"][best], rel=1e-5), ema
    # The moving average changes what is validated and saved, not how the network trains (the first epoch is the
    # same; SwapEMAWeights swaps by adding and subtracting, so later epochs differ by float rounding only).
    assert histories[0.5]["loss"][0] == pytest.approx(histories[0.0]["loss"][0], rel=1e-5)
    np.testing.assert_allclose(histories[0.5]["loss"], histories[0.0]["loss"], rtol=1e-2)
    assert not np.allclose(histories[0.5]["val_loss"], histories[0.0]["val_loss"], rtol=1e-4)
    assert any(not np.allclose(a, b) for a, b in zip(weights[0.5], weights[0.0], strict=True))


MULTI_WORKER_SCRIPT = """
import json, os, sys
os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": sys.argv[3].split(",")},
                                      "task": {"type": "worker", "index": int(sys.argv[4])}})
sys.path.insert(0, sys.argv[2])
from helpers import tiny_splits
from mtfer.train.trainer import TrainConfig, train
config = TrainConfig(architecture="fast", epochs=1, batch_size=8, strategy="multiworker", steps_per_epoch=3,
                     precision="float32")
train(config, sys.argv[1], splits=tiny_splits(), install_signal_handler=False)
"""


def test_two_workers_on_loopback_train_one_model_in_step(tmp_path):
    """MultiWorkerMirroredStrategy with two worker processes (TF_CONFIG on loopback): both finish a bundle like one
    worker's, trained over 2 replicas, and end with the same trained weights (gradients averaged at every step)."""
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    cluster = ",".join(f"127.0.0.1:{p}" for p in ports)
    here = str(Path(__file__).parent)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", MULTI_WORKER_SCRIPT, str(tmp_path / f"run{i}"), here, cluster, str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-3000:]
    first, second = (bundles.load_bundle(tmp_path / f"run{i}") for i in range(2))
    assert first.metadata["replicas"] == second.metadata["replicas"] == 2
    assert runs.read_progress(tmp_path / "run0")["state"] == "finished"
    # The trained weights are the same on both; batch normalisation's running statistics are each worker's own
    # (averaged over the batches it saw), as with any MultiWorkerMirroredStrategy run: the first worker's is used.
    trained = [(a, b) for a, b in zip(first.model.weights, second.model.weights, strict=True) if a.trainable]
    assert len(trained) > 10
    for a, b in trained:
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, err_msg=a.path)


def test_a_resumed_run_does_not_replay_the_first_epochs_order_and_augmentation(tmp_path, monkeypatch):
    """Seeded as at epoch 1, a resumed run would show a network the same faces, in the same order and with the
    same augmentation, as its first epoch: what a large network has memorised."""
    from helpers import tiny_splits

    from mtfer.train import trainer

    seeds = []
    real = trainer.make_dataset

    def recording(*args, **kwargs):
        if kwargs.get("training"):
            seeds.append(kwargs["seed"])
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "make_dataset", recording)
    config = trainer.TrainConfig(architecture="fast", epochs=1, batch_size=16, augment="light", seed=5)
    folder = trainer.train(config, tmp_path / "run", splits=tiny_splits(), install_signal_handler=False)
    longer = trainer.TrainConfig(**{**config.to_dict(), "epochs": 2})
    trainer.train(longer, folder, splits=tiny_splits(), resume=True, install_signal_handler=False)
    assert seeds == [5, 6]  # epoch 2 draws as the second epoch, not as the first again
    history = pd.read_csv(folder / bundles.HISTORY_FILE)
    assert list(history["epoch"]) == [1, 2]
