"""The CSV of photos, folders and videos: one row per face, the same columns everywhere."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from mtfer.core.inference import FacePrediction
from mtfer.media.answers import answer_labels

PHOTO_COLUMNS = ("source", "face", "x", "y", "w", "h")
VIDEO_COLUMNS = ("source", "time_s", "frame", "track", "face", "x", "y", "w", "h")
ERROR_COLUMN = "error"  # photo tables: why a file could not be read (empty when it was)
_INTEGER_COLUMNS = ("frame", "track", "face", "x", "y", "w", "h")
# The columns beside each task's top class (`<task>_confidence`, `<task>_answer`); every other `<task>_<name>`
# column is the probability of class <name>.
TASK_SUFFIXES = ("confidence", "answer")


def counted(n: int, noun: str) -> str:
    """'1 photo', '1,204 photos': the summaries' counts (nouns that take an s)."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def class_names(columns: Sequence[str], task: str) -> list[str]:
    """The class names of `task` in a table's columns (`emotion_happy` -> `happy`), in the table's order."""
    prefix = f"{task}_"
    skip = {prefix + suffix for suffix in TASK_SUFFIXES}
    return [c[len(prefix) :] for c in columns if c.startswith(prefix) and c not in skip]


def table_columns(classes: Mapping[str, Sequence[str]], video: bool = False, error: bool = False) -> list[str]:
    """The CSV's columns: where the face is (VIDEO_COLUMNS or PHOTO_COLUMNS), then per task the top class, its
    confidence and the answer the page shows (`emotion`, `emotion_confidence`, `emotion_answer`: the class, or "not
    sure" below the bundle's threshold), then every class probability (`emotion_happy`, ...), then `error` when
    asked (photo tables)."""
    tops = [name for task in classes for name in (task, f"{task}_confidence", f"{task}_answer")]
    probabilities = [f"{task}_{c}" for task, names in classes.items() for c in names]
    return [*(VIDEO_COLUMNS if video else PHOTO_COLUMNS), *tops, *probabilities, *([ERROR_COLUMN] if error else [])]


def face_columns(
    probabilities: Mapping[str, Mapping[str, float]], min_confidence: Mapping[str, float]
) -> dict[str, Any]:
    """One face's top class, confidence and shown answer per task (`min_confidence`: the bundle's "not sure"
    thresholds, answers.thresholds), then every class probability, under table_columns' names."""
    row: dict[str, Any] = {}
    shown = answer_labels(probabilities, min_confidence)
    for task, probs in probabilities.items():
        label = max(probs, key=probs.__getitem__)
        row[task] = label
        row[f"{task}_confidence"] = round(float(probs[label]), 4)
        row[f"{task}_answer"] = shown[task]
    for task, probs in probabilities.items():
        for c, v in probs.items():
            row[f"{task}_{c}"] = round(float(v), 6)
    return row


def box_columns(box: Sequence[int]) -> dict[str, int]:
    x, y, w, h = (int(v) for v in box)
    return {"x": x, "y": y, "w": w, "h": h}


def photo_rows(
    source: str, preds: Sequence[FacePrediction], min_confidence: Mapping[str, float], error: str | None = None
) -> list[dict[str, Any]]:
    """The rows of one photo: one per face (numbered from 1 in reading order); a photo without a face, or one that
    could not be read (`error`), is one row with the face columns empty."""
    if error is not None:
        return [{"source": source, ERROR_COLUMN: error}]
    if not preds:
        return [{"source": source}]
    return [
        {"source": source, "face": k, **box_columns(p.box), **face_columns(p.probabilities, min_confidence)}
        for k, p in enumerate(preds, start=1)
    ]


def rows_frame(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]):
    """A DataFrame of `rows` with exactly `columns`, in that order; counts and pixels as integers that may be empty
    (so a CSV says 3, not 3.0, and nothing where a frame had no face)."""

    frame = pd.DataFrame(list(rows), columns=list(columns))
    for name in _INTEGER_COLUMNS:
        if name in frame:
            frame[name] = frame[name].astype("Int64")
    return frame


def predictions_table(
    named: Sequence[tuple[str, Sequence[FacePrediction]]],
    min_confidence: Mapping[str, float],
    classes: Mapping[str, Sequence[str]] | None = None,
    errors: Sequence[tuple[str, str]] = (),
):
    """The photo CSV (the columns of `mtfer predict DIR --csv`): one row per face with `source, face, x, y, w, h`,
    the top class, confidence and shown answer per task, every class probability (`emotion_happy`, ...) and `error`; a photo
    without a face is one row with the face columns empty, and each (file, reason) of `errors` one row with its
    reason. `classes` ({task: class names}, a Predictor's) fixes the columns; by default, those of the first face."""
    if classes is None:
        first = next((p for _, preds in named for p in preds), None)
        classes = {t: list(probs) for t, probs in first.probabilities.items()} if first else {}
    rows = [row for name, preds in named for row in photo_rows(name, preds, min_confidence)]
    rows += [row for name, reason in errors for row in photo_rows(name, [], min_confidence, reason)]
    return rows_frame(rows, table_columns(classes, error=True))


# Characters that make a spreadsheet read a cell as a formula (OWASP's CSV injection rule): a file named
# "=HYPERLINK(...).jpg" must open as text, not run.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """A text cell that would start a formula, prefixed with a single quote (shown as text); anything else as is."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def csv_text(frame: pd.DataFrame, header: bool = True) -> str:
    """Every CSV people download or the command line writes: text cells made safe to open in a spreadsheet."""
    text_columns = [
        c for c in frame.columns if pd.api.types.is_object_dtype(frame[c]) or pd.api.types.is_string_dtype(frame[c])
    ]
    safe = frame.assign(**{c: frame[c].map(safe_cell) for c in text_columns}) if text_columns else frame
    # A carriage return inside a cell (a file name may hold one) is not quoted by the csv module when lines end in
    # \n, and would split the row: then every text cell is quoted (valid CSV, read back the same).
    split = any(safe[c].map(lambda v: isinstance(v, str) and "\r" in v).any() for c in text_columns)
    return safe.to_csv(index=False, header=header, quoting=csv.QUOTE_NONNUMERIC if split else csv.QUOTE_MINIMAL)
