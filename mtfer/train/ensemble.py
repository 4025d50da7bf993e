"""Ensembles: several trained networks as one bundle whose every head is a weighted average of theirs.

Two networks trained differently (another architecture, another seed) make different mistakes, so the average of
their probabilities is right more often than either. An ensemble costs the sum of its members' time per face, so it
is a teacher more often than a shipped model: its probabilities are the soft targets a single fast network learns
from (``TrainConfig.distill``). Built from Keras's own layers (each member a nested model, ``Rescaling`` by its
weight, ``Add``), it loads in safe mode, converts to LiteRT, and goes wherever a bundle goes (``mtfer evaluate``,
``mtfer pseudo-label --model``, the app).

The weights are chosen per task on the members' shared validation faces (never the test split): every split of
the weight between two members in steps of 0.1, the most accurate kept (the lower log-loss among equals); more
members get equal weights unless given."""

from __future__ import annotations

import copy
import hashlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtfer.core import bundles, convert
from mtfer.core.backends import predict_arrays
from mtfer.core.preprocess import PreprocessConfig
from mtfer.core.tasks import TASK_NAMES
from mtfer.datasets.base import DatasetSpec
from mtfer.datasets.splits import SplitSettings, validation_split
from mtfer.train.finalize import calibrate_bundle

log = logging.getLogger("mtfer.train")

ENSEMBLE_KEY = "ensemble"  # metadata.json: the members, their weights per task and how they were chosen
GRID_STEPS = 10  # weights between two members tried in steps of 1/10


class EnsembleError(ValueError):
    """Members that cannot be averaged: other tasks or classes, input size, framing, or no shared validation faces."""


def choose_weights(
    probs: Sequence[Mapping[str, np.ndarray]], labels: np.ndarray, tasks: Sequence[str]
) -> dict[str, list[float]]:
    """Per task, the members' weights (summing to 1) that classify the labelled faces best (`labels`: (N, 4) in
    TASK_NAMES order, -1 = unlabelled), ties going to the lower log-loss. Two members: every split in steps of
    1/GRID_STEPS; otherwise equal weights. A task without labelled faces gets equal weights."""
    n = len(probs)
    if n < 2:
        raise EnsembleError("an ensemble needs at least two members")
    equal = [1.0 / n] * n
    if n > 2:
        return {t: list(equal) for t in tasks}
    out: dict[str, list[float]] = {}
    for task in tasks:
        truth = np.asarray(labels)[:, TASK_NAMES.index(task)]
        has = truth >= 0
        if not has.any():
            out[task] = list(equal)
            continue
        a, b, y = probs[0][task][has], probs[1][task][has], truth[has]
        best_key, best_w = None, 0.5
        for step in range(GRID_STEPS + 1):
            w = step / GRID_STEPS
            mix = w * a + (1 - w) * b
            accuracy = float((mix.argmax(axis=1) == y).mean())
            log_loss = float(-np.log(np.clip(mix[np.arange(len(y)), y], 1e-12, None)).mean())
            key = (accuracy, -log_loss, -abs(w - 0.5))  # most accurate, then surest, then nearest to equal
            if best_key is None or key > best_key:
                best_key, best_w = key, w
        out[task] = [round(best_w, 6), round(1.0 - best_w, 6)]
    return out


def ensemble_model(models: Sequence[Any], weights: Mapping[str, Sequence[float]], name: str = "ensemble") -> Any:
    """One Keras model: the input goes through every member (each nested whole), and each head is the weighted sum
    of the members' probabilities for it (weights from `weights[task]`, in member order; a member weighed 0 for
    a task does not feed it). Members are rebuilt in float32 first, so that the sum is exact in any precision."""
    import keras
    from keras import layers

    members = [convert.float32_model(m) for m in models]
    shape = tuple(members[0].input.shape[1:])
    inputs = keras.Input(shape=shape, name="face")
    outputs = [keras.Model(m.input, m.output, name=f"member_{i}")(inputs) for i, m in enumerate(members)]
    heads = {}
    for task, w in weights.items():
        parts = [
            layers.Rescaling(float(wi), name=f"{task}_weight_{i}")(out[task])
            for i, (wi, out) in enumerate(zip(w, outputs, strict=True))
            if wi > 0
        ]
        heads[task] = layers.Add(name=task)(parts) if len(parts) > 1 else layers.Identity(name=task)(parts[0])
    return keras.Model(inputs, heads, name=name)


def _framing(bundle: bundles.Bundle) -> dict:
    """How the bundle frames a face for its network: what members must share (settings for photos only, such as
    the small-face look, may differ; the ensemble keeps the first member's)."""
    return PreprocessConfig.from_dict(bundle.metadata["preprocessing"]).crop_settings()


def _check_members(loaded: Sequence[bundles.Bundle]) -> None:
    first = loaded[0]
    for other in loaded[1:]:
        if other.metadata.get("tasks") != first.metadata.get("tasks"):
            raise EnsembleError(f"{other.path} and {first.path} differ in tasks and classes: they cannot be averaged")
        if _framing(other) != _framing(first):
            raise EnsembleError(f"{other.path} and {first.path} differ in face framing: they cannot be averaged")
        if other.input_size != first.input_size:
            raise EnsembleError(
                f"{other.path} takes {other.input_size}px faces, {first.path} {first.input_size}px: they cannot be "
                "averaged"
            )


