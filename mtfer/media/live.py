"""Live camera: every face of a video stream boxed and labelled in real time, with steady labels.

    live = LiveProcessor(predictor)                 # one per stream (the Predict page makes one per WebRTC connection)
    annotated = live.process(frame_bgr, time_s)     # the same frame, faces boxed, four answers beside each
    annotated = live.process_latest([(f1, t1), (f2, t2), (f3, t3)])   # frames that queued up: only f3 is looked at
    live.status()                                   # faces, their smoothed answers, processed frames per second
    live.emotion_history()                          # the largest face's smoothed emotion over the last ~10 s
    live.record(30)                                 # the last 30 s as a per-track timeline (one row per face and frame)

Faces are followed across frames (mtfer.media.tracking.Tracker) and each face's probabilities are smoothed over time (an
exponential moving average, 0.5 s), so that labels do not flicker; the answers and "not sure" states are those of
the Predict page (mtfer.app.predict_view, thresholds from mtfer.assess.abstain). Frames that arrive while one is being looked
at are dropped, never queued: with streamlit-webrtc's asynchronous processing, ``recv_queued`` gets every frame that
came in meanwhile and only the newest is processed, so the delay stays that of one frame however slow the machine.
The recorded timeline keeps each frame's own probabilities (not the smoothed ones), in the columns of a video
file's timeline. No Streamlit here: the page hands this class to streamlit-webrtc."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pandas as pd

from mtfer.assess.abstain import Verdict, verdict
from mtfer.core import faces
from mtfer.core.inference import by_class, face_batch
from mtfer.core.preprocess import PreprocessConfig
from mtfer.core.tasks import UNTAUGHT_CLASSES, display_name
from mtfer.media.answers import abstain_name, photo_lines, thresholds
from mtfer.media.draw import EMOTION_COLORS, FONT, LabelStyle, box_color, draw_label, place_beside
from mtfer.media.tracking import Tracker
from mtfer.media.video import FrameFace, VideoFrame, video_table
from mtfer.media.webrtc import bgr_to_frame, frame_to_bgr

if TYPE_CHECKING:
    import pandas as pd

    from mtfer.core.inference import Predictor

LOGGER = logging.getLogger(__name__)
Box = tuple[int, int, int, int]  # x, y, w, h
SMOOTHING_S = 0.5  # time constant of the moving average of each face's probabilities
HISTORY_S = 10.0  # the live emotion chart shows this many seconds
RECORD_S = 60.0  # the longest recording kept ("Record" saves the last N <= this seconds)
FPS_WINDOW_S = 2.0  # processed frames per second are counted over this many seconds
RESTART_S = 2.0  # a frame time this far before the previous one means a new stream: start afresh
SMALL_FACE_PX = 100  # a face smaller than this keeps the small-face look on for every frame ...
SMALL_LOOK_EVERY_S = 1.0  # ... else it runs once a second, to notice small faces coming into view


@dataclass(frozen=True)
class LiveFace:
    """One face of the latest processed frame: its track, the number drawn beside it, its box (camera coordinates,
    not mirrored), its smoothed probabilities by class name and the answer per task."""

    track: int
    number: int
    box: Box
    probabilities: dict[str, dict[str, float]]
    verdicts: dict[str, Verdict]


@dataclass(frozen=True)
class LiveStatus:
    """Where a live stream stands, for the page: counts of frames, processed frames per second, the faces of the
    latest processed frame (largest first), the stream's time (seconds since its first frame) and the last error."""

    received: int = 0
    processed: int = 0
    dropped: int = 0
    fps: float = 0.0
    faces: tuple[LiveFace, ...] = ()
    time_s: float = 0.0
    error: str | None = None

    @property
    def started(self) -> bool:
        return self.processed > 0


def answer_short(v: Verdict) -> str:
    """'Happy 87%' when the model is sure; 'Age group: not sure', 'Race: other / not sure' when not (the words of
    the label drawn beside the face, mtfer.media.answers.photo_lines)."""
    if v.sure:
        return f"{display_name(v.task, v.label)} {v.confidence:.0%}"
    return f"{display_name(v.task)}: {abstain_name(v.task).lower()}"


