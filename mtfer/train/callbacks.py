"""Keras callbacks of the trainer: progress and heartbeat in progress.json, stop requests, checkpoints every
epoch, history.csv, and the paper's learning-rate and early-stopping rules."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtfer.core import bundles
from mtfer.core.tasks import PAPER_LOSS_WEIGHTS
from mtfer.store import runs
from mtfer.train import planning
from mtfer.train.config import TrainConfig

log = logging.getLogger("mtfer.train")  # one logger for training, whichever module speaks


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
        return int(bundles.read_json(Path(run) / runs.CHECKPOINT_DIR / "state.json").get("completed_epochs", 0))
    except (bundles.RunError, TypeError, ValueError):
        return 0


def callback_classes():
    """The trainer's Keras callbacks (RunCallback, AfterEpoch), built on first use: Keras subclasses need Keras
    imported, which loads TensorFlow (seconds), and the pages that read a run's progress never need it."""
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
            self.first_step_end = self.epoch_start
            self.last_write = 0.0
            self.stopped = False
            self.stop_at: dict | None = None  # where a stop took effect (stop_point)
            self.history_rows: list[dict] = state.get("history", [])
            self.started = time.time()

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            self.epoch_start = self.first_step_end = time.time()
            self.cpu_start = planning.cpu_sample()

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
            if batch == 0:  # the first step also traces the model: the rate is measured from its end
                self.first_step_end = now
            if now - self.last_write > 2.0:
                self.last_write = now
                measured = batch >= 1 and now > self.first_step_end
                rate = (
                    batch / (now - self.first_step_end) if measured else (batch + 1) / max(now - self.epoch_start, 1e-6)
                )
                remaining = (self.steps - batch - 1) + self.steps * (self.config.epochs - self.epoch - 1)
                runs.write_progress(
                    self.run,
                    state="running",
                    epoch=self.epoch + 1,
                    epochs=self.config.epochs,
                    step=batch + 1,
                    steps=self.steps,
                    # Only once steps after the first (which also traces the model) were timed: before, a
                    # 3-minute job could promise hours. None: the page says nothing of the time left yet.
                    eta_s=round(remaining / rate) if measured else None,
                    faces_per_s=round(rate * self.config.batch_size, 1) if measured else None,
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
            seconds = time.time() - self.epoch_start
            row = {
                "epoch": epoch + 1,
                **{k: float(v) for k, v in logs.items()},
                "seconds": seconds,
                # The share of the machine other work took meanwhile: estimates scale this epoch's speed by it.
                "other_work": planning.other_work(getattr(self, "cpu_start", None), planning.cpu_sample(), seconds),
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
            with bundles.atomic_path(ckpt / "model.keras") as tmp:
                self.model.save(tmp)
            if self.early is not None and self.early.best_weights is not None:
                with bundles.atomic_path(ckpt / runs.BEST_WEIGHTS_FILE) as tmp, open(tmp, "wb") as f:
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
            bundles.atomic_write_json(ckpt / "state.json", state)

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

    with bundles.atomic_path(run / bundles.HISTORY_FILE) as tmp:
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


class TrainingStopped(Exception):  # noqa: N818 - a signal to unwind, not an error
    """Raised inside the trainer when a stop was asked for (SIGTERM): unwinds data preparation or model.fit at
    once, without validating or recording an unfinished epoch."""


def current_learning_rate(optimizer) -> float:
    """The rate the optimizer applies now. Keras' `learning_rate` property evaluates a schedule at
    optimizer.iterations (the steps taken so far)."""
    return float(np.asarray(optimizer.learning_rate))
