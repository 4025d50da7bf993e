"""Where the app finds data sets and models: the configured data roots, the data sets found under them, the models
(bundles) to choose from and their evaluations. Pure functions, no Streamlit."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mtfer.core import bundles
from mtfer.core.bundles import METRICS_FILE
from mtfer.core.tasks import FORMATS, TASK_NAMES
from mtfer.datasets import read_dataset
from mtfer.store import runs

ENV_DATA_ROOTS = "MTFER_DATA_ROOTS"


# Used when $MTFER_DATA_ROOTS is not set, relative to the working folder (the repository when the app is
# started with `streamlit run app.py`); roots that do not exist are left out.
DEFAULT_DATA_ROOTS: tuple[str, ...] = (os.path.join("..", "shared", "data"), "data")


def data_roots(env: Mapping[str, str] | None = None, base: str | os.PathLike | None = None) -> list[Path]:
    """Existing data roots, resolved and without repeats: $MTFER_DATA_ROOTS (os.pathsep-separated) when set,
    else DEFAULT_DATA_ROOTS. Relative entries are taken from `base` (default: the working folder)."""
    env = os.environ if env is None else env
    base_path = Path(base) if base is not None else Path.cwd()
    text = env.get(ENV_DATA_ROOTS, "").strip()
    entries = [p.strip() for p in text.split(os.pathsep) if p.strip()] if text else list(DEFAULT_DATA_ROOTS)
    roots: list[Path] = []
    for entry in entries:
        path = Path(entry).expanduser()
        path = (path if path.is_absolute() else base_path / path).resolve()
        if path.is_dir() and path not in roots:
            roots.append(path)
    return roots


def no_datasets_text(roots: Sequence[Path], env: Mapping[str, str] | None = None) -> str:
    """Why no data set is offered, and what to do: where it looked, or that $MTFER_DATA_ROOTS is unset and neither
    default folder exists, or that the folders it names do not exist."""
    env = os.environ if env is None else env
    fix = f"({', '.join(FORMATS)} layouts)"
    if roots:
        where = ", ".join(str(r) for r in roots)
        return f"No data set was found under the data roots ({where}). Put data sets there, or set {ENV_DATA_ROOTS} to folders that hold them {fix}."
    if env.get(ENV_DATA_ROOTS, "").strip():
        return f"None of the folders {ENV_DATA_ROOTS} names exists ({env[ENV_DATA_ROOTS].strip()}): set it to folders that hold data sets {fix}."
    defaults = " and ".join(DEFAULT_DATA_ROOTS)
    return (
        f"{ENV_DATA_ROOTS} is not set, and neither default folder ({defaults}, from where the app was started) "
        f"exists: set {ENV_DATA_ROOTS} to folders that hold data sets {fix}."
    )


class ConfinementError(ValueError):
    """A data path outside the configured data roots (or spelled with '..')."""


def confine(path: str | os.PathLike, roots: Iterable[str | os.PathLike]) -> Path:
    """`path` with its symlinks resolved, when it lies inside one of `roots` (resolved too); else
    ConfinementError. A path spelled with '..' is refused outright."""
    raw = Path(path)
    if ".." in raw.parts:
        raise ConfinementError(f"{path}: '..' is not allowed in a data path")
    resolved = raw.resolve()
    roots = [Path(r).resolve() for r in roots]
    if not any(resolved.is_relative_to(root) for root in roots):
        where = ", ".join(str(r) for r in roots) or "none configured"
        raise ConfinementError(f"{path} is outside the data roots ({where}); set {ENV_DATA_ROOTS} to allow it")
    return resolved


@dataclass(frozen=True)
class FoundDataset:
    """A data set that one of the readers accepts, found under a data root."""

    format: str  # one of mtfer.core.tasks.FORMATS
    root: str  # resolved folder (or CSV file) handed to the reader and to the trainer
    name: str  # path relative to its data root, for people
    samples: int
    splits: dict[str, int] = field(default_factory=dict)
    labelled: dict[str, int] = field(default_factory=dict)  # task -> samples with that label

    @property
    def tasks(self) -> list[str]:
        """Tasks this data set has labels for, in model order."""
        return [t for t in TASK_NAMES if self.labelled.get(t, 0) > 0]

    @property
    def label(self) -> str:
        return f"{self.name} ({self.format}): {self.samples:,} images; labels: {', '.join(self.tasks) or 'none'}"

    def to_config(self) -> dict:
        """The entry for TrainConfig.datasets."""
        return {"format": self.format, "root": self.root}


def _candidates(root: Path) -> list[Path]:
    """A root's visible subfolders (and CSV files, for fer2013-csv), then the root itself."""
    try:
        children = sorted(
            (p for p in root.iterdir() if not p.name.startswith(".") and (p.is_dir() or p.suffix.lower() == ".csv")),
            key=lambda p: p.name.lower(),
        )
    except OSError:
        children = []
    return [*children, root]


