"""Video -> per-face timeline: sample a video's frames, find the faces, follow each face as a track and give it
the four heads' probabilities frame by frame.

    analysis = VideoAnalysis("talk.mp4", Predictor(), fps=5)
    for frame in analysis.run():          # resumable, stoppable: the app draws a progress bar from it
        print(analysis.progress, frame.time_s, [f.track for f in frame.faces])
    analysis.table().to_csv("talk.csv", index=False)   # the columns of mtfer.media.tables.table_columns(video=True)

Frames are read with OpenCV's VideoCapture (its bundled FFmpeg reads mp4, webm, avi, mov and more) and sampled at
`fps` per second (default 5; every frame when the video has fewer); faces are found on several frames at once on
worker threads (OpenCV releases the GIL), tracked in order by mtfer.media.tracking.Tracker (IoU, no smoothing: the
table holds each frame's own values) and put through the network in batches. A cap on the analysed duration and
on the number of analysed frames (VideoLimits, see mtfer.media.video_limits.video_limits) bounds the work; what was left out
is said in `notes`, as is a video that ends before its header says it should (a truncated file). A file that is
not a video, or of which no frame can be decoded, raises VideoError with one line for people.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import math
import os
import shutil
import stat
import tempfile
import weakref
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

# FFmpeg's own log lines ("moov atom not found", "overread 8") off; read when OpenCV first opens a video.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from mtfer.core import decoding, faces, preprocess
from mtfer.media.answers import thresholds  # noqa: E402
from mtfer.media.tables import box_columns, face_columns, rows_frame, table_columns  # noqa: E402
from mtfer.media.tracking import Tracker  # noqa: E402

if TYPE_CHECKING:
    import pandas as pd

    from mtfer.core.inference import Predictor

VIDEO_TYPES = ("mp4", "webm", "avi", "mov")  # offered by the app; the command line tries any file FFmpeg reads
MAX_UPLOAD_MB = 200  # the app's limit on an uploaded video (photos: 50 MB)
DEFAULT_FPS = 5.0
# Frames larger than 8K UHD are refused, from the container's header before any is decoded (a small file can hold
# huge frames: 16000x12000 MJPEG took 6 GB), and again per decoded frame should the header understate them.
MAX_FRAME_PIXELS = 7680 * 4320
FRAMES_IN_FLIGHT_BYTES = 400_000_000  # decoded frames waiting for face finding at once: fewer when they are big
DEFAULT_MAX_SECONDS = 600.0  # ten minutes
DEFAULT_MAX_FRAMES = 3000  # ten minutes at 5 frames per second
TRACK_MIN_IOU = 0.3
TRACK_MAX_AGE_S = 2.5  # a face unseen for longer starts a new track when it comes back
_BATCH_FACES = 64  # faces put through the network together
_TRUNCATED_SHARE = 0.9  # a video that stops before this share of the frames its header announces is truncated


class VideoError(ValueError):
    """The file is not a video that can be read (not a video, damaged, truncated before its first frame)."""


@dataclass(frozen=True)
class VideoLimits:
    """How much of a video is analysed: at most `max_seconds` from its start and `max_frames` sampled frames."""

    max_seconds: float = DEFAULT_MAX_SECONDS
    max_frames: int = DEFAULT_MAX_FRAMES

    def __post_init__(self) -> None:
        if not self.max_seconds > 0 or not math.isfinite(self.max_seconds):
            raise ValueError(f"the video duration limit must be a positive number of seconds, got {self.max_seconds}")
        if int(self.max_frames) != self.max_frames or self.max_frames < 1:
            raise ValueError(f"the video frame limit must be a whole number of at least 1, got {self.max_frames}")


@dataclass(frozen=True)
class VideoInfo:
    """What a video's header says: frames per second, frame count (0 when unknown) and frame size."""

    fps: float
    frames: int
    width: int
    height: int

    @property
    def duration_s(self) -> float:
        """Length announced by the header (0 when unknown)."""
        return self.frames / self.fps if self.frames > 0 and self.fps > 0 else 0.0


@dataclass
class FrameFace:
    """One face of an analysed frame: its number in the frame (largest first), its track, box and probabilities."""

    face: int
    track: int
    box: tuple[int, int, int, int]
    probabilities: dict[str, dict[str, float]]

    def top(self, task: str) -> tuple[str, float]:
        probs = self.probabilities[task]
        label = max(probs, key=probs.__getitem__)
        return label, probs[label]


@dataclass
class VideoFrame:
    """One analysed frame: its number in the video (from 0), its time and its faces (maybe none)."""

    frame: int
    time_s: float
    faces: list[FrameFace] = field(default_factory=list)


