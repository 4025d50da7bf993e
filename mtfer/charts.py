"""What the app shows, as pure functions: plotly figures, accuracy cards beside the paper's figures, the model card,
a training job's status line (the Predict page's photo labels and answers: mtfer.predict_view). No Streamlit here;
the pages lay these out."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mtfer import faces
from mtfer.datasets import FORMATS
from mtfer.lineage import Lineage, read_lineage
from mtfer.tasks import TASK_NAMES, display_name

# --- the paper's figures (SPEC section 2) ---------------------------------------------------------------


@dataclass(frozen=True)
class PaperResult:
    dataset: str  # data set format name (mtfer.datasets.FORMATS)
    setting: str  # how the paper trained it
    task: str
    accuracy: float
    loss: float | None = None


# Saroop et al., arXiv 2110.15028, on the paper's own 90/10 split, where the same 10% served early stopping
# and reporting (optimistic).
PAPER_RESULTS: tuple[PaperResult, ...] = (
    PaperResult("rafdb", "multi-task", "emotion", 0.7926, 0.6956),
    PaperResult("rafdb", "multi-task", "gender", 0.7832, 0.5110),
    PaperResult("rafdb", "multi-task", "race", 0.8610, 0.4524),
    PaperResult("rafdb", "multi-task", "age", 0.7476, 0.9003),
    PaperResult("rafdb", "single-task", "emotion", 0.4538),
    PaperResult("fer2013", "single-task", "emotion", 0.6791),
    PaperResult("fer2013", "RAF-DB model fine-tuned on FER2013", "emotion", 0.5312),
)
PAPER_DATASET_NAMES = {"rafdb": "RAF-DB", "fer2013": "FER2013"}


def _paper(dataset: str, setting: str, task: str) -> PaperResult | None:
    return next((r for r in PAPER_RESULTS if (r.dataset, r.setting, r.task) == (dataset, setting, task)), None)


def paper_reference(dataset: str, task: str, multi_task: bool) -> tuple[PaperResult | None, bool]:
    """The paper's figure to show beside an accuracy of `task` on `dataset` (a format name) and whether it was
    measured on the same data set. FER2013 emotion -> the paper's FER2013 figure; RAF-DB -> its multi- or
    single-task figure; gender, race and age on other data -> the RAF-DB multi-task figure (different data,
    a rough guide only); anything else -> None."""
    family = "fer2013" if dataset.startswith("fer2013") else dataset
    if family == "fer2013" and task == "emotion":
        return _paper("fer2013", "single-task", "emotion"), True
    if family == "rafdb":
        result = _paper("rafdb", "multi-task" if multi_task else "single-task", task)
        return (result, True) if result else (_paper("rafdb", "multi-task", task), True)
    if task != "emotion":
        return _paper("rafdb", "multi-task", task), False
    return None, False


EVAL_SPLIT_NAMES = ("train", "val", "test", "all")


def evaluation_dataset(key: str) -> str:
    """The data set part of an evaluation folder name: 'fer2013-test' -> 'fer2013', 'fer2013-csv-val' ->
    'fer2013-csv', and for one saved under the runs folder 'default-20250101-120000-fer2013-test' -> 'fer2013'."""
    name, sep, split = key.rpartition("-")
    if not (sep and split in EVAL_SPLIT_NAMES):
        return key
    return next((fmt for fmt in sorted(FORMATS, key=len, reverse=True) if name.endswith(f"-{fmt}")), name)


def percent(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}%}"


# Data set formats (mtfer.datasets.FORMATS) and splits as people write them.
DATASET_TITLES = {
    "fer2013": "FER2013",
    "fer2013-csv": "FER2013",
    "rafdb": "RAF-DB",
    "utkface": "UTKFace",
    "folders": "image folders",
}
SPLIT_TITLES = {"train": "training images", "val": "validation images", "test": "test images", "all": "all images"}
# One line for the pages, above the accuracy cards.
PAPER_NOTE = (
    "The paper's figures come from its own 90/10 split, where the same images chose when training stopped and gave "
    "the score (optimistic), and mostly from RAF-DB. They are shown in grey as a rough guide; a difference is "
    "coloured only where the data set and the protocol are the same."
)


def dataset_title(fmt: str) -> str:
    """'fer2013' -> 'FER2013', 'utkface' -> 'UTKFace', 'rafdb' -> 'RAF-DB'; unknown names unchanged."""
    return DATASET_TITLES.get(fmt, fmt)


def evaluation_split(key: str) -> str | None:
    """The split part of an evaluation folder name ('fer2013-test' -> 'test'), None when it has none."""
    _, sep, split = key.rpartition("-")
    return split if sep and split in EVAL_SPLIT_NAMES else None


def evaluation_title(key: str) -> str:
    """An evaluation folder name for people: 'fer2013-test' -> 'FER2013, test images', and one saved under the
    runs folder, 'default-20261130-101500-utkface-val' -> 'UTKFace, validation images (evaluated 30 Nov 2026,
    10:15)'."""
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
        text += f" (evaluated {when.day} {when:%b %Y, %H:%M})"
    return text


