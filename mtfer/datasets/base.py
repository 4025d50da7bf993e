"""What every data-set reader shares: the sample table, the report of skipped samples, and the checks of
folders and file names."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import numpy as np
import pandas as pd

from mtfer.core.tasks import TASK_NAMES

SPLITS: tuple[str, ...] = ("train", "val", "test")
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
MAX_EXAMPLES = 5


# Share of samples that `hash_split` sends to "test" for data sets without a split of their own.
HASH_TEST_FRACTION = 0.1


# One sample: source, split, then one label (class index or None) per task in TASK_NAMES order.
Row = tuple[str, str, int | None, int | None, int | None, int | None]


class DatasetSpec(TypedDict):
    """A data set to read: its format (one of mtfer.core.tasks.FORMATS) and its folder or file. Runs store their
    data sets as a list of these (config.json `datasets`), so a later step can read the same faces again."""

    format: str
    root: str


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
