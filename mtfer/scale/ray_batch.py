"""Photo and video collections on Ray Data: `mtfer predict DIR --csv out.csv --engine ray [--address ADDR]`.

The same rows as the one-process folder path (mtfer.media.folders: one row per face, a photo without a face or an
unreadable file one row each), computed by a pool of Ray actors, each holding one Predictor (the model is loaded
once per actor, not per photo). Without ``--address`` Ray starts on this machine's cores; with it, the run joins an
existing cluster (`ray start --head` on one machine, `ray start --address HEAD:6379` on the others).

- **Sources**: local folders and files (walked as the folder path walks them), or any URI that ``pyarrow.fs`` opens
  (``s3://bucket/photos/``, ``gs://...``, ``file:///...``): listed on the driver, each file read by the actor.
- **Videos**: a collection of videos (and no photos) is labelled one video per actor call, each giving the
  one-process video table (a row per face per sampled frame, tracks within the video); a video that cannot be read
  is one row with its error.
- **Output**: a CSV file, or with a ``.parquet`` name a folder of Parquet parts (one per batch). Rows are written as
  batches finish, in the photos' order, and flushed: an interrupted run loses no finished row, and running the same
  command again skips every photo already in the output (resume by output).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.fs as pafs
import ray

from mtfer.core.inference import Predictor
from mtfer.media.folders import FolderResult, is_photo_name, read_faces, table_rows, visible_files
from mtfer.media.tables import counted, csv_text, rows_frame, table_columns
from mtfer.media.video import VideoAnalysis, VideoLimits, is_video_name

BATCH_PHOTOS = 16  # photos per actor call: their faces go through the network together


def is_uri(path: str) -> bool:
    return "://" in str(path)


def list_files(sources: Sequence[str | os.PathLike]) -> tuple[list[str], list[str]]:
    """The photos and the videos of `sources`: local folders walked as the folder path walks them (hidden files
    left out), URIs listed with pyarrow.fs; a file named on its own is a video when its name says so, else a photo
    (read as one: an unreadable file becomes a row with its error)."""
    photos: list[str] = []
    videos: list[str] = []
    for source in sources:
        if is_uri(str(source)):
            fs, root = pafs.FileSystem.from_uri(str(source))
            if fs.get_file_info(root).type == pafs.FileType.File:
                names = [str(source)]
            else:
                scheme = str(source).split("://", 1)[0]
                found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
                names = sorted(f"{scheme}://{f.path}" for f in found if f.type == pafs.FileType.File)
        elif Path(source).is_file():
            names = [str(source)]
        else:
            names = [str(p) for p in visible_files(source)]
        single = len(names) == 1 and str(names[0]) == str(source)
        photos += [n for n in names if is_photo_name(n) or (single and not is_video_name(n))]
        videos += [n for n in names if is_video_name(n)]
    return photos, videos


def _read_bytes(path: str) -> bytes:
    if not is_uri(path):
        return Path(path).read_bytes()
    fs, inner = pafs.FileSystem.from_uri(path)
    with fs.open_input_file(inner) as handle:
        return handle.read()


class Labeller:
    """A Ray actor: one Predictor, loaded once; each call labels a batch of photo paths into table rows."""

    def __init__(self, model: str | None, largest_only: bool, small_faces: bool | None):
        self.predictor = Predictor(model, small_faces=small_faces)
        self.largest_only = largest_only
        self.columns = table_columns(self.predictor.classes, error=True)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        waiting: list[tuple[str, Any]] = []
        for path in batch["path"]:
            try:
                data: Path | bytes = _read_bytes(path) if is_uri(path) else Path(path)
            except OSError as error:
                waiting.append((path, f"cannot be read: {error.strerror or error}"))
                continue
            waiting.append((path, read_faces(data, self.predictor.config, self.largest_only)))
        return rows_frame(table_rows(self.predictor, waiting), self.columns).astype(object)


def done_sources(out: str | os.PathLike) -> set[str]:
    """The photos an earlier, perhaps interrupted, run already wrote to `out` (a CSV file or a Parquet folder)."""
    out = Path(out)
    try:
        if out.suffix == ".parquet":
            parts = sorted(out.glob("part-*.parquet")) if out.is_dir() else []
            return set(pd.concat([pd.read_parquet(p, columns=["source"]) for p in parts])["source"]) if parts else set()
        if out.is_file() and out.stat().st_size:
            return set(pd.read_csv(out, usecols=["source"], dtype=str, keep_default_na=False)["source"])
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{out} is not a table this command wrote, so it cannot be resumed: {error}") from None
    return set()


def photos_to_table(
    sources: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    model: str | None = None,
    largest_only: bool = False,
    small_faces: bool | None = None,
    address: str | None = None,
    actors: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FolderResult:
    """Labels every photo of `sources` not yet in `out` with a pool of `actors` Ray actors (default: one per core,
    at most 2 here), appending rows to `out` as batches finish. Returns what this run did (photos already in
    `out` are not counted)."""
    photos, _ = list_files(sources)
    result = FolderResult()
    started = time.perf_counter()
    options = {"model": model, "largest_only": largest_only, "small_faces": small_faces}
    for frame in _labelled(photos, out, Labeller, options, BATCH_PHOTOS, address, actors, progress):
        photos_done = frame.drop_duplicates("source")
        result.photos += len(photos_done)
        result.unreadable += int(photos_done["error"].notna().sum())
        result.without_face += int((photos_done["error"].isna() & photos_done["face"].isna()).sum())
        result.faces += int(frame["face"].notna().sum())
    result.seconds = time.perf_counter() - started
    return result


class VideoLabeller:
    """A Ray actor for videos: one Predictor; each call analyses whole videos (one per call) into the one-process
    video table, with an `error` column for a video that cannot be read."""

    def __init__(
        self, model: str | None, largest_only: bool, small_faces: bool | None, fps: float, limits: VideoLimits
    ):
        self.predictor = Predictor(model, small_faces=small_faces)
        self.options = {"fps": fps, "limits": limits, "largest_only": largest_only, "workers": 1}
        self.columns = table_columns(self.predictor.classes, video=True, error=True)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        tables = []
        for path in batch["path"]:
            try:
                if is_uri(path):
                    analysis = VideoAnalysis.from_bytes(_read_bytes(path), path, self.predictor, **self.options)
                else:
                    analysis = VideoAnalysis(path, self.predictor, source=path, **self.options)
                table = analysis.complete().table()
            except OSError as error:
                table = pd.DataFrame([{"source": path, "error": f"cannot be read: {error.strerror or error}"}])
            except ValueError as error:  # VideoError: not a video, damaged, too large
                table = pd.DataFrame([{"source": path, "error": str(error)}])
            tables.append(table.reindex(columns=self.columns))
        return pd.concat(tables, ignore_index=True).astype(object)


@dataclass
class VideoBatchResult:
    """What videos_to_table did: videos analysed, frames and faces in their tables, videos that could not be read."""

    videos: int = 0
    frames: int = 0
    faces: int = 0
    unreadable: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        """'12 videos in 95.0 s: 1,480 frames, 1,902 faces, 1 unreadable file'."""
        return (
            f"{counted(self.videos, 'video')} in {self.seconds:.1f} s: {counted(self.frames, 'frame')}, "
            f"{counted(self.faces, 'face')}, {counted(self.unreadable, 'unreadable file')}"
        )


def videos_to_table(
    sources: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    model: str | None = None,
    largest_only: bool = False,
    small_faces: bool | None = None,
    fps: float = 5.0,
    limits: VideoLimits | None = None,
    address: str | None = None,
    actors: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VideoBatchResult:
    """Analyses every video of `sources` not yet in `out`, one video per actor call (frames sampled at `fps`, within
    `limits`), appending each video's whole table to `out` as it finishes."""
    _, videos = list_files(sources)
    result = VideoBatchResult()
    started = time.perf_counter()
    options = {
        "model": model,
        "largest_only": largest_only,
        "small_faces": small_faces,
        "fps": fps,
        "limits": limits or VideoLimits(),
    }
    for frame in _labelled(videos, out, VideoLabeller, options, 1, address, actors, progress):
        for _, rows in frame.groupby("source", sort=False):
            result.videos += 1
            if rows["error"].notna().any():
                result.unreadable += 1
                continue
            result.frames += rows["frame"].nunique()
            result.faces += int(rows["face"].notna().sum())
    result.seconds = time.perf_counter() - started
    return result


