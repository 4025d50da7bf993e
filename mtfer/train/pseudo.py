"""Pseudo-labels: a trained teacher gives a data set's faces the labels that data set lacks.

No available data set carries all four labels (FER2013: emotion; UTKFace: gender, race, age). The paper's future
work: label the missing tasks with a trained model. :func:`pseudo_label` (``mtfer pseudo-label``) runs a teacher
bundle (e.g. the shipped multi-task ``models/default``) on every face of a prepared data set and keeps, for each
task the data set has no label of at all, the teacher's top class where the teacher is confident enough:

* ``threshold="auto"`` (the default): per task, the lowest confidence c such that the teacher's accuracy on the
  labelled VALIDATION faces at least that confident (top-class probability >= c) reaches ``target_accuracy``
  (0.8 by default), over at least ``min_faces`` such faces (:func:`auto_threshold`). The validation faces are those
  of the teacher's own data sets (its metadata), or of ``val`` data sets, carved exactly as the trainer carves them
  with the teacher's protocol, validation fraction and seed, so that for the teacher's own data sets they are faces
  its weights never trained on. A task whose target cannot be reached keeps no label.
* a number in [0, 1]: the same confidence threshold for every task.

Tasks are filled only where a data set lacks them entirely: a task with some labels is never guessed, true labels
are never overwritten, and a teacher from before a task gained a class (race without "other") fills no such task. Labels are hard
(the top class); the teacher's probability vectors are stored too, and a run with ``pseudo_targets="soft"`` trains
on them instead (the same faces: those above the threshold; :func:`soft_targets`). They are stored for every task
the teacher predicts, the data set's labelled ones included, so that a run with ``distill`` > 0 can learn the
teacher's view of the faces that have true labels as well (knowledge distillation).

Stored beside the cache, with provenance::

    <cache_dir>/pseudo/<data set cache folder>-<teacher hash>/labels.npy      int16 (N, 4), -1 = no pseudo-label
                                                              confidence.npy  float32 (N, 4), NaN = task not labelled
                                                              probabilities_<task>.npy  float32 (N, classes), every task
                                                                         the teacher predicts
                                                              sources.npy, splits.npy   the cache's rows
                                                              meta.json  teacher (path, metadata SHA-256), rule,
                                                                         thresholds, validation, counts, date

The teacher hash is the first 12 hex digits of the SHA-256 of the teacher's metadata.json. Rows are those of the
data set framed with the teacher's preprocessing; the trainer matches them to its own rows by data set and source.

Training: ``TrainConfig(pseudo_labels=["auto"])`` (the newest pseudo-labels of each of the run's data sets) or
folder paths. :func:`apply_pseudo_labels` fills ONLY the training split's missing labels (-1); the validation and
test splits keep their true labels, so no evaluation ever scores a pseudo-label. The run records what it used in
``pseudo_labels.json`` (reused on resume) and in its bundle metadata (``pseudo_labels``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtfer.core import bundles
from mtfer.core.backends import predict_arrays
from mtfer.core.preprocess import PreprocessConfig
from mtfer.core.tasks import TASK_NAMES, TASKS
from mtfer.datasets.base import DatasetSpec
from mtfer.datasets.cache import crc32, default_cache_dir, prepare, read_checked_array, write_arrays
from mtfer.datasets.splits import DatasetUnreadable, SplitSettings, carve_again

log = logging.getLogger(__name__)

PSEUDO_DIR = "pseudo"
META_FILE = "meta.json"
RECORD_FILE = "pseudo_labels.json"  # in a run folder: the pseudo-labels the run trained with
FORMAT_VERSION = 1
AUTO = "auto"
DEFAULT_TARGET_ACCURACY = 0.8
DEFAULT_MIN_FACES = 50
KIND = "mtfer pseudo-labels"


# --- the threshold rule -----------------------------------------------------------------------------------------


def auto_threshold(
    confidence: np.ndarray,
    correct: np.ndarray,
    target_accuracy: float = DEFAULT_TARGET_ACCURACY,
    min_faces: int = DEFAULT_MIN_FACES,
) -> dict:
    """The lowest confidence c at which the accuracy of the validation faces with confidence >= c reaches
    `target_accuracy`, counting only cut-offs that keep at least `min_faces` faces (ties are kept together: the
    faces kept are exactly those with confidence >= c). `confidence`: the teacher's top-class probability per
    labelled validation face; `correct`: whether its top class is the true label.

    Returns {"threshold": c or None (no cut-off reaches the target), "validation_faces", "kept", "coverage"
    (kept / validation faces), "accuracy" (of the kept faces), "accuracy_all" (of every validation face)}."""
    if not 0 <= target_accuracy <= 1:
        raise ValueError(f"target_accuracy must be between 0 and 1, got {target_accuracy}")
    if min_faces < 1:
        raise ValueError(f"min_faces must be at least 1, got {min_faces}")
    confidence = np.asarray(confidence, np.float64).reshape(-1)
    correct = np.asarray(correct, bool).reshape(-1)
    if len(confidence) != len(correct):
        raise ValueError(f"{len(confidence)} confidences but {len(correct)} correctness flags")
    n = len(confidence)
    out: dict[str, Any] = {
        "threshold": None,
        "validation_faces": n,
        "kept": 0,
        "coverage": 0.0,
        "accuracy": None,
        "accuracy_all": float(correct.mean()) if n else None,
    }
    if not n:
        return out
    order = np.argsort(-confidence, kind="stable")
    conf, hits = confidence[order], correct[order]
    accuracy = np.cumsum(hits) / np.arange(1, n + 1)
    # Cut-offs between distinct confidences only: position k-1 where the next face is less confident (or the end).
    boundary = np.append(conf[:-1] > conf[1:], True)
    kept = np.arange(1, n + 1)
    ok = boundary & (accuracy >= target_accuracy) & (kept >= min_faces)
    if ok.any():
        k = int(np.flatnonzero(ok)[-1])
        out.update(threshold=float(conf[k]), kept=k + 1, coverage=(k + 1) / n, accuracy=float(accuracy[k]))
    return out


def parse_threshold(value: str | float) -> str | float:
    """The threshold setting: "auto", or a confidence in [0, 1] given as a number or as text."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"threshold must be 'auto' or a confidence between 0 and 1, got {value!r}") from None
    value = float(value)
    if not 0 <= value <= 1:
        raise ValueError(f"threshold must be 'auto' or a confidence between 0 and 1, got {value}")
    return value


