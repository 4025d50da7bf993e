"""UTKFace (aligned & cropped): ``<root>/<age>_<gender>_<race>_<date>.jpg.chip.jpg``.

`root` may also be the folder that contains ``UTKFace/``. Any image extension is accepted after the four
fields (so the in-the-wild ``<age>_<gender>_<race>_<date>.jpg`` names work too).

Labels: gender 0/1 through :data:`mtfer.core.tasks.UTKFACE_GENDER`; race through :data:`mtfer.core.tasks.UTKFACE_RACE`
(Indian and Others faces are the race task's "other" class); age in years
through :func:`mtfer.core.tasks.age_group`. No emotion label. Names without four fields whose first three are
numbers, or whose gender or race code is out of range, are skipped and counted (the date is not checked).

UTKFace has no split of its own: each file goes to "test" or "train" by a stable hash of its file name
(:func:`mtfer.datasets.hash_split`, about 10% test), independent of file order and of the machine. The trainer
carves validation out of "train".
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from mtfer.core.tasks import RACE_OTHER, UTKFACE_GENDER, UTKFACE_RACE, age_group
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

UTKFACE_LAYOUT = "<root>/<age>_<gender>_<race>_<date>.jpg.chip.jpg files"

MALFORMED_NAME = "malformed name (expected <age>_<gender>_<race>_<date>)"
BAD_GENDER = "gender code not 0 or 1"
BAD_RACE = "race code not 0-4"
NOT_IMAGE = "not an image file (by extension)"


def parse_name(name: str) -> tuple[int, int, int] | str:
    """(gender, race, age group) from a UTKFace file name, or the reason it cannot be labelled."""
    # The date field is not used, and a few real names garble it ("..._20170116220224657 .jpg.chip.jpg"):
    # only age, gender and race must be numbers.
    fields = name.split("_", 3)
    if len(fields) != 4 or not fields[3] or not all(f.isascii() and f.isdigit() for f in fields[:3]):
        return MALFORMED_NAME
    age, gender, race = (int(f) for f in fields[:3])
    if gender not in UTKFACE_GENDER:
        return BAD_GENDER
    if race not in UTKFACE_RACE:
        return BAD_RACE
    return UTKFACE_GENDER[gender], UTKFACE_RACE[race], age_group(age)


def _file_names(path: Path) -> list[str]:
    with os.scandir(path) as it:
        return sorted(e.name for e in it if not e.name.startswith(".") and e.is_file())


def _holds_utkface_names(path: Path) -> bool:
    return any(is_image_name(n) and not isinstance(parse_name(n), str) for n in _file_names(path))


def _utkface_root(path: Path) -> Path | None:
    """`path` itself when a file there has a UTKFace name, else such a UTKFace/ subfolder, else None."""
    if _holds_utkface_names(path):
        return path
    with os.scandir(path) as it:
        subfolders = [Path(e.path) for e in it if e.is_dir() and e.name.lower() == "utkface"]
    return next((p for p in subfolders if _holds_utkface_names(p)), None)


def read_utkface(root: str | os.PathLike) -> tuple[pd.DataFrame, SkipReport]:
    """Read a UTKFace folder (layout in the module docstring)."""
    path = existing_dir(root, "utkface")
    folder = _utkface_root(path) if path.is_dir() else None
    if folder is None:
        found = describe_dir(path) if path.is_dir() else "a file"
        raise DatasetFormatError(
            f"utkface: expected {UTKFACE_LAYOUT} (or a UTKFace/ folder of them); found in {path}: {found}"
        )
    report = SkipReport()
    rows: list[Row] = []
    for name in _file_names(folder):
        if not is_image_name(name):
            report.add(NOT_IMAGE, name)
            continue
        parsed = parse_name(name)
        if isinstance(parsed, str):
            report.add(parsed, name)
            continue
        gender, race, age = parsed
        rows.append((str(folder / name), hash_split(name), None, gender, race, age))
    return samples_frame(rows), report


def race_code(source: str) -> int | None:
    """The race code (0-4, UTKFACE_RACE_GROUPS) in a UTKFace file name, or None when the name holds none."""
    fields = Path(str(source)).name.split("_", 3)
    if len(fields) != 4 or not fields[2].isascii() or not fields[2].isdigit():
        return None
    code = int(fields[2])
    return code if code in UTKFACE_RACE else None


def outside_race_mask(sources: Iterable[str]) -> np.ndarray:
    """True for UTKFace files of a group outside the paper's three (Indian, Others: the race task's "other")."""
    return np.asarray([(code := race_code(s)) is not None and UTKFACE_RACE[code] == RACE_OTHER for s in sources], bool)
