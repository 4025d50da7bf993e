"""Calibration: reliability data, ECE, temperature scaling that fixes over-confidence without changing accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from mtfer.assess.calibration import expected_calibration_error, fit_calibration, fit_temperature, reliability
from mtfer.core.backends import apply_temperature, calibrated, temperatures


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sampled(n: int = 6000, classes: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits): a perfectly calibrated model's view."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, classes))
    p = _softmax(logits)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    return logits, labels


def test_temperature_scaling_undoes_overconfidence_and_keeps_accuracy() -> None:
    logits, labels = _sampled()
    overconfident = _softmax(3.0 * logits)  # a network that is three times too sure
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(3.0, rel=0.15)
    fixed = apply_temperature(overconfident, t)
    assert np.array_equal(fixed.argmax(1), overconfident.argmax(1))  # accuracy cannot change
    before, after = expected_calibration_error(overconfident, labels), expected_calibration_error(fixed, labels)
    assert after < 0.03 < before
    assert np.allclose(fixed.sum(1), 1.0, atol=1e-5)


def test_calibrated_probabilities_need_no_temperature() -> None:
    logits, labels = _sampled(seed=1)
    assert fit_temperature(_softmax(logits), labels) == pytest.approx(1.0, abs=0.15)
    assert np.array_equal(apply_temperature(_softmax(logits), 1.0), _softmax(logits).astype(np.float32))


def test_reliability_bins_and_masked_labels() -> None:
    probs = np.array([[0.97, 0.03], [0.92, 0.08], [0.55, 0.45], [0.3, 0.7], [0.5, 0.5]])
    labels = np.array([0, 1, 0, 1, -1])  # the last sample has no label: left out
    r = reliability(probs, labels, bins=10)
    assert sum(r["count"]) == 4 and len(r["edges"]) == 11
    top = r["count"].index(2)  # 0.92 and 0.97 share the last bin: one right, one wrong
    assert r["accuracy"][top] == 0.5 and r["confidence"][top] == pytest.approx(0.945)
    # ECE by hand: bin 0.9-1.0 |0.5-0.945| * 2/4, bin 0.5-0.6 |1-0.55| * 1/4, bin 0.6-0.7 |1-0.7| * 1/4
    assert r["ece"] == pytest.approx((0.445 * 2 + 0.45 + 0.3) / 4, abs=1e-4)
    assert reliability(probs[:0], labels[:0])["ece"] is None
    assert fit_temperature(probs, labels) == 1.0  # too few labelled samples to fit
    with pytest.raises(ValueError, match="positive"):
        apply_temperature(probs, 0.0)


def test_calibrated_keeps_every_top_class_even_between_near_ties() -> None:
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(7), 5000).astype(np.float32)
    second = np.argsort(p, axis=1)[:, -2]
    p[np.arange(len(p)), second] = np.nextafter(p.max(axis=1), np.float32(0))  # runner-up one float32 step below
    p /= p.sum(axis=1, keepdims=True)
    for t in (0.3, 1.7, 8.0):
        scaled = calibrated({"emotion": p}, {"emotion": t})["emotion"]
        assert np.array_equal(scaled.argmax(1), p.argmax(1))
        assert np.allclose(scaled.sum(1), 1.0)
    assert calibrated({"emotion": p, "age": p[:, :5]}, {"age": 1.0})["emotion"] is p  # no temperature: as it is


def test_temperatures_from_metadata() -> None:
    assert temperatures({"tasks": {}}) == {}  # a bundle never calibrated
    assert temperatures({"calibration": {"temperature": {"emotion": 1.5, "age": 1}}}) == {"emotion": 1.5, "age": 1.0}
    for bad in (0, -2.0, float("nan"), "1.2", True, None):
        with pytest.raises(ValueError, match="calibration.temperature.emotion must be a positive number"):
            temperatures({"calibration": {"temperature": {"emotion": bad}}})
    with pytest.raises(ValueError, match="must map each task"):
        temperatures({"calibration": {"temperature": [1.0]}})


def test_fit_calibration_section_per_head() -> None:
    logits, labels = _sampled(n=3000)
    y = np.full((len(labels), 4), -1)
    y[:, 0] = labels
    y[:10, 3] = 0  # ten age labels: too few to fit
    probs = {"emotion": _softmax(2.5 * logits), "age": _softmax(logits[:, :5])}
    section = fit_calibration(probs, y)
    assert section["temperature"]["emotion"] == pytest.approx(2.5, rel=0.15) and section["temperature"]["age"] == 1.0
    assert section["n"] == {"emotion": 3000, "age": 10} and section["faces"] == 3000 and section["bins"] == 15
    assert section["ece_after"]["emotion"] < 0.03 < section["ece_before"]["emotion"]
    assert section["nll_after"]["emotion"] < section["nll_before"]["emotion"]
    assert section["ece_after"]["age"] == section["ece_before"]["age"]
