"""A model's training lineage. A run started from another model's weights (`TrainConfig.init_from`) continues that
model's training: its own history.csv and `train_seconds` cover only the continuation. This module puts the stages
back together: every stage's epochs numbered continuously, the total number of epochs and the total training time.

The stages before a model come from the lineage its bundle records (`metadata["lineage"]`, written by the trainer
through :func:`parent_lineage`) or, for bundles saved before that, from the parent's run folder when it is still
there. Pure file reading, no Streamlit."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mtfer.core import bundles

MAX_STAGES = 20  # a guard against init_from cycles (a run continued from itself through a copy)


@dataclass(frozen=True)
class Stage:
    """One training run of a lineage."""

    name: str
    epochs: int | None  # None: not recorded
    train_seconds: float | None  # None: not recorded
    recorded: bool  # its per-epoch history is known


@dataclass
class Lineage:
    """The stages of a model's training, oldest first (the model itself last), and their history as one table."""

    stages: list[Stage]
    history: pd.DataFrame  # the recorded epochs; `epoch` numbered continuously, `stage` names the run
    starts: list[tuple[int, str]] = field(default_factory=list)  # (first epoch of a continuation, its run's name)

    @property
    def continued(self) -> bool:
        return len(self.stages) > 1

    @property
    def missing(self) -> list[Stage]:
        """Earlier stages whose history is not stored (the curves then start after them)."""
        return [s for s in self.stages if not s.recorded]

    @property
    def total_epochs(self) -> int | None:
        epochs = [s.epochs for s in self.stages]
        return None if any(e is None for e in epochs) else sum(e for e in epochs if e is not None)

    @property
    def total_seconds(self) -> float | None:
        seconds = [s.train_seconds for s in self.stages]
        return None if any(t is None for t in seconds) else float(sum(t for t in seconds if t is not None))


# --- writing: what the trainer records in a new bundle -------------------------------------------------------


def _clean(value: Any) -> Any:
    """A history cell as JSON allows it (NaN and infinities -> None; numpy scalars -> Python)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _read_history(folder: Path) -> list[dict] | None:
    try:
        frame = pd.read_csv(folder / bundles.HISTORY_FILE)
    except (OSError, ValueError):  # missing, empty or not a table
        return None
    return [{k: _clean(v) for k, v in row.items()} for row in frame.to_dict("records")]


def _read_metadata(folder: Path) -> dict:
    try:
        return bundles.read_json(folder / bundles.METADATA_FILE)
    except bundles.RunError:
        return {}


def _init_from(folder: Path, metadata: Mapping) -> str | None:
    config = metadata.get("config")
    if not isinstance(config, Mapping):
        try:
            config = bundles.read_json(folder / bundles.CONFIG_FILE)
        except bundles.RunError:
            config = {}
    value = config.get("init_from")
    return str(value) if value else None


def _find_parent(spec: str, runs_dir: str | os.PathLike | None) -> Path | None:
    """The folder of a parent given as a path or run id; a path that moved is looked for by its name under the
    runs folder."""
    try:
        return bundles.resolve_model(spec, runs_dir)
    except bundles.RunError:
        pass
    candidate = Path(runs_dir or bundles.default_runs_dir()) / Path(spec).name
    return candidate if candidate.is_dir() else None


def parent_lineage(init_from: str | None, runs_dir: str | os.PathLike | None = None) -> list[dict]:
    """The stages before a run started from `init_from` (a run id or bundle folder), oldest first, as JSON-able
    dicts {"name", "path", "epochs", "train_seconds", "history"} for the new bundle's metadata["lineage"]. A
    parent's own earlier stages come first (from its metadata, or from its parent's folder). A parent that cannot
    be found is recorded by name with no epochs, time or history."""
    stages: list[dict] = []
    seen: set[Path] = set()
    spec = init_from
    while spec and len(stages) < MAX_STAGES:
        folder = _find_parent(spec, runs_dir)
        if folder is None or folder.resolve() in seen:
            stages.append({"name": Path(spec).name, "path": spec, "epochs": None, "train_seconds": None, "history": []})
            break
        seen.add(folder.resolve())
        metadata = _read_metadata(folder)
        history = _read_history(folder)
        seconds = metadata.get("train_seconds")
        if seconds is None and history:
            seconds = sum(float(row.get("seconds") or 0.0) for row in history) or None
        stages.append(
            {
                "name": folder.name,
                "path": str(folder.resolve()),
                "epochs": len(history) if history is not None else None,
                "train_seconds": None if seconds is None else round(float(seconds), 1),
                "history": history or [],
            }
        )
        recorded = metadata.get("lineage")
        if isinstance(recorded, list):  # the parent knows its own past: nothing further to look for
            stages.extend(reversed([s for s in recorded if isinstance(s, dict)]))
            break
        spec = _init_from(folder, metadata)
    return list(reversed(stages))


# --- reading: what the app shows ----------------------------------------------------------------------------


def read_lineage(
    path: str | os.PathLike, metadata: Mapping | None = None, runs_dir: str | os.PathLike | None = None
) -> Lineage:
    """The lineage of the model (or run) folder `path`: the stages its metadata records, else those found through
    its `init_from`, then the model itself with its own history.csv and `train_seconds`."""
    folder = Path(path)
    metadata = _read_metadata(folder) if metadata is None else metadata
    recorded = metadata.get("lineage")
    if isinstance(recorded, list):
        earlier = [s for s in recorded if isinstance(s, Mapping)]
    else:
        earlier = parent_lineage(_init_from(folder, metadata), runs_dir)
    own_history = _read_history(folder) or []
    seconds = metadata.get("train_seconds")
    own = {
        "name": folder.name,
        "epochs": len(own_history) if own_history else None,
        "train_seconds": None if seconds is None else float(seconds),
        "history": own_history,
    }
    return combine([*earlier, own])


def combine(stages: list[Mapping]) -> Lineage:
    """A Lineage from stage dicts (oldest first) as :func:`parent_lineage` writes them: the histories one after
    the other, epochs numbered on from the previous recorded stage, a start marked where each continuation
    begins."""
    parts, starts, out = [], [], []
    offset = 0
    for stage in stages:
        history = list(stage.get("history") or [])
        epochs = stage.get("epochs")
        epochs = len(history) if epochs is None and history else epochs
        seconds = stage.get("train_seconds")
        name = str(stage.get("name") or "earlier run")
        out.append(Stage(name, None if epochs is None else int(epochs), None if seconds is None else float(seconds),
                         bool(history)))  # fmt: skip
        if not history:
            continue
        frame = pd.DataFrame(history)
        own = frame["epoch"] if "epoch" in frame else pd.Series(range(1, len(frame) + 1))
        frame["epoch"] = pd.to_numeric(own, errors="coerce").fillna(0).astype(int).to_numpy() + offset
        frame["stage"] = name
        if parts:
            starts.append((int(frame["epoch"].iloc[0]), name))
        parts.append(frame)
        offset = int(frame["epoch"].max())
    history = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return Lineage(out, history, starts)
