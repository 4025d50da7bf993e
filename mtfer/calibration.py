"""Calibration: how far a head's confidence can be trusted, and temperature scaling to make it trustworthy.

- :func:`reliability` and :func:`expected_calibration_error`: the data of a reliability diagram (15 equal-width
  confidence bins) and the expected calibration error (ECE), the bin-weighted gap between confidence and accuracy.
- :func:`fit_temperature`: one temperature per head, fitted on validation data by minimising the negative
  log-likelihood of softmax(log p / T) (Guo et al., 2017). Dividing the logits by a positive number never changes
  the top class, so accuracy is unchanged; only the confidence moves.
- :func:`apply_temperature`: what inference does with a bundle's ``calibration.temperature.<task>``.

A bundle's calibration (metadata.json ``calibration``): :func:`fit_calibration` (the section: temperature, ECE and
NLL before and after, per head), :func:`temperatures` (read it back; {} for a legacy bundle), :func:`calibrated`
(applied by mtfer.inference.predict_arrays, hence the Predictor and every evaluation of a bundle), and
:func:`calibrate_bundle` (`mtfer calibrate`: fit on the bundle's validation faces, recompute its "not sure"
thresholds on the calibrated probabilities, evaluate it again). Training fits it at its end (mtfer.training).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

BINS = 15
_EPS = 1e-12


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(probs) / T), row-wise, as float32; T = 1 returns the input unchanged."""
    return _scaled(probs, temperature).astype(np.float32)


def _scaled(probs: np.ndarray, temperature: float) -> np.ndarray:
    """:func:`apply_temperature` in float64: distinct probabilities stay distinct (float32 could round two close
    ones to a tie and so move the top class), so the top class of every row is kept exactly."""
    probs = np.asarray(probs, dtype=np.float64)
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if temperature == 1.0:
        return probs
    logits = np.log(np.clip(probs, _EPS, 1.0)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=-1, keepdims=True)


def _nll(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], _EPS, 1.0))))


def fit_temperature(probs: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature that minimises the validation negative log-likelihood. ``labels``: class indices, -1 for
    samples without a label (ignored). Fewer than 20 labelled samples: 1.0 (not enough data to fit)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    keep = labels >= 0
    probs, labels = probs[keep], labels[keep].astype(int)
    if len(labels) < 20:
        return 1.0
    result = minimize_scalar(
        lambda log_t: _nll(apply_temperature(probs, float(np.exp(log_t))).astype(np.float64), labels),
        bounds=(np.log(bounds[0]), np.log(bounds[1])),
        method="bounded",
    )
    return round(float(np.exp(result.x)), 4)


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> dict:
    """Per confidence bin (equal width over [0, 1]): mean confidence, accuracy and count of the labelled samples,
    plus the ECE. JSON-ready (lists of floats; empty bins have None)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    keep = labels >= 0
    probs, labels = probs[keep], labels[keep].astype(int)
    edges = np.linspace(0.0, 1.0, bins + 1)
    confidence = probs.max(axis=1) if len(probs) else np.zeros(0)
    correct = (probs.argmax(axis=1) == labels) if len(probs) else np.zeros(0, bool)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    conf, acc, count = [], [], []
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        n = int(in_bin.sum())
        count.append(n)
        if n == 0:
            conf.append(None)
            acc.append(None)
            continue
        c, a = float(confidence[in_bin].mean()), float(correct[in_bin].mean())
        conf.append(round(c, 4))
        acc.append(round(a, 4))
        ece += n / len(labels) * abs(a - c)
    return {
        "bins": bins,
        "edges": [round(float(e), 4) for e in edges],
        "confidence": conf,
        "accuracy": acc,
        "count": count,
        "ece": round(ece, 4) if len(labels) else None,
    }


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float | None:
    """ECE over ``bins`` equal-width confidence bins (None without labelled samples)."""
    return reliability(probs, labels, bins)["ece"]


def fit_temperatures(probs: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> dict[str, float]:
    """One temperature per task present in both mappings."""
    return {task: fit_temperature(probs[task], labels[task]) for task in probs if task in labels}


# --- a bundle's calibration (metadata.json "calibration") ---------------------------------------------------
METADATA_KEY = "calibration"


def temperatures(metadata: Mapping) -> dict[str, float]:
    """A bundle's ``calibration.temperature.<task>`` ({} for a bundle never calibrated, an older one: its
    probabilities are used as the network gives them). ValueError on a value that is not a positive number."""
    section = metadata.get(METADATA_KEY)
    if section is None:
        return {}
    found = section.get("temperature", {}) if isinstance(section, Mapping) else None
    if not isinstance(found, Mapping):
        raise ValueError(
            f"metadata.json {METADATA_KEY}.temperature must map each task to a positive number, got {found!r}"
        )
    out: dict[str, float] = {}
    for task, value in found.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(float(value)) or float(value) <= 0:
            raise ValueError(
                f"metadata.json {METADATA_KEY}.temperature.{task} must be a positive number, got {value!r}; "
                "run `mtfer calibrate --model ...` again to refit it"
            )
        out[str(task)] = float(value)
    return out


def calibrated(probs: Mapping[str, np.ndarray], temps: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Every task's probabilities with its temperature applied (softmax(log p / T), float64 so that no top class
    moves); tasks without one, or with 1.0, are returned as they are. With a test-time flip the temperature goes on
    the log of the averaged probabilities, as it was fitted (:func:`fit_calibration` is given the same averaged
    probabilities)."""
    return {t: _scaled(p, temps[t]) if temps.get(t, 1.0) != 1.0 else p for t, p in probs.items()}


