"""Data set readers: every supported format becomes one sample table plus a report of what was skipped.

The table has one row per sample:

- ``source``: the image file path, or ``"<csv path>#<line number>"`` for CSV rows (the header is line 1);
- ``split``: ``"train"``, ``"val"`` or ``"test"``;
- one column per task in :data:`mtfer.core.tasks.TASK_NAMES` (``emotion``, ``gender``, ``race``, ``age``): the
  class index as pandas nullable ``Int64``, ``<NA>`` where the data set has no label for that task;
- for CSV formats only, ``pixels``: a ``uint8`` array of shape (48, 48) per row.

Readers never open images (listing 36k files takes well under a second) and never guess a label: anything they
cannot label with certainty is skipped and counted in the :class:`SkipReport`, by reason, with a few examples.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pandas as pd

from mtfer.core.tasks import FORMATS, TASK_NAMES, TASKS
from mtfer.datasets.base import SPLITS, SkipReport
from mtfer.datasets.fer2013 import read_fer2013, read_fer2013_csv
from mtfer.datasets.folders import read_folders
from mtfer.datasets.rafdb import read_rafdb
from mtfer.datasets.utkface import read_utkface

READERS: dict[str, Callable[[str | os.PathLike], tuple[pd.DataFrame, SkipReport]]] = {
    "fer2013": read_fer2013,
    "fer2013-csv": read_fer2013_csv,
    "rafdb": read_rafdb,
    "utkface": read_utkface,
    "folders": read_folders,
}  # one reader per format of mtfer.core.tasks.FORMATS


def read_dataset(fmt: str, root: str | os.PathLike) -> tuple[pd.DataFrame, SkipReport]:
    """Read the data set at `root` in format `fmt` (one of FORMATS) into one sample table and a SkipReport.

    Raises ValueError for an unknown format, DatasetNotFoundError (a DatasetFormatError and a
    FileNotFoundError) when `root` does not exist, and DatasetFormatError when `root` is not in that format.
    See each reader (mtfer.datasets.fer2013, rafdb, utkface, folders) for its layout.
    """
    key = fmt.strip().lower()
    if key not in FORMATS:
        raise ValueError(f"unknown data set format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return READERS[key](root)


def _present_splits(df: pd.DataFrame) -> list[str]:
    found = set(df["split"].unique()) if len(df) else set()
    return [s for s in SPLITS if s in found] + sorted(found - set(SPLITS))


def summarize(df: pd.DataFrame, report: SkipReport) -> dict:
    """JSON-able counts: samples per split, per task the labelled count and per class (total and per split),
    and the skip report."""
    splits = _present_splits(df)
    split_counts = df["split"].value_counts()
    tasks: dict[str, dict] = {}
    for name in TASK_NAMES:
        task = TASKS[name]
        labels = df[name] if name in df else pd.Series(pd.NA, index=df.index, dtype="Int64")
        labelled = labels.notna()
        table = pd.crosstab(labels[labelled].astype(int), df.loc[labelled, "split"])
        classes = {}
        for index, class_name in enumerate(task.classes):
            per_split = {s: int(table.at[index, s]) if index in table.index and s in table else 0 for s in splits}
            classes[class_name] = {"total": sum(per_split.values()), **per_split}
        tasks[name] = {"labelled": int(labelled.sum()), "classes": classes}
    return {
        "total": len(df),
        "splits": {s: int(split_counts.get(s, 0)) for s in splits},
        "tasks": tasks,
        "skipped": report.to_dict(),
    }


def format_summary(summary: dict) -> str:
    """The human-readable text of a `summarize` result (what `mtfer inspect` prints)."""
    splits = list(summary["splits"])
    by_split = ", ".join(f"{s} {n:,}" for s, n in summary["splits"].items())
    lines = [f"{summary['total']:,} samples" + (f" ({by_split})" if by_split else "")]
    for name, task in summary["tasks"].items():
        if not task["labelled"]:
            lines.append(f"{name}: no labels")
            continue
        lines.append(f"{name}: {task['labelled']:,} labelled")
        width = max(len(c) for c in task["classes"])
        header = f"  {'class':<{width}}  {'total':>7}" + "".join(f"  {s:>7}" for s in splits)
        lines.append(header)
        for class_name, counts in task["classes"].items():
            cells = "".join(f"  {counts[s]:>7,}" for s in splits)
            lines.append(f"  {class_name:<{width}}  {counts['total']:>7,}{cells}")
    skipped = summary["skipped"]
    if not skipped["total"]:
        lines.append("skipped: none")
    else:
        lines.append(f"skipped or partly labelled: {skipped['total']:,}")
        for reason, count in skipped["counts"].items():
            examples = ", ".join(skipped["examples"].get(reason, []))
            lines.append(f"  {reason}: {count:,}" + (f" (e.g. {examples})" if examples else ""))
    return "\n".join(lines)