def _same_split(loaded: Sequence[bundles.Bundle]) -> bool:
    """Whether the members carved the same validation faces (same data sets, protocol, fraction and seed): only
    then are the first member's validation faces unseen by all of them."""
    first = loaded[0].metadata
    sets = sorted((d["format"], d["root"]) for d in (first.get("config") or {}).get("datasets") or [])
    return all(
        SplitSettings.of_model(b.metadata) == SplitSettings.of_model(first)
        and sorted((d["format"], d["root"]) for d in (b.metadata.get("config") or {}).get("datasets") or []) == sets
        for b in loaded[1:]
    )


def combine(
    members: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    weights: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
    datasets: Sequence[DatasetSpec] | None = None,
    splits: Mapping[str, Any] | None = None,
    runs_dir: str | os.PathLike | None = None,
    evaluate: bool = True,
    say: Callable[[str], None] = log.info,
) -> Path:
    """Write the ensemble of the bundles `members` (run ids, folders or "default") to the bundle folder `out`,
    calibrated on the validation faces (and, with `evaluate`, evaluated on validation and test like any trained
    model). `weights`: one list for every task, per-task lists, or None to choose them on validation faces.
    `splits`: the members' {"val": Split, "test": Split} (default: carved again from their data sets). `say`: told
    each step as it starts (minutes each on real data sets)."""
    paths = [bundles.resolve_model(m, runs_dir).resolve() for m in members]
    if len(paths) < 2:
        raise EnsembleError("an ensemble needs at least two members")
    out = Path(out)
    if out.resolve() in paths:
        raise EnsembleError(f"{out} is one of the members: write the ensemble to a new folder")
    if (out / bundles.METADATA_FILE).exists():
        raise EnsembleError(f"{out} already holds a model: choose another name or remove it")
    loaded = [bundles.load_bundle(p, keras=True) for p in paths]
    _check_members(loaded)
    tasks = loaded[0].tasks
    if not _same_split(loaded):
        raise EnsembleError(
            "the members were trained on different data sets or splits: no validation faces are unseen by all of "
            "them, so neither the weights nor the calibration can be chosen honestly"
        )
    if splits is None:
        say("finding the validation and test faces the members held out")
        splits = validation_split(loaded[0].metadata, datasets)
    splits = dict(splits)
    val = splits["val"]
    flip = bool(loaded[0].metadata["input"].get("tta_flip", False))
    probs = []
    for i, member in enumerate(loaded, start=1):
        say(f"member {i} of {len(loaded)} ({member.path.name}) on {len(val):,} validation faces")
        probs.append(predict_arrays(member.model, val.images, flip=flip))
    if weights is None:
        chosen = choose_weights(probs, val.labels, tasks)
    elif isinstance(weights, Mapping):
        chosen = {t: [float(w) for w in weights[t]] for t in tasks}
    else:
        chosen = {t: [float(w) for w in weights] for t in tasks}
    for task, w in chosen.items():
        if len(w) != len(paths) or min(w) < 0 or not np.isclose(sum(w), 1.0):
            raise EnsembleError(f"{task}: give one weight per member, none negative, summing to 1 (got {w})")
    scores = {}
    for task, w in chosen.items():
        truth = val.labels[:, TASK_NAMES.index(task)]
        has = truth >= 0
        mix = sum(wi * p[task] for wi, p in zip(w, probs, strict=True))
        scores[task] = {
            "members": [float((p[task][has].argmax(1) == truth[has]).mean()) for p in probs] if has.any() else None,
            "ensemble": float((mix[has].argmax(1) == truth[has]).mean()) if has.any() else None,
            "faces": int(has.sum()),
        }
        log.info("%s: weights %s, validation accuracy %s", task, w, scores[task])

    metadata = _ensemble_metadata(loaded, chosen, scores)
    model = ensemble_model([b.model for b in loaded], chosen, name=out.name or "ensemble")
    out.mkdir(parents=True, exist_ok=True)
    say(f"writing {out}")
    bundles.save_bundle(model, metadata, out)
    say("calibrating" + (" and evaluating on the validation and test faces" if evaluate else ""))
    calibrate_bundle(out, splits=splits, evaluate=evaluate)
    return out


def _ensemble_metadata(
    loaded: Sequence[bundles.Bundle], weights: Mapping[str, Sequence[float]], scores: Mapping[str, Any]
) -> dict:
    """The first member's metadata (tasks, framing, data sets, split settings: shared by all) with what makes this
    model itself: its members, their weights, its precision. What belongs to one trained network (calibration,
    "not sure" thresholds, metrics, history) is dropped; calibration and evaluation write their own."""
    metadata = copy.deepcopy(loaded[0].metadata)
    for key in ("calibration", "abstain", "metrics", "serving", "lineage", "race_groups", "finished_early"):
        metadata.pop(key, None)
    names = ", ".join(b.path.name for b in loaded)
    metadata.update(
        architecture="ensemble",
        precision="float32",
        created=bundles.now_iso(),
        title=f"Ensemble of {len(loaded)} networks",
        description=f"The average of {len(loaded)} trained networks ({names}), weighted per question on their "
        "validation faces. It takes the time of all of them for each face.",
        train_seconds=sum(float(b.metadata.get("train_seconds") or 0) for b in loaded),
    )
    metadata[ENSEMBLE_KEY] = {
        "members": [
            {
                "path": str(b.path),
                "metadata_sha256": hashlib.sha256((b.path / bundles.METADATA_FILE).read_bytes()).hexdigest(),
                "architecture": b.metadata.get("architecture"),
                "created": b.metadata.get("created"),
            }
            for b in loaded
        ],
        "weights": {t: list(w) for t, w in weights.items()},
        "validation_accuracy": dict(scores),
    }
    return metadata
