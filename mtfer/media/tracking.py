"""Follow faces across the frames of a video or a live stream, and steady each face's probabilities over time.

    tracker = Tracker()                       # smoothing_s=0.5: exponential moving average with a 0.5 s time constant
    ids = tracker.update(boxes, probabilities, time_s)   # one track id per box, in the order given
    tracker.tracks[ids[0]].probabilities      # the track's smoothed {task: probabilities}

Boxes are matched to the live tracks by intersection over union (an optimal one-to-one assignment,
scipy's ``linear_sum_assignment``); a box left over is matched to a track left over whose face was of about its
size and near it (centres at most ``max_shift`` face widths apart): a face lost for a moment (a turned head, a
missed detection, a stalled stream) has often moved off its old box by then. A box matched neither way starts a
new track, and a track unseen for ``max_age_s`` (2.5 s: gaps of 2 s are survived) ends. With ``smoothing_s=0`` the probabilities are the frame's own (video timelines
keep raw per-frame values; the live view smooths so labels do not flicker).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

Box = tuple[int, int, int, int]  # x, y, w, h


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = max(0, min(ax2, bx2) - max(a[0], b[0]))
    h = max(0, min(ay2, by2) - max(a[1], b[1]))
    inter = w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _shift(a: Box, b: Box) -> float:
    """How far apart two faces are, in face widths (centre to centre); infinite when their sizes differ by more
    than half (another face, nearer or farther)."""
    wa, wb = max(a[2], 1), max(b[2], 1)
    if not 2 / 3 <= wa / wb <= 3 / 2:
        return math.inf
    dx = (a[0] + a[2] / 2) - (b[0] + b[2] / 2)
    dy = (a[1] + a[3] / 2) - (b[1] + b[3] / 2)
    return math.hypot(dx, dy) / ((wa + wb) / 2)


@dataclass
class Track:
    """One face followed over time: its last box, when it was first and last seen, its smoothed probabilities."""

    id: int
    box: Box
    first_s: float
    last_s: float
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)
    frames: int = 1


class Tracker:
    """IoU tracking with an exponential moving average of each track's probabilities (time constant smoothing_s)."""

    def __init__(self, min_iou: float = 0.3, max_age_s: float = 2.5, smoothing_s: float = 0.5, max_shift: float = 1.0):
        if not 0 <= min_iou < 1:
            raise ValueError(f"min_iou must be in [0, 1), got {min_iou}")
        if max_age_s <= 0 or smoothing_s < 0:
            raise ValueError(f"max_age_s must be > 0 and smoothing_s >= 0, got {max_age_s} and {smoothing_s}")
        self.min_iou = min_iou
        self.max_age_s = max_age_s
        self.smoothing_s = smoothing_s
        self.max_shift = max_shift
        self.tracks: dict[int, Track] = {}
        self._next_id = 1

    def _match(self, boxes: Sequence[Box], live: list[Track]) -> dict[int, int]:
        """box index -> track id, one-to-one, maximising the total IoU over pairs above min_iou; the most recently
        seen tracks are matched first, older ones only to the boxes left (a matching cascade): a face that
        reappears elsewhere and starts a new track keeps it, rather than swapping back and forth with its own
        stale track while that one lives on."""
        if not boxes or not live:
            return {}
        from scipy.optimize import linear_sum_assignment  # scikit-learn's own dependency

        matched: dict[int, int] = {}
        for seen in sorted({t.last_s for t in live}, reverse=True):
            group = [t for t in live if t.last_s == seen]
            free = [i for i in range(len(boxes)) if i not in matched]
            if not free:
                break
            overlap = np.array([[iou(tuple(boxes[i]), t.box) for t in group] for i in free])
            rows, cols = linear_sum_assignment(-overlap)
            matched.update(
                {free[r]: group[c].id for r, c in zip(rows, cols, strict=True) if overlap[r, c] >= self.min_iou}
            )
        free = [i for i in range(len(boxes)) if i not in matched]
        left = [t for t in live if t.id not in matched.values()]
        if free and left and self.max_shift > 0:
            shift = np.array([[_shift(tuple(boxes[i]), t.box) for t in left] for i in free])
            rows, cols = linear_sum_assignment(np.minimum(shift, 1e6))
            matched.update(
                {free[r]: left[c].id for r, c in zip(rows, cols, strict=True) if shift[r, c] <= self.max_shift}
            )
        return matched

    def update(
        self, boxes: Sequence[Box], probabilities: Sequence[Mapping[str, np.ndarray]] | None, time_s: float
    ) -> list[int]:
        """Add one frame's faces (seen at time_s seconds); returns each box's track id in the order given."""
        if probabilities is not None and len(probabilities) != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but {len(probabilities)} sets of probabilities")
        for tid in [t.id for t in self.tracks.values() if time_s - t.last_s > self.max_age_s]:
            del self.tracks[tid]
        matched = self._match(boxes, list(self.tracks.values()))
        ids = []
        for i, box in enumerate(boxes):
            box = tuple(int(v) for v in box)
            probs = {k: np.asarray(v, dtype=np.float32) for k, v in (probabilities[i] if probabilities else {}).items()}
            tid = matched.get(i)
            if tid is None:
                tid = self._next_id
                self._next_id += 1
                self.tracks[tid] = Track(tid, box, time_s, time_s, probs)
            else:
                track = self.tracks[tid]
                dt = max(0.0, time_s - track.last_s)
                # weight of the new frame: 1 - exp(-dt / tau); tau=0 (no smoothing) takes the frame as it is
                alpha = 1.0 if self.smoothing_s == 0 else 1.0 - math.exp(-dt / self.smoothing_s)
                for task, p in probs.items():
                    old = track.probabilities.get(task)
                    track.probabilities[task] = p if old is None else (1 - alpha) * old + alpha * p
                track.box, track.last_s = box, time_s
                track.frames += 1
            ids.append(tid)
        return ids
