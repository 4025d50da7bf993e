"""Per-task evaluation of a multi-task model's predictions: metrics, confusion matrices, per-sample
tables and emotion-accuracy slices by gender, race and age.

Pure numpy / pandas / scikit-learn: the caller runs the model and passes its softmax probabilities.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
)

from mtfer.assess.calibration import expected_calibration_error, reliability
from mtfer.core import bundles
from mtfer.core.backends import calibrated
from mtfer.core.backends import temperatures as calibration_temperatures
from mtfer.core.bundles import METRICS_FILE
from mtfer.core.inference import Predictor
from mtfer.core.preprocess import PreprocessConfig
from mtfer.core.tasks import EMOTION, LEGACY_CLASSES, RACE, TASK_NAMES, UNTAUGHT_CLASSES, get_task
from mtfer.datasets.cache import EmptySplitError, prepare
from mtfer.store import runs

SAMPLES_FILE = "samples.csv"
SLICES_FILE = "slices.csv"
SLICE_ATTRIBUTES: tuple[str, ...] = ("gender", "race", "age")
SLICE_COLUMNS: tuple[str, ...] = ("attribute", "group", "n", "accuracy")
# Softmax rows may drift from 1 in float16/bfloat16; beyond this they are not probabilities.
_ROW_SUM_TOLERANCE = 1e-2


class EvaluationError(ValueError):
    """Inputs or saved files that cannot be evaluated or read back."""


@dataclass
class Evaluation:
    metrics: dict  # JSON-able: {"n", "tasks": {task: {...}}, "slices": {attribute: {group: {...}}}}
    samples: pd.DataFrame  # one row per sample, in input order
    slices: pd.DataFrame  # attribute, group, n, accuracy (emotion accuracy per attribute class)


# --- evaluation ------------------------------------------------------------------------------------
def evaluate_predictions(
    probabilities: Mapping[str, np.ndarray],
    labels: np.ndarray,
    sources: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
) -> Evaluation:
    """Score softmax `probabilities` (task -> (N, k)) against `labels` ((N, 4) class indices in
    TASK_NAMES order, -1 = missing); only tasks in `probabilities` are scored."""
    label_array = _check_labels(labels)
    n = label_array.shape[0]
    probs = _check_probabilities(probabilities, n)
    columns: dict[str, object] = {"source": _check_strings(sources, n, "sources")}
    if splits is not None:
        columns["split"] = _check_strings(splits, n, "splits")

    task_metrics: dict[str, dict] = {}
    for name, p in probs.items():
        task = get_task(name)
        y = label_array[:, TASK_NAMES.index(name)]
        predicted = p.argmax(axis=1)
        labelled = y >= 0
        task_metrics[name] = _task_metrics(name, y[labelled], predicted[labelled], p[labelled])
        columns[f"{name}_true"] = [task.classes[i] if i >= 0 else "" for i in y]
        columns[f"{name}_pred"] = [task.classes[i] for i in predicted]
        columns[f"{name}_confidence"] = p[np.arange(n), predicted]
        columns[f"{name}_correct"] = pd.array(
            [bool(c) if ok else None for c, ok in zip(predicted == y, labelled, strict=True)], dtype="boolean"
        )

    slices = _slices(label_array, probs[EMOTION.name].argmax(axis=1)) if EMOTION.name in probs else {}
    metrics = {"n": n, "tasks": task_metrics, "slices": slices}
    return Evaluation(metrics=metrics, samples=_typed_samples(pd.DataFrame(columns)), slices=_slice_frame(slices))


def evaluate_calibrated(
    probabilities: Mapping[str, np.ndarray],
    labels: np.ndarray,
    sources: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    temperatures: Mapping[str, float] | None = None,
) -> Evaluation:
    """:func:`evaluate_predictions` of a bundle's uncalibrated `probabilities` once its `temperatures` (metadata
    calibration.temperature) are applied, as the Predictor applies them. The metrics then also say so:
    ``calibration.temperature`` and, per scaled task, ``ece_uncalibrated`` (the ECE the raw network gave)."""
    temps = {t: float(v) for t, v in (temperatures or {}).items() if t in probabilities}
    evaluation = evaluate_predictions(calibrated(probabilities, temps), labels, sources, splits)
    if temps:
        label_array = np.asarray(labels)
        evaluation.metrics["calibration"] = {"temperature": temps}
        for task, entry in evaluation.metrics["tasks"].items():
            if task in temps:
                y = label_array[:, TASK_NAMES.index(task)]
                entry["ece_uncalibrated"] = expected_calibration_error(probabilities[task], y)
    return evaluation


def _task_metrics(name: str, y: np.ndarray, predicted: np.ndarray, p: np.ndarray) -> dict:
    classes = get_task(name).classes
    k = len(classes)
    everything = list(range(k))
    if len(y) == 0:
        return {
            "n": 0,
            "accuracy": None,
            "loss": None,
            "macro_f1": None,
            "macro_f1_classes": [],
            "classes": list(classes),
            "confusion": [[0] * k for _ in range(k)],
            "per_class": {c: {"precision": None, "recall": None, "f1": None, "support": 0} for c in classes},
            "ece": None,
            "reliability": reliability(p, y),
        }
    precision, recall, f1, support = precision_recall_fscore_support(y, predicted, labels=everything, zero_division=0)
    # Macro F1 over the classes this data set has (UTKFace has no "unsure" gender, CK+-like sets no neutral): an
    # absent class would count as an F1 of 0 and pull the average down for a reason that is not the model's.
    present = sorted({int(v) for v in y})
    diagram = reliability(p, y)  # 15 confidence bins: how often the top class was right at each confidence
    return {
        "n": len(y),
        "accuracy": float(accuracy_score(y, predicted)),
        "loss": float(log_loss(y, p, labels=everything)),
        "macro_f1": float(f1_score(y, predicted, labels=present, average="macro", zero_division=0)),
        "macro_f1_classes": [classes[i] for i in present],
        "classes": list(classes),
        "confusion": confusion_matrix(y, predicted, labels=everything).tolist(),
        "per_class": {
            c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                "support": int(support[i])}
            for i, c in enumerate(classes)
        },
        "ece": diagram["ece"],
        "reliability": diagram,
        **({"three_groups_accuracy": three_groups_accuracy(y, p)} if name == RACE.name else {}),
    }  # fmt: skip


def three_groups_accuracy(y: np.ndarray, p: np.ndarray) -> float | None:
    """Race as the paper scores it: on the faces of its three groups, how often the likeliest of those three classes
    is right (the "other" class set aside); None without such faces."""
    three = [i for i, c in enumerate(RACE.classes) if c in LEGACY_CLASSES[RACE.name]]
    inside = np.isin(y, three)
    if not inside.any():
        return None
    return float((np.asarray(p)[inside][:, three].argmax(axis=1) == y[inside]).mean())


def _slices(labels: np.ndarray, emotion_predicted: np.ndarray) -> dict:
    emotion_true = labels[:, TASK_NAMES.index(EMOTION.name)]
    out: dict[str, dict] = {}
    for attribute in SLICE_ATTRIBUTES:
        groups = labels[:, TASK_NAMES.index(attribute)]
        out[attribute] = {}
        for i, group in enumerate(get_task(attribute).classes):
            member = (groups == i) & (emotion_true >= 0)
            count = int(member.sum())
            accuracy = float(accuracy_score(emotion_true[member], emotion_predicted[member])) if count else None
            out[attribute][group] = {"n": count, "accuracy": accuracy}
    return out


def _slice_frame(slices: Mapping[str, Mapping[str, Mapping]]) -> pd.DataFrame:
    rows = [
        {"attribute": attribute, "group": group, "n": v["n"], "accuracy": v["accuracy"]}
        for attribute, groups in slices.items()
        for group, v in groups.items()
    ]
    return _typed_slices(pd.DataFrame(rows, columns=list(SLICE_COLUMNS)))


# --- input checks ----------------------------------------------------------------------------------
def _check_labels(labels: np.ndarray) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 2 or array.shape[1] != len(TASK_NAMES):
        raise EvaluationError(
            f"labels must have shape (N, {len(TASK_NAMES)}) in {list(TASK_NAMES)} order, got {array.shape}"
        )
    if array.dtype.kind == "f" and array.size and not np.array_equal(array, np.round(array)):
        raise EvaluationError("labels must be whole class indices (-1 = missing), got fractional values")
    if array.dtype.kind not in "iuf" and array.size:
        raise EvaluationError(f"labels must be integer class indices, got dtype {array.dtype}")
    array = array.astype(np.int64)
    for j, name in enumerate(TASK_NAMES):
        k = get_task(name).num_classes
        bad = array[(array[:, j] < -1) | (array[:, j] >= k), j]
        if bad.size:
            raise EvaluationError(f"{name} labels must be -1 (missing) or 0..{k - 1}, got {int(bad[0])}")
    return array


def _check_probabilities(probabilities: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    if not probabilities:
        raise EvaluationError(f"probabilities is empty; expected at least one of {list(TASK_NAMES)}")
    unknown = sorted(set(probabilities) - set(TASK_NAMES))
    if unknown:
        raise EvaluationError(f"unknown task(s) {unknown} in probabilities; expected {list(TASK_NAMES)}")
    out: dict[str, np.ndarray] = {}
    for name in TASK_NAMES:  # the model's task order, whatever the mapping's order
        if name not in probabilities:
            continue
        k = get_task(name).num_classes
        p = np.asarray(probabilities[name], dtype=np.float64)
        if p.shape != (n, k):
            raise EvaluationError(f"{name} probabilities must have shape ({n}, {k}), got {p.shape}")
        if not np.isfinite(p).all() or (p < 0).any():
            raise EvaluationError(f"{name} probabilities must be finite and >= 0 (softmax outputs)")
        sums = p.sum(axis=1)
        if n and np.abs(sums - 1).max() > _ROW_SUM_TOLERANCE:
            raise EvaluationError(
                f"{name} probabilities must sum to 1 per row (softmax outputs); a row sums to "
                f"{sums[np.abs(sums - 1).argmax()]:.4f}"
            )
        out[name] = p / sums[:, None] if n else p
    return out


def _check_strings(values: Sequence[str] | None, n: int, what: str) -> list[str]:
    if values is None:
        return [""] * n
    values = [str(v) for v in values]
    if len(values) != n:
        raise EvaluationError(f"{what} has {len(values)} entries but there are {n} samples")
    return values


def _typed_samples(samples: pd.DataFrame) -> pd.DataFrame:
    """The one set of column types for a samples table, built or loaded."""
    out = samples.copy()
    for column in out.columns:
        if column.endswith("_confidence"):
            out[column] = out[column].astype(np.float64)
        elif column.endswith("_correct"):
            out[column] = out[column].astype("boolean")
        else:
            out[column] = out[column].astype(str)
    return out.reset_index(drop=True)


def _typed_slices(slices: pd.DataFrame) -> pd.DataFrame:
    out = slices.copy()
    out["attribute"] = out["attribute"].astype(str)
    out["group"] = out["group"].astype(str)
    out["n"] = out["n"].astype(np.int64)
    out["accuracy"] = pd.to_numeric(out["accuracy"]).astype(np.float64)
    return out.reset_index(drop=True)


# --- files -----------------------------------------------------------------------------------------
def save_evaluation(evaluation: Evaluation, out_dir: str | os.PathLike) -> None:
    """Write metrics.json, samples.csv and slices.csv into `out_dir`, each replaced atomically."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        metrics_text = json.dumps(evaluation.metrics, indent=2, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise EvaluationError(f"metrics are not JSON-able (use None, not NaN): {error}") from None
    _write_atomic(folder / METRICS_FILE, metrics_text)
    _write_atomic(folder / SAMPLES_FILE, evaluation.samples.to_csv(index=False))
    _write_atomic(folder / SLICES_FILE, evaluation.slices.to_csv(index=False))