# --- making pseudo-labels ---------------------------------------------------------------------------------------


@dataclass
class PseudoLabels:
    """A stored set of pseudo-labels: rows aligned with the data set's cache rows framed by the teacher's pipeline."""

    path: Path
    meta: dict
    labels: np.ndarray  # int16 (N, 4), -1 = none
    confidence: np.ndarray  # float32 (N, 4), NaN where the task was not labelled
    sources: np.ndarray  # str (N,)
    splits: np.ndarray  # str (N,)

    @property
    def dataset(self) -> str:
        return str(self.meta["dataset"]["name"])

    def __len__(self) -> int:
        return len(self.labels)

    def probabilities(self, task: str) -> np.ndarray:
        """The teacher's probabilities for `task`, float32 (N, classes), checked against meta.json."""
        return _load_array(self.path, self.meta, f"probabilities_{task}")


def teacher_hash(bundle_path: str | os.PathLike) -> str:
    """First 12 hex digits of the SHA-256 of the bundle's metadata.json (which names its training and date)."""
    return _metadata_sha256(Path(bundle_path))[:12]


def _metadata_sha256(path: Path) -> str:
    try:
        return hashlib.sha256((path / bundles.METADATA_FILE).read_bytes()).hexdigest()
    except OSError as exc:
        raise bundles.RunError(f"cannot read {path / bundles.METADATA_FILE}: {exc.strerror or exc}") from None


