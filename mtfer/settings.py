"""Where the app finds data sets and models: the configured data roots, the data sets found under them, the models
(bundles) to choose from and their evaluations. Pure functions, no Streamlit."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mtfer import runs
from mtfer.datasets import FORMATS, read_dataset
from mtfer.evaluation import METRICS_FILE
from mtfer.tasks import TASK_NAMES

if TYPE_CHECKING:
    from mtfer.video import VideoLimits

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

    format: str  # one of mtfer.datasets.FORMATS
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


# --- videos: how much of one is analysed -----------------------------------------------------------------------

ENV_VIDEO_MAX_SECONDS = "MTFER_VIDEO_MAX_SECONDS"
ENV_VIDEO_MAX_FRAMES = "MTFER_VIDEO_MAX_FRAMES"


def video_limits(env: Mapping[str, str] | None = None) -> VideoLimits:
    """The caps on one video's analysis (mtfer.video.VideoLimits): $MTFER_VIDEO_MAX_SECONDS seconds from its start
    (default 600) and $MTFER_VIDEO_MAX_FRAMES analysed frames (default 3000). A value that is not a positive number:
    ValueError naming the variable."""
    from mtfer.video import DEFAULT_MAX_FRAMES, DEFAULT_MAX_SECONDS, VideoLimits

    env = os.environ if env is None else env
    values: dict[str, float] = {}
    for name, default, key in (
        (ENV_VIDEO_MAX_SECONDS, DEFAULT_MAX_SECONDS, "max_seconds"),
        (ENV_VIDEO_MAX_FRAMES, DEFAULT_MAX_FRAMES, "max_frames"),
    ):
        text = env.get(name, "").strip()
        try:
            value = float(text) if text else float(default)
        except ValueError:
            value = float("nan")
        if not value > 0 or not value < float("inf") or (key == "max_frames" and value != int(value)):
            raise ValueError(f"{name} must be a positive {'whole ' if key == 'max_frames' else ''}number, got {text!r}")
        values[key] = value
    return VideoLimits(max_seconds=values["max_seconds"], max_frames=int(values["max_frames"]))


# --- models -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelChoice:
    label: str
    path: Path
    kind: str  # "active", "default" or "run"

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
    return (path / runs.MODEL_FILE).is_file() and (path / runs.METADATA_FILE).is_file()


def default_model_path() -> Path:
    """The model used when none was made active: $MTFER_MODEL, else the shipped models/default."""
    return Path(os.environ.get("MTFER_MODEL") or runs.DEFAULT_BUNDLE)


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
        active = runs.resolve_model(None, runs_dir)
    except runs.RunError:
        active = None
    if active is not None:
        add(active, f"Active model ({active.name})", "active")
    add(default_model_path(), f"Default model ({default_model_path().name})", "default")
    for run in runs.list_runs(runs_dir):
        add(run, f"Run {run.name}", "run")
    return choices


def list_evaluations(model: str | os.PathLike, runs_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the saved evaluations of a model folder, test ones first: its own evaluation/<name>/metrics.json,
    and those saved for it under <runs>/evaluations/ (<model>-<time>-<format>-<split>/, written by
    ``mtfer evaluate`` and the Evaluate page for bundles that are not runs, such as the shipped model)."""
    names = [p.name for p in _subfolders(Path(model) / runs.EVALUATION_DIR) if (p / METRICS_FILE).is_file()]
    names += [p.name for p in _saved_elsewhere(model, runs_dir) if p.name not in names]
    return sorted(names, key=lambda n: (not n.endswith("-test"), n))


def evaluation_dir(model: str | os.PathLike, name: str, runs_dir: str | os.PathLike | None = None) -> Path:
    """The folder of the evaluation `name` from :func:`list_evaluations`: the model's own when it has one of
    that name, else the one under <runs>/evaluations/."""
    own = Path(model) / runs.EVALUATION_DIR / name
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
    root = Path(runs_dir) if runs_dir else runs.default_runs_dir()
    found = []
    for folder in _subfolders(root / runs.EVALUATIONS_DIR):
        if not folder.name.startswith(f"{bundle.name}-"):
            continue
        try:
            recorded = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8")).get("model")
        except (OSError, ValueError, AttributeError):  # missing, half-written or not an evaluation
            continue
        if isinstance(recorded, str) and Path(recorded).resolve() == bundle:
            found.append(folder)
    return found


# --- live camera: WebRTC's STUN/TURN servers --------------------------------------------------------------------

ENV_ICE_SERVERS = "MTFER_ICE_SERVERS"
ENV_TURN_USERNAME = "MTFER_TURN_USERNAME"
ENV_TURN_CREDENTIAL = "MTFER_TURN_CREDENTIAL"
ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")


def ice_servers(env: Mapping[str, str] | None = None) -> list[dict]:
    """The STUN/TURN servers the live camera's WebRTC connection may use; none by default, so that nothing outside
    this machine is contacted (the browser and the app, on one machine or one network, connect directly).

    $MTFER_ICE_SERVERS: comma-separated URLs (``stun:stun.example.org:3478,turn:turn.example.org:3478``); TURN URLs
    get $MTFER_TURN_USERNAME and $MTFER_TURN_CREDENTIAL. Or a JSON list of RTCIceServer objects
    (``[{"urls": ["turn:..."], "username": "...", "credential": "..."}]``). Anything else: ValueError."""
    env = os.environ if env is None else env
    text = env.get(ENV_ICE_SERVERS, "").strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            servers = json.loads(text)
        except ValueError as e:
            raise ValueError(f"{ENV_ICE_SERVERS} is not valid JSON: {e}") from None
        if not isinstance(servers, list) or not all(isinstance(s, dict) and s.get("urls") for s in servers):
            raise ValueError(f'{ENV_ICE_SERVERS}: a JSON value must be a list of {{"urls": ..., ...}} objects')
        for server in servers:
            urls = server["urls"] if isinstance(server["urls"], list) else [server["urls"]]
            _check_ice_urls(urls)
        return servers
    urls = [u.strip() for u in text.split(",") if u.strip()]
    _check_ice_urls(urls)
    username, credential = env.get(ENV_TURN_USERNAME, ""), env.get(ENV_TURN_CREDENTIAL, "")
    stun = [u for u in urls if u.startswith(("stun:", "stuns:"))]
    turn = [u for u in urls if u.startswith(("turn:", "turns:"))]
    if turn and not (username and credential):
        raise ValueError(f"TURN servers need {ENV_TURN_USERNAME} and {ENV_TURN_CREDENTIAL} to be set")
    servers: list[dict] = [{"urls": stun}] if stun else []
    if turn:
        servers.append({"urls": turn, "username": username, "credential": credential})
    return servers


def _check_ice_urls(urls: Sequence[object]) -> None:
    for url in urls:
        if not isinstance(url, str) or not url.startswith(ICE_SCHEMES) or len(url.split(":", 1)[1]) < 1:
            raise ValueError(
                f"{ENV_ICE_SERVERS}: {url!r} is not a STUN/TURN URL; expected e.g. stun:stun.example.org:3478 or "
                "turn:turn.example.org:3478?transport=tcp"
            )


def rtc_configuration(env: Mapping[str, str] | None = None) -> dict:
    """The WebRTC configuration of the browser and of the server: {"iceServers": ice_servers(env)} (an explicit
    empty list: streamlit-webrtc would otherwise fill in public STUN servers)."""
    return {"iceServers": ice_servers(env)}
