"""Race beyond the three groups (mtfer.assess.race_groups): UTKFace's Indian and Others faces should get "other /
not sure", the three groups' faces a right answer; measured by group on a per-face table made here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mtfer.assess.race_groups import COLUMNS, race_coverage


def _samples(rows: list[tuple[int, str, str, float]]) -> pd.DataFrame:
    """(UTKFace race code, true class or "", predicted class, confidence) -> an evaluation's samples table."""
    return pd.DataFrame(
        {
            "source": [f"utkface/UTKFace/30_0_{code}_2017{i:04d}.jpg.chip.jpg" for i, (code, *_) in enumerate(rows)],
            "race_true": [t for _, t, _, _ in rows],
            "race_pred": [p for _, _, p, _ in rows],
            "race_confidence": [c for *_, c in rows],
            "race_correct": [("True" if t == p else "False") if t else "" for _, t, p, _ in rows],
        }
    )


def test_outside_faces_count_as_answered_when_unsure_or_other():
    samples = _samples(
        [
            (0, "caucasian", "caucasian", 0.9),  # right and sure
            (0, "caucasian", "asian", 0.4),  # wrong and unsure: unanswered
            (1, "african_american", "african_american", 0.45),  # right but unsure: unanswered, still right
            (3, "", "caucasian", 0.95),  # Indian, confidently called White: the failure the measure catches
            (3, "", "asian", 0.3),  # Indian, unsure: "other / not sure"
            (4, "", "other", 0.8),  # Others, answered with the "other" class of a model that has one
        ]
    )
    report = race_coverage(samples, min_confidence=0.5)
    assert report is not None
    assert report.outside_other == pytest.approx(2 / 3)
    assert report.three_class_accuracy == pytest.approx(2 / 3)
    assert report.unanswered == pytest.approx(2 / 3)
    table = report.groups.set_index(COLUMNS[0])
    assert list(table.index) == ["White", "Black", "Asian", "Indian", "Others"]
    assert table[COLUMNS[1]].tolist() == [2, 1, 0, 2, 1]
    assert table.loc["Indian", COLUMNS[2]] == 0.5 and table.loc["Others", COLUMNS[2]] == 1.0
    assert np.isnan(table.loc["Indian", COLUMNS[3]]) and table.loc["White", COLUMNS[3]] == 0.5
    assert np.isnan(table.loc["Asian", COLUMNS[2]])  # no face: no figure rather than 0%
    assert report.summary().startswith('67% of Indian and Others faces get "other / not sure"')


def test_the_threshold_decides_what_unsure_means():
    samples = _samples([(3, "", "caucasian", 0.6), (0, "caucasian", "caucasian", 0.6)])
    assert race_coverage(samples, 0.5).outside_other == 0.0
    assert race_coverage(samples, 0.7).outside_other == 1.0 and race_coverage(samples, 0.7).unanswered == 1.0


def test_other_data_sets_have_no_race_groups():
    fer = pd.DataFrame(
        {"source": ["fer2013/test/happy/1.png"], "race_true": [""], "race_pred": ["asian"], "race_confidence": [0.9]}
    )
    assert race_coverage(fer, 0.5) is None
    assert race_coverage(fer.drop(columns="race_pred"), 0.5) is None
    assert race_coverage(fer.iloc[:0], 0.5) is None