def _write_atomic(path: Path, text: str) -> None:
    with bundles.atomic_path(path) as temp, open(temp, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def load_evaluation(out_dir: str | os.PathLike) -> Evaluation:
    """Read back what save_evaluation wrote; FileNotFoundError / EvaluationError say which file is wrong."""
    folder = Path(out_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"evaluation folder {folder} does not exist")
    missing = [name for name in (METRICS_FILE, SAMPLES_FILE, SLICES_FILE) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"evaluation folder {folder} lacks {', '.join(missing)}")

    try:
        metrics = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise EvaluationError(f"{folder / METRICS_FILE} is not valid JSON: {error}") from None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("tasks"), dict) or "n" not in metrics:
        raise EvaluationError(f"{folder / METRICS_FILE} lacks the 'n' and 'tasks' entries of an evaluation")
    metrics.setdefault("slices", {})

    samples = _read_csv(folder / SAMPLES_FILE)
    expected = ["source"] + [
        f"{task}_{part}" for task in metrics["tasks"] for part in ("true", "pred", "confidence", "correct")
    ]
    _require_columns(samples, expected, folder / SAMPLES_FILE)
    try:
        for column in samples.columns:
            if column.endswith("_confidence"):
                samples[column] = pd.to_numeric(samples[column])
            elif column.endswith("_correct"):
                samples[column] = samples[column].map(_parse_bool)
        samples = _typed_samples(samples)
    except (ValueError, TypeError) as error:
        raise EvaluationError(f"{folder / SAMPLES_FILE} has a malformed value: {error}") from None

    slices = _read_csv(folder / SLICES_FILE)
    _require_columns(slices, list(SLICE_COLUMNS), folder / SLICES_FILE)
    try:
        slices["accuracy"] = slices["accuracy"].replace("", np.nan)
        slices = _typed_slices(slices[list(SLICE_COLUMNS)])
    except (ValueError, TypeError) as error:
        raise EvaluationError(f"{folder / SLICES_FILE} has a malformed value: {error}") from None
    return Evaluation(metrics=metrics, samples=samples, slices=slices)


