"""Folder -> CSV: every photo under a folder (recursively), its faces through the network in shared batches, one row
per face streamed to a CSV file as it goes, so that memory stays flat however many photos there are.

    result = photos_to_csv(Predictor(), ["holiday/"], "faces.csv", progress=TextProgress("photos"))
    print(f"{result.photos_per_s:.1f} photos/s")

The CSV has the columns of mtfer.media.tables.table_columns(error=True): `source, face, x, y, w, h`, the top label and
confidence per task, every class probability and `error`. A photo without a face is one row with the face columns
empty; a file that cannot be read is one row with the reason in `error`, and the walk goes on. Hidden files and
folders (names starting with '.') and files that are not photos by their extension are left out.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mtfer.core import bundles, decoding, faces, preprocess
from mtfer.media.answers import thresholds
from mtfer.media.tables import box_columns, counted, csv_text, face_columns, photo_rows, rows_frame, table_columns

if TYPE_CHECKING:
    from mtfer.core.inference import Predictor

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
BATCH_FACES = 256  # faces put through the network together
BATCH_FILES = 64  # at most this many photos wait for the network (photos without faces fill no batch)


def is_photo_name(path: str | os.PathLike) -> bool:
    """A visible file whose extension is a photo format's."""
    name = Path(path).name
    return not name.startswith(".") and Path(name).suffix.lower() in PHOTO_SUFFIXES


def photo_files(root: str | os.PathLike) -> Iterator[Path]:
    """The photos under `root`, recursively, in a stable order (by name, folder by folder); hidden files and folders
    are left out and symbolic links to folders are not followed. `root` may also be one photo file."""
    root = Path(root)
    if root.is_file():
        yield root
        return
    yield from (f for f in visible_files(root) if is_photo_name(f))


