"""Drawing on photos and frames: the one palette (box colours, emotion colours, accents) and numbered labels
placed beside faces, never over them, with text sized to stay legible."""

from __future__ import annotations

import math
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


# BGR colours of faces numbered 1, 2, ...: ten, so that in a photo of up to ten faces each face has its own (a
# crowd gets its number on every box as well); all dark enough for white text on them.
BOX_COLORS: tuple[tuple[int, int, int], ...] = (
    (168, 95, 31),  # blue
    (43, 58, 192),  # red
    (50, 125, 46),  # green
    (173, 68, 142),  # purple
    (0, 84, 211),  # orange
    (107, 121, 0),  # teal
    (87, 20, 173),  # magenta
    (65, 76, 109),  # brown
    (100, 90, 69),  # blue-grey
    (23, 119, 130),  # olive
)

MIN_SIDE = 800  # smaller photos are enlarged so that labels fit beside small faces ...
MAX_ENLARGE = 2.0  # ... but never beyond twice their size: blurred pixels say less than a band of labels below
MAX_SIDE = 1280
# Label text is sized for the narrowest screen it is read on: a 390 px wide phone shows the Predict page's photo 326
# CSS px wide (measured in Chromium), and a capital letter of at least 8 CSS px there (an 11-12 px font) is legible.
PHONE_PHOTO_PX = 326
MIN_PHONE_CAP_PX = 8
TEXT_FRACTION = MIN_PHONE_CAP_PX / PHONE_PHOTO_PX  # cap height as a fraction of the drawn photo's width
MIN_TEXT_PX = 15  # never smaller: legible where the page shows the photo at its own size
FONT = cv2.FONT_HERSHEY_DUPLEX
_FONT_PX = cv2.getTextSize("H", FONT, 1.0, 1)[0][1]  # cap height at font scale 1


def box_color(number: int) -> tuple[int, int, int]:
    """BGR colour of the face (or person) numbered `number` (1, 2, ...), the same on photos, videos and live."""
    return BOX_COLORS[(int(number) - 1) % len(BOX_COLORS)]


def box_hex(number: int) -> str:
    """:func:`box_color` as '#rrggbb', for charts and tables."""
    b, g, r = box_color(number)
    return f"#{r:02x}{g:02x}{b:02x}"


def text_px(width: int) -> int:
    """Cap height of label text on a photo drawn `width` pixels wide: grows with the photo, never below MIN_TEXT_PX."""
    return max(MIN_TEXT_PX, math.ceil(TEXT_FRACTION * width))


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


def segments_cross(a: Segment, b: Segment) -> bool:
    """Whether two line segments ((x1, y1), (x2, y2)) cross or touch."""

    def side(p: Point, q: Point, r: Point) -> int:
        cross = (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])
        return (cross > 0) - (cross < 0)

    def within(p: Point, q: Point, r: Point) -> bool:  # r on the line pq: is it between them?
        return min(p[0], q[0]) <= r[0] <= max(p[0], q[0]) and min(p[1], q[1]) <= r[1] <= max(p[1], q[1])

    (p1, p2), (q1, q2) = a, b
    d1, d2, d3, d4 = side(q1, q2, p1), side(q1, q2, p2), side(p1, p2, q1), side(p1, p2, q2)
    if d1 * d2 < 0 and d3 * d4 < 0:
        return True
    return any(
        d == 0 and within(s, t, r)
        for d, (s, t, r) in zip((d1, d2, d3, d4), ((q1, q2, p1), (q1, q2, p2), (p1, p2, q1), (p1, p2, q2)), strict=True)
    )


def segment_hits(segment: Segment, rect: Rect) -> bool:
    """Whether a line segment passes through the inside of a rectangle (touching its edge does not count)."""
    x, y, w, h = rect
    if w <= 2 or h <= 2:
        return False
    (x1, y1), (x2, y2) = segment
    inside, _, _ = cv2.clipLine((x + 1, y + 1, w - 2, h - 2), (int(x1), int(y1)), (int(x2), int(y2)))
    return bool(inside)


@dataclass(frozen=True)
class Layout:
    """Where each face's label goes on a canvas of `size` (the photo, with a band added under it when a label
    could go nowhere else), and the lines leading from a face to a label in that band."""

    rects: list[Rect]
    lines: list[Segment | None]  # from the bottom of the face to the top of its label; None beside the face
    size: tuple[int, int]


