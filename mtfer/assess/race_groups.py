"""Race beyond the paper's three groups. UTKFace labels five groups; the paper's task has classes for three (White,
Black, Asian), and the race task adds "other" for the rest (Indian and Others faces; models from before it have no
such class). Shown to people, such a face should get "other / not sure" (the Predict page's promise), while the three
groups' faces should get a right answer and rarely a "not sure". Measured on an evaluation's per-face table (samples.csv) with the bundle's race threshold, the same rule the
page, the CSVs and the command line apply: a face is answered "other / not sure" when the model says "other" (a
model with that class) or its top race probability is below the threshold."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mtfer.core.tasks import RACE, RACE_OTHER, UTKFACE_RACE, UTKFACE_RACE_GROUPS
from mtfer.datasets.utkface import race_code

OTHER = RACE.classes[RACE_OTHER]  # the class that answers for every group the three classes do not cover
OUTSIDE_CODES = tuple(code for code, index in UTKFACE_RACE.items() if index == RACE_OTHER)  # Indian, Others
INSIDE_CODES = tuple(code for code in UTKFACE_RACE if code not in OUTSIDE_CODES)
COLUMNS = ("Group", "Faces", 'Answered "other / not sure"', "Accuracy (three groups)")


@dataclass(frozen=True)
class RaceCoverage:
    """How the race head answers UTKFace's five groups: a table per group (COLUMNS: faces, share answered "other /
    not sure", accuracy on the three groups' faces) and the three figures that sum it up; shares are 0-1, None
    where no face counts."""

    groups: pd.DataFrame
    outside_other: float | None  # Indian and Others faces answered "other / not sure"
    three_class_accuracy: float | None  # the three groups' faces: right answers, every face counted
    unanswered: float | None  # the three groups' faces answered "other / not sure"
    min_confidence: float

    def summary(self) -> str:
        """One sentence for people: '4% of Indian and Others faces get "other / not sure"; ...'."""
        return summary_text(self.figures())

    def figures(self) -> dict[str, float | int | None]:
        """The summing-up figures as a bundle's metadata keeps them (``race_groups``), with the faces counted."""
        counts = dict(zip(self.groups[COLUMNS[0]], self.groups[COLUMNS[1]], strict=True))
        return {
            "outside_other": self.outside_other,
            "three_class_accuracy": self.three_class_accuracy,
            "unanswered": self.unanswered,
            "min_confidence": self.min_confidence,
            "outside_faces": int(sum(counts.get(UTKFACE_RACE_GROUPS[c], 0) for c in OUTSIDE_CODES)),
            "three_group_faces": int(sum(counts.get(UTKFACE_RACE_GROUPS[c], 0) for c in INSIDE_CODES)),
        }


def summary_text(figures: Mapping[str, object]) -> str:
    """One sentence from :meth:`RaceCoverage.figures` (or a bundle's stored copy of them)."""
    parts = []
    if (share := figures.get("outside_other")) is not None:
        parts.append(f'{share:.0%} of Indian and Others faces get "other / not sure"')
    if (share := figures.get("three_class_accuracy")) is not None:
        parts.append(f"{share:.1%} of White, Black and Asian faces get their group right")
    if (share := figures.get("unanswered")) is not None:
        parts.append(f'{share:.0%} of those get "other / not sure"')
    return "; ".join(parts) + "." if parts else ""


def race_coverage(samples: pd.DataFrame, min_confidence: float) -> RaceCoverage | None:
    """The measure on an evaluation's samples (source, race_true, race_pred, race_confidence, race_correct), by the
    group in each UTKFace file name; None when no face's name carries a UTKFace race code (another data set)."""
    needed = ("source", "race_pred", "race_confidence")
    if any(column not in samples for column in needed) or samples.empty:
        return None
    codes = pd.Series([race_code(s) for s in samples["source"].astype(str)], index=samples.index, dtype="Int64")
    known = codes.notna()
    if not known.any():
        return None
    confidence = pd.to_numeric(samples["race_confidence"], errors="coerce").to_numpy(np.float64)
    other_or_unsure = (samples["race_pred"].astype(str).to_numpy() == OTHER) | ~(confidence >= min_confidence)
    correct = samples.get("race_correct", pd.Series("", index=samples.index)).astype(str).str.lower() == "true"
    rows = []
    for code, title in UTKFACE_RACE_GROUPS.items():
        mine = (codes == code).fillna(False).to_numpy()
        n = int(mine.sum())
        inside = code in INSIDE_CODES
        rows.append(
            {
                COLUMNS[0]: title,
                COLUMNS[1]: n,
                COLUMNS[2]: float(other_or_unsure[mine].mean()) if n else np.nan,
                COLUMNS[3]: float(correct.to_numpy()[mine].mean()) if n and inside else np.nan,
            }
        )
    outside = codes.isin(OUTSIDE_CODES).fillna(False).to_numpy()
    inside = known.to_numpy() & ~outside
    return RaceCoverage(
        pd.DataFrame(rows, columns=list(COLUMNS)),
        float(other_or_unsure[outside].mean()) if outside.any() else None,
        float(correct.to_numpy()[inside].mean()) if inside.any() else None,
        float(other_or_unsure[inside].mean()) if inside.any() else None,
        float(min_confidence),
    )


def paper_measure_text(accuracy: float | None) -> str:
    """' As the paper scores race (the likeliest of its three groups): 91.9%.' (evaluation metrics
    ``three_groups_accuracy``), or '' for an evaluation without it."""
    return "" if accuracy is None else f" As the paper scores race (the likeliest of its three groups): {accuracy:.1%}."
