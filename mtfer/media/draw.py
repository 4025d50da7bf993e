"""Drawing on photos and frames: the one palette (box colours, emotion colours, accents) and numbered labels
placed beside faces, never over them, with text sized to stay legible."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

# The app's colours, one home for all of them. Chart colours are RGB hex; BOX_COLORS below are BGR (OpenCV).
ACCENT = "#e4572e"  # the thing to look at: the stated answer's bar, the validation curves
MUTED = "#9fb3c8"  # what stands beside it: the other classes, the groups
PRIMARY = "#1f77b4"  # a measured series: training curves, reliability bars
OVERALL = "#52667a"  # the whole before its parts: accuracy on all faces, ahead of the groups
GUIDE = "#7f7f7f"  # reference lines: perfect calibration, where a continued run starts
THRESHOLD = "#6b7c8f"  # the "how sure it needed to be" line under a face's probabilities
NOW = "#444444"  # a chosen point in time: the frame shown on a video's timeline, the epoch a model was kept from
BASELINE = "#9aa5b1"  # where learned task weights start (1.0)

# The colour of each emotion (RGB hex), one per class of mtfer.core.tasks.EMOTION: the same in the live chart,
# the video timeline and its shares, so that a colour means one emotion everywhere (plotly's default cycle would
# change with the classes shown).
EMOTION_COLORS: dict[str, str] = {
    "surprise": "#f28e2b",
    "fear": "#9c6ade",
    "disgust": "#59a14f",
    "happy": "#e6b800",
    "sad": "#4e79a7",
    "angry": "#e15759",
    "neutral": "#8c8c8c",
}


# BGR colours of successive faces, dark enough for white text.
BOX_COLORS: tuple[tuple[int, int, int], ...] = (
    (40, 80, 210),
    (170, 90, 20),
    (40, 125, 40),
    (140, 50, 140),
    (0, 105, 185),
    (110, 110, 20),
)

MIN_SIDE = 800  # smaller photos are enlarged so that labels fit beside small faces ...
MAX_ENLARGE = 2.0  # ... but never beyond twice their size: blurred pixels say less than a band of labels below
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
    """Scale at which a photo is drawn: its long side brought within [min_side, max_side], a small photo enlarged
    at most MAX_ENLARGE times (its labels then go beside and under it, on a wider canvas)."""
    long_side = max(width, height, 1)
    if long_side > max_side:
        return max_side / long_side
    if long_side < min_side:
        return min(min_side / long_side, MAX_ENLARGE)
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


Rect = tuple[int, int, int, int]  # x, y, width, height