def fit_calibration(probs: Mapping[str, np.ndarray], labels: np.ndarray) -> dict:
    """The metadata.json "calibration" section from the validation probabilities of every head (as the Predictor
    computes them, mirror-averaged when the bundle sets input.tta_flip) and the labels (N, 4) in TASK_NAMES order
    (-1 = none): per task the temperature (1.0 below 20 labelled faces), the ECE and negative log-likelihood
    before and after, and the number of faces it was fitted on."""
    from mtfer.tasks import TASK_NAMES

    labels = np.asarray(labels)
    section: dict = {
        "method": "temperature scaling (Guo et al., 2017): softmax(log p / T) per head",
        "fitted_on": "validation",
        "bins": BINS,
        "temperature": {},
        "ece_before": {},
        "ece_after": {},
        "nll_before": {},
        "nll_after": {},
        "n": {},
        "faces": int(len(labels)),
    }
    for task, p in probs.items():
        y = labels[:, TASK_NAMES.index(task)]
        t = fit_temperature(p, y)
        scaled = _scaled(p, t)
        keep = y >= 0
        section["temperature"][task] = t
        section["ece_before"][task] = expected_calibration_error(p, y)
        section["ece_after"][task] = expected_calibration_error(scaled, y)
        for key, q in (("nll_before", p), ("nll_after", scaled)):
            section[key][task] = (
                round(_nll(np.asarray(q, np.float64)[keep], y[keep].astype(int)), 4) if keep.any() else None
            )
        section["n"][task] = int(keep.sum())
    return section


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
    from mtfer import abstain

    section = metadata.get(abstain.METADATA_KEY)
    out: dict[str, float] = {}
    for task, entry in section.items() if isinstance(section, Mapping) else ():
        target = entry.get("target_accuracy") if isinstance(entry, Mapping) else None
        if isinstance(target, int | float) and not isinstance(target, bool) and 0 < float(target) <= 1:
            out[str(task)] = float(target)
    return out


def validation_split(
    metadata: Mapping,
    datasets: Sequence[Mapping] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """The splits the bundle was trained with (train, val, test), carved again from its data sets exactly as the
    trainer carved them (its config's protocol, validation fraction, seed and limit; its framing settings).
    `datasets`: [{"format", "root"}] to read instead of the recorded ones (same formats; for a bundle trained on
    another machine). ValueError when the data sets cannot be read or no longer split as they did in training
    (the faces it trained on could not be told from its validation faces)."""
    from mtfer.datasets.cache import prepare
    from mtfer.faces import PreprocessConfig
    from mtfer.training import TrainConfig, make_splits

    raw = metadata.get("config")
    try:
        config = TrainConfig.from_dict(dict(raw)) if isinstance(raw, Mapping) else None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the bundle's training settings (metadata config) cannot be read: {exc}") from None
    if config is None:
        raise ValueError("the bundle's metadata has no training config: its validation faces cannot be found")
    sets = [dict(d) for d in config.datasets]
    if not sets:
        raise ValueError(
            "the model's metadata names no data set (trained on faces given in code?): its validation faces cannot "
            "be found again"
        )
    if datasets:
        given = {str(d["format"]).strip().lower(): str(d["root"]) for d in datasets}
        unknown = sorted(set(given) - {str(d["format"]).strip().lower() for d in sets})
        if unknown:
            raise ValueError(
                f"--dataset {unknown[0]} was not one of the data sets this model trained on "
                f"({', '.join(d['format'] for d in sets)})"
            )
        sets = [{**d, "root": given.get(str(d["format"]).strip().lower(), d["root"])} for d in sets]
    preprocess = PreprocessConfig.from_dict(metadata["preprocessing"]) if "preprocessing" in metadata else None
    prepared = []
    for d in sets:
        try:
            prepared.append(prepare(d["format"], d["root"], config=preprocess, limit=config.limit, progress=progress))
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"the model's data set {d['format']} at {d['root']} cannot be read ({exc}); give its folder with "
                f"--dataset {d['format']}=DIR"
            ) from None
    splits = make_splits(prepared, config.protocol, config.val_fraction, config.seed)
    recorded = metadata.get("samples") or {}
    sizes = {k: len(v) for k, v in splits.items()}
    if recorded and any(sizes.get(k, 0) != n for k, n in recorded.items()):
        raise ValueError(
            f"the model's data sets now split into {sizes} faces, not {dict(recorded)} as when it trained (other "
            "files or framing?): its validation faces cannot be told apart from those it trained on"
        )
    if not len(splits.get("val", ())):
        raise ValueError("the model's data sets have no validation faces to calibrate on")
    return splits


