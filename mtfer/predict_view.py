"""What the Predict page shows for each face, as pure functions (no Streamlit): the answer per task with its "not
sure" state (thresholds from mtfer.abstain), class names as people write them, the photo with numbered boxes and
labels placed outside the faces, probability charts, and the tables and JSON offered for download.

`mtfer predict --json` keeps the model's identifiers (FacePrediction.to_dict); only what people see goes through
here."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from mtfer.abstain import Verdict, verdict
from mtfer.charts import ACCENT, MUTED
from mtfer.tasks import UNTAUGHT_CLASSES, display_name

NOT_SURE = "Not sure"
ABSTAIN_NAMES: dict[str, str] = {"race": "Other / not sure"}
RACE_NOTE = (
    "Race here covers three groups only (Caucasian, African American and Asian), the only ones its training photos "
    'were labelled with: for anyone else, or when the model is unsure, it says "Other / not sure".'
)
NOT_SURE_NOTE = (
    '"Not sure" means the model\'s best guess was too weak to state: on faces it was tested on, guesses that weak '
    "were wrong too often. The two likeliest answers are shown instead."
)

NEEDED_TEXT = "dotted line: how sure it needed to be ({:.0%})"
NEEDED_COLOR = "#6b7c8f"
Rect = tuple[int, int, int, int]  # x, y, width, height

# --- answers ----------------------------------------------------------------------------------------------------


def shown_classes(task: str, classes: Sequence[str]) -> list[str]:
    """The classes of a task that people see: those no data set can teach (UNTAUGHT_CLASSES) left out."""
    hidden = UNTAUGHT_CLASSES.get(task, ())
    return [c for c in classes if c not in hidden]


def face_verdicts(prediction: Any, min_confidence: Mapping[str, float]) -> dict[str, Verdict]:
    """{task: Verdict} of a FacePrediction, in model order, untaught classes never chosen."""
    return {
        task: verdict(task, probs, float(min_confidence.get(task, 0.0)), UNTAUGHT_CLASSES.get(task, ()))
        for task, probs in prediction.probabilities.items()
    }


def abstain_name(task: str) -> str:
    """'Other / not sure' for race (a face may belong to none of its groups), 'Not sure' otherwise."""
    return ABSTAIN_NAMES.get(task, NOT_SURE)


def answer(v: Verdict) -> str:
    """'Happy' when sure; 'Not sure (Sad or Angry)' / 'Other / not sure (Caucasian or Asian)' when not."""
    if v.sure:
        return display_name(v.task, v.label)
    options = display_name(v.task, v.label)
    if v.runner_up is not None:
        options += f" or {display_name(v.task, v.runner_up)}"
    return f"{abstain_name(v.task)} ({options})"


def verdict_text(v: Verdict) -> str:
    """'Happy (87%)' when sure; 'not sure (Sad 28% or Angry 21%)', for race 'other / not sure (...)', when not."""
    if v.sure:
        return f"{display_name(v.task, v.label)} ({v.confidence:.0%})"
    options = f"{display_name(v.task, v.label)} {v.confidence:.0%}"
    if v.runner_up is not None and v.runner_up_confidence is not None:
        options += f" or {display_name(v.task, v.runner_up)} {v.runner_up_confidence:.0%}"
    return f"**{abstain_name(v.task).lower()}** ({options})"


def face_line(number: int, verdicts: Mapping[str, Verdict]) -> str:
    """'**Face 1:** Emotion: Happy (87%) · Gender: Female (90%) · Race: Asian (61%) · Age group: 20-39 years (70%)'."""
    parts = [f"{display_name(task)}: {verdict_text(v)}" for task, v in verdicts.items()]
    return f"**Face {number}:** " + " · ".join(parts)


def photo_lines(number: int, verdicts: Mapping[str, Verdict]) -> list[str]:
    """The short label drawn beside a face on the photo: one line per task, the face's number on the first."""
    lines = []
    for task, v in verdicts.items():
        if v.sure:
            lines.append(f"{display_name(task, v.label)} {v.confidence:.0%}")
        else:
            lines.append(f"{display_name(task)}: {abstain_name(task).lower()}")
    if lines:
        lines[0] = f"{number}. {lines[0]}"
    return lines


