"""A model bundle: the network and the metadata that travels with it (tasks, classes, preprocessing,
calibration, metrics), loaded and saved whole; and the atomic writes every file of the project goes through."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import json
import logging
import os
import re
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mtfer.core import convert, quiet
from mtfer.core.tasks import LEGACY_CLASSES, TASKS

REPO_ROOT = Path(__file__).resolve().parents[2]  # mtfer/core/bundles.py -> the checkout (or site-packages)
METADATA_FILE = "metadata.json"


def _shipped_bundle() -> Path:
    """The shipped model: models/default of this checkout, or of the installed wheel (the package data of
    `mtfer.shipped`, which is the repository's models/ folder)."""
    checkout = REPO_ROOT / "models" / "default"
    if (checkout / METADATA_FILE).is_file():
        return checkout
    try:
        return Path(str(importlib.resources.files("mtfer.shipped") / "default"))
    except ModuleNotFoundError:
        return checkout


DEFAULT_BUNDLE = _shipped_bundle()
MODEL_FILE = "model.keras"
# The same network for LiteRT, in float32: what serves predictions, without importing TensorFlow (seconds saved on
# every start, and about twice as fast per face). Written beside model.keras by save_bundle; a bundle without it
# (older, or where the conversion failed) is served by Keras.
SERVING_FILE = "model.tflite"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
EVALUATION_DIR = "evaluation"
METRICS_FILE = "metrics.json"  # an evaluation folder is one that holds this file


# Under the runs folder: evaluations of bundles that are not runs there (the shipped model, read-only ones).
EVALUATIONS_DIR = "evaluations"
BUNDLE_FORMAT_VERSION = 1


class RunError(ValueError):
    """A run, bundle or job problem with a one-line message for the user."""


def umask() -> int:
    """The process's umask, read without changing it (os.umask would, for a moment, in every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _as_created(path: str | os.PathLike) -> None:
    """The permissions a plain open() would have given (0666 less the umask): a temporary file is private (0600),
    and the file it becomes is not a secret."""
    os.chmod(path, 0o666 & ~umask())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        _as_created(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix) to write to; it replaces `path` on success only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix or ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        _as_created(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RunError(f"{path} should hold a JSON object")
    return data


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


_KERAS_LOAD = threading.Lock()


@dataclass
class Bundle:
    """A trained model with the metadata that travels with it (tasks, classes, input size, preprocessing)."""

    path: Path
    keras_model: Any  # keras.Model; None until `model` is first asked for, when the bundle has a SERVING_FILE
    metadata: dict

    @property
    def model(self) -> Any:
        """The Keras model, loaded on first use when the bundle is served from its LiteRT file: training,
        evaluation, Grad-CAM and exports need it; predictions do not."""
        if self.keras_model is None:
            with _KERAS_LOAD:
                if self.keras_model is None:
                    self.keras_model = _load_keras(self.path, self.metadata)
        return self.keras_model

    @property
    def serving_file(self) -> Path | None:
        """The bundle's LiteRT file (SERVING_FILE) when its metadata records one, else None. (Whether the file is the
        one recorded, by its sha256, is checked when it is read: mtfer.core.backends.serving_bytes.)"""
        file = self.path / SERVING_FILE
        return file if isinstance(self.metadata.get(SERVING_KEY), dict) and file.is_file() else None

    @property
    def tasks(self) -> list[str]:
        return list(self.metadata["tasks"])

    @property
    def input_size(self) -> int:
        return int(self.metadata["input"]["size"])


def validate_metadata(metadata: dict, where: str = "metadata.json") -> dict:

    tasks = metadata.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise RunError(f"{where}: 'tasks' must map task names to class lists")
    for name, classes in tasks.items():
        if name not in TASKS:
            raise RunError(f"{where}: unknown task {name!r}")
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise RunError(f"{where}: 'tasks.{name}' must be a list of class names, got {json.dumps(classes)[:80]}")
        if list(classes) != list(TASKS[name].classes) and tuple(classes) != LEGACY_CLASSES.get(name):
            raise RunError(f"{where}: {name} classes {classes} differ from this version's {list(TASKS[name].classes)}")
    size = metadata.get("input", {}).get("size") if isinstance(metadata.get("input"), dict) else None
    if not isinstance(size, int) or size < 8:
        raise RunError(f"{where}: 'input.size' must be an integer >= 8")
    if not isinstance(metadata.get("preprocessing"), dict):
        raise RunError(f"{where}: 'preprocessing' settings are missing")
    return metadata


def load_bundle(path: str | os.PathLike, keras: bool = False) -> Bundle:
    """A bundle's metadata.json, checked, and its model: model.keras loaded now (Keras safe mode: no arbitrary
    code), or on first use when the bundle has a LiteRT file to serve from and `keras` is not asked for (then no
    TensorFlow is imported: mtfer.core.backends.LiteNetwork checks that file against the metadata)."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"model bundle {path} not found (expected a folder with {MODEL_FILE} and {METADATA_FILE})")
    metadata = validate_metadata(read_json(path / METADATA_FILE), str(path / METADATA_FILE))
    model_path = path / MODEL_FILE
    if not model_path.exists():
        raise RunError(f"{path} has no {MODEL_FILE} (training not finished?)")
    if not zipfile.is_zipfile(model_path):  # Keras would call a damaged archive "File not found"
        raise RunError(f"{model_path} is damaged (not a Keras model archive): copy the bundle again or retrain it")
    bundle = Bundle(path, None, metadata)
    if keras or bundle.serving_file is None:
        bundle.keras_model = _load_keras(path, metadata)
    return bundle