def discover_datasets(roots: Iterable[str | os.PathLike], formats: Sequence[str] = FORMATS) -> list[FoundDataset]:
    """Every data set under `roots` that a reader accepts: each root's direct subfolders and the root itself are
    tried with each format. The same images found twice (through two formats, or a root and its subfolder) are
    listed once, under the deepest folder and the first format in `formats` order; a part of a data set that a
    reader also accepts (the train/ folder of a FER2013 tree read as generic folders) is left out. So are folders
    that no reader accepts or that hold no usable sample, and symlinks that lead out of the roots."""
    hits: list[tuple[FoundDataset, frozenset[str]]] = []
    roots = [Path(r).resolve() for r in roots]
    for root in roots:
        for candidate in _candidates(root):
            try:
                confine(candidate, roots)  # a symlink out of the data roots is not followed
            except ConfinementError:
                continue
            for fmt in formats:
                try:
                    df, _ = read_dataset(fmt, candidate)
                except (ValueError, OSError):  # not this format's layout (DatasetFormatError), unreadable
                    continue
                if not len(df):
                    continue
                sources = frozenset(df["source"].astype(str))
                if any(sources == seen for _, seen in hits):
                    continue
                name = candidate.name if candidate == root else str(candidate.relative_to(root))
                dataset = FoundDataset(
                    format=fmt,
                    root=str(candidate),
                    name=name,
                    samples=len(df),
                    splits={str(k): int(v) for k, v in df["split"].value_counts().sort_index().items()},
                    labelled={t: int(df[t].notna().sum()) for t in TASK_NAMES if t in df},
                )
                hits.append((dataset, sources))
    return [d for d, sources in hits if not any(sources < other for _, other in hits)]


@dataclass(frozen=True)
class ModelChoice:
    label: str
    path: Path
    kind: str  # "active", "default", "run", or "bundle" (a model under the runs folder that no run made)

    @property
    def slug(self) -> str:
        """Names the choice in a page's URL (query parameters): 'active', 'default' or the run's folder name."""
        return self.kind if self.kind in ("active", "default") else self.path.name


def find_choice(choices: Sequence[ModelChoice], slug: str | None) -> ModelChoice | None:
    """The choice a URL names by its slug (or by its folder name: 'default' is the active model when that is the
    shipped one, listed once); None when it names none of them."""
    if not slug:
        return None
    return next((c for c in choices if c.slug == slug), None) or next((c for c in choices if c.path.name == slug), None)


def is_bundle(path: str | os.PathLike) -> bool:
    """A folder holding a complete model bundle (model.keras and metadata.json)."""
    path = Path(path)
    return (path / bundles.MODEL_FILE).is_file() and (path / bundles.METADATA_FILE).is_file()


@dataclass(frozen=True)
class ActiveModel:
    """The model that Predict, Evaluate and the CLI use unless told otherwise, for the sidebar of every page."""

    path: Path
    shipped: bool  # the model used when none was made active (the shipped one, or $MTFER_MODEL)


def active_model(runs_dir: str | os.PathLike | None = None) -> ActiveModel:
    """Which model is active now; an active file naming a model that is gone counts as none made active."""
    try:
        path = bundles.resolve_model(None, runs_dir).resolve()
    except bundles.RunError:
        path = bundles.default_model().resolve()
    return ActiveModel(path, path == bundles.default_model().resolve())


def model_choices(runs_dir: str | os.PathLike | None = None) -> list[ModelChoice]:
    """The models to choose from, the active one first, then the default, then finished runs (newest first).
    Each folder appears once; folders without a complete bundle are left out."""
    choices: list[ModelChoice] = []
    seen: set[Path] = set()

    def add(path: Path, label: str, kind: str) -> None:
        resolved = path.resolve()
        if resolved not in seen and is_bundle(resolved):
            seen.add(resolved)
            choices.append(ModelChoice(label, resolved, kind))

    try:
        active = bundles.resolve_model(None, runs_dir)
    except bundles.RunError:
        active = None
    if active is not None:
        add(active, f"Active model ({active.name})", "active")
    add(bundles.default_model(), f"Default model ({bundles.default_model().name})", "default")
    for run in runs.list_runs(runs_dir):
        add(run, f"Run {run.name}", "run")
    # Bundles under the runs folder that no training run made (an ensemble, a bundle copied in), newest first
    root = Path(runs_dir) if runs_dir else bundles.default_runs_dir()
    for folder in sorted(_subfolders(root), key=lambda p: p.stat().st_mtime, reverse=True):
        add(folder, f"Model {folder.name}", "bundle")
    return choices


def list_evaluations(model: str | os.PathLike, runs_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the saved evaluations of a model folder, test ones first: its own evaluation/<name>/metrics.json,
    and those saved for it under <runs>/evaluations/ (<model>-<time>-<format>-<split>/, written by
    ``mtfer evaluate`` and the Evaluate page for bundles that are not runs, such as the shipped model)."""
    names = [p.name for p in _subfolders(Path(model) / bundles.EVALUATION_DIR) if (p / METRICS_FILE).is_file()]
    names += [p.name for p in _saved_elsewhere(model, runs_dir) if p.name not in names]
    return sorted(names, key=lambda n: (not n.endswith("-test"), n))


def evaluation_dir(model: str | os.PathLike, name: str, runs_dir: str | os.PathLike | None = None) -> Path:
    """The folder of the evaluation `name` from :func:`list_evaluations`: the model's own when it has one of
    that name, else the one under <runs>/evaluations/."""
    own = Path(model) / bundles.EVALUATION_DIR / name
    if own.is_dir():
        return own
    return next((p for p in _saved_elsewhere(model, runs_dir) if p.name == name), own)


def _subfolders(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_dir()]
    except OSError:  # missing or unreadable
        return []


def _saved_elsewhere(model: str | os.PathLike, runs_dir: str | os.PathLike | None) -> list[Path]:
    """Evaluations of `model` under <runs>/evaluations/: folders named after it whose metrics.json names it."""
    bundle = Path(model).resolve()
    root = Path(runs_dir) if runs_dir else bundles.default_runs_dir()
    found = []
    for folder in _subfolders(root / bundles.EVALUATIONS_DIR):
        if not folder.name.startswith(f"{bundle.name}-"):
            continue
        try:
            recorded = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8")).get("model")
        except (OSError, ValueError, AttributeError):  # missing, half-written or not an evaluation
            continue
        if isinstance(recorded, str) and Path(recorded).resolve() == bundle:
            found.append(folder)
    return found
