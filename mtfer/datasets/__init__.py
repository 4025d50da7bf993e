"""Data set readers: every supported format becomes one sample table plus a report of what was skipped.

The table has one row per sample:

- ``source``: the image file path, or ``"<csv path>#<line number>"`` for CSV rows (the header is line 1);
- ``split``: ``"train"``, ``"val"`` or ``"test"``;
- one column per task in :data:`mtfer.tasks.TASK_NAMES` (``emotion``, ``gender``, ``race``, ``age``): the
  class index as pandas nullable ``Int64``, ``<NA>`` where the data set has no label for that task;
- for CSV formats only, ``pixels``: a ``uint8`` array of shape (48, 48) per row.

Readers never open images (listing 36k files takes well under a second) and never guess a label: anything they
cannot label with certainty is skipped and counted in the :class:`SkipReport`, by reason, with a few examples.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mtfer.tasks import TASK_NAMES, TASKS

FORMATS: tuple[str, ...] = ("fer2013", "fer2013-csv", "rafdb", "utkface", "folders")
SPLITS: tuple[str, ...] = ("train", "val", "test")
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
MAX_EXAMPLES = 5
# Share of samples that `hash_split` sends to "test" for data sets without a split of their own.
HASH_TEST_FRACTION = 0.1

# One sample: source, split, then one label (class index or None) per task in TASK_NAMES order.
Row = tuple[str, str, int | None, int | None, int | None, int | None]


class DatasetFormatError(ValueError):
    """The folder or file is not in the requested format's layout (the message says what was expected)."""


class DatasetNotFoundError(DatasetFormatError, FileNotFoundError):
    """The data set path does not exist."""


@dataclass
class SkipReport:
    """Samples a reader left out (or could only partly label), counted per reason with a few examples."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, example: str, count: int = 1) -> None:
        """Count `count` samples under `reason`; keep `example` (a file name, a line number) if room."""
        self.counts[reason] = self.counts.get(reason, 0) + count
        kept = self.examples.setdefault(reason, [])
        if len(kept) < MAX_EXAMPLES and example not in kept:
            kept.append(example)

    def merge(self, other: SkipReport) -> None:
        for reason, count in other.counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + count
            kept = self.examples.setdefault(reason, [])
            for example in other.examples.get(reason, []):
                if len(kept) < MAX_EXAMPLES and example not in kept:
                    kept.append(example)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "counts": dict(self.counts),
            "examples": {reason: list(examples) for reason, examples in self.examples.items()},
        }


def hash_split(name: str, test_fraction: float = HASH_TEST_FRACTION) -> str:
    """`"test"` for about `test_fraction` of names, else `"train"`; the same on every run and machine."""
    digest = hashlib.md5(name.encode("utf-8"), usedforsecurity=False).digest()
    return "test" if int.from_bytes(digest[:8], "big") < test_fraction * 2**64 else "train"


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def existing_dir(root: str | os.PathLike, fmt: str) -> Path:
    """`root` as a Path; DatasetNotFoundError when it does not exist."""
    path = Path(root).expanduser()
    if not path.exists():
        raise DatasetNotFoundError(f"{fmt}: no such file or folder: {path}")
    return path


def describe_dir(path: Path, limit: int = 8) -> str:
    """A short listing of a folder for error messages: 'folders a, b; 3 files (x.txt, ...)'."""
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError as err:
        return f"unreadable ({err.strerror})"
    dirs = [e.name for e in entries if e.is_dir()]
    files = [e.name for e in entries if not e.is_dir()]
    if not entries:
        return "an empty folder"
    parts = []
    if dirs:
        more = f", ... ({len(dirs)} in all)" if len(dirs) > limit else ""
        parts.append("folders " + ", ".join(dirs[:limit]) + more)
    if files:
        more = ", ..." if len(files) > 3 else ""
        parts.append(f"{len(files)} files ({', '.join(files[:3])}{more})")
    return "; ".join(parts)


def samples_frame(rows: Sequence[Row], pixels: Sequence[np.ndarray] | None = None) -> pd.DataFrame:
    """The sample table (module docstring) from rows of (source, split, *labels in TASK_NAMES order)."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * (2 + len(TASK_NAMES))
    data: dict[str, object] = {
        "source": pd.Series(columns[0], dtype="str"),
        "split": pd.Series(columns[1], dtype="str"),
    }
    for i, task in enumerate(TASK_NAMES):
        data[task] = pd.array(list(columns[2 + i]), dtype="Int64")
    if pixels is not None:
        data["pixels"] = pd.Series(list(pixels), dtype=object)
    return pd.DataFrame(data)


def _readers() -> dict[str, Callable[[str | os.PathLike], tuple[pd.DataFrame, SkipReport]]]:
    # Imported here: the format modules import the helpers above from this package.
    from mtfer.datasets.fer2013 import read_fer2013, read_fer2013_csv
    from mtfer.datasets.folders import read_folders
    from mtfer.datasets.rafdb import read_rafdb
    from mtfer.datasets.utkface import read_utkface

    return {
        "fer2013": read_fer2013,
        "fer2013-csv": read_fer2013_csv,
        "rafdb": read_rafdb,
        "utkface": read_utkface,
        "folders": read_folders,
    }


def read_dataset(fmt: str, root: str | os.PathLike) -> tuple[pd.DataFrame, SkipReport]:
    """Read the data set at `root` in format `fmt` (one of FORMATS) into one sample table and a SkipReport.

    Raises ValueError for an unknown format, DatasetNotFoundError (a DatasetFormatError and a
    FileNotFoundError) when `root` does not exist, and DatasetFormatError when `root` is not in that format.
    See each reader (mtfer.datasets.fer2013, rafdb, utkface, folders) for its layout.
    """
    key = fmt.strip().lower()
    if key not in FORMATS:
        raise ValueError(f"unknown data set format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return _readers()[key](root)


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
