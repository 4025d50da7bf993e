"""Everything that rewrites a bundle after training: its metadata, the temperature calibration, the "not sure"
thresholds chosen on validation faces, and its evaluations on the held-out splits. `mtfer calibrate` and the
end of every training run both come here."""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtfer.assess import abstain
from mtfer.assess.abstain import DEFAULT_TARGET_ACCURACY, MIN_SUPPORT, Threshold, thresholds_from_samples
from mtfer.assess.calibration import fit_calibration
from mtfer.assess.evaluation import (
    SAMPLES_FILE,
    evaluate_calibrated,
    evaluate_predictions,
    load_evaluation,
    save_evaluation,
)
from mtfer.assess.race_groups import race_coverage
from mtfer.core import bundles
from mtfer.core.backends import CALIBRATION_KEY, calibrated, predict_arrays
from mtfer.core.model import build_model
from mtfer.core.preprocess import PreprocessConfig
from mtfer.core.tasks import EMOTION, TASK_NAMES, TASKS
from mtfer.datasets.base import DatasetSpec
from mtfer.datasets.splits import Split, make_splits, validation_split
from mtfer.store import runs, settings
from mtfer.store.lineage import parent_lineage
from mtfer.train import loss_weights
from mtfer.train.config import TrainConfig, resolve_precision
from mtfer.train.pipeline import class_weights_for, load_prepared, with_pseudo_labels

log = logging.getLogger("mtfer.train")  # one logger for training, whichever module speaks


@dataclass
class CalibrationResult:
    """What :func:`calibrate_bundle` did: the bundle, the section stored in its metadata, the recomputed abstain
    thresholds, and the saved evaluations (empty when it was told not to evaluate)."""

    path: Path
    calibration: dict
    abstain: dict = field(default_factory=dict)
    evaluations: list[Path] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)


def abstain_targets(metadata: Mapping) -> dict[str, float]:
    """The target accuracy each task's "not sure" threshold was chosen for (metadata abstain.<task>), so that a
    recomputation keeps it."""

    section = metadata.get(abstain.ABSTAIN_KEY)
    out: dict[str, float] = {}
    for task, entry in section.items() if isinstance(section, Mapping) else ():
        target = entry.get("target_accuracy") if isinstance(entry, Mapping) else None
        if isinstance(target, int | float) and not isinstance(target, bool) and 0 < float(target) <= 1:
            out[str(task)] = float(target)
    return out


