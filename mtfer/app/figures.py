"""The app's plotly figures as pure functions: confusion matrices, training curves and learning rate, learned
task weights, accuracy by group, two runs compared, reliability diagrams, and faces for the mistakes gallery."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath

import cv2
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mtfer.app.wording import faces_text, format_rate, joined, percent
from mtfer.core import preprocess
from mtfer.core.tasks import TASK_NAMES, display_name
from mtfer.datasets.cache import frame_sample
from mtfer.media.draw import ACCENT, BASELINE, GUIDE, MUTED, NOW, OVERALL, PRIMARY


def enlarge(face: np.ndarray, side: int = 200) -> np.ndarray:
    """A small grayscale face scaled up with visible pixels (nearest neighbour), for display."""
    return cv2.resize(np.asarray(face, dtype=np.uint8), (side, side), interpolation=cv2.INTER_NEAREST)


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
            hoverinfo="skip",
            colorbar={"tickformat": ".0%"} if normalized else {},
        )
    )
    # An invisible marker on every cell: a click on a heatmap is no selection in Streamlit, a click on a point is
    # (the page then shows that cell's faces). It carries the hover text too.
    rows, cols = np.meshgrid(np.arange(len(frame.index)), np.arange(len(frame.columns)), indexing="ij")
    fig.add_trace(
        go.Scatter(
            x=[str(frame.columns[c]) for c in cols.ravel()],
            y=[str(frame.index[r]) for r in rows.ravel()],
            text=[text[r][c] for r, c in zip(rows.ravel(), cols.ravel(), strict=True)],
            mode="markers",
            marker={"size": 36, "symbol": "square", "opacity": 0},
            hovertemplate="true %{y}<br>predicted %{x}<br>%{text}<extra></extra>",
            showlegend=False,
        )
    )
    fig.update_layout(
        title={"text": title, "x": 0},
        xaxis={"title": "predicted class", "side": "bottom"},
        yaxis={"title": "true class", "autorange": "reversed"},
        height=140 + 42 * len(frame.index),
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        clickmode="event+select",
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
            line={"dash": "dot", "color": GUIDE, "width": 1},
            annotation_text="training continued",
            annotation_position="top left",
            annotation_font={"size": 11, "color": GUIDE},
        )


# Why the two curves of a training chart sit where they do; shown beside the charts.
HISTORY_NOTE = (
    "Solid: the images it learns from. Dashed: validation images it never learns from. Validation loss sits below "
    "the training loss because training is made harder on purpose (shifted, turned and recoloured faces, softened "
    "labels, dropped-out connections), none of which applies when it is checked."
)
# The validation score that chose the epoch kept (the trainer's monitor), by preference.
KEPT_BY = ("val_emotion_accuracy", "val_mean_accuracy")


def kept_epoch(history: pd.DataFrame, starts: Sequence[tuple[int, str]] = ()) -> int | None:
    """The epoch whose weights the model kept: the best of its last stage by the score the trainer monitored
    (validation emotion accuracy, else the mean validation accuracy), as early stopping restores it; None when the
    history has no such score."""
    if history.empty:
        return None
    epochs = _epochs(history)
    last = epochs >= starts[-1][0] if starts else pd.Series(True, index=history.index)
    for column in KEPT_BY:
        if column in history and (scores := pd.to_numeric(history.loc[last, column], errors="coerce")).notna().any():
            return int(epochs[scores.idxmax()])
    return None


def history_figure(
    history: pd.DataFrame, task: str, starts: Sequence[tuple[int, str]] = (), kept: int | None = None
) -> go.Figure:
    """Loss and accuracy per epoch of one task, training (solid) vs validation (dashed); `starts` marks where a
    continued run's epochs begin (:class:`mtfer.store.lineage.Lineage`), `kept` the epoch the model was taken
    from (:func:`kept_epoch`)."""
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
                        line={"dash": dash, "color": ACCENT if prefix else PRIMARY},
                        showlegend=col == 1,
                        legendgroup=name,
                    ),
                    row=1,
                    col=col,
                )
    fig.update_yaxes(tickformat=".0%", row=1, col=2)
    last = int(epochs.max()) if len(epochs) else 1
    fig.update_xaxes(title_text="epoch", dtick=_epoch_tick(history), range=[0.5, last + 0.5])
    _mark_starts(fig, starts)
    if kept is not None:
        fig.add_vline(
            x=kept,
            line={"dash": "dash", "color": NOW, "width": 1},
            # the label reads towards the middle of the chart, never off its right edge
            annotation_text=f"model kept (epoch {kept})",
            annotation_position="bottom left" if kept > (1 + last) / 2 else "bottom right",
            annotation_font={"size": 11, "color": NOW},
        )
    fig.update_layout(
        title={"text": display_name(task), "x": 0},
        height=320,
        margin={"l": 10, "r": 10, "t": 80, "b": 10},
        # above the panels, not beside them: on a phone a side legend takes a third of the width
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.22, "yanchor": "bottom"},
    )
    return fig


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


LOSS_WEIGHT_PREFIX = "weight_"  # history.csv's learned task weights (mtfer.train.loss_weights.WEIGHT_PREFIX)

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
    fig.add_hline(y=1.0, line={"dash": "dot", "color": BASELINE, "width": 1})  # where every weight starts
    fig.update_layout(
        title={"text": "Learned task weights", "x": 0},
        xaxis={"title": "epoch", "dtick": _epoch_tick(history)},
        yaxis={"title": "weight", "rangemode": "tozero"},
        height=300,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


OVERALL_COLOR = OVERALL


def _usable_slices(slices: pd.DataFrame, task: str) -> pd.DataFrame:
    """The rows of a slices table with faces and an accuracy, of `task` where the table has several tasks."""
    usable = slices[(slices["n"] > 0) & slices["accuracy"].notna()]
    return usable[usable["task"] == task] if "task" in usable.columns else usable


def slices_figure(
    slices: pd.DataFrame,
    task: str = "emotion",
    overall: float | None = None,
    overall_n: int | None = None,
    predicted: bool = False,
    attributes: Sequence[str] | None = None,
) -> go.Figure | None:
    """A task's accuracy per gender, race and age group (one panel each) from a table with the columns attribute,
    group, n, accuracy (an evaluation's slices, or :func:`mtfer.assess.evaluation.group_accuracy` with its `task` column).
    With `overall` (the task's accuracy on all `overall_n` faces) each panel starts with a darker "All faces" bar to
    compare the groups with. `predicted`: the groups are the model's own answers (group_accuracy with
    groups_from="predicted"), which the titles say and a hatch on the groups' bars marks. None when no group has a
    face."""
    usable = _usable_slices(slices, task)
    if attributes is not None:
        usable = usable[usable["attribute"].isin(list(attributes))]
    if usable.empty:
        return None
    shown = list(dict.fromkeys(usable["attribute"]))
    fig = make_subplots(
        rows=1,
        cols=len(shown),
        subplot_titles=[f"By {'predicted ' if predicted else ''}{display_name(a).lower()}" for a in shown],
        shared_yaxes=True,
    )
    with_overall = overall is not None and math.isfinite(overall)
    for col, attribute in enumerate(shown, start=1):
        part = usable[usable["attribute"] == attribute]
        # Level labels, a word per line ("African<br>American", "40-69<br>years", "1,587<br>faces"): plotly would
        # otherwise turn a crowded panel's labels on their side, or print neighbouring counts into each other.
        x = [
            f"{display_name(attribute, str(g)).replace(' ', '<br>')}<br>{faces_text(n).replace(' ', '<br>')}"
            for g, n in zip(part["group"], part["n"], strict=True)
        ]
        y, colors = part["accuracy"].tolist(), [MUTED] * len(part)
        if with_overall:
            count = faces_text(overall_n).replace(" ", "<br>") if overall_n else ""
            x = [f"<b>All faces</b><br>{count}" if count else "<b>All faces</b>", *x]
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
    fig.update_xaxes(tickangle=0, tickfont={"size": 10})
    title = f"{display_name(task)} accuracy by {'predicted ' if predicted else ''}group"
    fig.update_layout(
        title={"text": "" if attributes is not None else title, "x": 0},
        height=400,
        margin={"l": 10, "r": 10, "t": 30 if attributes is not None else 60, "b": 10},
    )
    return fig


def slices_panels(
    slices: pd.DataFrame,
    task: str = "emotion",
    overall: float | None = None,
    overall_n: int | None = None,
    predicted: bool = False,
) -> tuple[str, list[go.Figure]]:
    """:func:`slices_figure` as a heading and one figure per attribute, for a page to lay out in columns (which a
    phone stacks, each at full width, where three panels in one figure would be a few pixels each); no figures
    when no group has a face."""
    whole = slices_figure(slices, task, overall, overall_n, predicted)
    if whole is None:
        return "", []
    attributes = dict.fromkeys(_usable_slices(slices, task)["attribute"])
    panels = [slices_figure(slices, task, overall, overall_n, predicted, [a]) for a in attributes]
    return str(whole.layout.title.text), [f for f in panels if f is not None]


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
        height=380,
        # Above the bars: below, a long run name covered the task names on the axis.
        margin={"l": 10, "r": 10, "t": 70, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.08, "xanchor": "left", "x": 0},
    )
    return fig


RELIABILITY_NOTE = (
    "When the model says it is 80% sure, it should be right 8 times in 10. Each bar shows how often it was right "
    "among the faces where it was about that sure; on the dashed line the two agree, bars below it mean too sure, "
    "above it too modest (pale bars rest on few faces). The calibration error is the average gap, weighted by "
    "faces: 0% is perfect."
)

RELIABILITY_COLOR = PRIMARY
SPARSE_BIN_SHARE = 0.01  # bins with fewer faces than this share (or 10) are drawn faint: their accuracy is noise


def calibration_effect_text(metrics: Mapping) -> str:
    """What temperature scaling did on this evaluation's faces, as its numbers say: for which tasks the calibration
    error went down and for which it went up (it is fitted on validation images, so on others it can do either)."""
    lower, higher = [], []
    for task, entry in metrics.get("tasks", {}).items():
        ece, before = entry.get("ece"), entry.get("ece_uncalibrated")
        if ece is None or before is None or round(ece, 3) == round(before, 3):
            continue
        (lower if ece < before else higher).append(display_name(task).lower())
    text = (
        "This model's confidences are calibrated: after training, each task's probabilities were softened or "
        "sharpened (temperature scaling, fitted on its validation images); its answers, and so its accuracy, did not "
        "change."
    )
    if lower and not higher:
        return text + f" On these images the calibration error went down for {joined(lower)}."
    if higher and not lower:
        return text + f" On these images it did not help: the calibration error went up for {joined(higher)}."
    if lower and higher:
        return (
            text + f" On these images the calibration error went down for {joined(lower)} and up for {joined(higher)}."
        )
    return text


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
            line={"dash": "dash", "color": GUIDE, "width": 1.5},
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
    source: str, config: preprocess.PreprocessConfig | None = None, roots: Sequence[Path] = ()
) -> tuple[np.ndarray, bool] | None:
    """The face of one evaluated sample as the network saw it (framed like training data), from its `source`
    image path (a relative one, as in the shipped model's evaluations, is looked up under the data `roots`), and
    whether the face detector found a face there (False: the framing is a guess, as on FER2013's placeholder
    images); None when the file is gone or the source is a CSV row."""
    path = Path(source)
    if source and not path.is_absolute():
        path = next((root / path for root in roots if (root / path).is_file()), path)
    if not source or not path.is_file():
        return None
    try:
        face, found = frame_sample(str(path), None, config or preprocess.PreprocessConfig())
    except (ValueError, OSError, cv2.error):
        return None
    return face.aligned, found


NO_FACE_NOTE = "no face found in this image: framed by guess"


GALLERY_PAGE = 24  # faces per page of the mistakes gallery


def gallery_caption(row: Mapping, task: str) -> str:
    """'True: Happy → predicted: Sad (87% sure) · Training_123.jpg' for a row of a misclassified table (the file
    name, so that a face can be found again and checked)."""
    true, predicted = display_name(task, str(row[f"{task}_true"])), display_name(task, str(row[f"{task}_pred"]))
    caption = f"True: {true} → predicted: {predicted} ({float(row[f'{task}_confidence']):.0%} sure)"
    name = PurePath(str(row.get("source") or "")).name
    return f"{caption} · {name}" if name else caption


def gallery_page(table: pd.DataFrame, page: int, size: int = GALLERY_PAGE) -> tuple[pd.DataFrame, str]:
    """One page of a misclassified table (pages numbered from 1; out of range: the nearest page) and what it
    shows: 'Faces 25-48 of 130'."""
    pages = max(1, math.ceil(len(table) / size))
    page = min(max(1, int(page)), pages)
    shown = table.iloc[(page - 1) * size : page * size]
    first = (page - 1) * size + 1
    return shown, (f"Faces {first:,}-{first + len(shown) - 1:,} of {len(table):,}" if len(shown) else "No faces")
