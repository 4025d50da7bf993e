"""The preprocessing cache: a data set's aligned faces, labels and splits, computed once and stored.

:func:`prepare` reads a data set (:func:`mtfer.datasets.read_dataset`), frames every image with
:func:`mtfer.core.faces.frame_crop` on all cores and stores the result in one folder of the cache::

    <cache_dir>/<format>-<key>/images.npy    uint8 (N, S, S) aligned faces
                              labels.npy    int16 (N, 4) class index per task (TASK_NAMES order), -1 = missing
                              splits.npy    str (N,) "train" / "val" / "test"
                              sources.npy   str (N,) image path or "<csv path>#<line>"
                              meta.json     the key and what it was made of, the report, a CRC-32 per array

The key is a hash of the data set (format, resolved root, a signature of the listing: every sample's source,
split and labels, the size and mtime (ns) of every image file, or of the CSV file for CSV formats; one
``os.stat`` per file, about 0.2 s for 57k files), of the splits chosen (``splits``, None = all) and of the
preprocessing (``PreprocessConfig.crop_settings()``, :data:`FRAMING_VERSION`, ``limit``). Any change, an image replaced
under the same name included, gives a new key, hence a rebuild; otherwise the folder is loaded (well under a
second for 57k faces). A prepare of some splits uses a cache of every split when there is one. A folder is built under a temporary name and renamed into place when
complete, and every array is checked against its shape, dtype and CRC-32 when loaded, so a killed or damaged
cache is rebuilt, never used.

Images that cannot be decoded or framed are counted and listed in the report and left out of the arrays.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import logging
import os
import shutil
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from mtfer.core import decoding, faces
from mtfer.core.preprocess import PreprocessConfig
from mtfer.core.tasks import TASK_NAMES
from mtfer.datasets import read_dataset
from mtfer.datasets.base import SPLITS

log = logging.getLogger(__name__)


# Bump when the cache's layout or what prepare computes changes (old caches are then rebuilt).
CACHE_VERSION = 3  # 2: the key covers every image file's size and mtime; 3: UTKFace Indian/Others are race "other"


# The framing code's version: mtfer.datasets.cache.FRAMING_VERSION when it has one, so that a change there rebuilds.
FRAMING_VERSION = f"{CACHE_VERSION}.{getattr(faces, 'FRAMING_VERSION', 1)}"


ENV_CACHE_DIR = "MTFER_CACHE"


ARRAYS: tuple[str, ...] = ("images", "labels", "splits", "sources")


META_FILE = "meta.json"


LIMIT_SEED = 0


class CacheError(ValueError):
    """A cache folder is missing, incomplete or damaged (the message says which file and how)."""


class EmptySplitError(ValueError):
    """The data set has no sample in the splits asked for (the message names the splits it has)."""


@dataclass
class Prepared:
    """A prepared data set: one row per framed face, arrays aligned by row."""

    name: str  # data set format name, e.g. "fer2013", "utkface"
    root: str  # resolved data root
    images: np.ndarray  # uint8 (N, S, S): aligned faces
    labels: np.ndarray  # int16 (N, 4): class index per task in TASK_NAMES order, -1 = missing
    splits: np.ndarray  # str (N,): "train" / "val" / "test"
    sources: np.ndarray  # str (N,): image path or "<csv path>#<line>"
    report: dict  # reader's skip report, unreadable images, framing stats
    config: dict  # PreprocessConfig.to_dict()
    path: str | None = None  # the cache folder it was stored in / loaded from
    from_cache: bool = False  # loaded from an existing cache folder (not built by this call)

    @property
    def masks(self) -> np.ndarray:
        """bool (N, 4): True where the task has a label."""
        return self.labels >= 0

    def __len__(self) -> int:
        return len(self.images)


def default_cache_dir() -> Path:
    """$MTFER_CACHE, else ./cache."""
    return Path(os.environ.get(ENV_CACHE_DIR) or "cache")


def frame_sample(source: str, pixels: np.ndarray | None, config: PreprocessConfig) -> tuple[faces.Face, bool]:
    """Decode one sample (a file, or the pixels of a CSV row), frame it as the network sees it
    (:func:`mtfer.core.faces.frame_crop`), and tell whether the face detector found the face in the crop."""
    image = decoding.decode_image(source) if pixels is None else pixels
    face = faces.frame_crop(image, config)
    return face, _face_detected(face, image.shape[:2], config)


def _face_detected(face: faces.Face, shape: tuple[int, ...], config: PreprocessConfig) -> bool:
    """False when frame_crop fell back to ``config.fallback_box`` (the detector found no face)."""
    detected = getattr(face, "detected", None)
    if detected is not None:
        return bool(detected)
    h, w = shape
    fx, fy, fs = config.fallback_box
    side = fs * min(h, w)
    x, y, s = round(fx * w - side / 2), round(fy * h - side / 2), round(side)
    x0, y0, x1, y1 = max(0, x), max(0, y), min(w, x + s), min(h, y + s)
    return tuple(face.box) != (x0, y0, x1 - x0, y1 - y0)


@dataclass
class _ChunkResult:
    start: int
    images: np.ndarray  # uint8 (k, S, S); rows of failed samples are zero
    ok: np.ndarray  # bool (k,)
    detected: np.ndarray  # bool (k,)
    eyes: np.ndarray  # bool (k,)
    rotation: np.ndarray  # float32 (k,)
    errors: list[tuple[int, str]]  # (index in chunk, message) for failed samples


def _frame_chunk(
    start: int, sources: Sequence[str], pixels: Sequence[np.ndarray | None], config: PreprocessConfig
) -> _ChunkResult:
    k, size = len(sources), config.size
    result = _ChunkResult(
        start,
        np.zeros((k, size, size), np.uint8),
        np.zeros(k, bool),
        np.zeros(k, bool),
        np.zeros(k, bool),
        np.zeros(k, np.float32),
        [],
    )
    for i, (source, pix) in enumerate(zip(sources, pixels, strict=True)):
        try:
            face, detected = frame_sample(source, pix, config)
        except (ValueError, OSError, cv2.error) as err:  # faces.ImageError is a ValueError
            message = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            result.errors.append((i, message))
            continue
        aligned = np.asarray(face.aligned)
        if aligned.shape != (size, size) or aligned.dtype != np.uint8:
            result.errors.append((i, f"framing gave a {aligned.dtype} {aligned.shape} face, not uint8 {size}x{size}"))
            continue
        result.images[i] = aligned
        result.ok[i] = True
        result.detected[i] = detected
        result.eyes[i] = face.eyes is not None
        result.rotation[i] = float(face.rotation or 0.0)
    return result


def _chunks(n: int, workers: int) -> list[tuple[int, int]]:
    # Small enough for a smooth progress bar, load balance and a prompt stop on Ctrl-C.
    size = int(np.clip(n // (workers * 16), 16, 256))
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def _frame_all(
    sources: Sequence[str],
    pixels: Sequence[np.ndarray | None],
    config: PreprocessConfig,
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> list[_ChunkResult]:
    """Frame every sample in chunks on `workers` threads. Threads, not processes: over 90% of the time is
    spent inside OpenCV's cascade detector, which releases the GIL, so threads use every core without the
    pitfalls of processes (a script without ``if __name__ == "__main__"``, OpenCV's thread pool in a forked
    child, pickling)."""
    # One OpenCV thread per worker: no oversubscription, and the cascade detectors return their boxes in a
    # fixed order (with OpenCV's own thread pool the order varies, and with it which of two equally good eye
    # pairs is picked), so the same data always gives the same faces.
    opencv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return _frame_chunks(sources, pixels, config, workers, progress)
    finally:
        cv2.setNumThreads(opencv_threads)


def _frame_chunks(
    sources: Sequence[str],
    pixels: Sequence[np.ndarray | None],
    config: PreprocessConfig,
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> list[_ChunkResult]:
    n = len(sources)
    chunks = _chunks(n, workers)
    results: list[_ChunkResult] = []
    done = 0
    if progress:
        progress(0, n)
    if workers <= 1 or len(chunks) <= 1:
        for start, stop in chunks:
            results.append(_frame_chunk(start, sources[start:stop], pixels[start:stop], config))
            done += stop - start
            if progress:
                progress(done, n)
        return results
    with cf.ThreadPoolExecutor(min(workers, len(chunks)), thread_name_prefix="mtfer-prepare") as pool:
        futures = [
            pool.submit(_frame_chunk, start, sources[start:stop], pixels[start:stop], config) for start, stop in chunks
        ]
        try:
            for future in cf.as_completed(futures):
                result = future.result()
                results.append(result)
                done += len(result.ok)
                if progress:
                    progress(done, n)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return sorted(results, key=lambda r: r.start)


def _file_state(path: str) -> str:
    """Size and mtime (ns) of a file, the cheap stand-in for its content: one ``os.stat``."""
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size}\t{st.st_mtime_ns}"


def _row_texts(df: pd.DataFrame) -> list[str]:
    """One line per sample for the signature: source, split, labels and, for image files, the file's size and
    mtime, so that an image replaced under the same name (new content) changes the key. CSV rows carry no
    file state of their own: their CSV file's size and mtime are added by :func:`_signature`."""
    labels = df[list(TASK_NAMES)].astype("Int64").fillna(-1).to_numpy(np.int64).tolist()
    sources = df["source"].astype(str).tolist()
    splits = df["split"].astype(str).tolist()
    if "pixels" in df:
        return [f"{s}\t{sp}\t{row}\n" for s, sp, row in zip(sources, splits, labels, strict=True)]
    return [f"{s}\t{sp}\t{row}\t{_file_state(s)}\n" for s, sp, row in zip(sources, splits, labels, strict=True)]


