"""What the Predict page shows for each face, as pure functions (no Streamlit): the answer per task with its "not
sure" state (thresholds from mtfer.assess.abstain), class names as people write them, the photo with numbered boxes and
labels placed outside the faces, probability charts, and the tables and JSON offered for download.

`mtfer predict --json` keeps the model's identifiers (FacePrediction.to_dict); only what people see goes through
here."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from mtfer.assess.abstain import Verdict
from mtfer.core.tasks import display_name
from mtfer.media.answers import abstain_name, answer, face_verdicts, shown_classes
from mtfer.media.draw import ACCENT, MUTED, THRESHOLD, box_hex

RACE_NOTE = (
    "Race names three groups only (Caucasian, African American and Asian), those of the research it reproduces: "
    'for anyone else (it learnt this from faces of other groups), or when it is unsure, it says "Other / not sure".'
)


NOT_SURE_NOTE = (
    '"Not sure" means the model\'s best guess was too weak to state: on faces it was tested on, guesses that weak '
    "were wrong too often. The two likeliest answers are shown instead."
)

NEEDED_TEXT = "dotted line: how sure it needed to be ({:.0%})"
NEEDED_COLOR = THRESHOLD


def faces_found_caption(shown: int, found: int) -> str:
    """'1 face found', '3 faces found', '3 faces found, showing the largest'."""
    found = max(found, shown)
    text = f"{found} face{'s' if found != 1 else ''} found"
    if shown < found:
        text += ", showing the largest" if shown == 1 else f", showing the {shown} largest"
    return text


def crowd_caption(count: int) -> str:
    """Under a photo whose faces are numbered rather than labelled (the labels would not fit cleanly)."""
    return f"{count} faces found: each is numbered on the photo, with its answers in the table below"


def table_height(rows: int) -> int:
    """Pixels for st.dataframe to show `rows` rows and the header whole, without a scroll bar of its own."""
    return 35 * (rows + 1) + 3


def answers_table(verdicts: Sequence[Mapping[str, Verdict]], numbers: Sequence[int] | None = None):  # -> Styler
    """The answers of a photo's faces, one row each ('Not sure (Sad or Angry)' when the model is unsure), the
    face's number (default 1, 2, ...; a video's person numbers) on its box colour: under a photo too crowded for
    labels."""
    numbers = list(numbers) if numbers is not None else list(range(1, len(verdicts) + 1))
    rows = [
        {"Face": k} | {display_name(t): answer(v) for t, v in face.items()}
        for k, face in zip(numbers, verdicts, strict=True)
    ]
    frame = pd.DataFrame(rows)
    return frame.style.apply(
        lambda column: [f"background-color: {box_hex(k)}; color: white" for k in column], subset=["Face"]
    )


def aligned_caption(prediction: Any) -> str:
    """What the small grey face under each result is, in plain words."""
    h, w = np.asarray(prediction.aligned).shape[:2]
    turned = f"turned {abs(prediction.rotation):.0f}° to level the eyes, " if round(abs(prediction.rotation)) else ""
    caption = f"The face as the model saw it: {turned}in grey, {w}×{h} pixels"
    note = getattr(prediction, "note", None)
    return f"{caption}. Note: {note}" if note else caption


def probability_figure(
    task: str, probabilities: Mapping[str, float], v: Verdict | None = None, min_confidence: float | None = None
) -> go.Figure:
    """Horizontal bars of every taught class's probability (model order, names for people). The answer is
    highlighted when the model is sure; when it is not, the title says so and a dotted line marks how sure it
    needed to be (`min_confidence`)."""
    classes = shown_classes(task, list(probabilities))
    values = [float(probabilities[c]) for c in classes]
    top = int(np.argmax(values)) if values else -1
    sure = v is None or v.sure
    title = display_name(task) if sure else f"{display_name(task)}: {abstain_name(task).lower()}"
    fig = go.Figure(
        go.Bar(
            x=values,
            y=[display_name(task, c) for c in classes],
            orientation="h",
            marker_color=[ACCENT if i == top and sure else MUTED for i in range(len(classes))],
            text=[f"{p:.0%}" for p in values],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="%{y}: %{x:.1%}<extra></extra>",
        )
    )
    xaxis: dict[str, Any] = {"range": [0, 1.18], "tickformat": ".0%", "fixedrange": True}
    needed = not sure and bool(min_confidence)
    if needed:
        fig.add_vline(x=float(min_confidence or 0), line_dash="dot", line_color=NEEDED_COLOR, layer="below")
        xaxis["title"] = {"text": NEEDED_TEXT.format(min_confidence), "font": {"size": 11, "color": NEEDED_COLOR}}
    fig.update_layout(
        title={"text": title, "x": 0},
        xaxis=xaxis,
        yaxis={"autorange": "reversed", "fixedrange": True},
        height=70 + 26 * len(classes) + (24 if needed else 0),
        margin={"l": 10, "r": 10, "t": 36, "b": 10},
        showlegend=False,
    )
    return fig


def people_table(named: Sequence[tuple[str, Sequence[Any]]], min_confidence: Mapping[str, float]) -> pd.DataFrame:
    """One row per face, in words: photo, face number, the answer per task ('Not sure (Sad or Angry)' when the model
    is unsure), each taught class's probability in percent, and where the face is in the photo."""
    rows = []
    for name, preds in named:
        for k, p in enumerate(preds, start=1):
            verdicts = face_verdicts(p, min_confidence)
            row: dict[str, Any] = {"Photo": name, "Face": k}
            row.update({display_name(t): answer(v) for t, v in verdicts.items()})
            for t, probs in p.probabilities.items():
                for c in shown_classes(t, list(probs)):
                    row[f"{display_name(t)}: {display_name(t, c)} (%)"] = round(100 * float(probs[c]), 1)
            x, y, w, h = (int(v) for v in p.box)
            row.update({"Left (px)": x, "Top (px)": y, "Width (px)": w, "Height (px)": h})
            rows.append(row)
    return pd.DataFrame(rows)


def people_json(named: Sequence[tuple[str, Sequence[Any]]], min_confidence: Mapping[str, float]) -> str:
    """[{"photo", "faces": [{"face", "position", "<Task>": {"answer", "sure", "probabilities": {<Class>: p}}}]}]."""
    out = []
    for name, preds in named:
        faces = []
        for k, p in enumerate(preds, start=1):
            x, y, w, h = (int(v) for v in p.box)
            face: dict[str, Any] = {"face": k, "position": {"left": x, "top": y, "width": w, "height": h}}
            for t, v in face_verdicts(p, min_confidence).items():
                probs = p.probabilities[t]
                face[display_name(t)] = {
                    "answer": answer(v),
                    "sure": v.sure,
                    "probabilities": {display_name(t, c): round(float(probs[c]), 4) for c in shown_classes(t, probs)},
                }
            faces.append(face)
        out.append({"photo": name, "faces": faces})
    return json.dumps(out, indent=2, ensure_ascii=False)