def format_time(seconds: float) -> str:
    """'0:04.2', '12:30.0': minutes and seconds to a tenth, as a video player shows them."""
    tenths = round(max(0.0, seconds) * 10)
    return f"{tenths // 600}:{tenths % 600 / 10:04.1f}"


def _name(path: str | os.PathLike) -> str:
    return Path(path).name or str(path)


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """OpenCV's own warnings ("can't be used to capture by name") off while a video is opened."""
    logging = cv2.utils.logging
    previous = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        logging.setLogLevel(previous)


def _open(path: str | os.PathLike, name: str | None = None) -> cv2.VideoCapture:
    """An opened capture of the video at `path`, or VideoError saying in one line why it cannot be read."""
    name = name or _name(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a pipe would block the open below forever
            raise VideoError(f"{name} is not a regular file (a pipe, device or socket): not read")
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as error:
        raise VideoError(f"cannot read {name}: {error.strerror or error}") from None
    if not head:
        raise VideoError(f"{name} is empty (0 bytes): not a video")
    kind = decoding.image_kind(head)
    if kind is not None:
        raise VideoError(f"{name} is a photo ({kind}), not a video")
    with _quiet_opencv():
        capture = cv2.VideoCapture(os.fspath(path), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        raise VideoError(
            f"{name} is not a video that can be read ({', '.join(VIDEO_TYPES)} files are): "
            "it is another kind of file, or damaged or truncated"
        )
    width, height = capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)
    if math.isfinite(width * height) and width * height > MAX_FRAME_PIXELS:
        capture.release()
        raise VideoError(_too_large(name, int(width), int(height)))
    return capture


def _too_large(name: str, width: int, height: int) -> str:
    return f"{name} has frames of {width}x{height} pixels: too large (at most 8K, {MAX_FRAME_PIXELS:,} pixels)"


def probe(path: str | os.PathLike, name: str | None = None) -> VideoInfo:
    """The header of the video at `path`, after checking that its first frame decodes; VideoError otherwise."""
    capture = _open(path, name)
    try:
        ok, first = capture.read()
        if not ok or first is None:
            raise VideoError(
                f"{name or _name(path)} holds no frame that can be decoded: the video is damaged or truncated"
            )
        if first.shape[0] * first.shape[1] > MAX_FRAME_PIXELS:
            raise VideoError(_too_large(name or _name(path), first.shape[1], first.shape[0]))
        frames = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        fps = capture.get(cv2.CAP_PROP_FPS)
        return VideoInfo(
            fps=float(fps) if math.isfinite(fps) and 0 < fps < 1000 else 0.0,
            frames=int(frames) if math.isfinite(frames) and frames > 0 else 0,
            width=int(first.shape[1]),
            height=int(first.shape[0]),
        )
    finally:
        capture.release()


def read_frame(path: str | os.PathLike, frame: int) -> np.ndarray:
    """Frame number `frame` (from 0) of the video at `path`, as a BGR array; VideoError when it cannot be read."""
    capture = _open(path)
    try:
        if frame > 0:
            capture.set(cv2.CAP_PROP_POS_FRAMES, frame)
        ok, image = capture.read()
    finally:
        capture.release()
    if not ok or image is None:
        raise VideoError(f"frame {frame} of {_name(path)} cannot be read")
    return image


def _detect(image: np.ndarray, config: preprocess.PreprocessConfig, largest_only: bool) -> list[faces.Face]:
    found = faces.find_faces(image, config)
    return found[:1] if largest_only else found


class VideoAnalysis:
    """The analysis of one video, run by iterating `run()`: it yields each analysed frame in order and can be
    stopped (`stop()`) or interrupted and resumed (iterate `run()` again: it goes on where it was).

    `fps`: frames analysed per second of video (every frame when the video has fewer). `limits`: caps on the
    analysed duration and frames. `source`: the name in the table's `source` column (default: the file's name).
    `largest_only`: only the largest face of each frame. `workers`: threads finding faces (default: up to 4)."""

    def __init__(
        self,
        path: str | os.PathLike,
        predictor: Predictor,
        *,
        fps: float = DEFAULT_FPS,
        limits: VideoLimits | None = None,
        source: str | None = None,
        largest_only: bool = False,
        workers: int | None = None,
    ) -> None:
        if not fps > 0 or not math.isfinite(fps):
            raise ValueError(f"the sampling rate must be a positive number of frames per second, got {fps}")
        self.path = Path(path)
        self.source = source or _name(path)
        self.info = probe(self.path, self.source)
        self.predictor = predictor
        self.fps = float(fps)
        self.limits = limits or VideoLimits()
        self.largest_only = largest_only
        self.workers = max(1, workers if workers is not None else min(4, os.cpu_count() or 1))
        self.frames: list[VideoFrame] = []
        self.notes: list[str] = []
        self.done = False
        self.stopped = False
        self.tracker = Tracker(min_iou=TRACK_MIN_IOU, max_age_s=TRACK_MAX_AGE_S, smoothing_s=0)
        self._next = 0  # the next frame of the video to read
        self._bucket = -1  # the sampling period (of 1/fps seconds) of the last analysed frame

    @classmethod
    def from_bytes(cls, data: bytes, name: str, predictor: Predictor, **options: Any) -> VideoAnalysis:
        """An analysis of an uploaded video: the bytes go to a temporary file, removed with the analysis."""
        folder = tempfile.mkdtemp(prefix="mtfer-video-")
        suffix = Path(name).suffix.lower()
        path = Path(folder) / f"video{suffix if suffix[1:].isalnum() else ''}"
        try:
            path.write_bytes(data)
            analysis = cls(path, predictor, source=options.pop("source", None) or name, **options)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        weakref.finalize(analysis, shutil.rmtree, folder, True)
        return analysis

    # --- how far it is -----------------------------------------------------------------------------------------

    @property
    def span_s(self) -> float:
        """Seconds of video to analyse: the whole video (as its header says), or up to the duration limit."""
        duration = self.info.duration_s or self.limits.max_seconds
        return min(duration, self.limits.max_seconds)

    @property
    def expected_frames(self) -> int:
        """Frames that will be analysed, as far as the header tells (at least those analysed so far)."""
        rate = min(self.fps, self.info.fps) if self.info.fps > 0 else self.fps
        expected = min(self.limits.max_frames, max(1, math.ceil(self.span_s * rate - 1e-6)))
        return max(expected, len(self.frames))

    @property
    def progress(self) -> float:
        """0 to 1: the share of the work done (1 once finished or stopped)."""
        if self.done or self.stopped:
            return 1.0
        return min(0.99, len(self.frames) / self.expected_frames)

    @property
    def analysed_s(self) -> float:
        """Time of the last analysed frame."""
        return self.frames[-1].time_s if self.frames else 0.0

    def stop(self) -> None:
        """Stop at the next frame: the frames analysed so far stay."""
        if not self.done and not self.stopped:
            self.notes.append(f"Stopped at {format_time(self.analysed_s)}: the results cover the video up to there.")
        self.stopped = True

    # --- the work --------------------------------------------------------------------------------------------------

    def _time(self, capture: cv2.VideoCapture, index: int) -> float:
        ms = capture.get(cv2.CAP_PROP_POS_MSEC)
        if index == 0:
            return 0.0
        if math.isfinite(ms) and ms > 0:
            return ms / 1000
        return index / self.info.fps if self.info.fps > 0 else index / 25.0

    def _sampled(self, capture: cv2.VideoCapture) -> Iterator[tuple[int, float, int, np.ndarray]]:
        """(frame number, time, sampling period, BGR image) of each frame to analyse, from self._next on; ends at
        the limits (saying so in notes) or at the end of the video (noting a truncated file)."""
        if self._next > 0:
            capture.set(cv2.CAP_PROP_POS_FRAMES, self._next)
        index, bucket, taken = self._next, self._bucket, len(self.frames)
        last = self.analysed_s
        while True:
            if not capture.grab():
                self._note_end(index)
                return
            time_s = self._time(capture, index)
            if time_s >= self.limits.max_seconds:
                self._note_limit(f"the first {format_time(self.limits.max_seconds)}")
                return
            period = math.floor(time_s * self.fps + 1e-6)
            if period > bucket:
                if taken >= self.limits.max_frames:
                    self._note_limit(f"{self.limits.max_frames:,} frames (up to {format_time(last)})")
                    return
                ok, image = capture.retrieve()
                if ok and image is not None and image.shape[0] * image.shape[1] > MAX_FRAME_PIXELS:
                    self.notes.append(f"Stopped at frame {index}: {_too_large(self.source, *image.shape[1::-1])}.")
                    return
                if ok and image is not None:
                    yield index, time_s, period, image
                    bucket, taken, last = period, taken + 1, time_s
            index += 1

    def _note_limit(self, what: str) -> None:
        total = f" of {format_time(self.info.duration_s)}" if self.info.duration_s else ""
        self.notes.append(
            f"Only {what}{total} were analysed: that is the limit for one video here "
            f"({format_time(self.limits.max_seconds)} or {self.limits.max_frames:,} frames)."
        )

    def _note_end(self, index: int) -> None:
        declared = self.info.frames
        if declared and index < _TRUNCATED_SHARE * declared and declared - index >= 3:
            self.notes.append(
                f"The video stops at {format_time(index / self.info.fps)} though its header announces "
                f"{format_time(self.info.duration_s)}: the file looks truncated or damaged, and the results cover "
                "what could be read."
            )

    def run(self) -> Iterator[VideoFrame]:
        """Analyse the video from where it was left, yielding each analysed frame (with its tracked faces) in
        order; `self.frames` holds them all. Returns at once when finished or stopped."""
        if self.done or self.stopped:
            return
        config = self.predictor.config
        capture = _open(self.path, self.source)
        pool = cf.ThreadPoolExecutor(self.workers, thread_name_prefix="mtfer-video") if self.workers > 1 else None
        frame_bytes = max(1, self.info.width * self.info.height * 3)
        window = max(1, min(2 * self.workers, FRAMES_IN_FLIGHT_BYTES // frame_bytes))
        detecting: deque[tuple[int, float, int, Any]] = deque()  # frames whose faces are being found, in order
        found: list[tuple[int, float, int, list[faces.Face]]] = []  # frames waiting for the network
        try:
            for index, time_s, period, image in self._sampled(capture):
                if pool is None:
                    found.append((index, time_s, period, _detect(image, config, self.largest_only)))
                else:
                    detecting.append((index, time_s, period, pool.submit(_detect, image, config, self.largest_only)))
                    while len(detecting) >= window:
                        index, time_s, period, job = detecting.popleft()
                        found.append((index, time_s, period, job.result()))
                if sum(len(f[3]) for f in found) >= _BATCH_FACES or len(found) >= window:
                    yield from self._finish(found)
                    found = []
                if self.stopped:
                    return
            found += [(index, time_s, period, job.result()) for index, time_s, period, job in detecting]
            detecting.clear()
            yield from self._finish(found)
            if not self.stopped:
                self.done = True
        finally:
            capture.release()
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _finish(self, found: Sequence[tuple[int, float, int, list[faces.Face]]]) -> Iterator[VideoFrame]:
        """Put the faces of these frames through the network, track them in order, record and yield each frame."""
        groups = self.predictor.predict_groups([fs for *_, fs in found])
        for (index, time_s, period, fs), probabilities in zip(found, groups, strict=True):
            if self.stopped:
                return
            tracks = self.tracker.update([f.box for f in fs], None, time_s)
            frame = VideoFrame(
                index,
                round(time_s, 3),
                [
                    FrameFace(k, track, tuple(int(v) for v in f.box), p)  # type: ignore[arg-type]
                    for k, (f, track, p) in enumerate(zip(fs, tracks, probabilities, strict=True), start=1)
                ],
            )
            self.frames.append(frame)
            self._next, self._bucket = index + 1, period
            yield frame

    def complete(self) -> VideoAnalysis:
        """Run the analysis to its end (or its limits) and return it."""
        for _ in self.run():
            pass
        return self

    # --- results -----------------------------------------------------------------------------------------------

    def table(self) -> pd.DataFrame:
        """The CSV: `source, time_s, frame, track, face, x, y, w, h`, the top label and confidence per task, every
        class probability; one row per face per analysed frame, and a row with an empty track for a frame without
        a face."""
        return video_table(self.source, self.frames, self.predictor.classes, thresholds(self.predictor))

    def image(self, frame: int) -> np.ndarray:
        """The BGR image of frame number `frame` of the video."""
        return read_frame(self.path, frame)


def frame_rows(source: str, frame: VideoFrame, min_confidence: Mapping[str, float]) -> list[dict[str, Any]]:
    """One video frame's rows: one per face, or one with the face columns empty when it has none."""
    where = {"source": source, "time_s": frame.time_s, "frame": frame.frame}
    if not frame.faces:
        return [where]
    return [
        {
            **where,
            "track": f.track,
            "face": f.face,
            **box_columns(f.box),
            **face_columns(f.probabilities, min_confidence),
        }
        for f in frame.faces
    ]


def video_table(
    source: str,
    frames: Sequence[VideoFrame],
    classes: Mapping[str, Sequence[str]],
    min_confidence: Mapping[str, float],
) -> pd.DataFrame:
    """The table of analysed frames (see VideoAnalysis.table); `min_confidence`: the bundle's "not sure" thresholds."""
    rows = [row for frame in frames for row in frame_rows(source, frame, min_confidence)]
    return rows_frame(rows, table_columns(classes, video=True))


def is_video_name(path: str | os.PathLike) -> bool:
    """A visible file whose extension is one of VIDEO_TYPES: how a folder's videos are told from its other files
    without opening each."""
    name = Path(path).name
    return not name.startswith(".") and Path(name).suffix.lower().lstrip(".") in VIDEO_TYPES


def is_video(path: str | os.PathLike) -> bool:
    """Whether `path` is a video whose first frame decodes (a photo is not; nor is a text file named .jpg, which
    FFmpeg's image demuxer would open by its extension)."""
    try:
        probe(path)
    except VideoError:
        return False
    return True