def visible_files(root: str | os.PathLike) -> Iterator[Path]:
    """Every file under the folder `root` as :func:`photo_files` walks it (photos or not: a video collection is
    walked the same way)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such file or folder")
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder) / name


@dataclass
class FolderResult:
    """What photos_to_csv did: photos read, faces found, photos without a face, files that could not be read."""

    photos: int = 0
    faces: int = 0
    without_face: int = 0
    unreadable: int = 0
    seconds: float = 0.0

    @property
    def photos_per_s(self) -> float:
        return self.photos / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """'1,204 photos in 38.2 s (31.5 photos/s): 1,310 faces, 12 photos without a face, 2 unreadable files'."""
        parts = [counted(self.faces, "face"), f"{counted(self.without_face, 'photo')} without a face"]
        parts.append(counted(self.unreadable, "unreadable file"))
        return (
            f"{counted(self.photos, 'photo')} in {self.seconds:.1f} s "
            f"({self.photos_per_s:.1f} photos/s): {', '.join(parts)}"
        )


def read_faces(path: Path | bytes, config: preprocess.PreprocessConfig, largest_only: bool) -> list[faces.Face] | str:
    """The faces of one photo (a file, or its bytes), or why it cannot be read (one line)."""
    try:
        found = faces.find_faces(decoding.decode_image(path), config)
    except decoding.ImageError as error:
        return " ".join(str(error).split())
    except MemoryError:
        return "too large to process with the memory available"
    return faces.shown_faces(found, largest_only)


def _ordered(fn: Callable[[Path], Any], items: Iterable[Path], workers: int) -> Iterator[tuple[Path, Any]]:
    """(item, fn(item)) in the order of `items`, computed on `workers` threads with at most 4 per thread waiting:
    memory does not grow with the number of items."""
    if workers <= 1:
        for item in items:
            yield item, fn(item)
        return
    pending: deque[tuple[Path, cf.Future]] = deque()
    with cf.ThreadPoolExecutor(workers, thread_name_prefix="mtfer-folder") as pool:
        try:
            for item in items:
                pending.append((item, pool.submit(fn, item)))
                if len(pending) >= 4 * workers:
                    done, job = pending.popleft()
                    yield done, job.result()
            while pending:
                done, job = pending.popleft()
                yield done, job.result()
        finally:
            for _, job in pending:
                job.cancel()


@contextlib.contextmanager
def text_output(out: str | os.PathLike | IO[str]) -> Iterator[IO[str]]:
    """An open text file to write a CSV to: `out` itself when it is one (left open), else a temporary file that
    becomes `out` when the writing ends (an existing file is replaced whole or not at all). Ctrl-C keeps the rows
    written so far: each batch is whole."""
    if hasattr(out, "write"):
        yield out  # type: ignore[misc]
        return
    with bundles.atomic_path(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:  # type: ignore[arg-type]
        try:
            yield handle
        except KeyboardInterrupt:
            handle.close()
            os.replace(tmp, out)
            raise


def refuse_overwriting_inputs(out: str | os.PathLike, inputs: Sequence[str | os.PathLike]) -> None:
    """ValueError when the CSV `out` is one of the inputs, or lies inside a folder to be walked: writing it would
    destroy a photo or a video, or add the table to the photos being read."""
    target = Path(out).resolve()
    for item in inputs:
        path = Path(item).resolve()
        if target == path or (path.is_dir() and target.is_relative_to(path)):
            what = "is" if target == path else "lies inside"
            raise ValueError(f"--csv {out} {what} an input ({item}): write the table somewhere else")


def photos_to_csv(
    predictor: Predictor,
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike | IO[str],
    *,
    largest_only: bool = False,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FolderResult:
    """Every photo of `paths` (folders walked recursively, or photo files) to the CSV `out` (a path or an open text
    file), one row per face, written batch by batch. `progress(done, total)` is called as photos are done.
    `source` is each photo's path as the folder was given plus its path inside it."""
    files = [f for p in paths for f in photo_files(p)]  # paths only: counted for the progress bar
    workers = max(1, workers if workers is not None else min(8, os.cpu_count() or 1))
    columns = table_columns(predictor.classes, error=True)
    config = predictor.config
    result = FolderResult()
    started = time.perf_counter()
    with text_output(out) as handle:
        handle.write(csv_text(rows_frame([], columns)))
        waiting: list[tuple[Path, list[faces.Face] | str]] = []

        def flush() -> None:
            handle.write(_rows_csv(predictor, waiting, columns))
            handle.flush()
            waiting.clear()

        if progress:
            progress(0, len(files))
        for done, (path, found) in enumerate(
            _ordered(lambda p: read_faces(p, config, largest_only), files, workers), start=1
        ):
            result.photos += 1
            if isinstance(found, str):
                result.unreadable += 1
            elif not found:
                result.without_face += 1
            else:
                result.faces += len(found)
            waiting.append((path, found))
            if len(waiting) >= BATCH_FILES or sum(len(f) for _, f in waiting if not isinstance(f, str)) >= BATCH_FACES:
                flush()
            if progress:
                progress(done, len(files))
        flush()
    result.seconds = time.perf_counter() - started
    return result


def _rows_csv(predictor: Predictor, waiting: Sequence[tuple[Path, list[faces.Face] | str]], columns: list[str]) -> str:
    """The CSV lines (no header) of these photos: their faces put through the network in one batch."""
    if not waiting:
        return ""
    return csv_text(rows_frame(table_rows(predictor, waiting), columns), header=False)


def table_rows(
    predictor: Predictor, waiting: Sequence[tuple[str | Path, list[faces.Face] | str]]
) -> list[dict[str, Any]]:
    """The table rows of photos whose faces were found (or why the file could not be read, a string): one row per
    face, their faces through the network in one batch. Every engine writes these rows (one process, Ray)."""
    groups = [[] if isinstance(found, str) else found for _, found in waiting]
    rows: list[dict[str, Any]] = []
    limits = thresholds(predictor)
    for (path, found), probs in zip(waiting, predictor.predict_groups(groups), strict=True):
        # A name that is not UTF-8 holds surrogates no table can store: written with them as \udcXX escapes.
        source = str(path).encode("utf-8", "backslashreplace").decode("utf-8")
        if isinstance(found, str) or not found:
            rows += photo_rows(source, [], {}, found if isinstance(found, str) else None)
            continue
        for k, (face, p) in enumerate(zip(found, probs, strict=True), start=1):
            rows.append({"source": source, "face": k, **box_columns(face.box), **face_columns(p, limits)})
    return rows