def _read_csv(path: Path) -> pd.DataFrame:
    try:  # every cell as text, "" kept as "": class names like "NA" or "" must survive
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise EvaluationError(f"{path} is not a readable CSV table: {error}") from None


def _require_columns(frame: pd.DataFrame, expected: list[str], path: Path) -> None:
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        raise EvaluationError(f"{path} lacks column(s) {missing}")


def _parse_bool(value: str) -> bool | None:
    try:
        return {"True": True, "False": False, "": None, "<NA>": None}[value]
    except KeyError:
        raise ValueError(f"expected True, False or empty in a *_correct column, got {value!r}") from None


# --- views for the Evaluate page -------------------------------------------------------------------
def _task_entry(metrics: Mapping, task: str) -> Mapping:
    tasks = metrics.get("tasks", {})
    if task not in tasks:
        raise EvaluationError(f"task {task!r} was not evaluated; evaluated tasks: {list(tasks)}")
    return tasks[task]


def untaught_unseen(metrics: Mapping, task: str, predicted_too: bool = False) -> list[str]:
    """Classes of `task` that no available data set can teach (tasks.UNTAUGHT_CLASSES, e.g. gender "unsure") and
    that no face of this evaluation has as its true label (and, with `predicted_too`, none was predicted as):
    the classes to hide from charts and tables."""
    entry = _task_entry(metrics, task)
    classes = list(entry["classes"])
    confusion = np.asarray(entry["confusion"], dtype=np.int64).reshape(len(classes), len(classes))
    hidden = []
    for name in UNTAUGHT_CLASSES.get(task, ()):
        if name not in classes:
            continue
        i = classes.index(name)
        if confusion[i].sum() == 0 and (not predicted_too or confusion[:, i].sum() == 0):
            hidden.append(name)
    return hidden


