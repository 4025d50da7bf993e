"""Calibration maths: how far a head's confidence can be trusted, and the temperature that makes it trustworthy.

- :func:`reliability` and :func:`expected_calibration_error`: the data of a reliability diagram (15 equal-width
  confidence bins) and the expected calibration error (ECE), the bin-weighted gap between confidence and accuracy.
- :func:`fit_temperature`: one temperature per head, fitted on validation data by minimising the negative
  log-likelihood of softmax(log p / T) (Guo et al., 2017). Dividing the logits by a positive number never changes
  the top class, so accuracy is unchanged; only the confidence moves.
- :func:`fit_calibration`: a bundle's metadata.json ``calibration`` section (temperature, ECE and NLL before and
  after, per head).

Applying the temperatures is mtfer.core.backends (``temperatures``, ``calibrated``: every runtime, hence the
Predictor and every evaluation); fitting them on a bundle's validation faces and rewriting the bundle is
mtfer.train.finalize (`mtfer calibrate`, and the end of every training run).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.optimize import minimize_scalar

from mtfer.core.backends import EPS, apply_temperature, temperature_scaled
from mtfer.core.tasks import TASK_NAMES

BINS = 15


def _nll(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], EPS, 1.0))))


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


def fit_calibration(probs: Mapping[str, np.ndarray], labels: np.ndarray) -> dict:
    """The metadata.json "calibration" section from the validation probabilities of every head (as the Predictor
    computes them, mirror-averaged when the bundle sets input.tta_flip) and the labels (N, 4) in TASK_NAMES order
    (-1 = none): per task the temperature (1.0 below 20 labelled faces), the ECE and negative log-likelihood
    before and after, and the number of faces it was fitted on."""

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
        scaled = temperature_scaled(p, t)
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