@dataclass(frozen=True)
class AccuracyCard:
    """One task's accuracy on one evaluation, with the paper's figure where there is one."""

    task: str
    evaluation: str  # e.g. "fer2013-test"
    accuracy: float | None
    n: int
    paper: PaperResult | None = None
    same_data: bool = False
    multi_task: bool = False
    protocol: str | None = None  # the model's ("holdout" or "paper"); None when not known

    @property
    def label(self) -> str:
        """Short and stable: 'Emotion · fer2013-test'."""
        return f"{self.task.capitalize()} · {self.evaluation}"

    @property
    def title(self) -> str:
        """For people, short enough for a card: 'Emotion · FER2013' (test images), 'Age group · UTKFace
        (validation)'."""
        split = evaluation_split(self.evaluation)
        where = dataset_title(evaluation_dataset(self.evaluation))
        if split is None:
            return display_name(self.task)
        return f"{display_name(self.task)} · {where}" + ("" if split == "test" else f" ({SPLIT_TITLES[split]})")

    @property
    def value(self) -> str:
        return percent(self.accuracy)

    @property
    def comparable(self) -> bool:
        """Like for like with the paper's figure: the same data set, the paper's protocol (the 10% that chose when
        to stop is the one scored) and the same setting (multi- or single-task)."""
        return bool(
            self.paper is not None
            and self.same_data
            and self.accuracy is not None
            and self.protocol == "paper"
            and evaluation_split(self.evaluation) == "val"
            and self.paper.setting == ("multi-task" if self.multi_task else "single-task")
        )

    @property
    def delta(self) -> str | None:
        """Difference to the paper in percentage points, only where the comparison is like for like."""
        if not self.comparable or self.paper is None or self.accuracy is None:
            return None
        return f"{(self.accuracy - self.paper.accuracy) * 100:+.1f} pts vs paper"

    @property
    def badge(self) -> str | None:
        """What st.metric shows as its delta: the coloured difference where like for like, else the paper's figure
        (to be shown in grey, `badge_color`, without an arrow)."""
        return self.delta if self.comparable else self.paper_value

    @property
    def badge_color(self) -> str:
        """st.metric's delta_color: "normal" (green/red) for a like-for-like difference, else "off" (grey)."""
        return "normal" if self.comparable else "off"

    @property
    def paper_value(self) -> str | None:
        """'Paper: 67.9%', shown in grey beside a score it is not like for like with."""
        return None if self.paper is None else f"Paper: {self.paper.accuracy:.1%}"

    @property
    def paper_text(self) -> str:
        """One line on how this score relates to the paper's."""
        if self.paper is None:
            return "The paper reports no figure for this."
        where = PAPER_DATASET_NAMES.get(self.paper.dataset, self.paper.dataset)
        if self.comparable:
            return (
                f"Same data set and protocol as the paper's {self.paper.accuracy:.1%} ({where}, {self.paper.setting})."
            )
        if not self.same_data:
            return f"Paper: {self.paper.accuracy:.1%} on {where}, a different data set; not directly comparable."
        return (
            f"Paper: {self.paper.accuracy:.1%} on {where} ({self.paper.setting}) with its own optimistic split; "
            "not directly comparable."
        )

    @property
    def help(self) -> str:
        return f"{self.n:,} labelled faces. {self.paper_text}"


def accuracy_cards(
    evaluation: str, task_metrics: Mapping[str, Mapping], multi_task: bool, protocol: str | None = None
) -> list[AccuracyCard]:
    """Cards for one evaluation's {task: {"accuracy", "n", ...}} in model order; tasks without labels left out.
    `protocol` is the model's (metadata["protocol"]): only a "paper" model's validation scores are like for like
    with the paper's figures."""
    dataset = evaluation_dataset(evaluation)
    cards = []
    for task in TASK_NAMES:
        m = task_metrics.get(task)
        if not m or not m.get("n"):
            continue
        paper, same = paper_reference(dataset, task, multi_task)
        cards.append(AccuracyCard(task, evaluation, m.get("accuracy"), int(m["n"]), paper, same, multi_task, protocol))
    return cards


def summary_cards(
    summary: Mapping[str, Mapping[str, Mapping]], multi_task: bool, protocol: str | None = None
) -> list[AccuracyCard]:
    """Cards from a bundle's metadata["metrics"] ({evaluation: {task: {...}}}): test evaluations when there are
    any (else validation ones), one card per task and evaluation."""
    keys = [k for k in summary if k.endswith("-test")] or list(summary)
    return [card for key in sorted(keys) for card in accuracy_cards(key, summary[key], multi_task, protocol)]


# --- the model card ---------------------------------------------------------------------------------------

PROTOCOL_TEXT = {
    "holdout": "On test images that training never saw (a slice of the training images chose when to stop).",
    "paper": (
        "The paper's protocol: one 90/10 split whose 10% both chose when to stop and gave the score, so the "
        "figures are optimistic."
    ),
}
ARCHITECTURE_TEXT = {
    "paper": "the paper's network (three convolution blocks, 2.4M weights)",
    "fast": "a smaller, faster network",
}


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass
class ModelCard:
    name: str  # the model's title: metadata["title"], else one made from what it is and when it was trained
    facts: list[tuple[str, str]]
    optimistic: bool
    multi_task: bool
    cards: list[AccuracyCard] = field(default_factory=list)
    description: str = ""  # metadata["description"], else one sentence made from the metadata
    folder: str = ""  # the bundle's folder name, for people who look for it on disk


