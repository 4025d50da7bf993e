"""RAF-DB basic, in its original layout (`root` is the folder containing ``basic/`` or ``basic/`` itself)::

    basic/EmoLabel/list_patition_label.txt           lines "train_00001.jpg 5": labels 1..7 in EMOTION order
    basic/Image/aligned/<stem>_aligned.jpg           the images
    basic/Annotation/manual/<stem>_manu_attri.txt    5 landmark lines "x y", then gender, race, age codes

The split comes from the name prefix (train_ / test_). Emotion through :func:`mtfer.core.tasks.rafdb_emotion`; the
attribute codes on lines 6-8 (1-based) through :func:`mtfer.core.tasks.rafdb_attribute`.

Skipped and counted: label lines that are not "<name> <label>", labels outside 1..7, names without a
train_ / test_ prefix, names listed twice with different labels (every occurrence: neither label can be
trusted; a repeat with the same label is dropped as a duplicate), and samples whose image is missing. A
missing or malformed attribute file keeps the sample with its emotion and <NA> gender, race and age, and is
counted too.

:func:`read_rafdb_labels` parses the label file alone (no images needed), e.g. for label-only copies.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from mtfer.core.tasks import rafdb_attribute, rafdb_emotion
from mtfer.datasets.base import DatasetFormatError, Row, SkipReport, describe_dir, existing_dir, samples_frame

LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"
IMAGE_DIR = Path("Image") / "aligned"
ATTRIBUTE_DIR = Path("Annotation") / "manual"
IMAGE_SUFFIX = "_aligned.jpg"
ATTRIBUTE_SUFFIX = "_manu_attri.txt"
ATTRIBUTE_TASKS = ("gender", "race", "age")
ATTRIBUTE_FIRST_LINE = 6  # 1-based line of the gender code; race and age follow
SPLIT_PREFIXES = {"train_": "train", "test_": "test"}
RAFDB_LAYOUT = "basic/EmoLabel/list_patition_label.txt, basic/Image/aligned/, basic/Annotation/manual/"

MALFORMED_LINE = "malformed label line (expected '<name> <label>')"
BAD_LABEL = "emotion label not 1-7"
BAD_PREFIX = "name without train_/test_ prefix"
DUPLICATE = "name listed again with the same label (repeat dropped)"
CONFLICT = "name listed with different labels (all dropped)"
MISSING_IMAGE = "image missing"
MISSING_ATTRIBUTES = "attribute file missing (emotion kept; gender, race, age unlabelled)"
BAD_ATTRIBUTES = "attribute file malformed (emotion kept; gender, race, age unlabelled)"


def find_basic(root: str | os.PathLike) -> Path:
    """The ``basic/`` folder: `root`, `root/basic`, or the one holding `root` when that is the label file."""
    path = existing_dir(root, "rafdb")
    candidates = [path.parents[1]] if path.is_file() else [path, path / "basic"]
    for candidate in candidates:
        if (candidate / LABEL_FILE).is_file():
            return candidate
    found = describe_dir(path) if path.is_dir() else "a file"
    raise DatasetFormatError(f"rafdb: expected {RAFDB_LAYOUT} (RAF-DB basic); found in {path}: {found}")


def _stem(name: str) -> str:
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return stem.removesuffix("_aligned")


def read_rafdb_labels(root: str | os.PathLike) -> tuple[pd.DataFrame, SkipReport]:
    """Parse the label file alone: columns ``name`` (stem, e.g. "train_00001"), ``split``, ``emotion``
    (Int64), in file order; bad lines and duplicates skipped and counted. `root` as for read_rafdb, or the
    label file itself."""
    label_file = find_basic(root) / LABEL_FILE
    report = SkipReport()
    entries: dict[str, tuple[str, int]] = {}
    conflicting: dict[str, None] = {}  # ordered, for reproducible report examples
    text = label_file.read_text(encoding="utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        fields = line.split()
        if len(fields) != 2:
            report.add(MALFORMED_LINE, where)
            continue
        stem = _stem(fields[0])
        where = f"line {number}: {fields[0]}"
        try:
            emotion = rafdb_emotion(int(fields[1]))
        except ValueError:
            report.add(BAD_LABEL, where)
            continue
        split = next((s for prefix, s in SPLIT_PREFIXES.items() if stem.startswith(prefix)), None)
        if split is None:
            report.add(BAD_PREFIX, where)
            continue
        if stem in entries:
            if entries[stem][1] == emotion:
                report.add(DUPLICATE, where)
            else:
                conflicting[stem] = None
                report.add(CONFLICT, where)
            continue
        entries[stem] = (split, emotion)
    for stem in conflicting:  # the first occurrence goes too
        del entries[stem]
        report.add(CONFLICT, stem)
    names = list(entries)
    df = pd.DataFrame(
        {
            "name": pd.Series(names, dtype="str"),
            "split": pd.Series([entries[n][0] for n in names], dtype="str"),
            "emotion": pd.array([entries[n][1] for n in names], dtype="Int64"),
        }
    )
    return df, report


def _names_in(folder: Path) -> set[str]:
    if not folder.is_dir():
        return set()
    with os.scandir(folder) as it:
        return {e.name for e in it}


def read_attributes(path: Path) -> tuple[int, int, int] | None:
    """(gender, race, age) from a manu_attri file, or None when the file is malformed."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    codes = lines[ATTRIBUTE_FIRST_LINE - 1 : ATTRIBUTE_FIRST_LINE - 1 + len(ATTRIBUTE_TASKS)]
    if len(codes) != len(ATTRIBUTE_TASKS):
        return None
    try:
        gender, race, age = (rafdb_attribute(t, int(c.strip())) for t, c in zip(ATTRIBUTE_TASKS, codes, strict=True))
    except ValueError:
        return None
    return gender, race, age


def read_rafdb(root: str | os.PathLike) -> tuple[pd.DataFrame, SkipReport]:
    """Read RAF-DB basic (layout and rules in the module docstring): emotion, gender, race and age."""
    basic = find_basic(root)
    image_dir = basic / IMAGE_DIR
    if not image_dir.is_dir():
        raise DatasetFormatError(
            f"rafdb: expected the images in {image_dir}/<name>{IMAGE_SUFFIX}; that folder does not exist "
            f"(found in {basic}: {describe_dir(basic)}). For the labels alone use read_rafdb_labels."
        )
    labels, report = read_rafdb_labels(basic)
    images = _names_in(image_dir)
    attribute_dir = basic / ATTRIBUTE_DIR
    attribute_files = _names_in(attribute_dir)
    rows: list[Row] = []
    for name, split, emotion in zip(labels["name"], labels["split"], labels["emotion"], strict=True):
        image = name + IMAGE_SUFFIX
        if image not in images:
            report.add(MISSING_IMAGE, image)
            continue
        attribute_file = name + ATTRIBUTE_SUFFIX
        attributes: tuple[int | None, ...] = (None, None, None)
        if attribute_file not in attribute_files:
            report.add(MISSING_ATTRIBUTES, attribute_file)
        else:
            parsed = read_attributes(attribute_dir / attribute_file)
            if parsed is None:
                report.add(BAD_ATTRIBUTES, attribute_file)
            else:
                attributes = parsed
        rows.append((str(image_dir / image), split, int(emotion), *attributes))
    return samples_frame(rows), report
