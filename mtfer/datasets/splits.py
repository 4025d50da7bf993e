"""The one place a model's data is split: train / validation / test carved from prepared data sets by protocol,
fraction and seed, and carved again later (calibration, pseudo-label thresholds) exactly as the trainer carved it."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtfer.core.preprocess import PreprocessConfig
from mtfer.datasets.base import DatasetSpec
from mtfer.datasets.cache import prepare

DEFAULT_PROTOCOL = "holdout"
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_SEED = 1337


@dataclass(frozen=True)
class SplitSettings:
    """How a trainer carves its data sets: protocol, validation fraction, seed and the per-set sample cap."""

    protocol: str = DEFAULT_PROTOCOL
    val_fraction: float = DEFAULT_VAL_FRACTION
    seed: int = DEFAULT_SEED
    limit: int | None = None

    @classmethod
    def of_model(cls, metadata: Mapping[str, Any]) -> SplitSettings:
        """The settings a bundle's trainer used (its metadata config), the trainer's defaults where unknown."""
        config = metadata.get("config")
        config = config if isinstance(config, Mapping) else {}
        try:
            return cls(
                str(config.get("protocol", DEFAULT_PROTOCOL)),
                float(config.get("val_fraction", DEFAULT_VAL_FRACTION)),
                int(config["split_seed"] if config.get("split_seed") is not None else config.get("seed", DEFAULT_SEED)),
                None if config.get("limit") is None else int(config["limit"]),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the model's training settings (metadata config) cannot be read: {exc}") from None


class DatasetUnreadable(ValueError):
    """A data set to carve again could not be read; `format` and `root` say which, for the caller's advice."""

    def __init__(self, format: str, root: str, reason: object):
        super().__init__(f"data set {format} at {root} cannot be read ({reason})")
        self.format, self.root, self.reason = format, root, reason