def faces_found_caption(shown: int, found: int) -> str:
    """'1 face found', '3 faces found', '3 faces found, showing the largest'."""
    found = max(found, shown)
    text = f"{found} face{'s' if found != 1 else ''} found"
    if shown < found:
        text += ", showing the largest" if shown == 1 else f", showing the {shown} largest"
    return text


def aligned_caption(prediction: Any) -> str:
    """What the small grey face under each result is, in plain words."""
    h, w = np.asarray(prediction.aligned).shape[:2]
    turned = f"turned {abs(prediction.rotation):.0f}° to level the eyes, " if round(abs(prediction.rotation)) else ""
    return f"The face as the model saw it: {turned}in grey, {w}×{h} pixels"


# --- the photo --------------------------------------------------------------------------------------------------

# BGR colours of successive faces, dark enough for white text.
BOX_COLORS: tuple[tuple[int, int, int], ...] = (
    (40, 80, 210),
    (170, 90, 20),
    (40, 125, 40),
    (140, 50, 140),
    (0, 105, 185),
    (110, 110, 20),
)
MIN_SIDE = 800  # smaller photos are enlarged so that labels fit beside small faces
MAX_SIDE = 1280
TEXT_FRACTION = 0.018  # label text height as a fraction of the drawn photo's width
MIN_TEXT_PX = 15  # never smaller: legible where the page shows the photo at its own size
FONT = cv2.FONT_HERSHEY_DUPLEX
_FONT_PX = cv2.getTextSize("H", FONT, 1.0, 1)[0][1]  # cap height at font scale 1


def text_px(width: int) -> int:
    """Cap height of label text on a photo drawn `width` pixels wide: grows with the photo, never below MIN_TEXT_PX."""
    return max(MIN_TEXT_PX, round(TEXT_FRACTION * width))


