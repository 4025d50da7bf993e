"""Planning a training run before it starts: the presets the Train page offers and an estimate of how long a run
will take on this machine.

How the estimate is made (the choice, and why):

- **Training speed is measured, not probed.** Every run records, per epoch, its wall-clock ``seconds`` (history.csv,
  validation included) and its faces per epoch (progress.json ``epoch_faces``; older runs: ``steps`` x batch size).
  The newest run in the runs folder with the same network and precision, and at least
  :data:`MIN_MEASURED_FACES` faces per epoch, gives faces/s = faces per epoch / median epoch seconds (the first
  epoch, which includes TensorFlow's tracing, is left out when there are others). This is what a run really costs
  here, with the data pipeline, augmentation and validation, at no cost to the page. A timed probe was not chosen:
  it would load TensorFlow into the app server, and on a small machine it would compete with (and be slowed by) a
  job that is already running.
- **Without such a run**, the rates of ``benchmarks/train_throughput.py`` on this machine (docs/choices.md) are used,
  times :data:`VALIDATION_SHARE` for validation; the page says which source it used.
- **Preparing a data set** the first time is estimated from the faces/s of the cache's earlier preparations with
  the same face detector (:func:`mtfer.datasets.cache.preparation_rate`), else :data:`DEFAULT_PREPARE_RATE`; a data
  set already in the cache with these settings (:func:`mtfer.datasets.cache.find_entry`) costs nothing.
- Precision "auto" is taken as bfloat16 when the CPU has AMX or AVX512-BF16 (as the trainer does; a GPU is not
  looked for, which would need TensorFlow).

- **Whatever else the machine is doing** slows a run down: the estimate is scaled by :func:`machine_slowdown`
  (the load average over the cores) and given as a range, since neither the load nor the rate holds still. The same
  holds for the runs it learns from: each epoch records the share of the machine other processes took meanwhile
  (history.csv ``other_work``, from /proc/stat), and its seconds count as ``seconds / (1 + other_work)`` on a quiet
  machine, so a rate measured while another job ran is not taken for this machine's speed.
- A run **stopped in its first epoch** has no epoch seconds yet; the training throughput it measured in its steps
  (progress.json ``faces_per_s``) stands in for them, so that after Stop the estimate is this machine's real one.

The estimate is for all epochs: early stopping (the paper's rule) may end a run sooner.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from mtfer.core import bundles
from mtfer.core.preprocess import PreprocessConfig
from mtfer.datasets.cache import find_entry, preparation_rate
from mtfer.store import runs
from mtfer.train.config import TrainConfig, cpu_has_bf16

# faces/s of training alone on this machine (docs/choices.md, benchmarks/train_throughput.py, 2 cores): the fallback.
REFERENCE_RATES: dict[tuple[str, str], float] = {
    ("paper", "float32"): 73.0,
    ("paper", "bfloat16"): 153.0,
    ("fast", "float32"): 228.0,
    ("fast", "bfloat16"): 183.0,
}
VALIDATION_SHARE = 0.85  # training faces/s -> faces/s over a whole epoch with its validation
UNKNOWN_RATE = 50.0  # a network without a reference rate
DEFAULT_PREPARE_RATE = 150.0  # faces framed per second when the cache has no earlier preparation to go by
MIN_MEASURED_FACES = 1000  # smaller epochs are dominated by fixed costs and say little about the rate
STARTUP_S = 45.0  # TensorFlow's import, loading the data, building the model, tracing the first step
EVALUATION_RATE = 500.0  # faces/s of the final evaluation on the validation and test faces
LONG_JOB_S = 3600.0  # the page asks for a confirmation before starting a longer job
MAX_SLOWDOWN = 4.0  # beyond this the load average says more about queued work than about this job's share
RANGE = (0.85, 1.3)  # the estimate as a range: a rate measured at another time, a load that changes


@dataclass(frozen=True)
class Rate:
    """Training speed: faces per second over a whole epoch (validation included)."""

    faces_per_s: float
    source: str  # "measured" (a run in the runs folder) or "benchmark"
    run: str | None = None  # the run it was measured in


def resolved_precision(precision: str) -> str:
    """The precision a run would use on this machine ("auto": bfloat16 with AMX/AVX512-BF16, else float32)."""
    if precision == "auto":
        return "bfloat16" if cpu_has_bf16() else "float32"
    return precision


def _read(path: Path) -> dict:
    try:
        return bundles.read_json(path)
    except bundles.RunError:
        return {}


def cpu_sample() -> tuple[float, float] | None:
    """(CPU seconds every process has used since boot, CPU seconds this process has used), or None where the
    system has no /proc/stat."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    busy = sum(ticks) - ticks[3] - ticks[4]  # everything but idle and iowait
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def other_work(start: tuple[float, float] | None, end: tuple[float, float] | None, seconds: float) -> float:
    """The share of all cores that other processes used
    between two :func:`cpu_sample` taken `seconds` apart: 0 on a quiet machine, 0.5 when others kept half the cores
    busy. 0 when unknown."""
    if start is None or end is None or seconds <= 0:
        return 0.0
    others = (end[0] - start[0]) - (end[1] - start[1])
    return float(np.clip(others / (seconds * (os.cpu_count() or 1)), 0.0, 1.0))


