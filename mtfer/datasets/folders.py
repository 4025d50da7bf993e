"""Generic image folders labelled by emotion: ``<root>/<split>/<class>/*`` or ``<root>/<class>/*``.

- Split folders (case-insensitive): train/training -> "train", val/valid/validation -> "val",
  test/testing -> "test".
- Class folders go through :func:`mtfer.core.tasks.emotion_from_name`, so synonyms work (anger, happiness, sadness,
  surprised, fearful ...). Only emotion is labelled; gender, race and age are <NA>.
- Image extensions: jpg jpeg png bmp webp tif tiff (any case). Files are listed, never opened.
- When no top-level folder is a split name, the top-level folders are taken as classes (no split level);
  such a data set has no split of its own, so each image goes to "test" or "train" by a stable hash of its
  file name (about 10% test, as for UTKFace); the trainer carves validation out of "train".

Nothing is labelled by a guess: unknown class folders, unknown split folders, images outside a class folder,
folders nested inside a class folder and non-image files are counted in the SkipReport with their names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from mtfer.core.tasks import emotion_from_name
from mtfer.datasets.base import (
    DatasetFormatError,
    Row,
    SkipReport,
    describe_dir,
    existing_dir,
    hash_split,
    is_image_name,
    samples_frame,
)

SPLIT_FOLDERS: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}

UNKNOWN_SPLIT = "unknown split folder (images not read)"
UNKNOWN_CLASS = "unknown class folder (images not read)"
OUTSIDE_CLASS = "image outside a class folder"
NESTED_FOLDER = "folder inside a class folder (images not read)"
NOT_IMAGE = "not an image file (by extension)"

FOLDERS_LAYOUT = "<root>/<split>/<emotion>/*.jpg (split: train, val, test) or <root>/<emotion>/*.jpg"


def _sorted_entries(path: Path) -> list[os.DirEntry]:
    with os.scandir(path) as it:
        return sorted(it, key=lambda e: e.name)


def _count_images(path: Path) -> int:
    """Image files anywhere under `path`."""
    return sum(is_image_name(name) for _, _, files in os.walk(path) for name in files)


def _visible(entry: os.DirEntry) -> bool:
    return not entry.name.startswith(".")


def read_class_folder(path: Path, split: str | None, emotion: int, label: str, report: SkipReport) -> list[Row]:
    """Rows for the images in one class folder; `label` names the folder in report examples (e.g. train/sad).
    `split` None: each image's split comes from `hash_split` of its file name."""
    rows: list[Row] = []
    for entry in _sorted_entries(path):
        if not _visible(entry):
            continue
        if entry.is_dir():
            report.add(NESTED_FOLDER, f"{label}/{entry.name}/", _count_images(Path(entry.path)))
        elif is_image_name(entry.name):
            rows.append((entry.path, split or hash_split(entry.name), emotion, None, None, None))
        else:
            report.add(NOT_IMAGE, f"{label}/{entry.name}")
    return rows


def read_split_folder(path: Path, split: str | None, label: str, report: SkipReport) -> tuple[list[Row], int]:
    """Rows for the class folders inside `path`, and how many of its folders were emotion classes."""
    rows: list[Row] = []
    known = 0
    prefix = f"{label}/" if label else ""
    for entry in _sorted_entries(path):
        if not _visible(entry):
            continue
        if entry.is_dir():
            emotion = emotion_from_name(entry.name)
            if emotion is None:
                report.add(UNKNOWN_CLASS, f"{prefix}{entry.name}/", _count_images(Path(entry.path)))
            else:
                known += 1
                rows += read_class_folder(Path(entry.path), split, emotion, prefix + entry.name, report)
        elif is_image_name(entry.name):
            report.add(OUTSIDE_CLASS, prefix + entry.name)
    return rows, known


def read_split_tree(root: Path, split_folders: Mapping[str, str], report: SkipReport) -> tuple[pd.DataFrame, int, int]:
    """Read ``<root>/<split>/<class>/*``: the table, how many split folders and how many class folders were
    recognised. Folders at the top that are not in `split_folders` (lower-case name -> split) are reported."""
    rows: list[Row] = []
    n_splits = n_classes = 0
    for entry in _sorted_entries(root):
        if not _visible(entry):
            continue
        if entry.is_dir():
            split = split_folders.get(entry.name.lower())
            if split is None:
                report.add(UNKNOWN_SPLIT, f"{entry.name}/", _count_images(Path(entry.path)))
                continue
            n_splits += 1
            split_rows, known = read_split_folder(Path(entry.path), split, entry.name, report)
            rows += split_rows
            n_classes += known
        elif is_image_name(entry.name):
            report.add(OUTSIDE_CLASS, entry.name)
    return samples_frame(rows), n_splits, n_classes


def read_folders(root: str | os.PathLike) -> tuple[pd.DataFrame, SkipReport]:
    """Read a generic emotion image tree (layouts in the module docstring)."""
    path = existing_dir(root, "folders")
    if not path.is_dir():
        raise DatasetFormatError(f"folders: expected a folder laid out as {FOLDERS_LAYOUT}; {path} is a file")
    report = SkipReport()
    top = [e for e in _sorted_entries(path) if e.is_dir() and _visible(e)]
    if any(e.name.lower() in SPLIT_FOLDERS for e in top):
        df, _, n_classes = read_split_tree(path, SPLIT_FOLDERS, report)
    else:
        rows, n_classes = read_split_folder(path, None, "", report)
        df = samples_frame(rows)
    if n_classes == 0:
        raise DatasetFormatError(
            f"folders: expected {FOLDERS_LAYOUT} with emotion folder names (angry, happy, sad ...); "
            f"found in {path}: {describe_dir(path)}"
        )
    return df, report
