"""When the app says "not sure" instead of a class: one confidence threshold per task, chosen on validation data
and kept in the model bundle's metadata.json, and the verdict for one face.

The rule (:func:`choose_threshold`): the threshold of a task is the **smallest** top-class probability `t` such
that, among the validation faces whose top probability is at least `t`, the top class is right at least
`target` of the time (default :data:`DEFAULT_TARGET_ACCURACY`, 70%: "a label the app states without 'not sure' was
right at least 7 times in 10 on faces the model never trained on"), with at least `min_support` faces left above
`t`. When no threshold reaches it, the one with the best accuracy above it is kept and `reached` is false. The
threshold is never below a "clear winner" floor, :func:`floor` = 1/k + 0.1 for a task with k classes that data can
teach (gender 0.6, race 0.43, age 0.3, emotion 0.24): a top class barely above an even split is never stated as sure
even when the model is right on most faces.

Faces from outside a task's classes (UTKFace's Indian and "Others" faces for the three-group race task) can be
passed as `outside`: any label stated for them counts as wrong, so the race threshold also keeps the app from
forcing such a face into one of the three groups when the model is unsure.

Stored as ``metadata["abstain"][task] = {"min_confidence": t, "target_accuracy": ..., "accuracy_above": ...,
"coverage": ..., "n": ..., "n_outside": ..., "reached": ...}`` by :func:`write_thresholds` (or
:func:`thresholds_for_bundle`, which reads the bundle's saved validation evaluations). A bundle without it falls back
to :data:`DEFAULT_MIN_CONFIDENCE`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from mtfer.core.tasks import UNTAUGHT_CLASSES, get_task
from mtfer.datasets.utkface import outside_race_mask

ABSTAIN_KEY = "abstain"
DEFAULT_TARGET_ACCURACY = 0.7
MIN_SUPPORT = 30
FLOOR_MARGIN = 0.1


# Used when a bundle's metadata has no abstain section: the thresholds that the rule above chose for the first
# shipped model (its fer2013-val and utkface-val evaluations, Indian and Others faces counted for race), rounded.
DEFAULT_MIN_CONFIDENCE: dict[str, float] = {"emotion": 0.45, "gender": 0.6, "race": 0.55, "age": 0.3}
FALLBACK_MIN_CONFIDENCE = 0.4  # a task without a default of its own


@dataclass(frozen=True)
class Threshold:
    """A task's abstain threshold and what it gives on the validation faces it was chosen on."""

    task: str
    min_confidence: float  # state the top class when its probability is >= this, else "not sure"
    target_accuracy: float
    accuracy_above: float  # accuracy of the validation faces at or above the threshold (outside faces count wrong)
    coverage: float  # fraction of the validation faces at or above it (labelled without "not sure")
    n: int  # validation faces with a label of this task
    n_outside: int = 0  # validation faces from outside the task's classes
    reached: bool = True

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "task"}


def choose_threshold(
    confidence: Sequence[float] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    target: float = DEFAULT_TARGET_ACCURACY,
    *,
    outside: Sequence[float] | np.ndarray = (),
    min_support: int = MIN_SUPPORT,
    task: str = "",
    floor: float = 0.0,
) -> Threshold:
    """The smallest threshold (not below `floor`) on the top-class probability at which the faces above it reach
    `target` accuracy.

    confidence, correct: each labelled validation face's top-class probability and whether that class was right.
    outside: top-class probabilities of faces that belong to none of the task's classes (always wrong if shown).
    """
    conf_in = np.asarray(confidence, dtype=np.float64).reshape(-1)
    ok_in = np.asarray(correct, dtype=bool).reshape(-1)
    conf_out = np.asarray(outside, dtype=np.float64).reshape(-1)
    if conf_in.shape != ok_in.shape:
        raise ValueError(f"confidence ({conf_in.size}) and correct ({ok_in.size}) differ in length")
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target accuracy must be in (0, 1], got {target}")
    conf = np.concatenate([conf_in, conf_out])
    ok = np.concatenate([ok_in, np.zeros(conf_out.size, bool)])
    if conf.size == 0:
        raise ValueError(f"no validation faces to choose the {task or 'task'} threshold on")
    if not np.isfinite(conf).all():
        raise ValueError("confidences must be finite")

    order = np.argsort(-conf, kind="stable")
    conf, ok = conf[order], ok[order]
    count = np.arange(1, conf.size + 1)
    accuracy = np.cumsum(ok) / count
    # A threshold equal to conf[i] keeps every face up to the last one with that same confidence.
    last = np.r_[conf[1:] != conf[:-1], True]
    candidates = np.flatnonzero(last)
    support = min(min_support, conf.size)
    candidates = candidates[count[candidates] >= support]
    good = candidates[accuracy[candidates] >= target]
    reached = good.size > 0
    # Smallest threshold = the candidate keeping the most faces; else the most accurate one (most faces on ties).
    i = (
        int(good[-1])
        if reached
        else int(candidates[np.flatnonzero(accuracy[candidates] == accuracy[candidates].max())[-1]])
    )
    threshold = 0.0 if i == conf.size - 1 else math.floor(float(conf[i]) * 10_000) / 10_000
    threshold = max(threshold, round(float(floor), 4))
    above = conf >= threshold
    accuracy_above = float(ok[above].mean()) if above.any() else 0.0
    return Threshold(
        task=task,
        min_confidence=threshold,
        target_accuracy=float(target),
        accuracy_above=round(accuracy_above, 4),
        coverage=round(float(above.mean()), 4),
        n=int(conf_in.size),
        n_outside=int(conf_out.size),
        reached=reached or accuracy_above >= target,
    )