def confusion_frame(metrics: dict, task: str, normalize: bool = False, *, hide_untaught: bool = False) -> pd.DataFrame:
    """Confusion matrix (rows = true, columns = predicted) by class name; `normalize` divides each row by
    its support (rows without support stay 0). `hide_untaught` leaves out the rows of untaught classes no face
    has (:func:`untaught_unseen`), and their columns too when no face was predicted as them either."""
    entry = _task_entry(metrics, task)
    counts = np.asarray(entry["confusion"], dtype=np.float64 if normalize else np.int64)
    if normalize:
        totals = counts.sum(axis=1, keepdims=True)
        counts = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    classes = list(entry["classes"])
    frame = pd.DataFrame(counts, index=pd.Index(classes, name="true"), columns=pd.Index(classes, name="predicted"))
    if hide_untaught:
        frame = frame.drop(index=untaught_unseen(metrics, task), columns=untaught_unseen(metrics, task, True))
    return frame


def macro_f1(metrics: Mapping, task: str) -> tuple[float | None, list[str]]:
    """A task's macro F1 and the classes it averages over: those with true labels in the evaluation. Evaluations
    saved before metrics.json recorded `macro_f1_classes` (averaged over every class) are recomputed from their
    per-class F1 scores."""
    entry = _task_entry(metrics, task)
    if "macro_f1_classes" in entry:
        return entry.get("macro_f1"), list(entry["macro_f1_classes"])
    per_class = entry.get("per_class", {})
    present = [c for c in entry["classes"] if per_class.get(c, {}).get("support")]
    scores = [per_class[c]["f1"] for c in present if per_class[c].get("f1") is not None]
    return (float(np.mean(scores)) if scores else None), present