def _signature(df: pd.DataFrame, rows: Sequence[str] | None = None) -> str:
    """Hash of the listing: every sample's source, split and labels, size + mtime of every image file, and
    size + mtime of CSV files. `rows`: :func:`_row_texts` of `df`, when already computed."""
    rows = _row_texts(df) if rows is None else rows
    if len(rows) != len(df):
        raise ValueError(f"rows has {len(rows)} lines but the listing has {len(df)} samples")
    digest = hashlib.sha256(f"{len(df)}\n".encode())
    digest.update("".join(rows).encode())
    csv_files = sorted({s.rsplit("#", 1)[0] for s in df["source"] if "#" in s}) if "pixels" in df else []
    for name in csv_files:
        digest.update(f"{name}\t{_file_state(name)}\n".encode())
    return digest.hexdigest()


def _cache_key(parts: dict) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def subset_indices(df: pd.DataFrame, limit: int, seed: int = LIMIT_SEED) -> np.ndarray:
    """Sorted row indices of about `limit` rows, allocated to each (split, labels) group in proportion to its
    size (every group's first pick comes before any group's second, scaled), chosen at random with `seed`."""
    n = len(df)
    if limit >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    labels = df[list(TASK_NAMES)].astype("Int64").fillna(-1).astype(str)
    strata = (df["split"].astype(str) + "|" + labels.agg("|".join, axis=1)).to_numpy()[order]
    groups = pd.Series(strata)
    rank = groups.groupby(groups).cumcount().to_numpy()
    size = groups.map(groups.value_counts()).to_numpy()
    position = (rank + 0.5) / size
    picked = order[np.argsort(position, kind="stable")[:limit]]
    return np.sort(picked)