def clear_winner_floor(task: str) -> float:
    """1/k + 0.1 for a task with k classes that data can teach (UNTAUGHT_CLASSES left out)."""

    taught = [c for c in get_task(task).classes if c not in UNTAUGHT_CLASSES.get(task, ())]
    return round(1 / max(1, len(taught)) + FLOOR_MARGIN, 4)


def threshold_from_probabilities(
    probabilities: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    target: float = DEFAULT_TARGET_ACCURACY,
    *,
    outside: np.ndarray | None = None,
    min_support: int = MIN_SUPPORT,
    task: str = "",
) -> Threshold:
    """:func:`choose_threshold` from a task's softmax rows (N, k) and class indices (N,; -1 = no label, skipped);
    `outside`: softmax rows (M, k) of faces from none of the task's classes."""
    probs = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    if probs.ndim != 2 or probs.shape[0] != y.size:
        raise ValueError(f"probabilities {probs.shape} do not match {y.size} labels")
    keep = y >= 0
    probs, y = probs[keep], y[keep]
    out = np.zeros((0,)) if outside is None or len(outside) == 0 else np.asarray(outside, np.float64).max(axis=1)
    return choose_threshold(
        probs.max(axis=1), probs.argmax(axis=1) == y, target, outside=out, min_support=min_support, task=task
    )


def thresholds_from_samples(
    samples: pd.DataFrame,
    tasks: Iterable[str],
    target: float | Mapping[str, float] = DEFAULT_TARGET_ACCURACY,
    *,
    min_support: int = MIN_SUPPORT,
) -> dict[str, Threshold]:
    """Thresholds from per-sample evaluation tables (mtfer.assess.evaluation's samples.csv: <task>_true, _confidence,
    _correct and source), validation rows only. Race also counts UTKFace's Indian and Others faces as outside."""
    out: dict[str, Threshold] = {}
    for task in tasks:
        columns = [f"{task}_true", f"{task}_confidence", f"{task}_correct"]
        if any(c not in samples for c in columns):
            continue
        labelled = samples[columns[0]].fillna("").astype(str) != ""
        outside = np.zeros(len(samples), bool)
        if task == "race" and "source" in samples:
            outside = ~labelled.to_numpy() & outside_race_mask(samples["source"])
        if not labelled.any():
            continue
        goal = target.get(task, DEFAULT_TARGET_ACCURACY) if isinstance(target, Mapping) else target
        out[task] = choose_threshold(
            samples.loc[labelled, columns[1]].astype(float).to_numpy(),
            samples.loc[labelled, columns[2]].astype(bool).to_numpy(),
            goal,
            outside=samples.loc[outside, columns[1]].astype(float).to_numpy(),
            min_support=min_support,
            task=task,
            floor=clear_winner_floor(task),
        )
    return out


def min_confidences(metadata: Mapping, tasks: Iterable[str] | None = None) -> dict[str, float]:
    """{task: min_confidence} from a bundle's metadata, each task's default where the metadata has none (or a
    value that is not a probability)."""
    section = metadata.get(ABSTAIN_KEY)
    section = section if isinstance(section, Mapping) else {}
    names = list(tasks) if tasks is not None else list(metadata.get("tasks") or DEFAULT_MIN_CONFIDENCE)
    out = {}
    for task in names:
        entry = section.get(task)
        value = entry.get("min_confidence") if isinstance(entry, Mapping) else None
        ok = isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= float(value) <= 1.0
        out[task] = float(value) if ok else DEFAULT_MIN_CONFIDENCE.get(task, FALLBACK_MIN_CONFIDENCE)
    return out


@dataclass(frozen=True)
class Verdict:
    """What to say about one task of one face: its top class, the runner-up, and whether it is sure enough."""

    task: str
    label: str  # class identifier of the top class
    confidence: float
    runner_up: str | None
    runner_up_confidence: float | None
    sure: bool


def verdict(
    task: str, probabilities: Mapping[str, float], min_confidence: float, hidden: Iterable[str] = ()
) -> Verdict:
    """The top class among those not `hidden` (classes no data set teaches), and whether its probability reaches
    `min_confidence`."""
    skip = set(hidden)
    ranked = sorted(((p, c) for c, p in probabilities.items() if c not in skip), key=lambda pc: -pc[0])
    if not ranked:
        raise ValueError(f"no {task} class to choose from")
    (p1, c1), second = ranked[0], ranked[1] if len(ranked) > 1 else None
    return Verdict(
        task,
        c1,
        float(p1),
        second[1] if second else None,
        float(second[0]) if second else None,
        float(p1) >= min_confidence,
    )