def per_class_frame(metrics: dict, task: str, *, hide_untaught: bool = False) -> pd.DataFrame:
    """Precision, recall, F1 and support per class (NaN scores when the task had no labelled sample);
    `hide_untaught` leaves out untaught classes that no face of the evaluation has (:func:`untaught_unseen`)."""
    entry = _task_entry(metrics, task)
    per_class = entry["per_class"]
    hidden = untaught_unseen(metrics, task) if hide_untaught else []
    classes = [c for c in entry["classes"] if c not in hidden]
    frame = pd.DataFrame(
        {
            column: [np.nan if per_class[c][column] is None else per_class[c][column] for c in classes]
            for column in ("precision", "recall", "f1")
        },
        index=pd.Index(classes, name="class"),
        dtype=np.float64,
    )
    frame["support"] = np.array([per_class[c]["support"] for c in classes], dtype=np.int64)
    return frame


def misclassified(
    samples: pd.DataFrame, task: str, true: str | None = None, predicted: str | None = None
) -> pd.DataFrame:
    """Wrong predictions of `task` (labelled samples only), optionally of one true and/or predicted class,
    most confident first; the index is each sample's position in the evaluation."""
    spec = get_task(task)
    columns = [f"{task}_true", f"{task}_pred", f"{task}_confidence", f"{task}_correct"]
    missing = [c for c in columns if c not in samples.columns]
    if missing:
        raise EvaluationError(f"samples table has no {task} predictions (missing {missing})")
    wrong = samples[f"{task}_correct"].astype("boolean").eq(False).fillna(False).to_numpy(dtype=bool)
    if true is not None:
        spec.index(true)  # ValueError naming the classes when unknown
        wrong &= (samples[f"{task}_true"] == true).to_numpy()
    if predicted is not None:
        spec.index(predicted)
        wrong &= (samples[f"{task}_pred"] == predicted).to_numpy()
    return samples[wrong].sort_values(f"{task}_confidence", ascending=False, kind="stable")


GROUP_COLUMNS: tuple[str, ...] = ("task", "attribute", "group", "n", "accuracy")
GROUPINGS = ("true", "predicted")


