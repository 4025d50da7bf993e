"""What the app shows, as pure functions: plotly figures, photos with boxes and labels, accuracy cards beside the
paper's figures, the model card, a training job's status line. No Streamlit here; the pages lay these out."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mtfer import faces
from mtfer.tasks import TASK_NAMES

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
    'fer2013-csv'."""
    name, sep, split = key.rpartition("-")
    return name if sep and split in EVAL_SPLIT_NAMES else key


def percent(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}%}"


@dataclass(frozen=True)
class AccuracyCard:
    """One task's accuracy on one evaluation, with the paper's figure where there is one."""

    task: str
    evaluation: str  # e.g. "fer2013-test"
    accuracy: float | None
    n: int
    paper: PaperResult | None = None
    same_data: bool = False

    @property
    def label(self) -> str:
        return f"{self.task.capitalize()} · {self.evaluation}"

    @property
    def value(self) -> str:
        return percent(self.accuracy)

    @property
    def delta(self) -> str | None:
        """Difference to the paper in percentage points (only against a figure on the same data set)."""
        if self.paper is None or not self.same_data or self.accuracy is None:
            return None
        return f"{(self.accuracy - self.paper.accuracy) * 100:+.1f} pts vs paper"

    @property
    def paper_text(self) -> str:
        if self.paper is None:
            return "The paper reports no comparable figure."
        where = PAPER_DATASET_NAMES.get(self.paper.dataset, self.paper.dataset)
        text = f"Paper: {self.paper.accuracy:.2%} on {where} ({self.paper.setting}, optimistic split)"
        return text if self.same_data else text + ": a different data set, a rough guide only"

    @property
    def help(self) -> str:
        return f"{self.n:,} labelled faces. {self.paper_text}."


def accuracy_cards(evaluation: str, task_metrics: Mapping[str, Mapping], multi_task: bool) -> list[AccuracyCard]:
    """Cards for one evaluation's {task: {"accuracy", "n", ...}} in model order; tasks without labels left out."""
    dataset = evaluation_dataset(evaluation)
    cards = []
    for task in TASK_NAMES:
        m = task_metrics.get(task)
        if not m or not m.get("n"):
            continue
        paper, same = paper_reference(dataset, task, multi_task)
        cards.append(AccuracyCard(task, evaluation, m.get("accuracy"), int(m["n"]), paper, same))
    return cards


def summary_cards(summary: Mapping[str, Mapping[str, Mapping]], multi_task: bool) -> list[AccuracyCard]:
    """Cards from a bundle's metadata["metrics"] ({evaluation: {task: {...}}}): test evaluations when there are
    any (else validation ones), one card per task and evaluation."""
    keys = [k for k in summary if k.endswith("-test")] or list(summary)
    return [card for key in sorted(keys) for card in accuracy_cards(key, summary[key], multi_task)]


# --- the model card ---------------------------------------------------------------------------------------