class LiveProcessor:
    """Boxes and labels the faces of a live stream, one frame at a time; thread-safe (the stream's worker thread
    processes frames while the page reads status(), emotion_history() and record()).

    Also a streamlit-webrtc video processor (``recv`` / ``recv_queued`` take and return ``av.VideoFrame``s), without
    importing streamlit-webrtc. ``mirror`` (settable while running) shows the picture as a mirror does; detection,
    boxes and the recording stay in the camera's own coordinates. ``network`` runs the faces through the model
    (aligned uint8 faces -> {task: probabilities}): the predictor's Keras model by default; the Predict page passes
    a LiteNetwork."""

    def __init__(
        self,
        predictor: Predictor,
        min_confidence: Mapping[str, float] | None = None,
        *,
        network: Callable[[np.ndarray], Mapping[str, np.ndarray]] | None = None,
        mirror: bool = False,
        max_faces: int | None = None,
        smoothing_s: float = SMOOTHING_S,
        history_s: float = HISTORY_S,
        record_s: float = RECORD_S,
        source: str = "camera",
        show_fps: bool = True,
    ):
        if history_s <= 0 or record_s <= 0:
            raise ValueError(f"history_s and record_s must be positive seconds, got {history_s} and {record_s}")
        if max_faces is not None and max_faces < 1:
            raise ValueError(f"max_faces must be at least 1 (or None for every face), got {max_faces}")
        self.predictor = predictor
        self.network = network or predictor.predict_faces
        self.min_confidence = dict(min_confidence or {})
        self.mirror = mirror
        self.max_faces = max_faces
        self.smoothing_s = smoothing_s
        self.history_s = history_s
        self.record_s = record_s
        self.source = source
        self.show_fps = show_fps
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget every face, the history, the recording and the counts (a new stream)."""
        with self._lock:
            self._tracker = Tracker(smoothing_s=self.smoothing_s)
            self._numbers: dict[int, int] = {}
            self._start: float | None = None
            self._last: float | None = None
            self._received = self._processed = self._dropped = 0
            self._processed_times: deque[float] = deque()
            self._faces: tuple[LiveFace, ...] = ()
            self._history: deque[tuple[float, np.ndarray | None]] = deque()
            self._frames: deque[VideoFrame] = deque()  # the recording: each processed frame's own probabilities
            self._error: str | None = None
            self._small_look_at: float | None = None  # when the last frame with the small-face look was
            self._small_in_view = False

    # --- frames -------------------------------------------------------------------------------------------------

    def _detector_settings(self, time_s: float) -> PreprocessConfig:
        """The model's detector settings, with the second look for small faces (tens of ms a frame) only while
        small faces are in view, else once every ``SMALL_LOOK_EVERY_S`` to notice new ones: a close face in
        front of the camera keeps the full frame rate."""
        config = self.predictor.config
        if not config.small_faces:
            return config
        with self._lock:
            due = self._small_look_at is None or time_s - self._small_look_at >= SMALL_LOOK_EVERY_S
            if self._small_in_view or due:
                self._small_look_at = time_s
                return config
        return dataclasses.replace(config, small_faces=False)

    def process(self, image_bgr: np.ndarray, time_s: float) -> np.ndarray:
        """Finds, follows and labels the faces of one frame (uint8 BGR, H x W x 3) seen at `time_s` seconds (any
        clock, increasing); returns the annotated frame, the same size (mirrored when `mirror` is on)."""
        return self.process_latest([(image_bgr, time_s)])

    def process_latest(self, frames: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
        """The frames that arrived since the last call, oldest first: only the newest is processed, the others are
        counted as dropped. Returns the newest frame annotated."""
        if not frames:
            raise ValueError("process_latest needs at least one (frame, time_s) pair")
        image, time_s = frames[-1]
        image = _check_frame(image)
        time_s = float(time_s)
        if not math.isfinite(time_s):
            raise ValueError(f"time_s must be a finite number of seconds, got {time_s}")
        with self._lock:
            restarted = self._last is not None and time_s < self._last - RESTART_S
        if restarted:
            LOGGER.info("the frame time went back: a new stream, starting afresh")
            self.reset()
        with self._lock:
            self._received += len(frames)
            self._dropped += len(frames) - 1
            frame_index = self._received - 1

        found = faces.find_faces(image, self._detector_settings(time_s))
        with self._lock:
            self._small_in_view = any(max(f.box[2:]) < SMALL_FACE_PX for f in found)
        if self.max_faces is not None:
            found = found[: self.max_faces]
        probs = self.network(face_batch(found))
        per_face = [{t: np.asarray(probs[t][i], np.float32) for t in self.predictor.tasks} for i in range(len(found))]
        boxes: list[Box] = [(int(x), int(y), int(w), int(h)) for x, y, w, h in (f.box for f in found)]

        with self._lock:
            if self._start is None:
                self._start = time_s
            self._last = time_s
            rel = time_s - self._start
            ids = self._tracker.update(boxes, per_face, time_s)
            for gone in [t for t in self._numbers if t not in ids]:  # numbers go to the faces in view: 1, 2, ...
                del self._numbers[gone]
            live_faces = []
            for track_id, box in zip(ids, boxes, strict=True):
                if track_id not in self._numbers:
                    used = set(self._numbers.values())
                    self._numbers[track_id] = next(n for n in range(1, len(used) + 2) if n not in used)
                smoothed = self._by_class(self._tracker.tracks[track_id].probabilities)
                verdicts = self._verdicts(smoothed)
                live_faces.append(LiveFace(track_id, self._numbers[track_id], box, smoothed, verdicts))
            self._faces = tuple(live_faces)
            self._processed += 1
            self._processed_times.append(time_s)
            while len(self._processed_times) > 2 and self._processed_times[0] < time_s - FPS_WINDOW_S:
                self._processed_times.popleft()
            emotion = live_faces[0].probabilities.get("emotion") if live_faces else None
            self._history.append((rel, None if emotion is None else np.array(list(emotion.values()), np.float32)))
            while self._history and self._history[0][0] < rel - self.history_s:
                self._history.popleft()
            recorded = [
                FrameFace(face.number, face.track, face.box, self._by_class(raw))
                for face, raw in zip(live_faces, per_face, strict=True)
            ]
            self._frames.append(VideoFrame(frame_index, round(rel, 3), recorded))
            while self._frames and self._frames[0].time_s < rel - self.record_s:
                self._frames.popleft()
            fps = self._fps()
        return self.draw(image, live_faces, fps if self.show_fps else None)

    def draw(self, image_bgr: np.ndarray, faces: Sequence[LiveFace], fps: float | None = None) -> np.ndarray:
        """The frame (mirrored when `mirror` is on) with each face's box and its answers beside it, never over a
        face where there is room (mtfer.media.draw.place_beside), and the frames per second in a corner."""
        canvas = cv2.flip(image_bgr, 1) if self.mirror else image_bgr.copy()
        h, w = canvas.shape[:2]
        boxes = [_mirrored(f.box, w) if self.mirror else f.box for f in faces]
        style = LabelStyle.for_width(max(w, 480))
        labels = [photo_lines(f.number, f.verdicts) for f in faces]
        blocks = [style.block_size(lines) for lines in labels]
        rects = place_beside((w, h), boxes, blocks, style.gap)
        thickness = max(2, round(w / 320))
        for face, (x, y, bw, bh), rect, lines, (lw, lh) in zip(faces, boxes, rects, labels, blocks, strict=True):
            color = box_color(face.number)
            lx, ly = rect[:2] if rect is not None else (x, y + bh + style.gap)  # no room: under it, over whatever
            cv2.rectangle(canvas, (x, y), (x + bw, y + bh), color, thickness, cv2.LINE_AA)
            lx, ly = int(np.clip(lx, 0, max(0, w - lw))), int(np.clip(ly, 0, max(0, h - lh)))  # no band: stay inside
            draw_label(canvas, (lx, ly, lw, lh), lines, color, style)
        if fps is not None:
            _draw_badge(canvas, f"LIVE  {format_fps(fps)} fps", style)
        return canvas

    # --- streamlit-webrtc's video processor interface (av.VideoFrame in and out) ----------------------------------

    def recv(self, frame: Any) -> Any:
        """One av.VideoFrame in, the annotated one out (streamlit-webrtc without async processing)."""
        return self._recv_frames([frame])

    async def recv_queued(self, frames: list[Any]) -> list[Any]:
        """Every av.VideoFrame that arrived since the last call; only the newest is processed, the others dropped.
        Returns one frame: the stream repeats it until the next one is ready, so the picture never lags behind."""
        return [self._recv_frames(frames)] if frames else []

    def _recv_frames(self, frames: Sequence[Any]) -> Any:
        latest = frames[-1]
        image = frame_to_bgr(latest)
        pairs = [(image, _frame_time(f)) for f in frames[:-1]] + [(image, _frame_time(latest))]
        try:
            out = self.process_latest(pairs)
        except Exception as error:  # a bad frame must not end the stream: show it unlabelled, say why on the page
            LOGGER.exception("live frame failed")
            with self._lock:
                self._error = f"{type(error).__name__}: {error}"
            out = cv2.flip(image, 1) if self.mirror else image
        else:
            with self._lock:
                self._error = None
        result = bgr_to_frame(out)
        result.pts, result.time_base = latest.pts, latest.time_base
        return result

    # --- what the page reads ------------------------------------------------------------------------------------

    def status(self) -> LiveStatus:
        with self._lock:
            return LiveStatus(
                received=self._received,
                processed=self._processed,
                dropped=self._dropped,
                fps=self._fps(),
                faces=self._faces,
                time_s=0.0 if self._last is None or self._start is None else self._last - self._start,
                error=self._error,
            )

    def emotion_history(self) -> pd.DataFrame:
        """The largest face's smoothed emotion probabilities over the last `history_s` seconds: column `seconds`
        (<= 0: before the latest frame), then one column per emotion class (NaN where no face was in view)."""

        classes = self.predictor.classes.get("emotion", [])
        with self._lock:
            history = list(self._history)
        latest = history[-1][0] if history else 0.0
        rows = [
            [round(t - latest, 3)] + (list(map(float, p)) if p is not None else [math.nan] * len(classes))
            for t, p in history
        ]
        return pd.DataFrame(rows, columns=["seconds", *classes])

    def record(self, seconds: float | None = None) -> pd.DataFrame:
        """The last `seconds` (default: all that is kept, `record_s`) as the per-track timeline of a video file
        (mtfer.media.video.video_table): one row per face and processed frame (a frame without a face: one row, face
        columns empty); `time_s` counts from the stream's first frame, `frame` counts every frame received, dropped
        ones included; each frame's own probabilities, not the smoothed ones."""
        if seconds is not None and seconds <= 0:
            raise ValueError(f"seconds must be positive, got {seconds}")
        with self._lock:
            frames = list(self._frames)
        since = frames[-1].time_s - seconds if frames and seconds is not None else -math.inf
        recent = [f for f in frames if f.time_s >= since - 1e-9]
        return video_table(self.source, recent, self.predictor.classes, thresholds(self.predictor))

    # --- helpers ------------------------------------------------------------------------------------------------

    def _fps(self) -> float:
        times = self._processed_times
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def _by_class(self, probabilities: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
        return by_class(probabilities, self.predictor.classes)

    def _verdicts(self, by_class: Mapping[str, Mapping[str, float]]) -> dict[str, Verdict]:
        return {
            t: verdict(t, p, float(self.min_confidence.get(t, 0.0)), UNTAUGHT_CLASSES.get(t, ()))
            for t, p in by_class.items()
        }


def warm_up(predictor: Predictor, size: tuple[int, int] = (640, 480)) -> float:
    """Runs a blank frame through detection and the network once, so that the first camera frame is not
    slowed by one-time set-up (tracing the network, loading the detector: seconds on a busy machine;
    streamlit-webrtc ends a stream whose frame takes over 10 s). Returns the seconds it took."""
    start = time.perf_counter()
    width, height = size
    frame = np.full((height, width, 3), 128, np.uint8)
    faces.find_faces(frame, predictor.config)
    predictor.predict_faces(np.zeros((1, predictor.config.size, predictor.config.size), np.uint8))
    return time.perf_counter() - start


def emotion_chart(history: pd.DataFrame, window_s: float = HISTORY_S, size: tuple[int, int] = (600, 340)) -> np.ndarray:
    """The live chart as an RGB image (`size` = width, height: about the size it is shown at): one line per
    emotion (fixed colours) over the last `window_s` seconds, gaps where no face was in view, and beside it the
    emotions from the likeliest down with their latest probability. An image rather than an interactive chart:
    it is redrawn every second while the camera runs, which a browser shows at once."""
    width, height = size
    if width < 400 or height < 200:
        raise ValueError(f"the emotion chart needs at least 400x200 pixels, got {width}x{height}")
    classes = [c for c in history.columns if c != "seconds"]
    canvas = np.full((height, width, 3), 255, np.uint8)
    scale, thin = width / 1000, max(1, round(width / 600))
    legend_w = round(0.3 * width)
    left, right, top, bottom = (
        round(0.1 * width),
        width - legend_w,
        round(0.05 * height),
        height - round(0.14 * height),
    )
    grey, dark = (215, 215, 215), (90, 90, 90)

    def y_of(p: float) -> int:
        return round(bottom - p * (bottom - top))

    def x_of(t: float) -> int:
        return round(right - (-t / window_s) * (right - left))

    for p in (0.0, 0.5, 1.0):
        cv2.line(canvas, (left, y_of(p)), (right, y_of(p)), grey, thin, cv2.LINE_AA)
        text = f"{p:.0%}"
        (tw, th), _ = cv2.getTextSize(text, FONT, scale, thin)
        cv2.putText(canvas, text, (left - tw - 8, y_of(p) + th // 2), FONT, scale, dark, thin, cv2.LINE_AA)
    for t in (-window_s, -window_s / 2, 0.0):
        text = "now" if t == 0 else f"{t:.0f} s"
        (tw, th), _ = cv2.getTextSize(text, FONT, scale, thin)
        x = min(max(x_of(t) - tw // 2, 0), right - tw)
        cv2.putText(canvas, text, (x, bottom + th + 14), FONT, scale, dark, thin, cv2.LINE_AA)
    latest = history[classes].iloc[-1] if len(history) else None
    ranked = classes
    if latest is not None and latest.notna().all():
        ranked = sorted(classes, key=lambda c: -float(latest[c]))
        entries = [(c, f"{display_name('emotion', c)} {float(latest[c]):.0%}") for c in ranked]
    else:
        entries = [(c, display_name("emotion", c)) for c in classes]
    seconds = history["seconds"].to_numpy(float) if len(history) else np.zeros(0)
    shown = seconds >= -window_s
    for rank, c in reversed(list(enumerate(ranked))):  # the likeliest emotion last: on top, and thicker
        values = history[c].to_numpy(float)
        color, thickness = _hex_bgr(EMOTION_COLORS.get(c, "#606060")), (3 if rank == 0 else 2) * thin
        points: list[tuple[int, int]] = []
        for t, v in zip(seconds[shown], values[shown], strict=True):
            if math.isnan(v):
                _polyline(canvas, points, color, thickness)
                points = []
            else:
                points.append((x_of(t), y_of(min(max(v, 0.0), 1.0))))
        _polyline(canvas, points, color, thickness)
    row = (bottom - top) / max(len(entries), 1)
    for i, (c, text) in enumerate(entries):
        cy = round(top + (i + 0.5) * row)
        x0 = right + round(0.04 * width)
        cv2.line(canvas, (x0, cy), (x0 + round(0.03 * width), cy), _hex_bgr(EMOTION_COLORS.get(c, "#606060")), 3 * thin)
        (_, th), _ = cv2.getTextSize(text, FONT, scale, thin)
        cv2.putText(
            canvas, text, (x0 + round(0.045 * width), cy + th // 2), FONT, scale, (40, 40, 40), thin, cv2.LINE_AA
        )
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)


def _hex_bgr(color: str) -> tuple[int, int, int]:
    value = color.lstrip("#")
    r, g, b = (int(value[i : i + 2], 16) for i in (0, 2, 4))
    return (b, g, r)


def _polyline(canvas: np.ndarray, points: list[tuple[int, int]], color: tuple[int, int, int], thickness: int) -> None:
    if len(points) == 1:
        cv2.circle(canvas, points[0], thickness, color, -1, cv2.LINE_AA)
    elif points:
        cv2.polylines(canvas, [np.array(points, np.int32)], False, color, thickness, cv2.LINE_AA)


def moving_face_clip(
    face_bgr: np.ndarray | Sequence[np.ndarray],
    frames: int = 60,
    size: tuple[int, int] = (640, 480),
    face_side: int = 220,
    travel: int = 120,
) -> list[np.ndarray]:
    """`frames` BGR frames of `size` (width, height): the face photo(s) (the next one each quarter of the clip)
    `face_side` pixels wide, drifting left and right by `travel` pixels and a little up and down, on a soft
    background. A recorded-camera stand-in made from real face photos."""
    width, height = size
    photos = [face_bgr] if isinstance(face_bgr, np.ndarray) else list(face_bgr)
    if not photos:
        raise ValueError("moving_face_clip needs at least one face photo")
    if face_side + 2 * travel > width or face_side + 40 > height:
        raise ValueError(f"a {face_side}-pixel face travelling {travel} pixels does not fit a {width}x{height} frame")
    ramp = (
        np.linspace(150, 215, width, dtype=np.float32)[None, :] - np.linspace(0, 30, height, dtype=np.float32)[:, None]
    )
    background = np.clip(np.stack([ramp + 8, ramp + 2, ramp - 6], axis=-1), 0, 255).astype(np.uint8)
    resized = [cv2.resize(_to_bgr(p), (face_side, face_side), interpolation=cv2.INTER_AREA) for p in photos]
    clip = []
    for i in range(frames):
        phase = 2 * math.pi * i / max(frames, 1)
        x = round((width - face_side) / 2 + travel * math.sin(phase))
        y = round((height - face_side) / 2 + 15 * math.sin(2 * phase))
        frame = background.copy()
        frame[y : y + face_side, x : x + face_side] = resized[(i * 4 // max(frames, 1)) % len(resized)]
        clip.append(frame)
    return clip


def write_y4m(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: int = 30) -> None:
    """Writes BGR frames as a Y4M video (4:2:0), the format of Chromium's fake camera
    (--use-file-for-fake-video-capture)."""
    if not frames:
        raise ValueError("write_y4m needs at least one frame")
    h, w = frames[0].shape[:2]
    if w % 2 or h % 2:
        raise ValueError(f"Y4M 4:2:0 needs an even width and height, got {w}x{h}")
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{w} H{h} F{int(fps)}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            if frame.shape[:2] != (h, w):
                raise ValueError(f"every frame must be {w}x{h}, got {frame.shape[1]}x{frame.shape[0]}")
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(_to_bgr(frame), cv2.COLOR_BGR2YUV_I420).tobytes())


def _check_frame(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 1:
        raise ValueError(
            f"a live frame must be a uint8 BGR array of shape (height, width, 3), got {image.dtype} {image.shape}"
        )
    return image


def _to_bgr(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def _mirrored(box: Box, width: int) -> Box:
    x, y, w, h = box
    return (width - x - w, y, w, h)


def _frame_time(frame: Any) -> float:
    """An av.VideoFrame's presentation time in seconds (the stream's clock), else the monotonic clock."""
    t = getattr(frame, "time", None)
    return float(t) if t is not None else time.monotonic()


def _draw_badge(canvas: np.ndarray, text: str, style: LabelStyle) -> None:
    """A dark, half-transparent badge with a red dot and `text` in the top-left corner."""
    scale, thickness = style.scale * 0.8, max(1, style.thickness)
    (tw, th), _ = cv2.getTextSize(text, FONT, scale, thickness)
    pad, dot = style.pad, th // 2 + 1
    x0, y0 = pad, pad
    x1, y1 = x0 + 3 * pad + 2 * dot + tw, y0 + th + 2 * pad
    region = canvas[y0:y1, x0:x1]
    region[:] = (region * 0.35 + np.array([30, 30, 30]) * 0.65).astype(np.uint8)
    cy = (y0 + y1) // 2
    cv2.circle(canvas, (x0 + pad + dot, cy), dot, (60, 60, 235), -1, cv2.LINE_AA)
    cv2.putText(
        canvas, text, (x0 + 2 * pad + 2 * dot, cy + th // 2), FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA
    )


def format_fps(fps: float) -> str:
    """'18' frames per second; one decimal below 10 ('2.5'), so that a slow machine does not read '0'."""
    return f"{fps:.0f}" if fps >= 9.95 else f"{fps:.1f}"
