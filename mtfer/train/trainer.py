"""The shared trainer: masked multi-task loss, the paper's callbacks, protocols, precision, distribution.

One trainer serves the CLI, `training/` scripts and the app's Train page (through a background job)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtfer.core import bundles
from mtfer.core.model import build_model
from mtfer.core.tasks import EMOTION, PAPER_LOSS_WEIGHTS, TASK_NAMES
from mtfer.datasets.splits import Split, make_splits
from mtfer.store import runs
from mtfer.train import loss_weights, multiworker
from mtfer.train.callbacks import (
    PreparationProgress,
    StopRequested,
    TrainingStopped,
    callback_classes,
    completed_epochs,
    paper_callbacks,
    stop_point,
    write_history,
)
from mtfer.train.config import ONECYCLE_WARMUP, TrainConfig, resolve_precision
from mtfer.train.finalize import emotion_class_weights, save_run
from mtfer.train.pipeline import load_prepared, make_dataset, with_pseudo_labels

log = logging.getLogger("mtfer.train")  # one logger for training, whichever module speaks


def make_strategy(name: str, devices: Sequence[str] | None = None):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=list(devices) if devices else None)
    if name == "multiworker":
        return multiworker.make_strategy()
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


def compile_model(model, config: TrainConfig, steps_per_epoch: int | None = None) -> None:
    """steps_per_epoch: needed by the "cosine" and "onecycle" schedules."""
    import keras

    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss={t: keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing) for t in config.tasks},
        loss_weights={t: float(config.loss_weights.get(t, PAPER_LOSS_WEIGHTS[t])) for t in config.tasks},
        weighted_metrics={t: ["accuracy"] for t in config.tasks},
    )


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
    if not (run / bundles.CONFIG_FILE).exists():
        bundles.atomic_write_json(run / bundles.CONFIG_FILE, config.to_dict())
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
        started=bundles.now_iso(),
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

    started = time.time()
    if splits is None:
        names = [d["format"] for d in config.datasets]
        log.info("loading data sets %s", names)
        try:
            prepared = load_prepared(config, PreparationProgress(run, names, stop))
        except TrainingStopped:
            _mark_stopped(run, stop_point(0, 0, 0, completed_epochs(run) if resume else 0, phase="preparing"))
            return
        splits = make_splits(prepared, config.protocol, config.val_fraction, config.carving_seed)
    if "train" not in splits:
        raise ValueError("the chosen data sets have no training samples")
    splits, pseudo_record = with_pseudo_labels(config, splits, run)
    train_split, val_split = splits["train"], splits.get("val")
    log.info("samples: %s", {k: len(v) for k, v in splits.items()})

    precision = resolve_precision(config.precision)
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    # A resumed run draws from where an uninterrupted one would be, not from the start: seeded as at epoch 1, it
    # would replay epoch 1's order and augmented faces, which a network that can memorise has already learned.
    seed = config.seed + (completed_epochs(run) if resume else 0)
    keras.utils.set_random_seed(seed)
    strategy = make_strategy(config.strategy, config.devices)
    batch = config.batch_size * strategy.num_replicas_in_sync
    log.info("strategy %s with %d replica(s)", type(strategy).__name__, strategy.num_replicas_in_sync)

    class_weights = emotion_class_weights(config, train_split)
    if "emotion" in class_weights:
        log.info(
            "emotion class weights: %s",
            dict(zip(EMOTION.classes, np.round(class_weights["emotion"], 3).tolist(), strict=True)),
        )
    train_ds = make_dataset(
        train_split,
        config.tasks,
        batch,
        training=True,
        augment=config.augment,
        seed=seed,
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
            state = bundles.read_json(ckpt / "state.json")
            model = keras.saving.load_model(ckpt / "model.keras", safe_mode=True)
            log.info("resuming after epoch %d", state["completed_epochs"])
            write_history(run, state.get("history", []))  # complete epochs only, as the checkpoint has them
        else:
            if resume:  # stopped before the first epoch was complete: nothing to continue, start again
                log.info("run %s has no complete epoch to resume from: starting again from epoch 1", run.name)
                write_history(run, [])
            model = loss_weights.for_config(build_model(config.architecture, config.tasks, config.image_size), config)
            if config.init_from:
                init = bundles.load_bundle(bundles.resolve_model(config.init_from))
                _copy_matching_weights(init.model, model)
            compile_model(model, config, steps)

    monitor = monitor_metric(config.tasks, val_split)
    early, plateau = paper_callbacks(config, monitor)
    # EMA: validate on the moving average, and at each epoch's end leave it in the model (swap_on_epoch) so that
    # EarlyStopping keeps and restores the best epoch's EMA weights, which are the ones saved.
    swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True) if config.ema > 0 else None
    RunCallback, AfterEpoch = callback_classes()
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
        if (best := runs.read_best_weights(ckpt)) is not None:
            early.best_weights = best
    initial_epoch = int(state.get("completed_epochs", 0))

    log.info(
        "training %s on %d faces, %s precision, monitor %s",
        config.architecture,
        len(train_split),
        precision,
        monitor,
    )
    # What a time estimate needs (mtfer.train.planning reads it back): faces per epoch and the precision really used.
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

    metadata = save_run(
        run,
        model,
        config,
        precision,
        splits,
        time.time() - run_cb.started,
        class_weights,
        pseudo_record,
        replicas=int(strategy.num_replicas_in_sync),
    )
    log.info("finished: %s", json.dumps(metadata["metrics"]))


def _mark_stopped(run: Path, at: dict) -> None:
    """progress.json says the run stopped and where (stop_point); history.csv holds the complete epochs only."""
    runs.write_progress(run, state="stopped", stopped=bundles.now_iso(), stop=at)
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
    """Sequential training: copy every layer whose name and weight shapes match (trunk and shared heads). A head
    that has gained classes since (race's "other") keeps what it knew: the old classes' weights are copied into
    the leading outputs and only the new ones start fresh."""
    copied = 0
    by_name = {layer.name: layer for layer in source.layers}
    for layer in target.layers:
        other = by_name.get(layer.name)
        if other is None or not layer.weights:
            continue
        weights, mine = other.get_weights(), layer.get_weights()
        if [w.shape for w in weights] == [w.shape for w in mine]:
            layer.set_weights(weights)
            copied += 1
        elif len(weights) == len(mine) and all(_grown(w.shape, m.shape) for w, m in zip(weights, mine, strict=True)):
            for w, m in zip(weights, mine, strict=True):
                m[..., : w.shape[-1]] = w
            layer.set_weights(mine)
            copied += 1
    if not copied:
        raise ValueError("the starting model shares no layers with this architecture")


def _grown(old: tuple, new: tuple) -> bool:
    """True when a weight of shape `new` is one of shape `old` with more outputs (its last axis) and nothing else."""
    return len(old) == len(new) and old[:-1] == new[:-1] and old[-1] < new[-1]