PROTOCOL_TEXT = {
    "holdout": "Hold-out: scored on test images that training never saw (validation carved from the training set).",
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
    name: str
    facts: list[tuple[str, str]]
    optimistic: bool
    multi_task: bool
    cards: list[AccuracyCard] = field(default_factory=list)


def is_optimistic(metadata: Mapping) -> bool:
    return bool(metadata.get("optimistic")) or metadata.get("protocol") == "paper"


def model_card(metadata: Mapping, path: str | os.PathLike) -> ModelCard:
    """What a non-technical reader needs to know about a model bundle, from its metadata.json."""
    tasks = list(metadata.get("tasks", {}))
    multi_task = len(tasks) > 1
    datasets = metadata.get("datasets") or []
    data = ", ".join(f"{d.get('format')} ({Path(str(d.get('root', ''))).name})" for d in datasets) or "not recorded"
    samples = metadata.get("samples") or {}
    counts = ", ".join(f"{n:,} {split}" for split, n in samples.items()) or "not recorded"
    protocol = str(metadata.get("protocol", "unknown"))
    architecture = str(metadata.get("architecture", "unknown"))
    facts = [
        ("Predicts", ", ".join(tasks) + (" (multi-task)" if multi_task else " (single-task)")),
        ("Trained on", data),
        ("Faces used", counts),
        ("Protocol", PROTOCOL_TEXT.get(protocol, protocol)),
        ("Network", ARCHITECTURE_TEXT.get(architecture, architecture)),
        (
            "Created",
            f"{metadata.get('created', 'unknown')}, trained in {format_duration(metadata.get('train_seconds'))}",
        ),
    ]
    cards = summary_cards(metadata.get("metrics") or {}, multi_task)
    return ModelCard(Path(path).name, facts, is_optimistic(metadata), multi_task, cards)


# --- prediction views -------------------------------------------------------------------------------------

ACCENT = "#e4572e"
MUTED = "#9fb3c8"
# BGR colours for the boxes of successive faces.
BOX_COLORS = ((46, 87, 228), (160, 110, 20), (60, 160, 60), (160, 60, 160), (0, 160, 200))


def top_labels(prediction: Any) -> dict[str, tuple[str, float]]:
    """{task: (top class, probability)} of a FacePrediction, in model order."""
    return {task: prediction.top(task) for task in prediction.probabilities}


def top_labels_text(prediction: Any) -> str:
    """'emotion: happy (87%) · gender: female (90%) · race: asian (61%) · age: 20-39 (70%)'."""
    return " · ".join(f"{task}: {label} ({p:.0%})" for task, (label, p) in top_labels(prediction).items())


def draw_faces(image_bgr: np.ndarray, predictions: Sequence[Any], max_side: int = 1280) -> np.ndarray:
    """The photo (RGB, at most `max_side` pixels on its long side) with a numbered box on every face and its top
    labels beside it."""
    image = np.asarray(image_bgr)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    canvas = (
        cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        if scale < 1
        else image.copy()
    )
    ch, cw = canvas.shape[:2]
    thickness = max(1, round(max(ch, cw) / 500))
    font = cv2.FONT_HERSHEY_SIMPLEX
    for k, p in enumerate(predictions, start=1):
        x, y, bw, bh = (round(v * scale) for v in p.box)
        color = BOX_COLORS[(k - 1) % len(BOX_COLORS)]
        cv2.rectangle(canvas, (x, y), (x + bw, y + bh), color, thickness + 1)
        lines = [f"{k}. {label} {conf:.0%}" if i == 0 else f"{label} {conf:.0%}"
                 for i, (label, conf) in enumerate(top_labels(p).values())]  # fmt: skip
        font_scale = float(np.clip(bw / 300, 0.35, 1.0))
        sizes = [cv2.getTextSize(line, font, font_scale, thickness)[0] for line in lines]
        line_h = max(s[1] for s in sizes) + round(8 * font_scale) + 2
        block_w = max(s[0] for s in sizes) + 8
        block_h = line_h * len(lines) + 4
        bx = int(np.clip(x, 0, max(0, cw - block_w)))
        by = y + bh + 2 if y + bh + 2 + block_h <= ch else max(0, y - block_h - 2)
        cv2.rectangle(canvas, (bx, by), (bx + block_w, by + block_h), color, -1)
        for i, line in enumerate(lines):
            baseline = by + (i + 1) * line_h - round(4 * font_scale)
            cv2.putText(canvas, line, (bx + 4, baseline), font, font_scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)


def enlarge(face: np.ndarray, side: int = 200) -> np.ndarray:
    """A small grayscale face scaled up with visible pixels (nearest neighbour), for display."""
    return cv2.resize(np.asarray(face, dtype=np.uint8), (side, side), interpolation=cv2.INTER_NEAREST)


def probability_figure(task: str, probabilities: Mapping[str, float]) -> go.Figure:
    """Horizontal bars of every class's probability (model order top to bottom), the top class highlighted."""
    classes = list(probabilities)
    values = [float(probabilities[c]) for c in classes]
    top = int(np.argmax(values)) if values else -1
    fig = go.Figure(
        go.Bar(
            x=values,
            y=classes,
            orientation="h",
            marker_color=[ACCENT if i == top else MUTED for i in range(len(classes))],
            text=[f"{v:.0%}" for v in values],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="%{y}: %{x:.1%}<extra></extra>",
        )
    )
    fig.update_layout(
        title={"text": task.capitalize(), "x": 0},
        xaxis={"range": [0, 1.18], "tickformat": ".0%", "fixedrange": True},
        yaxis={"autorange": "reversed", "fixedrange": True},
        height=70 + 26 * len(classes),
        margin={"l": 10, "r": 10, "t": 36, "b": 10},
        showlegend=False,
    )
    return fig


def predictions_json(named: Sequence[tuple[str, Sequence[Any]]]) -> str:
    """[{"file", "faces": [FacePrediction.to_dict(), ...]}, ...] as indented JSON."""
    return json.dumps([{"file": name, "faces": [p.to_dict() for p in preds]} for name, preds in named], indent=2)


# Characters that make markdown (or HTML, or LaTeX) anywhere in a line; file names cannot hold a newline.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|~$#:])")


def escape_markdown(text: str) -> str:
    """User text (a file name) shown literally inside Streamlit markdown."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


# --- evaluation views -------------------------------------------------------------------------------------


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
        xaxis={"title": "predicted", "side": "bottom"},
        yaxis={"title": "true", "autorange": "reversed"},
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


def history_figure(history: pd.DataFrame, task: str) -> go.Figure:
    """Loss and accuracy per epoch of one task, training (solid) vs validation (dashed)."""
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
    fig.update_layout(
        title={"text": task.capitalize(), "x": 0}, height=300, margin={"l": 10, "r": 10, "t": 60, "b": 10}
    )
    return fig


def learning_rate_figure(history: pd.DataFrame) -> go.Figure | None:
    """The learning rate per epoch (log scale), None when history.csv has no learning_rate column."""
    if "learning_rate" not in history or history["learning_rate"].dropna().empty:
        return None
    fig = go.Figure(go.Scatter(x=_epochs(history), y=history["learning_rate"], mode="lines+markers"))
    fig.update_layout(
        title={"text": "Learning rate", "x": 0},
        xaxis={"title": "epoch", "dtick": _epoch_tick(history)},
        yaxis={"type": "log", "exponentformat": "e"},
        height=260,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    return fig


def slices_figure(slices: pd.DataFrame) -> go.Figure | None:
    """Emotion accuracy per gender, race and age group (one panel each); None when no group has a sample."""
    usable = slices[(slices["n"] > 0) & slices["accuracy"].notna()]
    if usable.empty:
        return None
    attributes = list(dict.fromkeys(usable["attribute"]))
    fig = make_subplots(
        rows=1, cols=len(attributes), subplot_titles=[a.capitalize() for a in attributes], shared_yaxes=True
    )
    for col, attribute in enumerate(attributes, start=1):
        part = usable[usable["attribute"] == attribute]
        fig.add_trace(
            go.Bar(
                x=part["group"],
                y=part["accuracy"],
                text=[f"{a:.0%}" for a in part["accuracy"]],
                textposition="outside",
                cliponaxis=False,
                customdata=part["n"],
                hovertemplate="%{x}: %{y:.1%} of %{customdata:,} faces<extra></extra>",
                marker_color=MUTED,
                showlegend=False,
            ),
            row=1,
            col=col,
        )
    fig.update_yaxes(range=[0, 1.1], tickformat=".0%")
    fig.update_layout(
        title={"text": "Emotion accuracy by group", "x": 0}, height=320, margin={"l": 10, "r": 10, "t": 60, "b": 10}
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
    """'true happy → sad (87%)' for a row of a misclassified table."""
    return f"{row[f'{task}_true']} → {row[f'{task}_pred']} ({float(row[f'{task}_confidence']):.0%})"


# --- training jobs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobStatus:
    state: str
    fraction: float  # 0..1 of all epochs
    headline: str
    active: bool
    finished: bool


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
        headline = f"Stopped after epoch {epoch}; it can be resumed with `mtfer train --resume`."
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