def _labelled(
    files: list[str],
    out: str | os.PathLike,
    actor: type,
    options: dict[str, Any],
    batch_size: int,
    address: str | None,
    actors: int | None,
    progress: Callable[[int, int], None] | None,
) -> Iterator[pd.DataFrame]:
    """The files not yet in `out` through a pool of `actor`s, `batch_size` files per call: each finished batch's rows
    are appended to `out` (in the files' order) and yielded; `progress(done, total)` counts files."""
    done = done_sources(out)
    todo = [f for f in files if f not in done]
    if progress:
        progress(0, len(todo))
    if not todo:
        return
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    actors = actors or max(1, min(2, int(ray.available_resources().get("CPU", 1))))
    actors = min(actors, -(-len(todo) // batch_size))  # no actor loads the model to wait for work that never comes
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # rows in the files' order, as the one-process path writes them
    ctx.enable_progress_bars = False
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("ray.data")] + ["ray.data"]:
        logging.getLogger(name).setLevel(logging.ERROR)  # the command's own progress bar says how far it is
    with warnings.catch_warnings():  # max_restarts has no named parameter yet: Ray warns that it will
        warnings.simplefilter("ignore", DeprecationWarning)
        dataset = ray.data.from_items([{"path": f} for f in todo]).map_batches(
            actor,
            fn_constructor_kwargs=options,
            batch_size=batch_size,
            batch_format="pandas",
            concurrency=actors,
            num_cpus=1,
            max_restarts=0,  # a failed actor fails the run (a rerun resumes), never a restart on lost arguments
        )
    seen = 0
    for frame in _frames(dataset.iter_batches(batch_format="pandas", batch_size=None)):
        _append(out, frame)
        seen += frame["source"].nunique()
        if progress:
            progress(seen, len(todo))
        yield frame


def _frames(batches: Iterator[Any]) -> Iterator[pd.DataFrame]:
    for batch in batches:
        frame = batch if isinstance(batch, pd.DataFrame) else pd.DataFrame(batch)
        if len(frame):
            yield frame.replace({float("nan"): None})


def _append(out: str | os.PathLike, frame: pd.DataFrame) -> None:
    """Adds a batch of rows to `out`, flushed: a CSV file (the header once), or a new part of a Parquet folder."""
    out = Path(out)
    if out.suffix == ".parquet":
        out.mkdir(parents=True, exist_ok=True)
        existing = len(list(out.glob("part-*.parquet")))
        tmp = out / f".part-{existing:06d}.tmp"
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, out / f"part-{existing:06d}.parquet")  # a part is there whole or not at all
        return
    new = not out.exists() or out.stat().st_size == 0
    columns = list(frame.columns)
    with open(out, "a", newline="", encoding="utf-8") as handle:
        handle.write(csv_text(rows_frame(frame.to_dict("records"), columns), header=new))
        handle.flush()
        os.fsync(handle.fileno())