def measured_rate(run: str | os.PathLike) -> tuple[str, str, float] | None:
    """(architecture, precision, faces/s) measured in a run folder from history.csv's epoch seconds and the faces
    per epoch; None when the run does not tell (no complete epoch, too few faces)."""
    run = Path(run)
    config, progress, metadata = (
        _read(run / name) for name in (bundles.CONFIG_FILE, runs.PROGRESS_FILE, "metadata.json")
    )
    try:
        history = pd.read_csv(run / bundles.HISTORY_FILE)
        seconds = history["seconds"].to_numpy(float)
        # An epoch that shared the machine ran slower: its seconds on a quiet machine, as machine_slowdown models it.
        if "other_work" in history:
            seconds = seconds / (1.0 + history["other_work"].fillna(0.0).clip(0.0, 1.0).to_numpy(float))
        seconds = seconds[np.isfinite(seconds)]
    except (OSError, KeyError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        seconds = np.zeros(0)
    seconds = seconds[seconds > 0]
    if "architecture" not in config:
        return None
    if not len(seconds):  # stopped in its first epoch: the throughput of its steps, with validation's share
        steps_rate = progress.get("faces_per_s")
        precision = progress.get("precision") or resolved_precision(config.get("precision", "auto"))
        if not steps_rate or int(progress.get("step") or 0) * int(config.get("batch_size") or 0) < MIN_MEASURED_FACES:
            return None
        return str(config["architecture"]), str(precision), float(steps_rate) * VALIDATION_SHARE
    if len(seconds) > 1:
        seconds = seconds[1:]  # the first epoch also traces the model
    faces = progress.get("epoch_faces")
    if not faces:
        steps, batch = progress.get("steps"), config.get("batch_size")
        if not steps or not batch:
            return None
        faces = int(steps) * int(batch)
        train = (metadata.get("samples") or {}).get("train") or progress.get("train_faces")
        if train:
            faces = min(faces, int(train))
    if faces < MIN_MEASURED_FACES:
        return None
    precision = (
        progress.get("precision") or metadata.get("precision") or resolved_precision(config.get("precision", "auto"))
    )
    return str(config["architecture"]), str(precision), float(faces) / float(np.median(seconds))


def training_rate(architecture: str, precision: str, runs_dir: str | os.PathLike | None = None) -> Rate:
    """faces/s for this network and (resolved) precision: measured in the newest run that tells, else the
    benchmark's rate times VALIDATION_SHARE."""
    for run in runs.list_runs(runs_dir):
        measured = measured_rate(run)
        if measured and measured[:2] == (architecture, precision):
            return Rate(measured[2], "measured", run.name)
    reference = REFERENCE_RATES.get((architecture, precision), UNKNOWN_RATE)
    return Rate(reference * VALIDATION_SHARE, "benchmark")


class DataSize(Protocol):
    """What a data set adds to a run (mtfer.store.settings.FoundDataset has it): its format and root, to find it in the
    cache, and its faces in all and per split."""

    @property
    def format(self) -> str: ...

    @property
    def root(self) -> str: ...

    @property
    def samples(self) -> int: ...

    @property
    def splits(self) -> Mapping[str, int]: ...


def split_sizes(data: Sequence[DataSize], config: TrainConfig) -> dict[str, float]:
    """Expected faces in train / val / test (mtfer.train.trainer.make_splits): `limit` keeps each split's share;
    "holdout" carves val_fraction of train for validation, "paper" pools everything and carves val_fraction."""
    out = {"train": 0.0, "val": 0.0, "test": 0.0}
    for d in data:
        scale = min(1.0, config.limit / d.samples) if config.limit and d.samples else 1.0
        if config.protocol == "paper":
            pool = d.samples * scale
            out["train"] += pool * (1 - config.val_fraction)
            out["val"] += pool * config.val_fraction
            continue
        train = d.splits.get("train", 0) * scale
        out["train"] += train * (1 - config.val_fraction)
        out["val"] += train * config.val_fraction + d.splits.get("val", 0) * scale
        out["test"] += d.splits.get("test", 0) * scale
    return out


def machine_slowdown(load: float | None = None, cores: int | None = None) -> float:
    """How many times longer than on a quiet machine a job should take now: other work (the 1-minute load average,
    `load`) takes its share of the `cores`, from 1 (quiet) to MAX_SLOWDOWN. 1 where the system has no load average."""
    cores = cores or os.cpu_count() or 1
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (OSError, AttributeError):  # Windows
            return 1.0
    return float(np.clip(1.0 + load / cores, 1.0, MAX_SLOWDOWN))


@dataclass(frozen=True)
class Estimate:
    seconds: float  # all of it, at the machine's current load
    train_seconds: float
    prepare_seconds: float
    epochs: int
    epoch_faces: int
    rate: Rate
    to_prepare: list[str]  # data sets not in the cache with these settings
    prepare_faces: int
    prepare_rate: float
    may_stop_early: bool  # the plateau rule's early stopping can end the run before `epochs`
    slowdown: float = 1.0  # machine_slowdown() when estimated: already in `seconds`

    @property
    def long(self) -> bool:
        return self.seconds > LONG_JOB_S

    @property
    def span(self) -> tuple[float, float]:
        """(shortest, longest) likely seconds."""
        return self.seconds * RANGE[0], self.seconds * RANGE[1]


def estimate(
    config: TrainConfig,
    data: Sequence[DataSize],
    runs_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    rate: Rate | None = None,
    slowdown: float | None = None,
) -> Estimate:
    """How long `config` should take on this machine with these data sets, at its current load (`slowdown`,
    default :func:`machine_slowdown`; see the module docstring)."""
    slowdown = machine_slowdown() if slowdown is None else slowdown

    sizes = split_sizes(data, config)
    epoch_faces = sizes["train"]
    if config.steps_per_epoch:
        epoch_faces = min(epoch_faces, config.steps_per_epoch * config.batch_size)
    rate = rate or training_rate(config.architecture, resolved_precision(config.precision), runs_dir)
    train_seconds = config.epochs * epoch_faces / rate.faces_per_s
    train_seconds += STARTUP_S + (sizes["val"] + sizes["test"]) / EVALUATION_RATE

    pre = PreprocessConfig.named(config.preprocessing, size=config.image_size)
    missing = [d for d in data if find_entry(d.format, d.root, pre, limit=config.limit, cache_dir=cache_dir) is None]
    prepare_faces = sum(min(config.limit or d.samples, d.samples) for d in missing)
    prepare_rate = preparation_rate(pre.detector, cache_dir) or DEFAULT_PREPARE_RATE
    prepare_seconds = prepare_faces / prepare_rate
    return Estimate(
        seconds=(train_seconds + prepare_seconds) * slowdown,
        train_seconds=train_seconds * slowdown,
        prepare_seconds=prepare_seconds * slowdown,
        epochs=config.epochs,
        epoch_faces=int(round(epoch_faces)),
        rate=rate,
        to_prepare=[d.format for d in missing],
        prepare_faces=int(prepare_faces),
        prepare_rate=prepare_rate,
        may_stop_early=config.lr_schedule == "plateau" and (config.early_stopping_patience or 0) < config.epochs,
        slowdown=slowdown,
    )
