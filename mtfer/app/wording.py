"""Words and numbers as people read them: percentages, durations, dates, data-set and evaluation titles,
Markdown-safe file names."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import datetime

import pandas as pd

from mtfer.assess.race_groups import COLUMNS, RaceCoverage
from mtfer.core.tasks import FORMATS, display_name

EVAL_SPLIT_NAMES = ("train", "val", "test", "all")


def evaluation_dataset(key: str) -> str:
    """The data set part of an evaluation folder name: 'fer2013-test' -> 'fer2013', 'fer2013-csv-val' ->
    'fer2013-csv', and for one saved under the runs folder 'default-20250101-120000-fer2013-test' -> 'fer2013'."""
    name, sep, split = key.rpartition("-")
    if not (sep and split in EVAL_SPLIT_NAMES):
        return key
    return next((fmt for fmt in sorted(FORMATS, key=len, reverse=True) if name.endswith(f"-{fmt}")), name)


def dataset_choice(name: str, fmt: str, samples: int, tasks: Sequence[str]) -> str:
    """A data set as the pages offer it: 'mini-fer: FER2013, 16 images labelled with emotion' ('FER2013, ...' when
    the folder is named after its format)."""
    title = dataset_title(fmt)
    labels = ", ".join(display_name(t).lower() for t in tasks) or "nothing"
    head = title if name.lower() in (fmt.lower(), title.lower()) else f"{name}: {title}"
    return f"{head}, {samples:,} images labelled with {labels}"


def percent(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}%}"


# Data set formats (mtfer.core.tasks.FORMATS) and splits as people write them.
DATASET_TITLES = {
    "fer2013": "FER2013",
    "fer2013-csv": "FER2013",
    "rafdb": "RAF-DB",
    "utkface": "UTKFace",
    "folders": "image folders",
}

SPLIT_TITLES = {"train": "training images", "val": "validation images", "test": "test images", "all": "all images"}


def dataset_title(fmt: str) -> str:
    """'fer2013' -> 'FER2013', 'utkface' -> 'UTKFace', 'rafdb' -> 'RAF-DB'; unknown names unchanged."""
    return DATASET_TITLES.get(fmt, fmt)


def evaluation_split(key: str) -> str | None:
    """The split part of an evaluation folder name ('fer2013-test' -> 'test'), None when it has none."""
    _, sep, split = key.rpartition("-")
    return split if sep and split in EVAL_SPLIT_NAMES else None


def same_images(keys: Sequence[str], key: str) -> list[str]:
    """Those of `keys` (another model's evaluations) made on the same data set and split as `key`: the ones a fair
    comparison uses. `key` itself first when present, then the newest first."""
    images = (evaluation_dataset(key), evaluation_split(key))
    same = [k for k in keys if (evaluation_dataset(k), evaluation_split(k)) == images]
    return sorted(same, key=lambda k: (k != key, [-ord(c) for c in k]))


def evaluation_title(key: str) -> str:
    """An evaluation folder name for people: 'fer2013-test' -> 'FER2013, test images', and one saved under the
    runs folder, 'default-20261130-101500-utkface-val' -> 'UTKFace, validation images, evaluated 30 Nov 2026
    at 10:15'."""
    split = evaluation_split(key)
    if split is None:
        return key
    dataset = evaluation_dataset(key)
    text = f"{dataset_title(dataset)}, {SPLIT_TITLES[split]}"
    name = key[: -len(split) - 1]
    stamp = re.search(rf"(\d{{8}}-\d{{6}})(?:\.\d+)?-{re.escape(dataset)}$", name)
    if stamp:
        try:
            when = datetime.strptime(stamp.group(1), "%Y%m%d-%H%M%S")
        except ValueError:
            return text
        text += f", evaluated {when.day} {when:%b %Y} at {when:%H:%M}"  # no brackets: headings add their own
    return text


def format_duration(seconds: float | None, style: str = "exact") -> str:
    """A duration as people read it, in one of three styles:

    - "exact": a job's time so far or left, to the second: '45 s', '12 min 05 s', '1 h 05 min';
    - "minutes": how long something took, rounded to minutes (as results tables round): '45 s', '31 min', '1 h 05 min';
    - "rough": an estimate, no more precise than it is: 'under a minute', '12 min', '3 h 25 min' (5-minute steps
      from 2 hours on, whole hours without minutes: '1 h').
    """
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    if style == "rough":
        if seconds < 60:
            return "under a minute"
        minutes = int(round(seconds / 60))
        if minutes >= 120:
            minutes = int(round(minutes / 5)) * 5
        if minutes < 60:
            return f"{minutes} min"
        hours, minutes = divmod(minutes, 60)
        return f"{hours} h {minutes:02d} min" if minutes else f"{hours} h"
    if style == "minutes":
        if seconds < 60:
            return f"{max(0, round(seconds))} s"
        minutes = round(seconds / 60)
        return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"
    if style != "exact":
        raise ValueError(f"unknown duration style {style!r}; expected exact, minutes or rough")
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def about(seconds: float) -> str:
    """An estimate in words: "under a minute" or "about 12 min"."""
    return "under a minute" if seconds < 60 else f"about {format_duration(seconds, 'rough')}"


def about_range(low: float, high: float) -> str:
    """An estimate that is a range, in words: "under a minute", "about 12 min", "3-5 min", "1 h 10 min to 1 h 40 min"."""
    if high < 60:
        return "under a minute"
    step = 60 if high < 1200 else 300 if high < 3600 else 600  # ends no more precise than the estimate
    low, high = max(60, round(low / step) * step), max(60, round(high / step) * step)
    low_text, high_text = format_duration(low, "rough"), format_duration(high, "rough")
    if low_text == high_text:
        return f"about {high_text}"
    if low_text.endswith(" min") and high_text.endswith(" min") and "h" not in low_text + high_text:
        return f"{low_text.removesuffix(' min')}-{high_text}"
    return f"{low_text} to {high_text}"


ARCHITECTURE_NAMES = {"paper": "the paper's design", "fast": "fast", "wide": "wide", "ensemble": "ensemble"}


# Which labels each data set gave the model, by format.
DATASET_LABELS = {
    "fer2013": "emotions",
    "fer2013-csv": "emotions",
    "utkface": "gender, race, age",
    "rafdb": "emotion, gender, race, age",
}

SAMPLE_TITLES = {"train": "to learn from", "val": "to check progress", "test": "held back for the final test"}


def format_date(iso: str | None, short: bool = False) -> str | None:
    """'2026-11-30T08:58:06+00:00' -> '30 November 2026' ('30 Nov 2026' when short); None when not a date."""
    try:
        when = datetime.fromisoformat(str(iso))
    except ValueError:
        return None
    return f"{when.day} {when:%b %Y}" if short else f"{when.day} {when:%B %Y}"


def joined(items: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = [i for i in items if i]
    return " and ".join(items) if len(items) < 3 else ", ".join(items[:-1]) + " and " + items[-1]


# Characters that make markdown (or HTML, or LaTeX) anywhere in a line; file names cannot hold a newline.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|~$#:])")


def escape_markdown(text: str) -> str:
    """User text (a file name) shown literally inside Streamlit markdown."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def display_frame(frame: pd.DataFrame, task: str) -> pd.DataFrame:
    """A frame indexed (and, for a confusion matrix, with columns) by class names, with the names as people write
    them ('african_american' -> 'African American')."""
    out = frame.rename(index=lambda c: display_name(task, str(c)))
    if frame.columns.name == "predicted":
        out = out.rename(columns=lambda c: display_name(task, str(c)))
    return out


_SUPERSCRIPTS = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def format_rate(value: float) -> str:
    """A learning rate as people read it: 3e-4 -> '3×10⁻⁴', 1e-3 -> '10⁻³', 0.05 -> '0.05', 0 -> '0'."""
    if not math.isfinite(value) or value <= 0:
        return "0" if value == 0 else str(value)
    exponent = math.floor(math.log10(value))
    mantissa = float(f"{value / 10**exponent:.2g}")
    if mantissa >= 10:
        mantissa, exponent = mantissa / 10, exponent + 1
    if exponent >= -2:
        return f"{value:.3g}"
    power = f"10{str(exponent).translate(_SUPERSCRIPTS)}"
    return power if mantissa == 1 else f"{mantissa:g}×{power}"


def faces_text(n: int) -> str:
    """'1 face', '1,234 faces'."""
    return f"{n:,} face{'' if n == 1 else 's'}"


def race_groups_caption(race_classes: Sequence[str], min_confidence: float) -> str:
    """What the race-by-group table measures, for a model with the "other" class or one from before it."""
    knows = (
        "the paper's three and “other” for everyone else"
        if "other" in race_classes
        else "only the paper's three (this model is from before “other” existed)"
    )
    return (
        f"UTKFace labels five groups; the model's race answer knows {knows}. Indian and Others faces should get "
        "“other / not sure”, as the Predict page promises, and the three groups' faces a right answer. "
        f"“Not sure” means a race answer below {min_confidence:.0%} confidence, the threshold this model uses "
        "everywhere."
    )


def race_groups_table(report: RaceCoverage) -> pd.DataFrame:
    """The race-by-group table for people: shares as percentages, a dash where a group has no face or the figure
    does not apply (the three groups' accuracy, for Indian and Others faces)."""
    table = report.groups.copy()
    for column in COLUMNS[2:]:
        table[column] = [percent(v) if not pd.isna(v) else "—" for v in table[column]]
    return table