def crc32(array: np.ndarray) -> int:
    """The CRC-32 of an array's bytes: recorded beside every stored array so that a damaged file is caught."""
    return zlib.crc32(np.ascontiguousarray(array).data)


def write_arrays(folder: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write the arrays and meta.json into a temporary folder beside `folder`, then rename it into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".tmp-{folder.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        meta = dict(meta)
        meta["arrays"] = {}
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array, allow_pickle=False)
            meta["arrays"][name] = {"shape": list(array.shape), "dtype": array.dtype.str, "crc32": crc32(array)}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1, default=str))
        if folder.exists():  # a damaged entry, or rebuild=True
            old = folder.parent / f".old-{folder.name}-{os.getpid()}"
            os.replace(folder, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not folder.is_dir():
                raise
            # Another process finished the same entry first: theirs is as good as ours.
            log.info("cache entry %s was written concurrently; keeping the existing one", folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale_temps(cache_dir: Path) -> None:
    """Remove temporary folders left by killed prepares (their pid no longer runs)."""
    if not cache_dir.is_dir():
        return
    for entry in cache_dir.iterdir():
        if not entry.name.startswith((".tmp-", ".old-")):
            continue
        try:
            pid = int(entry.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError):
            shutil.rmtree(entry, ignore_errors=True)
        except PermissionError:
            pass  # a live process of another user


def read_checked_array(
    folder: Path, recorded: dict, name: str, *, mmap: bool = False, what: str = "cache"
) -> np.ndarray:
    """<folder>/<name>.npy, checked against the shape, dtype and CRC-32 that meta.json's "arrays" (`recorded`)
    holds for it (as :func:`write_arrays` wrote them); CacheError naming the file and the fault otherwise. `what`
    names the kind of folder in the message ("cache", "pseudo-labels")."""
    file = folder / f"{name}.npy"
    try:
        array = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
        expected = recorded[name]
    except (OSError, ValueError, EOFError, KeyError, TypeError) as err:
        raise CacheError(f"damaged {what} at {folder}: {file.name} unreadable ({err})") from None
    if list(array.shape) != expected["shape"] or array.dtype.str != expected["dtype"]:
        raise CacheError(
            f"damaged {what} at {folder}: {file.name} is {array.dtype.str} {list(array.shape)}, "
            f"expected {expected['dtype']} {expected['shape']}"
        )
    if crc32(array) != expected["crc32"]:
        raise CacheError(f"damaged {what} at {folder}: {file.name} fails its CRC-32 check")
    return array


def load_prepared(path: str | os.PathLike, *, mmap: bool = False) -> Prepared:
    """Load a cache folder written by :func:`prepare` (or its meta.json). Every array is checked against the
    shape, dtype and CRC-32 recorded in meta.json; CacheError when anything is missing or does not match.
    `mmap`: memory-map the arrays read-only instead of reading them (the CRC check still reads them once)."""
    folder = Path(path)
    if folder.name == META_FILE:
        folder = folder.parent
    try:
        meta = json.loads((folder / META_FILE).read_text())
        recorded = meta["arrays"]
    except FileNotFoundError:
        raise CacheError(f"no cache at {folder} ({META_FILE} is missing)") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CacheError(f"damaged cache at {folder}: unreadable {META_FILE} ({err})") from None
    if not isinstance(recorded, dict):
        raise CacheError(f"damaged cache at {folder}: unreadable {META_FILE} (no array records)")
    arrays = {name: read_checked_array(folder, recorded, name, mmap=mmap) for name in ARRAYS}
    n = {len(a) for a in arrays.values()}
    if len(n) != 1:
        raise CacheError(f"damaged cache at {folder}: arrays of different lengths {sorted(n)}")
    return Prepared(
        name=meta["name"],
        root=meta["root"],
        report=meta["report"],
        config=meta["config"],
        path=str(folder),
        from_cache=True,
        **arrays,
    )


def _entries(cache_dir: str | os.PathLike | None) -> list[dict]:
    """meta.json of every complete cache folder (unreadable ones are left out)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    metas = []
    for meta_file in sorted(root.glob(f"*/{META_FILE}")) if root.is_dir() else []:
        if meta_file.parent.name.startswith("."):  # being written or removed
            continue
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict):
            metas.append({**meta, "path": str(meta_file.parent)})
    return metas


def find_entry(
    fmt: str,
    root: str | os.PathLike,
    config: PreprocessConfig | None = None,
    *,
    limit: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path | None:
    """The cache folder of this data set prepared with these settings (all splits), judged from the meta.json files
    alone, without reading the data set: quick enough for a page, but a change to the data set's files since is not
    noticed (:func:`prepare` would then rebuild). None when there is none."""
    config = config or PreprocessConfig()
    wanted = {
        "format": fmt.strip().lower(),
        "root": str(Path(root).expanduser().resolve()),
        "splits": None,
        "config": config.crop_settings(),
        "framing_version": FRAMING_VERSION,
        "limit": limit,
    }
    for meta in _entries(cache_dir):
        parts = meta.get("key_parts")
        if isinstance(parts, dict) and all(parts.get(k) == v for k, v in wanted.items()):
            return Path(meta["path"])
    return None


def preparation_rate(detector: str, cache_dir: str | os.PathLike | None = None) -> float | None:
    """Faces framed per second on this machine with `detector` ("blazeface", "haar"): the median over the cache's
    folders of their prepared faces / seconds (folders of at least 500 faces). None when there is none."""
    rates = []
    for meta in _entries(cache_dir):
        report, config = meta.get("report") or {}, meta.get("config") or {}
        if config.get("detector") != detector:
            continue
        faces_done, seconds = report.get("prepared"), report.get("seconds")
        if isinstance(faces_done, int) and faces_done >= 500 and isinstance(seconds, int | float) and seconds > 0:
            rates.append(faces_done / seconds)
    return float(np.median(rates)) if rates else None


def _framing_stats(results: list[_ChunkResult]) -> dict:
    ok = np.concatenate([r.ok for r in results]) if results else np.zeros(0, bool)
    n = int(ok.sum())

    def share(values: list[np.ndarray]) -> float | None:
        return round(float(np.concatenate(values)[ok].mean()), 4) if n else None

    rotation = np.abs(np.concatenate([r.rotation for r in results])[ok]) if n else np.zeros(0)
    return {
        "framed": n,
        "face_detected": share([r.detected for r in results]),
        "eyes_found": share([r.eyes for r in results]),
        "mean_abs_rotation": round(float(rotation.mean()), 3) if n else None,
        "rotated": round(float((rotation > 0).mean()), 4) if n else None,
    }


def prepare(
    fmt: str,
    root: str | os.PathLike,
    *,
    config: PreprocessConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    limit: int | None = None,
    rebuild: bool = False,
    splits: str | Sequence[str] | None = None,
) -> Prepared:
    """Aligned faces, labels and masks for the data set at `root` in format `fmt`, from the cache when it holds
    this data set with these settings, else computed (on `workers` threads, default one per core) and stored.

    `splits`: frame only the samples of these splits (e.g. ``("test",)`` to score a model on the test split
    without framing the training images); part of the key, and a cache of every split of the same data set
    and settings is used (its rows of those splits) when one exists. ValueError when no sample is in them.
    `limit`: keep about that many samples, a seeded subset that keeps the proportions of each (split, labels)
    group (for quick runs; part of the key). `progress(done, total)` is called as chunks of samples finish
    (not called when loading from the cache). `rebuild`: recompute even when a valid cache exists.
    Unreadable images are left out and listed in ``report["unreadable"]``; reader errors (unknown format,
    wrong layout) propagate as raised by :func:`mtfer.datasets.read_dataset`.
    """
    config = config or PreprocessConfig()
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of samples, got {limit}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    name = fmt.strip().lower()
    resolved = str(Path(root).expanduser().resolve())
    wanted = _check_splits(splits)
    df, skipped = read_dataset(name, resolved)
    listed = len(df)
    rows = _row_texts(df)
    present = sorted(df["split"].astype(str).unique().tolist())
    if wanted is not None and set(present) <= set(wanted):
        wanted = None  # every split there is: the same as the whole data set (and the same cache)
    full_parts = {
        "format": name,
        "root": resolved,
        "signature": _signature(df, rows),
        "splits": None,
        "config": config.crop_settings(),
        "framing_version": FRAMING_VERSION,
        "limit": limit,
        "limit_seed": LIMIT_SEED if limit is not None else None,
    }
    key_parts = full_parts
    if wanted is not None:
        chosen = df["split"].isin(wanted).to_numpy()
        if not chosen.any():
            raise EmptySplitError(
                f"{name} at {resolved} has no samples in split(s) {list(wanted)} (splits present: {present})"
            )
        df = df[chosen].reset_index(drop=True)
        rows = [row for row, keep in zip(rows, chosen, strict=True) if keep]
        key_parts = {**full_parts, "signature": _signature(df, rows), "splits": list(wanted)}
    key = _cache_key(key_parts)
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = cache_root / f"{name}-{key}"
    _remove_stale_temps(cache_root)
    candidates = [folder]
    if wanted is not None and limit is None:  # a cache of every split holds these splits' faces too
        candidates.append(cache_root / f"{name}-{_cache_key(full_parts)}")
    for candidate in candidates if not rebuild else []:
        if not candidate.exists():
            continue
        try:
            prepared = load_prepared(candidate)
        except CacheError as err:
            log.warning("%s; %s", err, "rebuilding it" if candidate == folder else "not using it")
            continue
        if candidate != folder:
            prepared = _split_subset(prepared, wanted or (), set(df["source"].astype(str)))
        log.info("loaded %s (%d faces) from %s", name, len(prepared), candidate)
        return prepared

    if limit is not None and limit < listed:
        df = df.iloc[subset_indices(df, limit)].reset_index(drop=True)
    sources = df["source"].astype(str).tolist()
    pixels = df["pixels"].tolist() if "pixels" in df else [None] * len(df)
    started = time.perf_counter()
    results = _frame_all(sources, pixels, config, workers, progress)
    seconds = time.perf_counter() - started

    ok = np.concatenate([r.ok for r in results]) if results else np.zeros(0, bool)
    images = (
        np.concatenate([r.images for r in results])[ok]
        if results
        else np.zeros((0, config.size, config.size), np.uint8)
    )
    labels = df[list(TASK_NAMES)].astype("Int64").fillna(-1).to_numpy(np.int16)[ok]
    splits = df["split"].to_numpy(dtype=str)[ok]
    source_array = np.array(sources, dtype=str)[ok]
    unreadable = [{"source": sources[r.start + i], "error": message} for r in results for i, message in r.errors]
    report = {
        "listed": listed,
        "selected": len(df),
        "prepared": int(ok.sum()),
        "skipped": skipped.to_dict(),
        "unreadable": {"count": len(unreadable), "files": unreadable},
        "framing": _framing_stats(results),
        "seconds": round(seconds, 1),
        "workers": workers,
        "splits": None if wanted is None else list(wanted),
    }
    prepared = Prepared(
        name=name,
        root=resolved,
        images=images,
        labels=labels,
        splits=splits,
        sources=source_array,
        report=report,
        config=config.to_dict(),
        path=str(folder),
    )
    meta = {
        "key": key,
        "key_parts": key_parts,
        "name": name,
        "root": resolved,
        "config": prepared.config,
        "report": report,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cache_version": CACHE_VERSION,
    }
    arrays = {"images": images, "labels": labels, "splits": splits, "sources": source_array}
    write_arrays(folder, arrays, meta)
    log.info("prepared %s: %d faces in %.1f s, stored in %s", name, len(images), seconds, folder)
    return prepared


def _check_splits(splits: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """`splits` as a sorted tuple of known split names (a single name may be given as a string), or None."""
    if splits is None:
        return None
    names = (splits,) if isinstance(splits, str) else tuple(splits)
    if not names:
        raise ValueError(f"splits must name at least one of {list(SPLITS)} (or be None for every sample)")
    unknown = sorted({str(s) for s in names} - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; expected some of {list(SPLITS)}")
    return tuple(sorted(set(names), key=SPLITS.index))


def _split_subset(prepared: Prepared, wanted: Sequence[str], sources: set[str]) -> Prepared:
    """The rows of `wanted` splits of a prepared data set (a cache of every split), with the report narrowed to
    them: how many faces, and which unreadable files were theirs."""
    keep = np.isin(prepared.splits, list(wanted))
    report = dict(prepared.report)
    unreadable = [u for u in report.get("unreadable", {}).get("files", []) if u.get("source") in sources]
    report.update(
        selected=len(sources),
        prepared=int(keep.sum()),
        unreadable={"count": len(unreadable), "files": unreadable},
        splits=list(wanted),
    )
    return Prepared(
        name=prepared.name,
        root=prepared.root,
        images=prepared.images[keep],
        labels=prepared.labels[keep],
        splits=prepared.splits[keep],
        sources=prepared.sources[keep],
        report=report,
        config=prepared.config,
        path=prepared.path,
        from_cache=True,
    )