def calibrate_bundle(
    model: str | os.PathLike | None,
    *,
    runs_dir: str | os.PathLike | None = None,
    datasets: Sequence[Mapping] | None = None,
    splits: Mapping[str, Any] | None = None,
    evaluate: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> CalibrationResult:
    """Fit one temperature per head on a bundle's validation faces (`mtfer calibrate --model M`) and store it in its
    metadata.json (``calibration``, with the ECE before and after), recompute its "not sure" thresholds
    (``abstain``, mtfer.abstain's chooser, each task keeping its target accuracy) on the calibrated validation
    probabilities, and, with `evaluate`, evaluate it again on its validation and test faces (its own
    evaluation/<data set>-<split>/ folders and metadata ``metrics``, now with calibrated probabilities).

    model: run id, bundle folder or 'default'. splits: the trainer's {"val": Split, "test": Split, ...} (default:
    :func:`validation_split`, carved again from the bundle's data sets). Accuracy does not change: a temperature
    never changes a head's top class."""
    from mtfer import abstain, runs
    from mtfer.evaluation import evaluate_predictions
    from mtfer.inference import predict_arrays
    from mtfer.training import TrainConfig, evaluate_splits

    path = runs.resolve_model(model, runs_dir)
    bundle = runs.load_bundle(path)
    if not os.access(path / runs.METADATA_FILE, os.W_OK) or not os.access(path, os.W_OK):
        raise PermissionError(f"{path} is read-only: copy the bundle somewhere writable to calibrate it")
    chosen = dict(splits) if splits is not None else validation_split(bundle.metadata, datasets, progress)
    val = chosen.get("val")
    if val is None or not len(val):
        raise ValueError(f"no validation faces to calibrate {path} on")
    flip = bool(bundle.metadata["input"].get("tta_flip", False))
    raw = predict_arrays(bundle.model, val.images, flip=flip)
    section = fit_calibration(raw, val.labels)
    section["created"] = runs.now_iso()
    scaled = calibrated(raw, section["temperature"])
    on_val = evaluate_predictions(scaled, val.labels, val.sources, ["val"] * len(val))
    thresholds = abstain.thresholds_from_samples(on_val.samples, bundle.tasks, abstain_targets(bundle.metadata))

    result = CalibrationResult(path, section, {t: th.to_dict() for t, th in thresholds.items()})
    metadata = runs.read_json(path / runs.METADATA_FILE)
    metadata[METADATA_KEY] = section
    metadata[abstain.METADATA_KEY] = {**(metadata.get(abstain.METADATA_KEY) or {}), **result.abstain}
    if evaluate:
        try:  # the settings evaluate_splits reads (the flip: the bundle's own, as the Predictor's)
            config = dataclasses.replace(TrainConfig.from_dict(dict(metadata["config"])), tta_flip=flip)
        except (KeyError, TypeError, ValueError):  # an injected split of a bundle without a readable config
            config = TrainConfig(tta_flip=flip)
        named = _source_names(path / runs.EVALUATION_DIR)
        result.metrics = evaluate_splits(bundle.model, config, dict(chosen), path, section["temperature"])
        metadata["metrics"] = result.metrics
        result.evaluations = sorted(path / runs.EVALUATION_DIR / key for key in result.metrics)
        for folder in result.evaluations:
            _keep_source_names(folder, named.get(folder.name))
    runs.atomic_write_json(path / runs.METADATA_FILE, metadata)
    return result


def _source_names(evaluations: Path) -> dict[str, list[str]]:
    """The image names of a bundle's saved evaluations (samples.csv's source column), by evaluation folder."""
    import pandas as pd

    from mtfer.evaluation import SAMPLES_FILE

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
    from mtfer.evaluation import load_evaluation, save_evaluation

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