@dataclass(frozen=True)
class LabelStyle:
    """Sizes of the label text on a photo drawn at a given width (pixels of the drawn photo)."""

    cap: int  # height of a capital letter
    scale: float  # OpenCV font scale
    thickness: int
    pad: int  # inside the block, around the text
    line_h: int
    gap: int  # between a face box and its label

    @classmethod
    def for_width(cls, width: int) -> LabelStyle:
        cap = text_px(width)
        return cls(cap, cap / _FONT_PX, max(1, round(cap / 20)), max(3, cap // 3), round(cap * 1.7), max(3, cap // 4))

    def block_size(self, lines: Sequence[str]) -> tuple[int, int]:
        """(width, height) of the coloured block holding these lines."""
        text_w = max((cv2.getTextSize(t, FONT, self.scale, self.thickness)[0][0] for t in lines), default=0)
        return text_w + 2 * self.pad, self.line_h * len(lines) + self.pad


def canvas_scale(width: int, height: int, min_side: int = MIN_SIDE, max_side: int = MAX_SIDE) -> float:
    """Scale at which a photo is drawn: its long side brought within [min_side, max_side]."""
    long_side = max(width, height, 1)
    if long_side > max_side:
        return max_side / long_side
    if long_side < min_side:
        return min_side / long_side
    return 1.0


def intersects(a: Rect, b: Rect) -> bool:
    """Whether two rectangles (x, y, w, h) overlap by any area."""
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def place_labels(
    size: tuple[int, int], boxes: Sequence[Rect], blocks: Sequence[tuple[int, int]], gap: int = 4
) -> tuple[list[Rect], tuple[int, int]]:
    """Where each face's label block goes, never over a face nor over another label, and the canvas size needed.

    size: (width, height) of the photo; boxes: the faces (x, y, w, h); blocks: (width, height) of each label.
    Each label goes below its face, else above, else beside it (right, then left), inside the photo; when none of
    these is free, in a band added under the photo (in rows, near the face's column). The canvas is widened when a
    label is wider than the photo. Returns the label rectangles and the (width, height) of the canvas."""
    width, height = size
    width = max([width] + [bw + 2 * gap for bw, _ in blocks])
    placed: list[Rect] = []
    obstacles = [tuple(int(v) for v in b) for b in boxes]
    band: list[int] = []
    rects: list[Rect | None] = []

    def free(r: Rect) -> bool:
        inside = r[0] >= 0 and r[1] >= 0 and r[0] + r[2] <= width and r[1] + r[3] <= height
        return inside and not any(intersects(r, o) for o in obstacles) and not any(intersects(r, p) for p in placed)

    for i, ((x, y, w, h), (bw, bh)) in enumerate(zip(obstacles, blocks, strict=True)):
        xs = [int(np.clip(left, 0, max(0, width - bw))) for left in (x + (w - bw) // 2, x, x + w - bw)]
        side_y = int(np.clip(y, 0, max(0, height - bh)))
        candidates = [(cx, y + h + gap) for cx in xs] + [(cx, y - gap - bh) for cx in xs]
        candidates += [(x + w + gap, side_y), (x - gap - bw, side_y)]
        chosen = next(((cx, cy, bw, bh) for cx, cy in candidates if free((cx, cy, bw, bh))), None)
        rects.append(chosen)
        if chosen is None:
            band.append(i)
        else:
            placed.append(chosen)

    bottom = height
    if band:
        row_top, row_right, row_height = height + gap, 0, 0
        for i in sorted(band, key=lambda j: obstacles[j][0]):
            x, _, w, _ = obstacles[i]
            bw, bh = blocks[i]
            left = max(int(np.clip(x + (w - bw) // 2, 0, width - bw)), row_right)
            if left + bw > width:  # the row is full: a new one
                row_top, row_right, row_height = row_top + row_height + gap, 0, 0
                left = int(np.clip(x + (w - bw) // 2, 0, width - bw))
            rects[i] = (left, row_top, bw, bh)
            row_right, row_height = left + bw + gap, max(row_height, bh)
            bottom = max(bottom, row_top + bh + gap)
    return [r for r in rects if r is not None], (width, bottom)


def _to_bgr(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def draw_faces(
    image_bgr: np.ndarray,
    boxes: Sequence[Rect],
    labels: Sequence[Sequence[str]],
    min_side: int = MIN_SIDE,
    max_side: int = MAX_SIDE,
    colors: Sequence[tuple[int, int, int]] | None = None,
) -> np.ndarray:
    """The photo (RGB; its long side brought within [min_side, max_side]) with a numbered box on every face and its
    label lines in a block of the same colour outside every face (see place_labels), text scaled to the photo.
    `colors`: each face's BGR colour (default: BOX_COLORS in turn), e.g. to keep a person's colour across frames."""
    image = _to_bgr(image_bgr)
    h, w = image.shape[:2]
    scale = canvas_scale(w, h, min_side, max_side)
    if scale != 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    ch, cw = image.shape[:2]
    if not boxes:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    style = LabelStyle.for_width(cw)
    scaled = [tuple(round(v * scale) for v in box) for box in boxes]
    blocks = [style.block_size(lines) for lines in labels]
    rects, (canvas_w, canvas_h) = place_labels((cw, ch), scaled, blocks, style.gap)

    canvas = np.full((canvas_h, canvas_w, 3), 255, np.uint8)
    canvas[:ch, :cw] = image
    box_thickness = max(2, round(cw / 400))
    for k, ((x, y, bw, bh), (lx, ly, lw, lh), lines) in enumerate(zip(scaled, rects, labels, strict=True)):
        color = colors[k] if colors is not None else BOX_COLORS[k % len(BOX_COLORS)]
        cv2.rectangle(canvas, (x, y), (x + bw, y + bh), color, box_thickness)
        if ly >= ch:  # in the band under the photo: a line from the face down to its label
            cv2.line(canvas, (x + bw // 2, min(y + bh, ch - 1)), (lx + lw // 2, ly), color, box_thickness)
        draw_label(canvas, (lx, ly, lw, lh), lines, color, style)
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)


def draw_label(
    canvas: np.ndarray,
    rect: tuple[int, int, int, int],
    lines: Sequence[str],
    color: tuple[int, int, int],
    style: LabelStyle,
) -> None:
    """A filled label block at rect (x, y, w, h) with white text lines, in place on a BGR canvas."""
    lx, ly, lw, lh = rect
    cv2.rectangle(canvas, (lx, ly), (lx + lw - 1, ly + lh - 1), color, -1)
    for i, line in enumerate(lines):
        baseline = ly + style.pad // 2 + i * style.line_h + (style.line_h + style.cap) // 2
        cv2.putText(
            canvas, line, (lx + style.pad, baseline), FONT, style.scale, (255, 255, 255), style.thickness, cv2.LINE_AA
        )


# --- charts -----------------------------------------------------------------------------------------------------


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


# --- downloads --------------------------------------------------------------------------------------------------


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