def pseudo_root(cache_dir: str | os.PathLike | None = None) -> Path:

    return (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / PSEUDO_DIR


def _validation_faces(
    sets: Sequence[DatasetSpec],
    preprocess: Any,
    settings: SplitSettings,
    cache_dir: str | os.PathLike | None,
    reuse: Mapping[tuple[str, str], Any],
    progress: Callable[[int, int], None] | None,
):
    """Pooled validation faces (images, labels) of `sets`, carved as the trainer carves them, and the number of
    faces in each split of that carving (to compare with the teacher's own)."""
    try:
        carved = carve_again(sets, settings, preprocess, cache_dir=cache_dir, reuse=reuse, progress=progress)
    except DatasetUnreadable as exc:
        raise ValueError(
            f"validation {exc}; give the validation data sets with --val FORMAT=DIR, or a numeric --threshold"
        ) from None
    sizes = {"train": 0, "val": 0, "test": 0} | {name: len(split) for name, split in carved.items()}
    val = carved.get("val")
    if val is None or not len(val):
        return None, None, sizes
    return val.images, val.labels, sizes


def pseudo_label(
    model: str | os.PathLike | None,
    fmt: str,
    root: str | os.PathLike,
    *,
    threshold: str | float = AUTO,
    target_accuracy: float = DEFAULT_TARGET_ACCURACY,
    min_faces: int = DEFAULT_MIN_FACES,
    val: Sequence[DatasetSpec] | None = None,
    tasks: Sequence[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    runs_dir: str | os.PathLike | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PseudoLabels:
    """Pseudo-label the data set `fmt` at `root` with the teacher bundle `model` (run id, folder or "default") and
    store the result (see the module's docstring); returns it. `tasks`: a subset of the tasks the data set lacks
    (default: all of them that the teacher predicts). `val`: [{"format", "root"}] data sets whose validation faces
    choose the "auto" thresholds (default: the teacher's own data sets)."""

    threshold = parse_threshold(threshold)
    if not 0 <= target_accuracy <= 1:
        raise ValueError(f"target_accuracy must be between 0 and 1, got {target_accuracy}")
    if min_faces < 1:
        raise ValueError(f"min_faces must be at least 1, got {min_faces}")
    teacher_path = bundles.resolve_model(model, runs_dir).resolve()
    teacher = bundles.load_bundle(teacher_path)
    preprocess = PreprocessConfig.from_dict(teacher.metadata["preprocessing"])
    target = prepare(fmt, root, config=preprocess, cache_dir=cache_dir, progress=progress)
    if not len(target):
        raise ValueError(f"{fmt} at {root} has no faces to label")

    # A teacher from before a class was added (race without "other") would teach that no face belongs to it: such a
    # task is not the teacher's to fill.
    lacking = [
        t
        for t in TASK_NAMES
        if list(teacher.metadata["tasks"].get(t, [])) == list(TASKS[t].classes)
        and not (target.labels[:, TASK_NAMES.index(t)] >= 0).any()
    ]
    if tasks is not None:
        wanted = list(dict.fromkeys(tasks))
        bad = [t for t in wanted if t not in lacking]
        if bad:
            raise ValueError(
                f"cannot pseudo-label {bad} on {target.name}: only tasks it has no label of at all and the teacher "
                f"predicts can be filled ({lacking or 'none'})"
            )
        lacking = [t for t in TASK_NAMES if t in wanted]
    if not lacking:
        raise ValueError(
            f"nothing to pseudo-label: {target.name} already has labels of every task the teacher predicts "
            f"({teacher.tasks})"
        )

    flip = bool(teacher.metadata["input"].get("tta_flip", False))
    probs = predict_arrays(teacher.model, target.images, flip=flip)

    settings = SplitSettings.of_model(teacher.metadata)
    split_record: dict[str, Any] = dataclasses.asdict(settings)  # stored with the labels: how they were chosen
    validation: dict[str, dict] = {}
    val_sets: list[DatasetSpec] = []
    if threshold == AUTO:
        val_sets = [dict(d) for d in (val if val is not None else teacher.metadata.get("datasets") or [])]
        reuse = {(target.name, target.root): target}
        val_images, val_labels, sizes = _validation_faces(val_sets, preprocess, settings, cache_dir, reuse, progress)
        if val is None:  # the teacher's own data sets: its validation faces only if the carving is the same
            recorded = teacher.metadata.get("samples") or {}
            split_record["teacher_split_reproduced"] = all(sizes.get(k, 0) == n for k, n in recorded.items())
            if not split_record["teacher_split_reproduced"]:
                log.warning(
                    "the teacher's data sets now split into %s faces, not %s as when it trained (other framing or "
                    "files?): its validation faces cannot be told apart, the 'auto' thresholds may be optimistic",
                    sizes,
                    recorded,
                )
        columns = [TASK_NAMES.index(t) for t in lacking]
        missing = (
            lacking
            if val_labels is None
            else [t for t, c in zip(lacking, columns, strict=True) if not (val_labels[:, c] >= 0).any()]
        )
        if missing:
            raise ValueError(
                f"no labelled validation faces of {missing} to choose an 'auto' threshold from (validation data "
                f"sets: {[d['format'] for d in val_sets] or 'none'}); give data sets with those labels with "
                "--val FORMAT=DIR, or a numeric --threshold"
            )
        assert val_images is not None and val_labels is not None
        has_any = (val_labels[:, columns] >= 0).any(axis=1)
        val_probs = predict_arrays(teacher.model, val_images[has_any], flip=flip)
        for t, c in zip(lacking, columns, strict=True):
            truth = val_labels[has_any, c]
            labelled = truth >= 0
            p = val_probs[t][labelled]
            validation[t] = auto_threshold(
                p.max(axis=1), p.argmax(axis=1) == truth[labelled], target_accuracy, min_faces
            )
        thresholds = {t: validation[t]["threshold"] for t in lacking}
    else:
        thresholds = {t: float(threshold) for t in lacking}

    n = len(target)
    labels = np.full((n, len(TASK_NAMES)), -1, np.int16)
    confidence = np.full((n, len(TASK_NAMES)), np.nan, np.float32)
    counts: dict[str, dict] = {}
    # The teacher's probabilities for every task it predicts with this version's classes, labelled tasks too: a
    # student distilled from it (TrainConfig.distill) learns them beside the true labels.
    arrays: dict[str, np.ndarray] = {
        f"probabilities_{t}": np.asarray(probs[t], np.float32)
        for t in TASK_NAMES
        if t in probs and list(teacher.metadata["tasks"].get(t, [])) == list(TASKS[t].classes)
    }
    for t in lacking:
        c = TASK_NAMES.index(t)
        p = np.asarray(probs[t], np.float32)
        conf, top = p.max(axis=1), p.argmax(axis=1)
        keep = np.zeros(n, bool) if thresholds[t] is None else conf >= thresholds[t]
        keep &= target.labels[:, c] < 0  # never a true label (the task is lacking, so this holds anyway)
        labels[keep, c] = top[keep]
        confidence[:, c] = conf
        counts[t] = {
            "faces": n,
            "kept": int(keep.sum()),
            "by_split": {s: int((keep & (target.splits == s)).sum()) for s in sorted(set(target.splits.tolist()))},
            "classes": {name: int((labels[keep, c] == i).sum()) for i, name in enumerate(TASKS[t].classes)},
        }
        log.info("%s: %d of %d faces pseudo-labelled (threshold %s)", t, int(keep.sum()), n, thresholds[t])

    cache_folder = Path(target.path) if target.path else Path(f"{target.name}-unknown")
    folder = pseudo_root(cache_dir) / f"{cache_folder.name}-{teacher_hash(teacher_path)}"
    arrays = {
        "labels": labels,
        "confidence": confidence,
        "sources": np.asarray(target.sources).astype(str),
        "splits": np.asarray(target.splits).astype(str),
        **arrays,
    }
    meta = {
        "kind": KIND,
        "version": FORMAT_VERSION,
        "created": bundles.now_iso(),
        "dataset": {
            "name": target.name,
            "format": fmt.strip().lower(),
            "root": target.root,
            "cache": str(cache_folder),
            "faces": n,
        },
        "teacher": {
            "path": str(teacher_path),
            "metadata_sha256": _metadata_sha256(teacher_path),
            "tasks": teacher.tasks,
            "architecture": teacher.metadata.get("architecture"),
            "created": teacher.metadata.get("created"),
            "datasets": teacher.metadata.get("datasets"),
            "tta_flip": flip,
        },
        "tasks": lacking,
        "probabilities": [t for t in TASK_NAMES if f"probabilities_{t}" in arrays],
        "rule": {
            "threshold": threshold,
            "target_accuracy": target_accuracy if threshold == AUTO else None,
            "min_faces": min_faces if threshold == AUTO else None,
            "validation_sets": val_sets,
            "validation_split": split_record if threshold == AUTO else None,
            "labels": "hard (top class); probabilities stored (the trainer's soft targets)",
        },
        "thresholds": thresholds,
        "validation": validation,
        "counts": counts,
        "labels_crc32": crc32(labels),
    }
    write_arrays(folder, arrays, meta)
    log.info("pseudo-labels stored in %s", folder)
    return load_pseudo_labels(folder)


# --- reading and applying -----------------------------------------------------------------------------------------


def load_pseudo_labels(path: str | os.PathLike) -> PseudoLabels:
    """A stored set (its folder or meta.json), every array checked against its recorded shape, dtype and CRC-32."""
    folder = Path(path).expanduser()
    if folder.name == META_FILE:
        folder = folder.parent
    try:
        meta = json.loads((folder / META_FILE).read_text())
        recorded = meta["arrays"]
    except FileNotFoundError:
        raise ValueError(
            f"no pseudo-labels at {folder} ({META_FILE} is missing); make them with mtfer pseudo-label"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"damaged pseudo-labels at {folder}: unreadable {META_FILE} ({exc})") from None
    if not isinstance(meta, dict) or meta.get("kind") != KIND:
        raise ValueError(f"{folder} does not hold pseudo-labels (its {META_FILE} is not one of mtfer pseudo-label's)")
    if not isinstance(recorded, dict):
        raise ValueError(f"damaged pseudo-labels at {folder}: unreadable {META_FILE} (no array records)")
    arrays = {name: _load_array(folder, meta, name) for name in ("labels", "confidence", "sources", "splits")}
    return PseudoLabels(folder.resolve(), meta, **arrays)


def _load_array(folder: Path, meta: Mapping[str, Any], name: str) -> np.ndarray:
    """<folder>/<name>.npy, refused (ValueError) unless its shape, dtype and CRC-32 are those meta.json records."""

    return read_checked_array(folder, meta.get("arrays") or {}, name, what="pseudo-labels")


def find_pseudo_labels(
    fmt: str, root: str | os.PathLike, cache_dir: str | os.PathLike | None = None
) -> list[PseudoLabels]:
    """Every stored set of pseudo-labels of the data set `fmt` at `root`, newest first."""
    folder = pseudo_root(cache_dir)
    wanted = (fmt.strip().lower(), str(Path(root).expanduser().resolve()))
    found = []
    for meta_file in sorted(folder.glob(f"*/{META_FILE}")) if folder.is_dir() else []:
        if meta_file.parent.name.startswith("."):
            continue
        try:
            meta = json.loads(meta_file.read_text())
            key = (meta["dataset"]["format"], meta["dataset"]["root"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if key == wanted:
            try:
                found.append(load_pseudo_labels(meta_file.parent))
            except ValueError as exc:
                log.warning("skipping %s", exc)
    # "created" counts whole seconds: sets made within one second are ordered by when their meta.json was written
    return sorted(found, key=lambda p: (str(p.meta.get("created", "")), (p.path / META_FILE).stat().st_mtime_ns))[::-1]


def resolve_pseudo_labels(
    specs: Sequence[str], datasets: Sequence[Mapping[str, Any]], cache_dir: str | os.PathLike | None = None
) -> list[PseudoLabels]:
    """TrainConfig.pseudo_labels as stored sets: "auto" is the newest set of each of `datasets` (those without
    one get none); anything else is a folder (or its meta.json)."""
    chosen: list[PseudoLabels] = []
    for spec in specs:
        if str(spec).strip().lower() == AUTO:
            found = []
            for d in datasets:
                newest = find_pseudo_labels(d["format"], d["root"], cache_dir)[:1]
                if not newest:
                    log.info("no pseudo-labels of %s at %s", d["format"], d["root"])
                found += newest
            if not found:
                raise ValueError(
                    f"pseudo_labels 'auto' found no pseudo-labels of this run's data sets in {pseudo_root(cache_dir)}; "
                    "make them first: mtfer pseudo-label --model M --format F --data DIR"
                )
            chosen += found
        else:
            chosen.append(load_pseudo_labels(spec))
    unique: dict[Path, PseudoLabels] = {}
    for p in chosen:
        unique.setdefault(p.path, p)
    return list(unique.values())


def ensure_pseudo_labels(
    datasets: Sequence[Mapping[str, Any]],
    teacher: str | os.PathLike,
    *,
    threshold: str | float = AUTO,
    cache_dir: str | os.PathLike | None = None,
) -> list[PseudoLabels]:
    """The newest pseudo-labels of each data set {"format", "root"} made by `teacher` (the same metadata.json), made
    first (see :func:`pseudo_label`) for a data set that has none by it yet: what a script needs on a fresh checkout,
    or to train with a chosen teacher while other teachers' sets exist. Pass their folders as the run's
    pseudo_labels, not "auto" (the newest set of any teacher)."""
    sha = _metadata_sha256(Path(teacher))
    out = []
    for d in datasets:
        found = [
            p
            for p in find_pseudo_labels(d["format"], d["root"], cache_dir)
            if (p.meta.get("teacher") or {}).get("metadata_sha256") == sha
        ][:1]
        if not found:
            log.info("no pseudo-labels of %s yet: making them with the teacher %s", d["format"], teacher)
            found = [pseudo_label(teacher, d["format"], d["root"], threshold=threshold, cache_dir=cache_dir)]
        out += found
    return out


def describe_available(
    datasets: Sequence[Mapping[str, Any]], cache_dir: str | os.PathLike | None = None
) -> dict[str, str | None]:
    """For each data set {"format", "root"}: one plain sentence on the newest pseudo-labels that "auto" would use
    (which tasks, how many faces, which teacher, when), or None when it has none."""
    out: dict[str, str | None] = {}
    for d in datasets:
        newest = find_pseudo_labels(d["format"], d["root"], cache_dir)[:1]
        if not newest:
            out[d["format"]] = None
            continue
        p = newest[0]
        counts = p.meta.get("counts", {})
        parts = [f"{t} for {counts.get(t, {}).get('kept', 0):,} faces" for t in p.meta.get("tasks", [])]
        teacher = Path(str(p.meta.get("teacher", {}).get("path", "?")))
        made = str(p.meta.get("created", ""))[:10]
        out[d["format"]] = f"{', '.join(parts) or 'nothing'}, from the model {teacher.name} (made {made})"
    return out


def fill_missing(train: Any, pseudo: PseudoLabels, tasks: Sequence[str] | None = None) -> tuple[Any, dict[str, int]]:
    """A copy of the training Split `train` whose missing labels (-1) of `tasks` are filled from `pseudo` where
    the face (same data set name and source) has a pseudo-label; true labels are never changed. Returns the new
    split and the number of labels filled per task."""
    tasks = list(TASK_NAMES if tasks is None else tasks)
    labels = np.array(train.labels, copy=True)
    index = {s: i for i, s in enumerate(pseudo.sources.tolist())}
    rows = np.flatnonzero(np.asarray(train.datasets).astype(str) == pseudo.dataset)
    found = [(r, index.get(str(train.sources[r]))) for r in rows]
    pairs = np.array([(r, j) for r, j in found if j is not None], dtype=np.int64).reshape(-1, 2)
    filled: dict[str, int] = {}
    for t in tasks:
        c = TASK_NAMES.index(t)
        if not len(pairs):
            filled[t] = 0
            continue
        mine, theirs = pairs[:, 0], pairs[:, 1]
        new = pseudo.labels[theirs, c].astype(labels.dtype)
        take = (labels[mine, c] < 0) & (new >= 0)
        labels[mine[take], c] = new[take]
        filled[t] = int(take.sum())
    return type(train)(train.images, labels, train.sources, train.datasets, train.soft), filled


def soft_targets(
    train: Any, sets: Sequence[PseudoLabels], tasks: Sequence[str] | None = None, distill: float = 0.0
) -> dict[str, np.ndarray] | None:
    """Soft targets for the training Split `train` BEFORE its labels are filled: per task, float32 (N, classes)
    holding the teacher's probabilities on the faces that get a pseudo-label of that task (missing true label,
    pseudo-label kept by the threshold), and NaN rows elsewhere (true labels stay one-hot). None if no face gets one.

    distill > 0: faces WITH a true label of a task get (1 - distill) * one-hot + distill * the teacher's
    probabilities, where the set stores them (sets made before that stored only the tasks they filled: ValueError
    when no set has them for a task the training split has labels of)."""
    tasks = list(TASK_NAMES if tasks is None else tasks)
    out: dict[str, np.ndarray] = {}
    distilled: set[str] = set()
    for p in sets:
        index = {s: i for i, s in enumerate(p.sources.tolist())}
        rows = np.flatnonzero(np.asarray(train.datasets).astype(str) == p.dataset)
        pairs = np.array(
            [(r, j) for r in rows if (j := index.get(str(train.sources[r]))) is not None], dtype=np.int64
        ).reshape(-1, 2)
        for t in tasks:
            c = TASK_NAMES.index(t)
            if not len(pairs) or f"probabilities_{t}" not in p.meta.get("arrays", {}):
                continue
            mine, theirs = pairs[:, 0], pairs[:, 1]
            truth = np.asarray(train.labels)[mine, c]
            filled = (truth < 0) & (p.labels[theirs, c] >= 0)
            known = (truth >= 0) & (distill > 0)
            if not (filled | known).any():
                continue
            target = out.setdefault(t, np.full((len(train), TASKS[t].num_classes), np.nan, np.float32))
            probs = p.probabilities(t)[theirs]
            probs = probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-12)
            target[mine[filled]] = probs[filled]
            if known.any():
                one_hot = np.eye(TASKS[t].num_classes, dtype=np.float32)[truth[known]]
                target[mine[known]] = (1 - distill) * one_hot + distill * probs[known]
                distilled.add(t)
    if distill > 0:
        labelled = [t for t in tasks if (np.asarray(train.labels)[:, TASK_NAMES.index(t)] >= 0).any()]
        lacking = [t for t in labelled if t not in distilled]
        if lacking:
            raise ValueError(
                f"distill: no pseudo-label set holds the teacher's probabilities of {lacking} on faces labelled with "
                "them (sets made before distillation keep only the tasks they fill): make them again with mtfer "
                "pseudo-label"
            )
    return out or None


def apply_pseudo_labels(
    splits: Mapping[str, Any],
    specs: Sequence[str],
    run: str | os.PathLike | None = None,
    *,
    datasets: Sequence[Mapping[str, Any]] = (),
    tasks: Sequence[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    soft: bool = False,
    distill: float = 0.0,
) -> tuple[dict[str, Any], list[dict]]:
    """Splits whose TRAINING split has its missing labels filled from the pseudo-labels `specs` (see
    :func:`resolve_pseudo_labels`); "val" and "test" are returned unchanged. Returns (splits, record): what was
    used (folder, teacher, thresholds, labels filled per task), also written to the run folder's
    pseudo_labels.json. When that file exists (a resumed or finished run), its folders are used again, and a set
    whose labels changed since is refused. soft: the training split also carries the teacher's probabilities as
    soft targets on the pseudo-labelled faces (Split.soft, see :func:`soft_targets`); distill: and, at that weight,
    on the faces with true labels."""
    record_file = Path(run) / RECORD_FILE if run is not None else None
    previous = None
    if record_file is not None and record_file.exists():
        previous = bundles.read_json(record_file).get("pseudo_labels")
    if previous is not None:
        sets = []
        for entry in previous:
            p = load_pseudo_labels(entry["path"])
            if p.meta.get("labels_crc32") != entry.get("labels_crc32"):
                raise ValueError(f"the pseudo-labels at {p.path} changed since this run started; make a new run")
            sets.append(p)
    else:
        sets = resolve_pseudo_labels(specs, datasets, cache_dir)
    if "train" not in splits:
        raise ValueError("no training split to add pseudo-labels to")
    out = dict(splits)
    train = splits["train"]
    targets = soft_targets(train, sets, tasks, distill) if soft else None
    record = []
    for p in sets:
        train, filled = fill_missing(train, p, tasks)
        if previous is None and not any(np.asarray(splits["train"].datasets).astype(str) == p.dataset):
            raise ValueError(
                f"the pseudo-labels at {p.path} are for {p.dataset} at {p.meta['dataset']['root']}, which this run "
                "does not train on"
            )
        record.append(
            {
                "path": str(p.path),
                "dataset": p.meta["dataset"],
                "teacher": p.meta["teacher"],
                "rule": p.meta.get("rule"),
                "thresholds": p.meta.get("thresholds"),
                "created": p.meta.get("created"),
                "labels_crc32": p.meta.get("labels_crc32"),
                "filled": filled,
                "targets": "soft" if soft else "hard",
                "distill": distill,
            }
        )
        log.info("pseudo-labels %s: filled %s in the training split", p.path.name, filled)
    if targets is not None:
        train = type(train)(train.images, train.labels, train.sources, train.datasets, targets)
    out["train"] = train
    if record_file is not None and previous is None:
        bundles.atomic_write_json(record_file, {"pseudo_labels": record})
    return out, record
