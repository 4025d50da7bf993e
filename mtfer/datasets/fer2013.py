"""FER2013, as image folders (the common Kaggle copy) or as the original ``fer2013.csv``.

Image folders: ``<root>/train/<emotion>/*.jpg`` and ``<root>/test/<emotion>/*.jpg`` (test holds PublicTest
and PrivateTest), emotion folder names through :func:`mtfer.core.tasks.emotion_from_name`. `root` may also be the
folder that contains ``fer2013/``. Only emotion is labelled.

CSV: columns ``emotion,pixels,Usage`` (any order, names stripped); emotion codes 0-6 through
:data:`mtfer.core.tasks.FER2013_CSV_CODES`; Usage Training/PublicTest/PrivateTest through
:data:`mtfer.core.tasks.FER2013_USAGE_SPLITS`; 2304 space-separated pixel values 0-255 per row. `root` may be the
CSV file or a folder holding ``fer2013.csv`` (also ``fer2013/fer2013.csv``, or the folder's only ``*.csv``).
Rows that are not exactly right are skipped and counted with their line numbers; the header is line 1.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd

from mtfer.core.tasks import FER2013_CSV_CODES, FER2013_USAGE_SPLITS
from mtfer.datasets.base import DatasetFormatError, Row, SkipReport, describe_dir, existing_dir, samples_frame
from mtfer.datasets.folders import read_split_tree

FER2013_SPLIT_FOLDERS: dict[str, str] = {"train": "train", "test": "test"}
FER2013_LAYOUT = "<root>/train/<emotion>/*.jpg and <root>/test/<emotion>/*.jpg"
IMAGE_SIDE = 48
CSV_COLUMNS = ("emotion", "pixels", "Usage")

BAD_PIXEL_COUNT = f"pixels: not {IMAGE_SIDE * IMAGE_SIDE} values"
BAD_PIXEL_VALUE = "pixels: not integers 0-255"
BAD_EMOTION = "emotion code not an integer 0-6"
BAD_USAGE = "unknown Usage (expected Training, PublicTest or PrivateTest)"
BAD_ROW = "wrong number of fields"
BAD_CSV = "unreadable CSV line"


def _fer2013_root(path: Path) -> Path | None:
    for candidate in (path, path / "fer2013"):
        if any((candidate / split).is_dir() for split in FER2013_SPLIT_FOLDERS):
            return candidate
    return None


def read_fer2013(root: str | os.PathLike) -> tuple[pd.DataFrame, SkipReport]:
    """Read the FER2013 image folders (layout in the module docstring)."""
    path = existing_dir(root, "fer2013")
    tree = _fer2013_root(path) if path.is_dir() else None
    if tree is None:
        hint = " (for fer2013.csv use format fer2013-csv)" if path.suffix.lower() == ".csv" else ""
        found = describe_dir(path) if path.is_dir() else "a file"
        raise DatasetFormatError(f"fer2013: expected {FER2013_LAYOUT}{hint}; found in {path}: {found}")
    report = SkipReport()
    df, _, n_classes = read_split_tree(tree, FER2013_SPLIT_FOLDERS, report)
    if n_classes == 0:
        raise DatasetFormatError(
            f"fer2013: expected {FER2013_LAYOUT} with emotion folders (angry, disgust, fear, happy, neutral, "
            f"sad, surprise); found no emotion folder in {tree}/train or {tree}/test"
        )
    return df, report


def _find_csv(path: Path) -> Path:
    if path.is_file():
        return path
    for candidate in (path / "fer2013.csv", path / "fer2013" / "fer2013.csv"):
        if candidate.is_file():
            return candidate
    csvs = sorted(p for p in path.iterdir() if p.suffix.lower() == ".csv" and p.is_file())
    if len(csvs) == 1:
        return csvs[0]
    raise DatasetFormatError(
        f"fer2013-csv: expected fer2013.csv (columns emotion,pixels,Usage) or a folder holding it; "
        f"found in {path}: {describe_dir(path)}"
    )


def _parse_pixels(text: str) -> np.ndarray | str:
    """The (48, 48) uint8 image, or the skip reason."""
    try:
        array = np.fromstring(text, dtype=np.int64, sep=" ")
    except ValueError:
        return BAD_PIXEL_VALUE
    if array.size != IMAGE_SIDE * IMAGE_SIDE:
        return BAD_PIXEL_COUNT
    if array.min() < 0 or array.max() > 255:
        return BAD_PIXEL_VALUE
    return array.astype(np.uint8).reshape(IMAGE_SIDE, IMAGE_SIDE)


def _parse_emotion(text: str) -> int | None:
    try:
        return FER2013_CSV_CODES.get(int(text.strip()))
    except ValueError:
        return None


def read_fer2013_csv(root: str | os.PathLike) -> tuple[pd.DataFrame, SkipReport]:
    """Read the original fer2013.csv (format in the module docstring); `pixels` holds each (48, 48) image."""
    csv_path = _find_csv(existing_dir(root, "fer2013-csv"))
    report = SkipReport()
    rows: list[Row] = []
    pixels: list[np.ndarray] = []
    with csv_path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.reader(f)
        try:
            header = [name.strip() for name in next(reader, [])]
        except csv.Error:
            header = []
        missing = [c for c in CSV_COLUMNS if c not in header]
        if missing:
            raise DatasetFormatError(
                f"fer2013-csv: expected a header with columns {','.join(CSV_COLUMNS)} in {csv_path}; "
                f"found {','.join(header) or 'an empty file'}"
            )
        i_emotion, i_pixels, i_usage = (header.index(c) for c in CSV_COLUMNS)
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error:
                report.add(BAD_CSV, f"line {reader.line_num}")
                continue
            line = reader.line_num
            if not fields or fields == [""]:
                continue
            where = f"line {line}"
            if len(fields) != len(header):
                report.add(BAD_ROW, where)
                continue
            emotion = _parse_emotion(fields[i_emotion])
            if emotion is None:
                report.add(BAD_EMOTION, where)
                continue
            split = FER2013_USAGE_SPLITS.get(fields[i_usage].strip())
            if split is None:
                report.add(BAD_USAGE, where)
                continue
            image = _parse_pixels(fields[i_pixels])
            if isinstance(image, str):
                report.add(image, where)
                continue
            rows.append((f"{csv_path}#{line}", split, emotion, None, None, None))
            pixels.append(image)
    return samples_frame(rows, pixels), report
