"""mtfer.assess.abstain: the "not sure" thresholds chosen on validation data, stored in a bundle, and the verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtfer.assess import abstain
from mtfer.assess.evaluation import evaluate_predictions, save_evaluation
from mtfer.core.tasks import TASK_NAMES, TASKS
from mtfer.datasets import utkface
from mtfer.train import finalize


def test_the_smallest_threshold_whose_faces_reach_the_target():
    # 10 faces per confidence level; the right share grows with confidence: 0.2 -> 2/10 ... 0.9 -> 9/10 right.
    levels = np.arange(2, 10) / 10
    confidence = np.repeat(levels, 10)
    correct = np.concatenate([np.arange(10) < round(level * 10) for level in levels])
    # Faces at >= 0.7 are right (7 + 8 + 9) / 30 = 80% of the time; at >= 0.6, (6+7+8+9)/40 = 75%.
    t = abstain.choose_threshold(confidence, correct, 0.75, min_support=1)
    assert t.min_confidence == 0.6 and t.accuracy_above == 0.75 and t.coverage == 0.5 and t.reached
    assert abstain.choose_threshold(confidence, correct, 0.8, min_support=1).min_confidence == 0.7
    # A target the model reaches on every face: it never abstains (unless a floor says otherwise).
    everything = abstain.choose_threshold(confidence, correct, 0.5, min_support=1)
    assert everything.min_confidence == 0.0 and everything.coverage == 1.0
    assert abstain.choose_threshold(confidence, correct, 0.5, min_support=1, floor=0.3).min_confidence == 0.3


def test_unreachable_targets_support_and_bad_input():
    confidence = np.array([0.9, 0.8, 0.7, 0.6])
    correct = np.array([False, True, True, False])
    t = abstain.choose_threshold(confidence, correct, 0.99, min_support=1)
    assert not t.reached and t.min_confidence == 0.7 and t.accuracy_above == pytest.approx(2 / 3, abs=1e-4)
    # With at least 3 faces above it, 0.9 alone (0% right) and 0.8 (50%) cannot be chosen anyway.
    assert abstain.choose_threshold(confidence, correct, 0.6, min_support=3).min_confidence == 0.7
    with pytest.raises(ValueError):
        abstain.choose_threshold([], [], 0.7)
    with pytest.raises(ValueError):
        abstain.choose_threshold([0.5], [True, False], 0.7)
    with pytest.raises(ValueError):
        abstain.choose_threshold([0.5], [True], 0.0)


def test_faces_from_outside_the_classes_raise_the_threshold():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.34, 1.0, 400)
    correct = rng.uniform(0, 1, 400) < confidence  # right as often as it says
    inside = abstain.choose_threshold(confidence, correct, 0.8)
    outside = abstain.choose_threshold(confidence, correct, 0.8, outside=rng.uniform(0.34, 0.9, 200))
    assert outside.min_confidence > inside.min_confidence and outside.n_outside == 200 and outside.n == 400


def test_threshold_from_probabilities_skips_missing_labels():
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.55, 0.45], [0.2, 0.8]])
    labels = np.array([0, 1, -1, 1])
    t = abstain.threshold_from_probabilities(probabilities, labels, 0.99, min_support=1)
    assert t.n == 3 and t.min_confidence == 0.8 and t.accuracy_above == 1.0
    with pytest.raises(ValueError):
        abstain.threshold_from_probabilities(probabilities, labels[:2])


def test_clear_winner_floor_counts_only_taught_classes():
    assert abstain.clear_winner_floor("gender") == 0.6  # male, female: "unsure" is untaught
    assert abstain.clear_winner_floor("race") == round(1 / 4 + 0.1, 4)
    assert abstain.clear_winner_floor("age") == 0.3


def _samples(rng: np.random.Generator) -> pd.DataFrame:
    """A samples.csv-like table: 300 FER-like rows (emotion) and 300 UTKFace-like rows (race), 100 of them Indian."""
    rows = []
    for i in range(300):
        conf = float(rng.uniform(0.2, 1.0))
        rows.append({"source": f"fer/{i}.jpg", "split": "val", "emotion_true": "happy",
                     "emotion_confidence": conf, "emotion_correct": bool(rng.uniform() < conf),
                     "race_true": "", "race_confidence": 0.9, "race_correct": None})  # fmt: skip
    for i in range(300):
        indian = i < 100
        conf = float(rng.uniform(0.4, 1.0))
        name = f"utkface/UTKFace/30_1_{3 if indian else 0}_2017010{i:09d}.jpg.chip.jpg"
        rows.append({"source": name, "split": "val", "emotion_true": "", "emotion_confidence": 0.5,
                     "emotion_correct": None, "race_true": "" if indian else "caucasian", "race_confidence": conf,
                     "race_correct": None if indian else bool(rng.uniform() < conf)})  # fmt: skip
    return pd.DataFrame(rows)


def test_thresholds_from_evaluation_samples_count_indian_faces_for_race():
    samples = _samples(np.random.default_rng(1))
    thresholds = abstain.thresholds_from_samples(samples, ["emotion", "race", "gender"])
    assert set(thresholds) == {"emotion", "race"}  # no gender column
    assert thresholds["emotion"].n == 300 and thresholds["emotion"].n_outside == 0
    assert thresholds["race"].n == 200 and thresholds["race"].n_outside == 100
    assert thresholds["race"].min_confidence >= abstain.clear_winner_floor("race")
    assert list(utkface.outside_race_mask(["a/20_1_3_1.jpg.chip.jpg", "20_1_0_1.jpg", "x.jpg", "9_0_4_1.jpg"])) == [
        True, False, False, True,
    ]  # fmt: skip


def test_min_confidences_from_metadata_with_defaults():
    tasks = {t: list(TASKS[t].classes) for t in TASK_NAMES}
    assert abstain.min_confidences({"tasks": tasks}) == abstain.DEFAULT_MIN_CONFIDENCE
    metadata = {
        "tasks": tasks,
        "abstain": {"emotion": {"min_confidence": 0.31}, "race": {"min_confidence": "high"}, "age": 7},
    }
    got = abstain.min_confidences(metadata)
    assert got["emotion"] == 0.31  # from the metadata
    assert got["race"] == abstain.DEFAULT_MIN_CONFIDENCE["race"] and got["age"] == abstain.DEFAULT_MIN_CONFIDENCE["age"]
    assert abstain.min_confidences({}, ["emotion", "new_task"]) == {"emotion": 0.45, "new_task": 0.4}


def _bundle_with_val_evaluation(folder: Path, rng: np.random.Generator) -> Path:
    """A bundle folder (metadata.json only) with one saved validation evaluation, as mtfer.assess.evaluation writes it."""
    folder.mkdir(parents=True)
    tasks = {t: list(TASKS[t].classes) for t in TASK_NAMES}
    (folder / "metadata.json").write_text(json.dumps({"tasks": tasks, "input": {"size": 50}}))
    n = 200
    labels = np.full((n, 4), -1)
    labels[:, 0] = rng.integers(0, 7, n)
    labels[:, 1] = rng.integers(0, 2, n)
    probabilities = {}
    for j, task in enumerate(TASK_NAMES):
        p = rng.dirichlet(np.ones(TASKS[task].num_classes), n)
        if labels[0, j] >= 0:  # make the model right more often when it is confident
            sure = p.max(axis=1) > 0.5
            p[sure] = np.eye(TASKS[task].num_classes)[labels[sure, j]] * 0.6 + p[sure] * 0.4
        probabilities[task] = p
    sources = [f"utkface/UTKFace/30_1_{3 if i % 4 == 0 else 0}_2017010{i:09d}.jpg.chip.jpg" for i in range(n)]
    evaluation = evaluate_predictions(probabilities, labels, sources, ["val"] * n)
    save_evaluation(evaluation, folder / "evaluation" / "utkface-val")
    return folder


def test_calibrate_bundle_writes_thresholds_that_min_confidences_reads(tmp_path, monkeypatch):
    monkeypatch.setenv("MTFER_RUNS", str(tmp_path / "runs"))
    bundle = _bundle_with_val_evaluation(tmp_path / "bundle", np.random.default_rng(2))
    assert finalize.validation_evaluations(bundle) == [bundle / "evaluation" / "utkface-val"]
    thresholds = finalize.thresholds_for_bundle(bundle, {"emotion": 0.5}, min_support=10)
    assert set(thresholds) == {"emotion", "gender"}  # the tasks with labels in the evaluation
    assert thresholds["emotion"].target_accuracy == 0.5 and thresholds["gender"].target_accuracy == 0.7
    metadata = json.loads((bundle / "metadata.json").read_text())
    assert metadata["abstain"]["emotion"] == thresholds["emotion"].to_dict()
    assert metadata["tasks"]["emotion"] == list(TASKS["emotion"].classes)  # the rest kept
    got = abstain.min_confidences(metadata)
    assert got["emotion"] == thresholds["emotion"].min_confidence and got["race"] == 0.55
    with pytest.raises(ValueError, match="no saved validation evaluation"):
        finalize.thresholds_for_bundle(_empty_bundle(tmp_path / "empty"))


def _empty_bundle(folder: Path) -> Path:
    folder.mkdir()
    (folder / "metadata.json").write_text(json.dumps({"tasks": {"emotion": list(TASKS["emotion"].classes)}}))
    return folder


def test_verdicts_top_runner_up_and_hidden_classes():
    v = abstain.verdict("emotion", {"sad": 0.28, "angry": 0.21, "happy": 0.2, "fear": 0.31}, 0.4)
    assert (v.label, v.runner_up, v.sure) == ("fear", "sad", False)
    assert v.confidence == pytest.approx(0.31) and v.runner_up_confidence == pytest.approx(0.28)
    g = abstain.verdict("gender", {"male": 0.3, "female": 0.25, "unsure": 0.45}, 0.2, hidden=["unsure"])
    assert (g.label, g.runner_up, g.sure) == ("male", "female", True)
    one = abstain.verdict("x", {"a": 1.0}, 0.5)
    assert one.runner_up is None and one.sure
    with pytest.raises(ValueError):
        abstain.verdict("gender", {"unsure": 1.0}, 0.5, hidden=["unsure"])