def group_accuracy(
    samples: pd.DataFrame,
    tasks: Sequence[str] = TASK_NAMES,
    attributes: Sequence[str] = SLICE_ATTRIBUTES,
    groups_from: str = "true",
) -> pd.DataFrame:
    """Accuracy of each task among the faces of each group of each attribute (gender, race, age group).

    groups_from "true" (default): groups from the true labels of a samples table: a face counts when it has a true
    label for both the task and the attribute (so UTKFace's faces give gender accuracy by race and by age group,
    while FER2013's, with emotion labels only, give nothing).
    groups_from "predicted": groups from the model's own answers (``<attribute>_pred``, its top class): every face
    with a true label for the task counts, in the group the model put it in. This is what a data set without
    attribute labels allows (emotion accuracy on FER2013 by predicted gender, race and age group); a wrongly
    guessed attribute puts a face in the wrong group, so these are not the true groups' accuracies.

    A task is never grouped by itself. One row per task, attribute and group with at least one face, in model and
    class order; columns task, attribute, group, n, accuracy."""
    if groups_from not in GROUPINGS:
        raise ValueError(f"groups_from must be one of {list(GROUPINGS)}, got {groups_from!r}")
    suffix = "_true" if groups_from == "true" else "_pred"
    rows = []
    for task in [t for t in TASK_NAMES if t in tasks]:
        if f"{task}_correct" not in samples.columns:
            continue
        correct = samples[f"{task}_correct"].astype("boolean")
        labelled = correct.notna().to_numpy(dtype=bool)
        right = correct.fillna(False).to_numpy(dtype=bool)
        for attribute in [a for a in SLICE_ATTRIBUTES if a in attributes and a != task]:
            if f"{attribute}{suffix}" not in samples.columns:
                continue
            groups = samples[f"{attribute}{suffix}"].astype(str).to_numpy()
            for group in get_task(attribute).classes:
                member = labelled & (groups == group)
                n = int(member.sum())
                if n:
                    rows.append((task, attribute, group, n, float(right[member].mean())))
    frame = pd.DataFrame(rows, columns=list(GROUP_COLUMNS))
    return frame.astype({"task": str, "attribute": str, "group": str, "n": np.int64, "accuracy": np.float64})


def emotion_by_predicted_group(samples: pd.DataFrame) -> pd.DataFrame:
    """Emotion accuracy by the gender, race and age group the model itself predicted (:func:`group_accuracy` with
    groups_from="predicted"), for data sets whose faces carry no such labels (FER2013). Leaves out the groups no
    data set teaches (tasks.UNTAUGHT_CLASSES, gender "unsure"): the few faces put there form no group of people."""
    groups = group_accuracy(samples, tasks=[EMOTION.name], groups_from="predicted")
    pairs = zip(groups["attribute"], groups["group"], strict=True)
    untaught = np.array([g in UNTAUGHT_CLASSES.get(a, ()) for a, g in pairs], dtype=bool)
    return groups[~untaught].reset_index(drop=True)


def compare_runs(metrics_by_name: Mapping[str, dict]) -> pd.DataFrame:
    """One row per run, one column per task (model order) with its accuracy; NaN where not evaluated."""
    present = {task for metrics in metrics_by_name.values() for task in metrics.get("tasks", {})}
    columns = [task for task in TASK_NAMES if task in present]
    rows = []
    for metrics in metrics_by_name.values():
        tasks = metrics.get("tasks", {})
        rows.append([_accuracy_or_nan(tasks.get(task, {}).get("accuracy")) for task in columns])
    return pd.DataFrame(rows, index=pd.Index(list(metrics_by_name), name="run"), columns=columns, dtype=np.float64)


def _accuracy_or_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


EVAL_SPLITS = ("train", "val", "test", "all")


