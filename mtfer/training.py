"""The shared trainer: masked multi-task loss, the paper's callbacks, protocols, precision, distribution.

One trainer serves the CLI, `training/` scripts and the app's Train page (through a background job)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import signal
import time
from collections.abc import Sequence
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
    early_stopping_patience: int = 11  # not given in the paper; long enough for two learning-rate drops
    plateau_patience: int = 5
    plateau_factor: float = 0.2
    min_learning_rate: float = 1e-6  # stop once the learning rate falls below this
    protocol: str = "holdout"
    val_fraction: float = 0.1
    seed: int = 1337
    augment: bool = True
    precision: str = "auto"
    strategy: str = "default"
    devices: list[str] | None = None  # for MirroredStrategy, e.g. ["/cpu:0", "/cpu:1"]
    init_from: str | None = None  # run id or bundle to start from (sequential training, paper Table 1)
    limit: int | None = None  # cap on samples per data set (quick runs)
    steps_per_epoch: int | None = None  # cap on steps per epoch (quick runs, tests)
    image_size: int = 50
    # Blur every face sharper than blur_threshold (Laplacian variance) with a Gaussian of blur_sigma pixels, in
    # training and at inference alike: for data sets whose training images are blurred (see README, Data quirks).
    blur_sigma: float = 0.0
    blur_threshold: float = 50.0
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
        for d in self.datasets:
            if not isinstance(d, dict) or "format" not in d or "root" not in d:
                raise ValueError(f"each data set needs a 'format' and a 'root', got {d!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown training settings {sorted(unknown)}")
        return cls(**data)


# --- data ----------------------------------------------------------------------------------------------


@dataclass
class Split:
    """Arrays of one split: uint8 faces (N,S,S), labels int (N,4) with -1 = missing, per-sample source and set."""

    images: np.ndarray
    labels: np.ndarray
    sources: np.ndarray
    datasets: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray) -> Split:
        return Split(self.images[index], self.labels[index], self.sources[index], self.datasets[index])

    @staticmethod
    def concat(parts: Sequence[Split]) -> Split:
        if not parts:
            raise ValueError("nothing to concatenate")
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


def load_prepared(config: TrainConfig) -> list[Any]:
    from mtfer.datasets.cache import prepare
    from mtfer.faces import PreprocessConfig

    if not config.datasets:
        raise ValueError("no data sets chosen: give at least one {'format': ..., 'root': ...}")
    pre = PreprocessConfig(size=config.image_size)
    return [prepare(d["format"], d["root"], config=pre, limit=config.limit) for d in config.datasets]


def make_dataset(split: Split, tasks: Sequence[str], batch_size: int, *, training: bool, augment: bool, seed: int):
    """tf.data pipeline: (face float32 in [0,1], one-hot labels per task, per-task masks as sample weights)."""
    import keras
    import tensorflow as tf

    from mtfer.tasks import TASKS

    columns = [TASK_NAMES.index(t) for t in tasks]
    ds = tf.data.Dataset.from_tensor_slices((split.images, split.labels[:, columns].astype(np.int32)))
    if training:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    augmenter = None
    if training and augment:
        augmenter = keras.Sequential(
            [
                keras.layers.RandomFlip("horizontal", seed=seed),
                keras.layers.RandomTranslation(0.08, 0.08, fill_mode="nearest", seed=seed),
                keras.layers.RandomRotation(8 / 360, fill_mode="nearest", seed=seed),
                keras.layers.RandomZoom(0.08, fill_mode="nearest", seed=seed),
            ],
            name="augment",
        )

    def to_inputs(images, labels):
        x = tf.cast(images, tf.float32)[..., None] / 255.0
        if augmenter is not None:
            x = augmenter(x, training=True)
        y, w = {}, {}
        for i, t in enumerate(tasks):
            label = labels[:, i]
            y[t] = tf.one_hot(tf.maximum(label, 0), TASKS[t].num_classes)
            w[t] = tf.cast(label >= 0, tf.float32)
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


def compile_model(model, config: TrainConfig) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss={t: "categorical_crossentropy" for t in config.tasks},
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
            self.epoch = 0
            self.epoch_start = time.time()
            self.last_write = 0.0
            self.stopped = False
            self.history_rows: list[dict] = state.get("history", [])
            self.started = time.time()

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            self.epoch_start = time.time()

        def on_train_batch_end(self, batch, logs=None):
            now = time.time()
            name_single_task_logs(logs or {}, self.config)
            if self.stop.flag and not self.stopped:
                self.stopped = True
                self.model.stop_training = True
                runs.write_progress(self.run, state="stopping", step=batch + 1)
                self.save_checkpoint(completed_epochs=self.epoch)
                return
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
            # The plateau callback runs after this one; record the rate used during this epoch.
            logs["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))

        def after_epoch(self, epoch, logs):
            """Called by a second instance placed after EarlyStopping / ReduceLROnPlateau."""
            row = {
                "epoch": epoch + 1,
                **{k: float(v) for k, v in logs.items()},
                "seconds": time.time() - self.epoch_start,
            }
            self.history_rows.append(row)
            write_history(self.run, self.history_rows)
            if self.stopped:
                return
            self.save_checkpoint(completed_epochs=epoch + 1)
            lr = float(np.asarray(self.model.optimizer.learning_rate))
            if lr < self.config.min_learning_rate:
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
    """EarlyStopping restoring the best epoch and ReduceLROnPlateau x0.2 after 5 epochs, both on `monitor`."""
    import keras

    early = keras.callbacks.EarlyStopping(
        monitor=monitor, mode="max", patience=config.early_stopping_patience, restore_best_weights=True
    )
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
    runs.write_progress(run, state="running", pid=os.getpid(), started=runs.now_iso(), epoch=0, epochs=config.epochs)
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

    from mtfer.faces import PreprocessConfig
    from mtfer.model import build_model

    started = time.time()
    if splits is None:
        log.info("loading data sets %s", [d["format"] for d in config.datasets])
        splits = make_splits(load_prepared(config), config.protocol, config.val_fraction, config.seed)
    if "train" not in splits:
        raise ValueError("the chosen data sets have no training samples")
    if config.blur_sigma > 0:
        from mtfer.faces import match_sharpness

        for split in splits.values():
            split.images = match_sharpness(split.images, config.blur_sigma, config.blur_threshold)
    train_split, val_split = splits["train"], splits.get("val")
    log.info("samples: %s", {k: len(v) for k, v in splits.items()})

    precision = resolve_precision(config.precision)
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(config.strategy, config.devices)
    batch = config.batch_size * strategy.num_replicas_in_sync
    log.info("strategy %s with %d replica(s)", type(strategy).__name__, strategy.num_replicas_in_sync)

    train_ds = make_dataset(train_split, config.tasks, batch, training=True, augment=config.augment, seed=config.seed)
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
        if resume:
            if not (ckpt / "model.keras").exists():
                raise runs.RunError(f"run {run.name} has no checkpoint to resume from")
            state = runs.read_json(ckpt / "state.json")
            model = keras.saving.load_model(ckpt / "model.keras", safe_mode=True)
            log.info("resuming after epoch %d", state["completed_epochs"])
        else:
            model = build_model(config.architecture, config.tasks, config.image_size)
            if config.init_from:
                init = runs.load_bundle(runs.resolve_model(config.init_from))
                _copy_matching_weights(init.model, model)
            compile_model(model, config)

    monitor = monitor_metric(config.tasks, val_split)
    early, plateau = paper_callbacks(config, monitor)
    RunCallback, AfterEpoch = _callbacks_module()
    run_cb = RunCallback(run, config, steps, stop, state)
    run_cb.early, run_cb.plateau = early, plateau
    run_cb.started = started - float(state.get("seconds", 0.0))  # include data loading; survive stop and resume
    if state:
        for cb, key in ((early, "early"), (plateau, "plateau")):
            for name, value in state.get(key, {}).items():
                if value is not None:
                    setattr(cb, name, value)
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
    if initial_epoch < config.epochs:
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps if config.steps_per_epoch else None,
            callbacks=[run_cb, early, plateau, AfterEpoch(run_cb)],
            verbose=2,
        )
    if stop.flag:
        runs.write_progress(run, state="stopped", stopped=runs.now_iso())
        log.info("stopped; resume with: mtfer train --resume %s", run)
        return

    metadata = bundle_metadata(config, precision, splits, time.time() - run_cb.started)
    metadata["replicas"] = int(strategy.num_replicas_in_sync)
    metadata["preprocessing"] = PreprocessConfig(size=config.image_size).to_dict()
    runs.write_progress(run, state="running", phase="evaluating")
    metadata["metrics"] = evaluate_splits(model, config, splits, run)
    runs.save_bundle(model, metadata, run)
    runs.write_progress(run, state="finished", finished=runs.now_iso(), metrics=metadata["metrics"])
    log.info("finished: %s", json.dumps(metadata["metrics"]))


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


def bundle_metadata(config: TrainConfig, precision: str, splits: dict[str, Split], seconds: float) -> dict:
    from mtfer.tasks import TASKS

    return {
        "format_version": runs.BUNDLE_FORMAT_VERSION,
        "tasks": {t: list(TASKS[t].classes) for t in config.tasks},
        "input": {
            "size": config.image_size,
            "channels": 1,
            "scale": [0.0, 1.0],
            "dtype": "float32",
            "blur_sigma": config.blur_sigma,
            "blur_threshold": config.blur_threshold,
        },
        "architecture": config.architecture,
        "datasets": config.datasets,
        "protocol": config.protocol,
        "optimistic": config.protocol == "paper",
        "precision": precision,
        "samples": {k: len(v) for k, v in splits.items()},
        "train_seconds": round(seconds, 1),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
        "created": runs.now_iso(),
        "config": config.to_dict(),
    }


def evaluate_splits(model, config: TrainConfig, splits: dict[str, Split], run: Path) -> dict:
    """Evaluate val and test per data set; saves evaluation/<set>-<split>/ and returns a summary for metadata."""
    from mtfer.evaluation import evaluate_predictions, save_evaluation
    from mtfer.inference import predict_arrays

    summary: dict = {}
    for split_name in ("val", "test"):
        split = splits.get(split_name)
        if split is None:
            continue
        for ds_name in sorted(set(split.datasets)):
            part = split.subset(np.flatnonzero(split.datasets == ds_name))
            probs = predict_arrays(model, part.images)
            ev = evaluate_predictions(probs, part.labels, part.sources, [split_name] * len(part))
            key = f"{ds_name}-{split_name}"
            save_evaluation(ev, run / runs.EVALUATION_DIR / key)
            summary[key] = {
                t: {"accuracy": m["accuracy"], "n": m["n"], "loss": m["loss"], "macro_f1": m["macro_f1"]}
                for t, m in ev.metrics["tasks"].items()
                if m["n"]
            }
    return summary