def carve_again(
    sets: Sequence[DatasetSpec],
    settings: SplitSettings,
    preprocess: Any = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    reuse: Mapping[tuple[str, str], Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Split]:
    """The splits a trainer made of `sets` ([{"format", "root"}]), made again exactly as it made them: each set
    prepared with the same framing (`preprocess`) and cap, then :func:`make_splits`. `reuse`: already prepared sets
    by (format, resolved root), used when there is no cap. DatasetUnreadable names a set that cannot be read."""
    prepared = []
    for d in sets:
        if not isinstance(d, Mapping) or "format" not in d or "root" not in d:
            raise ValueError(f"each data set needs a 'format' and a 'root', got {d!r}")
        key = (str(d["format"]).strip().lower(), str(Path(d["root"]).expanduser().resolve()))
        found = (reuse or {}).get(key) if settings.limit is None else None
        if found is None:
            try:
                found = prepare(
                    d["format"],
                    d["root"],
                    config=preprocess,
                    cache_dir=cache_dir,
                    limit=settings.limit,
                    progress=progress,
                )
            except (OSError, ValueError) as exc:
                raise DatasetUnreadable(str(d["format"]), str(d["root"]), exc) from None
        prepared.append(found)
    return make_splits(prepared, settings.protocol, settings.val_fraction, settings.seed)


def validation_split(
    metadata: Mapping,
    datasets: Sequence[DatasetSpec] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """The splits the bundle was trained with (train, val, test), carved again from its data sets exactly as the
    trainer carved them (its config's protocol, validation fraction, seed and limit; its framing settings).
    `datasets`: [{"format", "root"}] to read instead of the recorded ones (same formats; for a bundle trained on
    another machine). ValueError when the data sets cannot be read or no longer split as they did in training
    (the faces it trained on could not be told from its validation faces)."""
    raw = metadata.get("config")
    if not isinstance(raw, Mapping):
        raise ValueError("the bundle's metadata has no training config: its validation faces cannot be found")
    settings = SplitSettings.of_model(metadata)
    sets = [dict(d) for d in raw.get("datasets") or []]
    if not sets:
        raise ValueError(
            "the model's metadata names no data set (trained on faces given in code?): its validation faces cannot "
            "be found again"
        )
    if datasets:
        given = {str(d["format"]).strip().lower(): str(d["root"]) for d in datasets}
        unknown = sorted(set(given) - {str(d["format"]).strip().lower() for d in sets})
        if unknown:
            raise ValueError(
                f"--dataset {unknown[0]} was not one of the data sets this model trained on "
                f"({', '.join(d['format'] for d in sets)})"
            )
        sets = [{**d, "root": given.get(str(d["format"]).strip().lower(), d["root"])} for d in sets]
    preprocess = PreprocessConfig.from_dict(metadata["preprocessing"]) if "preprocessing" in metadata else None
    try:
        splits = carve_again(sets, settings, preprocess, progress=progress)
    except DatasetUnreadable as exc:
        raise ValueError(f"the model's {exc}; give its folder with --dataset {exc.format}=DIR") from None
    recorded = metadata.get("samples") or {}
    sizes = {k: len(v) for k, v in splits.items()}
    if recorded and any(sizes.get(k, 0) != n for k, n in recorded.items()):
        raise ValueError(
            f"the model's data sets now split into {sizes} faces, not {dict(recorded)} as when it trained (other "
            "files or framing?): its validation faces cannot be told apart from those it trained on"
        )
    if not len(splits.get("val", ())):
        raise ValueError("the model's data sets have no validation faces to calibrate on")
    return splits


@dataclass
class Split:
    """Arrays of one split: uint8 faces (N,S,S), labels int (N,4) with -1 = missing, per-sample source and set.

    soft: optional soft targets per task, float32 (N, classes), a row of NaN where the face has none (its target is
    then the one-hot of its label); set by soft pseudo-labels (mtfer.train.pseudo) on the training split only."""

    images: np.ndarray
    labels: np.ndarray
    sources: np.ndarray
    datasets: np.ndarray
    soft: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray) -> Split:
        soft = None if self.soft is None else {t: v[index] for t, v in self.soft.items()}
        return Split(self.images[index], self.labels[index], self.sources[index], self.datasets[index], soft)

    @staticmethod
    def concat(parts: Sequence[Split]) -> Split:
        if not parts:
            raise ValueError("nothing to concatenate")
        if any(p.soft is not None for p in parts):
            raise ValueError("splits with soft targets cannot be concatenated (soft targets are added after splitting)")
        return Split(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in ("images", "labels", "sources", "datasets"))
        )


def carve(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of range(n) into (keep, carved) with round(n * fraction) carved."""
    order = np.random.default_rng(seed).permutation(n)
    k = int(round(n * fraction))
    return np.sort(order[k:]), np.sort(order[:k])


def make_splits(prepared: Sequence[Any], protocol: str, val_fraction: float, seed: int) -> dict[str, Split]:
    """holdout: validation carved (seeded) from each set's train split, test untouched until the end.
    paper: everything pooled, seeded 90/10, the 10% both monitors and reports (optimistic, as in the paper)."""
    out: dict[str, list[Split]] = {"train": [], "val": [], "test": []}
    for p in prepared:
        whole = Split(p.images, p.labels.astype(np.int64), p.sources.astype(str), np.full(len(p.images), p.name))
        splits = np.asarray(p.splits).astype(str)
        if protocol == "paper":
            keep, held = carve(len(whole), val_fraction, seed)
            out["train"].append(whole.subset(keep))
            out["val"].append(whole.subset(held))
            continue
        train_idx = np.flatnonzero(splits == "train")
        keep, held = carve(len(train_idx), val_fraction, seed)
        out["train"].append(whole.subset(train_idx[keep]))
        out["val"].append(whole.subset(np.concatenate([train_idx[held], np.flatnonzero(splits == "val")])))
        out["test"].append(whole.subset(np.flatnonzero(splits == "test")))
    return {k: Split.concat(v) for k, v in out.items() if v and sum(len(s) for s in v)}