def default_evaluation_dir(
    model: str | os.PathLike, fmt: str, split: str, runs_dir: str | os.PathLike | None = None
) -> Path:
    """Where :func:`evaluate_dataset` saves when no folder is given; never over an existing evaluation. A run of
    the runs folder keeps its evaluations in its own evaluation/: <format>-<split>/ the first time, else
    <YYYYmmdd-HHMMSS>-<format>-<split>/ (the held-out evaluations training wrote stay as they are: the model card
    quotes them). Any other bundle (the shipped models/default, a bundle elsewhere, a read-only one) is never
    written to: the evaluation goes to <runs>/evaluations/<model>-<YYYYmmdd-HHMMSS>-<format>-<split>/, which
    :func:`mtfer.store.settings.list_evaluations` finds through the model path in its metrics.json."""

    bundle = Path(model).resolve()
    runs_root = Path(runs_dir) if runs_dir else bundles.default_runs_dir()
    own_runs = {run.resolve() for run in runs.list_runs(runs_root)}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if bundle in own_runs and bundle != bundles.DEFAULT_BUNDLE.resolve() and os.access(bundle, os.W_OK):
        folder, prefix = bundle / bundles.EVALUATION_DIR, ""
        if not (folder / f"{fmt}-{split}").exists():
            return folder / f"{fmt}-{split}"
    else:
        folder, prefix = runs_root / bundles.EVALUATIONS_DIR, f"{bundle.name}-"
    out, n = folder / f"{prefix}{stamp}-{fmt}-{split}", 2
    while out.exists():  # another evaluation of the same model, data set and split in the same second
        out, n = folder / f"{prefix}{stamp}.{n}-{fmt}-{split}", n + 1
    return out


def evaluate_dataset(
    model: str | os.PathLike | None,
    fmt: str,
    root: str | os.PathLike,
    split: str = "test",
    *,
    out_dir: str | os.PathLike | None = None,
    runs_dir: str | os.PathLike | None = None,
    progress: Callable[[int, int], None] | None = None,
    predict_progress: Callable[[int, int], None] | None = None,
) -> tuple[Evaluation, Path]:
    """Run a bundle (run id, folder or 'default') on a data set split ('all' = every sample, whatever its split)
    and save the evaluation in `out_dir`, by default :func:`default_evaluation_dir` (a run's own
    evaluation/<format>-<split>/; never inside the shipped or any other bundle). Only the split's images are
    framed (a cache of every split is used when there is one). `progress(done, total)` follows the framing of the
    faces, `predict_progress(done, total)` the network's pass over them: the two phases that take time."""

    if split not in EVAL_SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(EVAL_SPLITS)}")
    bundle = bundles.load_bundle(bundles.resolve_model(model, runs_dir))
    config = PreprocessConfig.from_dict(bundle.metadata["preprocessing"])
    try:
        prepared = prepare(fmt, root, config=config, progress=progress, splits=None if split == "all" else split)
    except EmptySplitError as error:
        raise ValueError(f"{error}; try --split all") from None
    index = np.arange(len(prepared.images)) if split == "all" else np.flatnonzero(prepared.splits == split)
    if not len(index):
        found = sorted(set(prepared.splits.tolist()))
        raise ValueError(f"{fmt} at {root} has no {split!r} samples (splits present: {found}); try --split all")
    # The network as the Predictor runs it (LiteRT where the bundle has its file: faster than Keras, and no
    # TensorFlow to import), with the test-time flip when the model was trained with it; calibrated below.
    probs = Predictor(bundle).predict_faces(prepared.images[index], progress=predict_progress, calibrate=False)
    evaluation = evaluate_calibrated(  # the calibrated probabilities the Predictor gives, ECE before kept too
        probs,
        prepared.labels[index],
        prepared.sources[index],
        prepared.splits[index],
        calibration_temperatures(bundle.metadata),
    )
    evaluation.metrics["model"] = str(Path(bundle.path).resolve())  # how list_evaluations finds it
    evaluation.metrics["dataset"] = {"format": fmt, "root": str(root), "split": split}
    out = Path(out_dir) if out_dir else default_evaluation_dir(bundle.path, fmt, split, runs_dir)
    save_evaluation(evaluation, out)
    return evaluation, out