def is_optimistic(metadata: Mapping) -> bool:
    return bool(metadata.get("optimistic")) or metadata.get("protocol") == "paper"


ARCHITECTURE_NAMES = {"paper": "the paper's design", "fast": "fast"}
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


def _joined(items: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = [i for i in items if i]
    return " and ".join(items) if len(items) < 3 else ", ".join(items[:-1]) + " and " + items[-1]


def model_title(metadata: Mapping) -> str:
    """metadata["title"] when the model has one, else e.g. 'Multi-task network (fast), trained 30 Nov 2026'."""
    if isinstance(metadata.get("title"), str) and metadata["title"].strip():
        return metadata["title"].strip()
    tasks = list(metadata.get("tasks", {}))
    kind = "Multi-task" if len(tasks) > 1 else f"{display_name(tasks[0])}-only" if tasks else "Single-task"
    architecture = str(metadata.get("architecture", ""))
    name = f"{kind} network"
    if architecture:
        name += f" ({ARCHITECTURE_NAMES.get(architecture, architecture)})"
    when = format_date(metadata.get("created"), short=True)
    return f"{name}, trained {when}" if when else name


def _datasets_text(metadata: Mapping) -> str:
    parts = []
    for d in metadata.get("datasets") or []:
        fmt = str(d.get("format", "")) if isinstance(d, Mapping) else ""
        title = dataset_title(fmt) if fmt != "folders" else f"image folders ({Path(str(d.get('root', ''))).name})"
        parts.append(f"{title} ({DATASET_LABELS[fmt]})" if fmt in DATASET_LABELS else title)
    return _joined(parts)


def pseudo_labels_text(metadata: Mapping) -> str | None:
    """The model card's "Extra labels" (mtfer.pseudo): which data sets' training faces a teacher model gave which
    labels; None when the model trained on true labels only."""
    record = metadata.get("pseudo_labels")
    if not isinstance(record, list) or not record:
        return None
    parts, teachers, soft = [], set(), False
    for entry in record:
        if not isinstance(entry, Mapping):
            continue
        filled = {t: n for t, n in (entry.get("filled") or {}).items() if n}
        if not filled:
            continue
        fmt = str((entry.get("dataset") or {}).get("format", ""))
        labels = _joined([display_name(t).lower() for t in filled])
        most = max(filled.values())
        up_to = "up to " if len(set(filled.values())) > 1 else ""
        parts.append(f"{labels} for {up_to}{most:,} {dataset_title(fmt) or fmt} faces")
        teacher = entry.get("teacher") or {}
        made = format_date(teacher.get("created"))
        if made:
            made += f", {datetime.fromisoformat(str(teacher['created'])):%H:%M}"
        # The teacher's folder name and when it was made: a shipped model taught by the one shipped before it (both
        # in models/default) reads "the model default made <date, time>", not as its own teacher.
        teachers.add(Path(str(teacher.get("path", "another model"))).name + (f" made {made}" if made else ""))
        soft = soft or entry.get("targets") == "soft"
    if not parts:
        return None
    how = "its probabilities" if soft else "its answers"
    text = _joined(parts)
    return (
        f"{text[:1].upper() + text[1:]}, from the model {_joined(sorted(teachers))} ({how}, where it was sure "
        "enough); training images only, never the ones it is scored on"
    )


def model_description(metadata: Mapping) -> str:
    """metadata["description"] when the model has one, else one sentence on what it reads and from which data."""
    if isinstance(metadata.get("description"), str) and metadata["description"].strip():
        return metadata["description"].strip()
    tasks = [display_name(t).lower() for t in metadata.get("tasks", {})]
    text = f"One network that reads {_joined(tasks) or 'faces'} from a face"
    data = _joined([dataset_title(str(d.get("format", ""))) for d in metadata.get("datasets") or []])
    return text + (f", taught with {data}." if data else ".")


def _machine_text(machine: object) -> str:
    """'x86_64 2 cpu' -> ' on a 2-core computer'; '' when not recorded."""
    found = re.search(r"(\d+)\s*cpu", str(machine or ""))
    return f" on a {found.group(1)}-core computer" if found else ""


def about_duration(seconds: float | None) -> str:
    """A duration rounded as people say it: '45 s', '31 min', '1 h 05 min' (results tables round to minutes)."""
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    if seconds < 60:
        return f"{max(0, round(seconds))} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def choice_title(kind: str, folder: str, metadata: Mapping) -> str:
    """A model to choose from, for people: 'Active model · Multi-task network (fast), trained 28 Nov 2026', and
    for a run its folder name too."""
    title = model_title(metadata) if metadata else folder
    if kind == "active":
        return f"Active model · {title}"
    if kind == "default":
        return f"Default model · {title}"
    return f"Run {folder} · {title}" if metadata else f"Run {folder}"


def training_time_text(metadata: Mapping, lineage: Lineage) -> str:
    """How long training took, over every run of the lineage when they are all known (the README's wall time)."""
    machine = _machine_text(metadata.get("machine"))
    own = lineage.stages[-1] if lineage.stages else None
    own_seconds = metadata.get("train_seconds")
    own_epochs = own.epochs if own else None
    epochs = f"{own_epochs} epochs" if own_epochs else ""
    if not lineage.continued:
        return f"{about_duration(own_seconds)}{machine}" + (f" ({epochs})" if epochs else "")
    runs_before = len(lineage.stages) - 1
    before = "an earlier run" if runs_before == 1 else f"{runs_before} earlier runs"
    total, total_epochs = lineage.total_seconds, lineage.total_epochs
    if total is not None:
        text = f"{about_duration(total)} in all{machine}"
        if total_epochs and runs_before == 1:
            first = lineage.stages[0].epochs
            return f"{text}: {total_epochs} epochs, {first} in an earlier run and {own_epochs} more in this one"
        if total_epochs:
            return f"{text}: {total_epochs} epochs over {runs_before + 1} runs, each continuing the one before"
        return f"{text}; this model continued {before}"
    return (
        f"{about_duration(own_seconds)} for its last {epochs or 'stage'}{machine}; it continued {before} whose "
        "time is not recorded with it"
    )


def model_card(metadata: Mapping, path: str | os.PathLike, lineage: Lineage | None = None) -> ModelCard:
    """What a non-technical reader needs to know about a model bundle, from its metadata.json (and, for the
    training time of a model that continued another, its lineage: :func:`mtfer.lineage.read_lineage`)."""
    lineage = read_lineage(path, metadata) if lineage is None else lineage
    tasks = list(metadata.get("tasks", {}))
    multi_task = len(tasks) > 1
    predicts = _joined([display_name(t).lower() for t in tasks]).capitalize()
    predicts += ", all at once (multi-task)" if multi_task else " only (single-task)"
    samples = metadata.get("samples") or {}
    counts = _joined([f"{n:,} {SAMPLE_TITLES.get(split, split)}" for split, n in samples.items()])
    protocol = str(metadata.get("protocol", "unknown"))
    architecture = str(metadata.get("architecture", "unknown"))
    facts = [
        ("Predicts", predicts),
        ("Taught with", _datasets_text(metadata) or "not recorded"),
        ("Faces used", counts or "not recorded"),
        ("How it was scored", PROTOCOL_TEXT.get(protocol, protocol)),
        ("Network", ARCHITECTURE_TEXT.get(architecture, architecture)),
        ("Trained", format_date(metadata.get("created")) or "date not recorded"),
        ("Training time", training_time_text(metadata, lineage)),
    ]
    if (extra := pseudo_labels_text(metadata)) is not None:
        facts.insert(2, ("Extra labels", extra))
    cards = summary_cards(metadata.get("metrics") or {}, multi_task, protocol)
    return ModelCard(
        model_title(metadata),
        facts,
        is_optimistic(metadata),
        multi_task,
        cards,
        model_description(metadata),
        Path(path).name,
    )


# --- prediction views -------------------------------------------------------------------------------------

ACCENT = "#e4572e"
MUTED = "#9fb3c8"


def enlarge(face: np.ndarray, side: int = 200) -> np.ndarray:
    """A small grayscale face scaled up with visible pixels (nearest neighbour), for display."""
    return cv2.resize(np.asarray(face, dtype=np.uint8), (side, side), interpolation=cv2.INTER_NEAREST)


# Characters that make markdown (or HTML, or LaTeX) anywhere in a line; file names cannot hold a newline.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|~$#:])")


def escape_markdown(text: str) -> str:
    """User text (a file name) shown literally inside Streamlit markdown."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


# --- evaluation views -------------------------------------------------------------------------------------


def display_frame(frame: pd.DataFrame, task: str) -> pd.DataFrame:
    """A frame indexed (and, for a confusion matrix, with columns) by class names, with the names as people write
    them ('african_american' -> 'African American')."""
    out = frame.rename(index=lambda c: display_name(task, str(c)))
    if frame.columns.name == "predicted":
        out = out.rename(columns=lambda c: display_name(task, str(c)))
    return out


def confusion_figure(frame: pd.DataFrame, normalized: bool = False, title: str = "") -> go.Figure:
    """Heatmap of a confusion frame (rows true, columns predicted, as evaluation.confusion_frame gives it)."""
    z = frame.to_numpy(dtype=np.float64)
    text = [[f"{v:.0%}" if normalized else f"{int(v):,}" for v in row] for row in z]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[str(c) for c in frame.columns],
            y=[str(i) for i in frame.index],
            text=text,
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=1 if normalized else max(1.0, float(z.max()) if z.size else 1.0),
            hovertemplate="true %{y}<br>predicted %{x}<br>%{text}<extra></extra>",
            colorbar={"tickformat": ".0%"} if normalized else {},
        )
    )
    fig.update_layout(
        title={"text": title, "x": 0},
        xaxis={"title": "predicted class", "side": "bottom"},
        yaxis={"title": "true class", "autorange": "reversed"},
        height=140 + 42 * len(frame.index),
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    return fig


def history_tasks(history: pd.DataFrame) -> list[str]:
    """Tasks with per-epoch loss or accuracy columns in a history.csv table, in model order."""
    return [t for t in TASK_NAMES if any(f"{p}{t}_{m}" in history for p in ("", "val_") for m in ("loss", "accuracy"))]


def _epoch_tick(history: pd.DataFrame) -> int:
    """Whole epochs on the x axis, at most about ten ticks."""
    return max(1, math.ceil(len(history) / 10))


def _epochs(history: pd.DataFrame) -> pd.Series:
    return history["epoch"] if "epoch" in history else pd.Series(range(1, len(history) + 1))


def _mark_starts(fig: go.Figure, starts: Sequence[tuple[int, str]]) -> None:
    """A dotted line before the first epoch of each continuation of a training lineage."""
    for epoch, _ in starts:
        fig.add_vline(
            x=epoch - 0.5,
            line={"dash": "dot", "color": "#7f7f7f", "width": 1},
            annotation_text="training continued",
            annotation_position="top left",
            annotation_font={"size": 11, "color": "#7f7f7f"},
        )


def history_figure(history: pd.DataFrame, task: str, starts: Sequence[tuple[int, str]] = ()) -> go.Figure:
    """Loss and accuracy per epoch of one task, training (solid) vs validation (dashed); `starts` marks where a
    continued run's epochs begin (:class:`mtfer.lineage.Lineage`)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"))
    epochs = _epochs(history)
    for col, metric in enumerate(("loss", "accuracy"), start=1):
        for prefix, name, dash in (("", "training", "solid"), ("val_", "validation", "dash")):
            column = f"{prefix}{task}_{metric}"
            if column in history:
                fig.add_trace(
                    go.Scatter(
                        x=epochs,
                        y=history[column],
                        name=name,
                        mode="lines+markers",
                        line={"dash": dash, "color": ACCENT if prefix else "#1f77b4"},
                        showlegend=col == 1,
                        legendgroup=name,
                    ),
                    row=1,
                    col=col,
                )
    fig.update_yaxes(tickformat=".0%", row=1, col=2)
    fig.update_xaxes(title_text="epoch", dtick=_epoch_tick(history))
    _mark_starts(fig, starts)
    fig.update_layout(
        title={"text": display_name(task), "x": 0}, height=300, margin={"l": 10, "r": 10, "t": 60, "b": 10}
    )
    return fig


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


def rate_axis(values: Sequence[float]) -> dict:
    """A readable y axis for learning rates: a log axis with ticks at 1, 2 and 5 (or whole powers of ten) when the
    rates span more than a factor of 20 and are all positive, else a linear axis from 0; every tick labelled with
    :func:`format_rate` (plotly's own log ticks read '1, 1e-3, 5, 2, 1e-4, 5')."""
    rates = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not rates:
        return {}
    low, high = min(rates), max(rates)
    if low > 0 and high / low > 20:
        lo, hi = math.log10(low) - 0.15, math.log10(high) + 0.15
        decades = range(math.floor(lo), math.ceil(hi) + 1)
        steps = (1,) if len(decades) > 4 else (1, 2, 5)
        ticks = [m * 10.0**k for k in decades for m in steps if lo <= math.log10(m * 10.0**k) <= hi]
        if len(ticks) > 8:
            ticks = ticks[:: math.ceil(len(ticks) / 8)]
        return {"type": "log", "range": [lo, hi], "tickvals": ticks, "ticktext": [format_rate(t) for t in ticks]}
    top = high * 1.15 if high > 0 else 1.0
    raw = top / 4
    base = 10.0 ** math.floor(math.log10(raw))
    step = next(m * base for m in (1, 2, 5, 10) if m * base >= raw)
    ticks = [i * step for i in range(int(top // step) + 1)]
    return {"type": "linear", "range": [0, top], "tickvals": ticks, "ticktext": [format_rate(t) for t in ticks]}


def learning_rate_figure(history: pd.DataFrame, starts: Sequence[tuple[int, str]] = ()) -> go.Figure | None:
    """The learning rate per epoch on a readable axis (:func:`rate_axis`), None when history.csv has no
    learning_rate column; `starts` marks where a continued run's epochs begin."""
    if "learning_rate" not in history or history["learning_rate"].dropna().empty:
        return None
    rates = pd.to_numeric(history["learning_rate"], errors="coerce")
    fig = go.Figure(
        go.Scatter(
            x=_epochs(history),
            y=rates,
            mode="lines+markers",
            text=[format_rate(r) if pd.notna(r) else "" for r in rates],
            hovertemplate="epoch %{x}: %{text}<extra></extra>",
        )
    )
    _mark_starts(fig, starts)
    fig.update_layout(
        title={"text": "Learning rate", "x": 0},
        xaxis={"title": "epoch", "dtick": _epoch_tick(history)},
        yaxis=rate_axis(rates.dropna().tolist()),
        height=260,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    return fig


LOSS_WEIGHT_PREFIX = "weight_"  # history.csv's learned task weights (mtfer.loss_weights.WEIGHT_PREFIX)
LOSS_WEIGHTS_NOTE = (
    "How much each task counted in training. With learned weights, each starts at 1 and training adjusts it: a task "
    "whose answers stay uncertain gets a smaller weight, so it pulls less on what the tasks share."
)


def loss_weight_tasks(history: pd.DataFrame) -> list[str]:
    """Tasks whose learned loss weight history.csv logs per epoch (weight_<task> columns), in model order."""
    return [t for t in TASK_NAMES if f"{LOSS_WEIGHT_PREFIX}{t}" in history]


def loss_weights_figure(history: pd.DataFrame, starts: Sequence[tuple[int, str]] = ()) -> go.Figure | None:
    """The learned weight of each task's loss per epoch, one line per task named with its last weight
    (TrainConfig loss_weights_mode "learned"); None when history.csv has no weight_<task> column (fixed weights).
    `starts` marks where a continued run's epochs begin."""
    tasks = loss_weight_tasks(history)
    if not tasks:
        return None
    epochs = _epochs(history)
    fig = go.Figure()
    for task in tasks:
        weights = pd.to_numeric(history[f"{LOSS_WEIGHT_PREFIX}{task}"], errors="coerce")
        last = weights.dropna()
        fig.add_trace(
            go.Scatter(
                x=epochs,
                y=weights.tolist(),
                name=f"{display_name(task)} ({last.iloc[-1]:.2f})" if len(last) else display_name(task),
                mode="lines+markers",
                hovertemplate=f"{display_name(task)}, epoch %{{x}}: weight %{{y:.2f}}<extra></extra>",
            )
        )
    _mark_starts(fig, starts)
    fig.add_hline(y=1.0, line={"dash": "dot", "color": "#9aa5b1", "width": 1})  # where every weight starts
    fig.update_layout(
        title={"text": "Learned task weights", "x": 0},
        xaxis={"title": "epoch", "dtick": _epoch_tick(history)},
        yaxis={"title": "weight", "rangemode": "tozero"},
        height=300,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


OVERALL_COLOR = "#52667a"


def faces_text(n: int) -> str:
    """'1 face', '1,234 faces'."""
    return f"{n:,} face{'' if n == 1 else 's'}"


def slices_figure(
    slices: pd.DataFrame,
    task: str = "emotion",
    overall: float | None = None,
    overall_n: int | None = None,
    predicted: bool = False,
) -> go.Figure | None:
    """A task's accuracy per gender, race and age group (one panel each) from a table with the columns attribute,
    group, n, accuracy (an evaluation's slices, or :func:`mtfer.evaluation.group_accuracy` with its `task` column).
    With `overall` (the task's accuracy on all `overall_n` faces) each panel starts with a darker "All faces" bar to
    compare the groups with. `predicted`: the groups are the model's own answers (group_accuracy with
    groups_from="predicted"), which the titles say and a hatch on the groups' bars marks. None when no group has a
    face."""
    usable = slices[(slices["n"] > 0) & slices["accuracy"].notna()]
    if "task" in usable.columns:
        usable = usable[usable["task"] == task]
    if usable.empty:
        return None
    attributes = list(dict.fromkeys(usable["attribute"]))
    fig = make_subplots(
        rows=1,
        cols=len(attributes),
        subplot_titles=[f"By {'predicted ' if predicted else ''}{display_name(a).lower()}" for a in attributes],
        shared_yaxes=True,
    )
    with_overall = overall is not None and math.isfinite(overall)
    for col, attribute in enumerate(attributes, start=1):
        part = usable[usable["attribute"] == attribute]
        x = [
            f"{display_name(attribute, str(g))}<br>{faces_text(n)}"
            for g, n in zip(part["group"], part["n"], strict=True)
        ]
        y, colors = part["accuracy"].tolist(), [MUTED] * len(part)
        if with_overall:
            x = [f"<b>All faces</b><br>{faces_text(overall_n)}" if overall_n else "<b>All faces</b>", *x]
            y, colors = [float(overall), *y], [OVERALL_COLOR, *colors]
        fig.add_trace(
            go.Bar(
                x=x,
                y=y,
                text=[f"{a:.0%}" for a in y],
                textposition="outside",
                cliponaxis=False,
                hovertemplate="%{x}: %{y:.1%} right<extra></extra>",
                marker_color=colors,
                marker_pattern_shape=["/" if predicted and c == MUTED else "" for c in colors],  # guessed groups
                showlegend=False,
            ),
            row=1,
            col=col,
        )
    fig.update_yaxes(range=[0, 1.12], tickformat=".0%")
    fig.update_layout(
        title={"text": f"{display_name(task)} accuracy by {'predicted ' if predicted else ''}group", "x": 0},
        height=340,
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
    )
    return fig


def comparison_figure(table: pd.DataFrame) -> go.Figure:
    """Grouped bars of accuracy per task (columns) for each run (rows), as evaluation.compare_runs gives it."""
    fig = go.Figure()
    for run, row in table.iterrows():
        fig.add_trace(
            go.Bar(
                name=str(run),
                x=list(table.columns),
                y=row.to_numpy(dtype=np.float64),
                text=[percent(v) for v in row],
                textposition="outside",
                cliponaxis=False,
            )
        )
    fig.update_layout(
        barmode="group",
        yaxis={"range": [0, 1.1], "tickformat": ".0%", "title": "accuracy"},
        height=340,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "y": -0.15},
    )
    return fig


RELIABILITY_NOTE = (
    "When the model says it is 80% sure, it should be right 8 times in 10. Each bar shows how often it was right "
    "among the faces where it was about that sure; on the dashed line the two agree, bars below it mean too sure, "
    "above it too modest (pale bars rest on few faces). The calibration error is the average gap, weighted by "
    "faces: 0% is perfect."
)
RELIABILITY_COLOR = "#1f77b4"
SPARSE_BIN_SHARE = 0.01  # bins with fewer faces than this share (or 10) are drawn faint: their accuracy is noise


def calibration_summary(metrics: Mapping, task: str) -> str | None:
    """One line on a task's calibration in an evaluation's metrics ("Calibration error 2.1% (4.8% before temperature
    scaling)."), None when the evaluation has no ECE (saved before calibration was measured, or no labelled face)."""
    entry = metrics.get("tasks", {}).get(task, {})
    ece = entry.get("ece")
    if ece is None:
        return None
    before = entry.get("ece_uncalibrated")
    temperature = metrics.get("calibration", {}).get("temperature", {}).get(task)
    if before is None or temperature in (None, 1.0):
        return f"Calibration error {ece:.1%}."
    return f"Calibration error {ece:.1%} ({before:.1%} before temperature scaling)."


def reliability_figure(entry: Mapping, title: str = "") -> go.Figure | None:
    """A reliability diagram from one task of an evaluation's metrics (tasks.<task>: its ``reliability`` bins,
    ``ece`` and, for a calibrated bundle, ``ece_uncalibrated``): per confidence bin (x: how sure the model said it
    was) a bar up to how often it was right (y), the dashed diagonal where the two agree, faces per bin in the hover;
    bins with few faces faint. The title carries the calibration error. None without a labelled face."""
    diagram = entry.get("reliability") or {}
    counts = [int(c) for c in diagram.get("count", [])]
    total = sum(counts)
    if not total:
        return None
    edges = [float(e) for e in diagram["edges"]]
    rows = [
        (edges[i], edges[i + 1], float(diagram["confidence"][i]), float(diagram["accuracy"][i]), n)
        for i, n in enumerate(counts)
        if n
    ]
    sparse = max(10, SPARSE_BIN_SHARE * total)
    hover = [
        f"Said {lo:.0%}–{hi:.0%} sure (on average {conf:.0%}):<br>right {acc:.0%} of the time<br>{n:,} faces"
        + (" (few: a rough figure)" if n < sparse else "")
        for lo, hi, conf, acc, n in rows
    ]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=[(lo + hi) / 2 for lo, hi, *_ in rows],
            y=[acc for *_, acc, _ in rows],
            width=[(hi - lo) * 0.92 for lo, hi, *_ in rows],
            marker={"color": RELIABILITY_COLOR, "opacity": [0.35 if n < sparse else 0.85 for *_, n in rows]},
            name="how often it was right",
            hovertext=hover,
            hoverinfo="text",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            line={"dash": "dash", "color": "#7f7f7f", "width": 1.5},
            name="perfect: right as often as it says",
            hoverinfo="skip",
        )
    )
    ece = entry.get("ece")
    before = entry.get("ece_uncalibrated")
    subtitle = "" if ece is None else f"calibration error {ece:.1%}"
    if ece is not None and before is not None and round(before, 3) != round(ece, 3):
        subtitle += f" ({before:.1%} before calibration)"
    fig.update_layout(
        title={"text": f"{title} · {subtitle}" if title and subtitle else title or subtitle, "x": 0},
        xaxis={"title": "how sure the model said it was", "range": [0, 1], "tickformat": ".0%", "dtick": 0.2},
        yaxis={"title": "how often it was right", "range": [0, 1.02], "tickformat": ".0%", "dtick": 0.2},
        height=360,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": -0.22, "x": 0},
        bargap=0,
    )
    return fig


def sample_face(
    source: str, config: faces.PreprocessConfig | None = None, roots: Sequence[Path] = ()
) -> np.ndarray | None:
    """The face of one evaluated sample as the network saw it (framed like training data), from its `source`
    image path (a relative one, as in the shipped model's evaluations, is looked up under the data `roots`);
    None when the file is gone or the source is a CSV row."""
    path = Path(source)
    if source and not path.is_absolute():
        path = next((root / path for root in roots if (root / path).is_file()), path)
    if not source or not path.is_file():
        return None
    try:
        return faces.frame_crop(faces.decode_image(path), config or faces.PreprocessConfig()).aligned
    except (ValueError, OSError, cv2.error):
        return None


def gallery_caption(row: Mapping, task: str) -> str:
    """'True: Happy → predicted: Sad (87% sure)' for a row of a misclassified table."""
    true, predicted = display_name(task, str(row[f"{task}_true"])), display_name(task, str(row[f"{task}_pred"]))
    return f"True: {true} → predicted: {predicted} ({float(row[f'{task}_confidence']):.0%} sure)"


# --- training jobs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobStatus:
    state: str
    fraction: float  # 0..1 of all epochs
    headline: str
    active: bool
    finished: bool


def _preparing_line(progress: Mapping) -> tuple[float, str]:
    """Progress bar fraction and line while a job frames a data set's faces (mtfer.training.PreparationProgress)."""
    name = progress.get("dataset") or "the data sets"
    of = f" ({progress['dataset_index']} of {progress['datasets']})" if progress.get("datasets", 0) > 1 else ""
    done, total = int(progress.get("done") or 0), int(progress.get("total") or 0)
    if not total:
        return 0.0, f"Loading {name}{of} ..."
    line = f"Preparing {name}{of}, the first time only: {done:,} of {total:,} faces"
    if progress.get("rate"):
        line += f" · {float(progress['rate']):,.0f} faces/s"
    if progress.get("eta_s") is not None:
        line += f" · about {format_duration(float(progress['eta_s']))} left"
    return float(np.clip(done / total, 0.0, 1.0)), line


def _stopped_line(progress: Mapping) -> tuple[float | None, str]:
    """Progress bar fraction (None: unknown) and line of a stopped job: where it stopped, the complete epochs it
    kept (mtfer.training.stop_point) and where Resume continues."""
    stop = progress.get("stop")
    if not isinstance(stop, Mapping):  # stopped by an older version
        return None, f"Stopped at epoch {int(progress.get('epoch') or 0)}. Resume continues it."
    complete = int(stop.get("completed_epochs") or 0)
    epochs = int(progress.get("epochs") or 0)
    kept = {0: "no epoch complete yet", 1: "epoch 1 complete"}.get(complete, f"epochs 1-{complete} complete")
    then = f"Resume continues from epoch {complete + 1}." if complete else "Resume starts again from epoch 1."
    if epochs and complete >= epochs:  # every epoch done: the stop came before the final evaluation
        then = "Resume evaluates and saves the model."
    epoch, step, steps = int(stop.get("epoch") or 0), int(stop.get("step") or 0), int(stop.get("steps") or 0)
    if stop.get("phase") == "preparing":
        where = "Stopped while preparing the data sets"
    elif complete >= epoch:  # asked during the epoch's validation: the epoch completed
        where = f"Stopped after epoch {epoch}"
    else:
        where = f"Stopped during epoch {epoch} at step {step} of {steps}"
    return (complete / epochs if epochs else None), f"{where}; {kept}; {then}"


def job_status(progress: Mapping) -> JobStatus:
    """A progress.json (runs.read_progress) as a progress-bar fraction and one line for people."""
    state = str(progress.get("state", "unknown"))
    epochs = int(progress.get("epochs") or 0)
    epoch = int(progress.get("epoch") or 0)
    step, steps = int(progress.get("step") or 0), int(progress.get("steps") or 0)
    if epochs:
        within = step / steps if steps else 0.0
        done = epoch - 1 + within if epoch else 0.0
        fraction = float(np.clip(done / epochs, 0.0, 1.0))
    else:
        fraction = 0.0
    if state == "finished":
        fraction = 1.0
        headline = f"Finished after {epoch} epoch{'s' if epoch != 1 else ''}."
    elif state == "queued":
        headline = "Starting: loading TensorFlow and preparing the data sets ..."
    elif state == "running" and progress.get("phase") == "evaluating":
        headline = "Training done; evaluating on the held-out data ..."
    elif state == "running" and progress.get("phase") == "preparing":
        fraction, headline = _preparing_line(progress)
    elif state == "running":
        if not epoch:
            headline = "Preparing the data sets (the first time, faces are found and aligned) ..."
        else:
            eta = progress.get("eta_s")
            left = f" · about {format_duration(float(eta))} left" if eta is not None else ""
            headline = f"Epoch {epoch} of {epochs} · step {step} of {steps}{left}"
    elif state == "stopping":
        headline = "Stopping after the current step ..."
    elif state == "stopped":
        stopped_fraction, headline = _stopped_line(progress)
        fraction = fraction if stopped_fraction is None else float(np.clip(stopped_fraction, 0.0, 1.0))
    elif state == "failed":
        headline = f"Failed: {progress.get('error') or 'see the log'}"
    else:
        headline = f"State: {state}"
    active = state in ("queued", "running", "stopping")
    return JobStatus(state, fraction, headline, active, state == "finished")


def epoch_metrics(row: Mapping[str, Any] | None, tasks: Sequence[str]) -> list[tuple[str, str]]:
    """(label, value) of the last epoch's validation accuracy per task and its validation loss."""
    if not row:
        return []
    out = []
    for task in tasks:
        for key in (f"val_{task}_accuracy", f"{task}_accuracy"):
            if key in row and row[key] is not None:
                out.append((f"{task} {'val ' if key.startswith('val_') else ''}accuracy", percent(float(row[key]))))
                break
    for key in ("val_loss", "loss"):
        if key in row and row[key] is not None:
            out.append((key.replace("_", " "), f"{float(row[key]):.3f}"))
            break
    return out