def calibrate_bundle(
    model: str | os.PathLike | None,
    *,
    runs_dir: str | os.PathLike | None = None,
    datasets: Sequence[DatasetSpec] | None = None,
    splits: Mapping[str, Any] | None = None,
    evaluate: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> CalibrationResult:
    """Fit one temperature per head on a bundle's validation faces (`mtfer calibrate --model M`) and store it in its
    metadata.json (``calibration``, with the ECE before and after), recompute its "not sure" thresholds
    (``abstain``, mtfer.assess.abstain's chooser, each task keeping its target accuracy) on the calibrated validation
    probabilities, and, with `evaluate`, evaluate it again on its validation and test faces (its own
    evaluation/<data set>-<split>/ folders and metadata ``metrics``, now with calibrated probabilities).

    model: run id, bundle folder or 'default'. splits: the trainer's {"val": Split, "test": Split, ...} (default:
    :func:`validation_split`, carved again from the bundle's data sets). Accuracy does not change: a temperature
    never changes a head's top class."""

    path = bundles.resolve_model(model, runs_dir)
    bundle = bundles.load_bundle(path)
    if not os.access(path / bundles.METADATA_FILE, os.W_OK) or not os.access(path, os.W_OK):
        raise PermissionError(f"{path} is read-only: copy the bundle somewhere writable to calibrate it")
    chosen = dict(splits) if splits is not None else validation_split(bundle.metadata, datasets, progress)
    val = chosen.get("val")
    if val is None or not len(val):
        raise ValueError(f"no validation faces to calibrate {path} on")
    flip = bool(bundle.metadata["input"].get("tta_flip", False))
    raw = predict_arrays(bundle.model, val.images, flip=flip)
    section = fit_calibration(raw, val.labels)
    section["created"] = bundles.now_iso()
    scaled = calibrated(raw, section["temperature"])
    on_val = evaluate_predictions(scaled, val.labels, val.sources, ["val"] * len(val))
    thresholds = abstain.thresholds_from_samples(on_val.samples, bundle.tasks, abstain_targets(bundle.metadata))

    result = CalibrationResult(path, section, {t: th.to_dict() for t, th in thresholds.items()})
    metadata = bundles.read_json(path / bundles.METADATA_FILE)
    metadata[CALIBRATION_KEY] = section
    metadata[abstain.ABSTAIN_KEY] = {**(metadata.get(abstain.ABSTAIN_KEY) or {}), **result.abstain}
    if evaluate:
        try:  # the settings evaluate_splits reads (the flip: the bundle's own, as the Predictor's)
            config = dataclasses.replace(TrainConfig.from_dict(dict(metadata["config"])), tta_flip=flip)
        except (KeyError, TypeError, ValueError):  # an injected split of a bundle without a readable config
            config = TrainConfig(tta_flip=flip)
        named = _source_names(path / bundles.EVALUATION_DIR)
        result.metrics = evaluate_splits(bundle.model, config, dict(chosen), path, section["temperature"])
        metadata["metrics"] = result.metrics
        result.evaluations = sorted(path / bundles.EVALUATION_DIR / key for key in result.metrics)
        for folder in result.evaluations:
            _keep_source_names(folder, named.get(folder.name))
    bundles.atomic_write_json(path / bundles.METADATA_FILE, metadata)
    record_race_groups(path)
    return result


RACE_GROUPS_KEY = "race_groups"


def record_race_groups(bundle: str | os.PathLike) -> dict:
    """Store in a bundle's metadata (``race_groups``: {evaluation: figures}) how its race answers cover UTKFace's
    five groups (mtfer.assess.race_groups), measured on its saved evaluations with its own race threshold, so the
    model card and the results table quote them without reading every face. Returns the section ({} when no
    evaluation has UTKFace faces or the model has no race head)."""
    path = Path(bundle)
    metadata = bundles.read_json(path / bundles.METADATA_FILE)
    if "race" not in metadata.get("tasks", {}):
        return {}
    threshold = abstain.min_confidences(metadata, ["race"])["race"]
    section = {}
    for samples in sorted((path / bundles.EVALUATION_DIR).glob("*/samples.csv")):
        try:
            report = race_coverage(pd.read_csv(samples, dtype=str, keep_default_na=False), threshold)
        except (OSError, ValueError, pd.errors.ParserError) as exc:  # one unreadable table: the others still count
            log.warning("race groups: %s skipped (%s)", samples, exc)
            continue
        if report is not None:
            section[samples.parent.name] = report.figures()
    if section or RACE_GROUPS_KEY in metadata:
        metadata[RACE_GROUPS_KEY] = section
        bundles.atomic_write_json(path / bundles.METADATA_FILE, metadata)
    return section


def _source_names(evaluations: Path) -> dict[str, list[str]]:
    """The image names of a bundle's saved evaluations (samples.csv's source column), by evaluation folder."""

    out: dict[str, list[str]] = {}
    for samples in sorted(evaluations.glob(f"*/{SAMPLES_FILE}")):
        try:
            out[samples.parent.name] = pd.read_csv(samples, dtype=str, keep_default_na=False)["source"].tolist()
        except (OSError, ValueError, KeyError, pd.errors.ParserError):
            continue
    return out


def _keep_source_names(folder: Path, before: list[str] | None) -> None:
    """An evaluation made again keeps the image names its earlier version gave: the shipped model's name images
    relative to the data root (training/reproduce.py), so that the Evaluate page finds them under whichever data
    roots a user has, not under this machine's absolute paths. Row by row, where the new (absolute) path ends with
    the old name."""

    if not before:
        return
    evaluation = load_evaluation(folder)
    now = evaluation.samples["source"].tolist()
    if len(now) != len(before):
        return
    kept = [
        old if new != old and old and Path(new).as_posix().endswith("/" + Path(old).as_posix()) else new
        for new, old in zip(now, before, strict=True)
    ]
    if kept != now:
        evaluation.samples["source"] = kept
        save_evaluation(evaluation, folder)


def write_thresholds(bundle: str | os.PathLike, thresholds: Mapping[str, Threshold]) -> dict:
    """Store thresholds as metadata["abstain"] in a bundle's metadata.json (atomically), and the race figures that
    depend on them (:func:`record_race_groups`); returns the metadata."""

    path = Path(bundle) / bundles.METADATA_FILE
    metadata = bundles.read_json(path)
    section = dict(metadata.get(abstain.ABSTAIN_KEY) or {})
    section.update({task: t.to_dict() for task, t in thresholds.items()})
    metadata[abstain.ABSTAIN_KEY] = section
    bundles.atomic_write_json(path, metadata)
    if "race" in thresholds:
        metadata[RACE_GROUPS_KEY] = record_race_groups(bundle)
    return metadata


def validation_evaluations(bundle: str | os.PathLike, runs_dir: str | os.PathLike | None = None) -> list[Path]:
    """The saved validation evaluations of a bundle (its own evaluation/*-val and those under <runs>/evaluations)."""

    chosen: dict[str, Path] = {}
    prefix = re.compile(rf"^{re.escape(Path(bundle).resolve().name)}-\d{{8}}-\d{{6}}(\.\d+)?-")
    for name in sorted(n for n in settings.list_evaluations(bundle, runs_dir) if n.endswith("-val")):
        folder = settings.evaluation_dir(bundle, name, runs_dir)
        own = folder.parent == Path(bundle) / bundles.EVALUATION_DIR
        key = name if own else prefix.sub("", name)  # one evaluation per data set: the bundle's own, else newest
        if own or not (key in chosen and chosen[key].parent == Path(bundle) / bundles.EVALUATION_DIR):
            chosen[key] = folder
    return list(chosen.values())


def thresholds_for_bundle(
    bundle: str | os.PathLike,
    target: float | Mapping[str, float] = DEFAULT_TARGET_ACCURACY,
    *,
    evaluations: Sequence[str | os.PathLike] | None = None,
    min_support: int = MIN_SUPPORT,
    write: bool = True,
) -> dict[str, Threshold]:
    """Choose every task's threshold on a bundle's validation evaluations (default: :func:`validation_evaluations`;
    make them with `mtfer evaluate ... --split val`) and, when `write`, store them in its metadata.json.

    The evaluations must come from the same model: their confidences are the Predictor's (with its test-time
    flip when the bundle sets input.tta_flip)."""

    folders = [Path(e) for e in evaluations] if evaluations is not None else validation_evaluations(bundle)
    if not folders:
        raise ValueError(f"{bundle} has no saved validation evaluation: run `mtfer evaluate` with --split val first")
    samples = pd.concat([load_evaluation(f).samples for f in folders], ignore_index=True)
    if "split" in samples:
        samples = samples[samples["split"].isin(["val", ""])]
    tasks = list(bundles.read_json(Path(bundle) / bundles.METADATA_FILE)["tasks"])
    thresholds = thresholds_from_samples(samples, tasks, target, min_support=min_support)
    if write and thresholds:
        write_thresholds(bundle, thresholds)
    return thresholds


def choose_abstain_thresholds(run: Path) -> None:
    """The "not sure" thresholds (mtfer.assess.abstain), chosen on the run's own calibrated validation evaluations and
    stored in its metadata. Never fails a run: without them the app uses each task's default threshold."""

    try:
        chosen = thresholds_for_bundle(run, evaluations=sorted((run / bundles.EVALUATION_DIR).glob("*-val")))
    except Exception:  # noqa: BLE001 - a bonus, like calibration: the trained model is already saved
        log.exception("choosing the 'not sure' thresholds failed: the app will use the defaults")
        return
    log.info("'not sure' thresholds: %s", {t: round(v.min_confidence, 3) for t, v in chosen.items()})


def bundle_metadata(
    config: TrainConfig,
    precision: str,
    splits: dict[str, Split],
    seconds: float,
    class_weights: Mapping[str, np.ndarray] | None = None,
) -> dict:
    """input.tta_flip tells the Predictor and `mtfer evaluate` to average each face with its mirror image.
    lineage: the runs this one continued (init_from), oldest first, each with its epochs, time and history."""

    return {
        "format_version": bundles.BUNDLE_FORMAT_VERSION,
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
        "created": bundles.now_iso(),
        "config": config.to_dict(),
        "lineage": parent_lineage(config.init_from),
    }


def calibrate_at_end(model, config: TrainConfig, splits: dict[str, Split], metadata: dict) -> dict[str, float]:
    """Temperature scaling per head, fitted on the validation split (mtfer.assess.calibration.fit_calibration on the
    probabilities the Predictor will compute, mirror-averaged when config.tta_flip) and stored as
    metadata["calibration"]; returns the temperatures ({} without validation faces). Never fails a run: on any
    error the model is saved uncalibrated, as before calibration existed, and the log says why."""
    val = splits.get("val")
    if val is None or not len(val):
        return {}
    try:
        section = fit_calibration(predict_arrays(model, val.images, flip=config.tta_flip), val.labels)
        section["created"] = bundles.now_iso()
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
            save_evaluation(ev, run / bundles.EVALUATION_DIR / key)
            summary[key] = {
                t: {"accuracy": m["accuracy"], "n": m["n"], "loss": m["loss"], "macro_f1": m["macro_f1"],
                    "ece": m.get("ece"),
                    **({"three_groups_accuracy": m["three_groups_accuracy"]} if "three_groups_accuracy" in m else {})}
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

    run = Path(run)
    ckpt = run / runs.CHECKPOINT_DIR
    if not (ckpt / "model.keras").exists() or not (ckpt / "state.json").exists():
        raise bundles.RunError(f"run {run.name} has no checkpoint to finish from")
    config = TrainConfig.from_dict(bundles.read_json(run / bundles.CONFIG_FILE))
    state = bundles.read_json(ckpt / "state.json")
    precision = resolve_precision(config.precision)
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    trained = keras.saving.load_model(ckpt / "model.keras", safe_mode=True, compile=False)
    model = loss_weights.for_config(build_model(config.architecture, config.tasks, config.image_size), config)
    model.set_weights(trained.get_weights())
    best_epoch = None
    if (best := runs.read_best_weights(ckpt)) is not None:
        model.set_weights(best)
        best_epoch = (state.get("early") or {}).get("best_epoch")
    splits = make_splits(load_prepared(config), config.protocol, config.val_fraction, config.carving_seed)
    splits, pseudo_record = with_pseudo_labels(config, splits, run)  # the ones the run trained with
    finished_early = {
        "completed_epochs": int(state.get("completed_epochs", 0)),
        "planned_epochs": config.epochs,
        "best_epoch": None if best_epoch is None else int(best_epoch) + 1,
    }
    metadata = save_run(
        run,
        model,
        config,
        precision,
        splits,
        float(state.get("seconds", 0.0)),
        emotion_class_weights(config, splits["train"]),
        pseudo_record,
        finished_early=finished_early,
    )
    log.info("finished early after %d epochs: %s", finished_early["completed_epochs"], metadata["metrics"])
    return run


def emotion_class_weights(config: TrainConfig, train: Split) -> dict[str, np.ndarray]:
    """{"emotion": per-class weights} by the config's class weighting ({} when it has none or no emotion task)."""
    if "emotion" not in config.tasks:
        return {}
    emotion = class_weights_for(
        train.labels[:, TASK_NAMES.index("emotion")], config.class_weighting, len(EMOTION.classes)
    )
    return {} if emotion is None else {"emotion": emotion}


def save_run(
    run: Path,
    model: Any,
    config: TrainConfig,
    precision: str,
    splits: Mapping[str, Split],
    seconds: float,
    class_weights: Mapping[str, np.ndarray],
    pseudo_record: dict | None,
    **extra: Any,
) -> dict:
    """The end of every run, trained to its end or finished early: the bundle's metadata (with `extra` entries),
    learned task weights moved into it, temperatures fitted on the validation faces, evaluations on the held-out
    splits, the bundle saved, its "not sure" thresholds chosen, and progress.json marked finished. Returns the
    metadata."""
    metadata = bundle_metadata(config, precision, dict(splits), seconds, dict(class_weights))
    metadata.update(extra)
    metadata["preprocessing"] = PreprocessConfig.named(config.preprocessing, size=config.image_size).to_dict()
    if pseudo_record is not None:
        metadata["pseudo_labels"] = pseudo_record
    model = loss_weights.inference_model(model, metadata)  # learned weights into the metadata, not the bundle
    runs.write_progress(run, state="running", phase="evaluating")
    temperatures = calibrate_at_end(model, config, dict(splits), metadata)
    metadata["metrics"] = evaluate_splits(model, config, dict(splits), run, temperatures)
    bundles.save_bundle(model, metadata, run)
    choose_abstain_thresholds(run)
    runs.write_progress(run, state="finished", finished=bundles.now_iso(), metrics=metadata["metrics"])
    return metadata
