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
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

METADATA_KEY = "abstain"
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
    from mtfer.tasks import UNTAUGHT_CLASSES, get_task

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


def outside_race_mask(sources: Iterable[str]) -> np.ndarray:
    """True for UTKFace files whose race code has no class in the three-group race task (Indian, Others)."""
    from mtfer.datasets.utkface import parse_name

    mask = []
    for source in sources:
        parsed = parse_name(Path(str(source)).name)
        mask.append(isinstance(parsed, tuple) and parsed[1] is None)
    return np.asarray(mask, dtype=bool)


def thresholds_from_samples(
    samples: pd.DataFrame,
    tasks: Iterable[str],
    target: float | Mapping[str, float] = DEFAULT_TARGET_ACCURACY,
    *,
    min_support: int = MIN_SUPPORT,
) -> dict[str, Threshold]:
    """Thresholds from per-sample evaluation tables (mtfer.evaluation's samples.csv: <task>_true, _confidence,
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


def write_thresholds(bundle: str | os.PathLike, thresholds: Mapping[str, Threshold]) -> dict:
    """Store thresholds as metadata["abstain"] in a bundle's metadata.json (atomically); returns the metadata."""
    from mtfer import runs

    path = Path(bundle) / runs.METADATA_FILE
    metadata = runs.read_json(path)
    section = dict(metadata.get(METADATA_KEY) or {})
    section.update({task: t.to_dict() for task, t in thresholds.items()})
    metadata[METADATA_KEY] = section
    runs.atomic_write_json(path, metadata)
    return metadata


def validation_evaluations(bundle: str | os.PathLike, runs_dir: str | os.PathLike | None = None) -> list[Path]:
    """The saved validation evaluations of a bundle (its own evaluation/*-val and those under <runs>/evaluations)."""
    from mtfer import runs, settings

    chosen: dict[str, Path] = {}
    prefix = re.compile(rf"^{re.escape(Path(bundle).resolve().name)}-\d{{8}}-\d{{6}}(\.\d+)?-")
    for name in sorted(n for n in settings.list_evaluations(bundle, runs_dir) if n.endswith("-val")):
        folder = settings.evaluation_dir(bundle, name, runs_dir)
        own = folder.parent == Path(bundle) / runs.EVALUATION_DIR
        key = name if own else prefix.sub("", name)  # one evaluation per data set: the bundle's own, else newest
        if own or not (key in chosen and chosen[key].parent == Path(bundle) / runs.EVALUATION_DIR):
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
    from mtfer import runs
    from mtfer.evaluation import load_evaluation

    folders = [Path(e) for e in evaluations] if evaluations is not None else validation_evaluations(bundle)
    if not folders:
        raise ValueError(f"{bundle} has no saved validation evaluation: run `mtfer evaluate` with --split val first")
    samples = pd.concat([load_evaluation(f).samples for f in folders], ignore_index=True)
    if "split" in samples:
        samples = samples[samples["split"].isin(["val", ""])]
    tasks = list(runs.read_json(Path(bundle) / runs.METADATA_FILE)["tasks"])
    thresholds = thresholds_from_samples(samples, tasks, target, min_support=min_support)
    if write and thresholds:
        write_thresholds(bundle, thresholds)
    return thresholds


def min_confidences(metadata: Mapping, tasks: Iterable[str] | None = None) -> dict[str, float]:
    """{task: min_confidence} from a bundle's metadata, each task's default where the metadata has none (or a
    value that is not a probability)."""
    section = metadata.get(METADATA_KEY)
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