def _load_keras(path: Path, metadata: dict) -> Any:
    """model.keras of a bundle, checked against its metadata (heads, classes, input size)."""
    quiet.import_tensorflow()  # the first load in a process (the app's too) prints no GPU-probing noise
    import keras

    model_path = path / MODEL_FILE
    try:
        model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    except Exception as exc:  # keras raises many types for a bad file
        raise RunError(f"could not load {model_path}: {str(exc).splitlines()[0][:200]}") from None
    outputs = model.output if isinstance(model.output, dict) else {}
    if sorted(outputs) != sorted(metadata["tasks"]):
        raise RunError(f"{model_path} heads {sorted(outputs)} do not match metadata tasks {sorted(metadata['tasks'])}")
    for name, classes in metadata["tasks"].items():
        if outputs[name].shape[-1] != len(classes):
            raise RunError(f"{model_path}: head {name} has {outputs[name].shape[-1]} outputs, expected {len(classes)}")
    if tuple(model.input.shape[1:3]) != (metadata["input"]["size"],) * 2:
        raise RunError(f"{model_path}: input {tuple(model.input.shape[1:])} does not match metadata input size")
    return model


def save_bundle(model: Any, metadata: dict, path: str | os.PathLike) -> None:
    """Write model.keras (weights and architecture, no optimizer state: a bundle is for inference; the run's
    checkpoint keeps the optimizer), its LiteRT copy (write_serving_file) then metadata.json, each atomically: a
    bundle with metadata is always complete."""
    import keras

    path = Path(path)
    validate_metadata(metadata)
    try:
        inference_model = keras.Model.from_config(model.get_config())
        inference_model.set_weights(model.get_weights())
    except (ValueError, TypeError):  # a layer that will not rebuild from its config: save the model as it is
        inference_model = model
    with contextlib.suppress(FileNotFoundError):  # an older network's LiteRT file must never serve the new one
        (path / SERVING_FILE).unlink()
    with atomic_path(path / MODEL_FILE) as tmp:
        inference_model.save(tmp)
    metadata.pop(SERVING_KEY, None)
    if (digest := write_serving_file(inference_model, path)) is not None:
        metadata[SERVING_KEY] = {"file": SERVING_FILE, "sha256": digest}
    atomic_write_json(path / METADATA_FILE, metadata)


SERVING_KEY = "serving"  # metadata.json: {"file": SERVING_FILE, "sha256": its digest}, to serve only that file


def write_serving_file(model: Any, path: str | os.PathLike) -> str | None:
    """The bundle's SERVING_FILE from its Keras model (float32, LiteRT), returning its sha256 for the metadata; None,
    with a warning in the log, where it cannot be made (no LiteRT here, a layer the converter does not know): the
    bundle is then served by Keras."""
    try:
        data = convert.tflite_bytes(model)
    except (convert.ExportError, ImportError) as error:
        logging.getLogger(__name__).warning("no %s for %s (served by Keras): %s", SERVING_FILE, path, error)
        return None
    with atomic_path(Path(path) / SERVING_FILE) as tmp:
        tmp.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


ACTIVE_FILE = "ACTIVE"
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def default_runs_dir() -> Path:
    return Path(os.environ.get("MTFER_RUNS", "runs")).resolve()


def validate_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.match(run_id) or ".." in run_id:
        raise RunError(f"invalid run id {run_id!r}: use letters, digits, '-', '_' and '.' only")
    return run_id


def run_dir(run_id: str, runs_dir: str | os.PathLike | None = None) -> Path:
    return Path(runs_dir or default_runs_dir()) / validate_run_id(run_id)


def active_model_file(runs_dir: str | os.PathLike | None = None) -> Path:
    return Path(runs_dir or default_runs_dir()) / ACTIVE_FILE


def set_active_model(bundle_path: str | os.PathLike, runs_dir: str | os.PathLike | None = None) -> None:
    path = Path(bundle_path).resolve()
    validate_metadata(read_json(path / METADATA_FILE), str(path / METADATA_FILE))
    atomic_write_text(active_model_file(runs_dir), str(path) + "\n")


def clear_active_model(runs_dir: str | os.PathLike | None = None) -> None:
    """Back to the model used when none was made active (:func:`default_model`: the shipped one)."""
    active_model_file(runs_dir).unlink(missing_ok=True)


ENV_MODEL = "MTFER_MODEL"


def default_model() -> Path:
    """The model used when none was made active: $MTFER_MODEL, else the shipped models/default (an empty
    $MTFER_MODEL counts as unset, so that `MTFER_MODEL= mtfer ...` never means the current folder)."""
    return Path(os.environ.get(ENV_MODEL) or DEFAULT_BUNDLE)


def resolve_model(spec: str | os.PathLike | None = None, runs_dir: str | os.PathLike | None = None) -> Path:
    """A bundle folder from 'default', 'active' (or None), a run id, or a path."""
    if spec in (None, "", "active"):
        active = active_model_file(runs_dir)
        if active.exists():
            path = Path(active.read_text(encoding="utf-8").strip())
            if (path / METADATA_FILE).exists():
                return path
        return default_model()
    if spec == "default":
        return DEFAULT_BUNDLE
    path = Path(spec)
    if path.is_dir():
        return path
    if RUN_ID_PATTERN.match(str(spec)):
        candidate = Path(runs_dir or default_runs_dir()) / str(spec)
        if candidate.is_dir():
            return candidate
    raise RunError(
        f"no model {str(spec)!r}: give 'default', a run id under {runs_dir or default_runs_dir()}, or a folder"
    )