def place_beside(
    size: tuple[int, int], boxes: Sequence[Rect], blocks: Sequence[tuple[int, int]], gap: int = 4
) -> list[Rect | None]:
    """Each face's label block beside it inside the photo (below, else above, else right, else left), over no face
    and no other label; None where there is no room."""
    width, height = size
    placed: list[Rect] = []
    obstacles = [tuple(int(v) for v in b) for b in boxes]
    rects: list[Rect | None] = []

    def free(r: Rect) -> bool:
        inside = r[0] >= 0 and r[1] >= 0 and r[0] + r[2] <= width and r[1] + r[3] <= height
        return inside and not any(intersects(r, o) for o in obstacles) and not any(intersects(r, p) for p in placed)

    for (x, y, w, h), (bw, bh) in zip(obstacles, blocks, strict=True):
        xs = [int(np.clip(left, 0, max(0, width - bw))) for left in (x + (w - bw) // 2, x, x + w - bw)]
        side_y = int(np.clip(y, 0, max(0, height - bh)))
        candidates = [(cx, y + h + gap) for cx in xs] + [(cx, y - gap - bh) for cx in xs]
        candidates += [(x + w + gap, side_y), (x - gap - bw, side_y)]
        chosen = next(((cx, cy, bw, bh) for cx, cy in candidates if free((cx, cy, bw, bh))), None)
        rects.append(chosen)
        if chosen is not None:
            placed.append(chosen)
    return rects


def place_labels(
    size: tuple[int, int], boxes: Sequence[Rect], blocks: Sequence[tuple[int, int]], gap: int = 4
) -> Layout | None:
    """A clean layout of every face's label, or None when there is none (then number the faces and list the
    answers beside the photo).

    Labels go beside their faces (:func:`place_beside`); those with no room there go in one row in a band under the
    photo, in the left-to-right order of their faces, each joined to its face by a line. The layout is refused
    when that row does not fit, or a line would cross another line, a label or another face: a tangle of lines
    is worse than a table. The canvas is widened when a label is wider than the photo (a small photo)."""
    width, height = size
    width = max([width] + [bw + 2 * gap for bw, _ in blocks])
    obstacles = [tuple(int(v) for v in b) for b in boxes]
    beside = place_beside((width, height), obstacles, blocks, gap)
    rects: list[Rect | None] = list(beside)
    band = sorted((i for i, r in enumerate(beside) if r is None), key=lambda i: obstacles[i][0] + obstacles[i][2] / 2)
    lines: list[Segment | None] = [None] * len(obstacles)
    right, bottom = 0, height
    for i in band:
        x, _, w, _ = obstacles[i]
        bw, bh = blocks[i]
        left = max(int(np.clip(x + (w - bw) // 2, 0, width - bw)), right)
        if left + bw > width:
            return None
        rects[i] = (left, height + gap, bw, bh)
        right, bottom = left + bw + gap, max(bottom, height + gap + bh + gap)
    for i in band:
        x, y, w, h = obstacles[i]
        lx, ly, lw, _ = rects[i]  # type: ignore[misc]
        lines[i] = ((x + w // 2, min(y + h, height - 1)), (lx + lw // 2, ly))
    placed: list[Rect] = [r for r in rects if r is not None]  # every label has its place by now
    for i in band:
        line = lines[i]
        others = [o for j, o in enumerate(obstacles + placed) if j not in (i, len(obstacles) + i)]
        if line is None or any(segment_hits(line, r) for r in others):
            return None
        if any(other is not None and j > i and segments_cross(line, other) for j, other in enumerate(lines)):
            return None
    return Layout(placed, lines, (width, bottom))


def _to_bgr(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


@dataclass(frozen=True)
class Drawing:
    """A photo drawn with its faces: the RGB image, and whether each face's answers are on it (`labelled`) or
    only its number, the answers then being listed beside the photo (a crowd, whose labels cannot all be placed
    cleanly)."""

    image: np.ndarray
    labelled: bool


def draw_faces(
    image_bgr: np.ndarray,
    boxes: Sequence[Rect],
    labels: Sequence[Sequence[str]],
    min_side: int = MIN_SIDE,
    max_side: int = MAX_SIDE,
    numbers: Sequence[int] | None = None,
) -> Drawing:
    """The photo (its long side brought within [min_side, max_side]) with a box on every face in its number's
    colour (:func:`box_color`; `numbers` default 1, 2, ..., a video passes its people's) and, where a clean layout
    exists (:func:`place_labels`), its label lines in a block of the same colour outside every face, text sized
    to stay legible on a phone. Otherwise, or with more faces than colours, each box gets its number instead."""
    image = _to_bgr(image_bgr)
    h, w = image.shape[:2]
    scale = canvas_scale(w, h, min_side, max_side)
    if scale != 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    ch, cw = image.shape[:2]
    numbers = list(numbers) if numbers is not None else list(range(1, len(boxes) + 1))
    style = LabelStyle.for_width(cw)
    scaled = [tuple(round(v * scale) for v in box) for box in boxes]
    layout = (
        place_labels((cw, ch), scaled, [style.block_size(lines) for lines in labels], style.gap)
        if boxes and len(boxes) <= len(BOX_COLORS)
        else None
    )
    canvas_w, canvas_h = layout.size if layout else (cw, ch)
    canvas = np.full((canvas_h, canvas_w, 3), 255, np.uint8)
    canvas[:ch, :cw] = image
    thickness = max(2, round(cw / 400))
    for (x, y, bw, bh), number in zip(scaled, numbers, strict=True):
        cv2.rectangle(canvas, (x, y), (x + bw, y + bh), box_color(number), thickness)
    if layout is not None:
        for k, (rect, line, lines) in enumerate(zip(layout.rects, layout.lines, labels, strict=True)):
            if line is not None:
                cv2.line(canvas, line[0], line[1], box_color(numbers[k]), thickness)
            draw_label(canvas, rect, lines, box_color(numbers[k]), style)
    else:
        for rect, number in zip(number_badges((cw, ch), scaled, numbers, style), numbers, strict=True):
            draw_label(canvas, rect, [str(number)], box_color(number), style)
    return Drawing(cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB), layout is not None or not boxes)


def number_badges(
    size: tuple[int, int], boxes: Sequence[Rect], numbers: Sequence[int], style: LabelStyle
) -> list[Rect]:
    """Where each face's number goes: just above its box's top-left corner when that is inside the photo and
    clear of the other faces and numbers, else inside the corner."""
    width, height = size
    placed: list[Rect] = []
    for i, ((x, y, _, _), number) in enumerate(zip(boxes, numbers, strict=True)):
        bw, bh = style.block_size([str(number)])
        left = int(np.clip(x, 0, max(0, width - bw)))
        above = (left, y - bh, bw, bh)
        others = [b for j, b in enumerate(boxes) if j != i] + placed
        clear = above[1] >= 0 and not any(intersects(above, o) for o in others)
        placed.append(above if clear else (left, int(np.clip(y, 0, max(0, height - bh))), bw, bh))
    return placed


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
Point = tuple[int, int]
Segment = tuple[Point, Point]
