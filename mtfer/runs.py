"""Run folders, progress files, model bundles, the active model, and background training jobs.

A run folder `runs/<id>/` holds config.json, model.keras + metadata.json (the bundle), history.csv,
progress.json, checkpoint/ and train.log. Every file is written atomically (temp file + os.replace)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = REPO_ROOT / "models" / "default"
MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
CONFIG_FILE = "config.json"
PROGRESS_FILE = "progress.json"
HISTORY_FILE = "history.csv"
LOG_FILE = "train.log"
CHECKPOINT_DIR = "checkpoint"
EVALUATION_DIR = "evaluation"
# Under the runs folder: evaluations of bundles that are not runs there (the shipped model, read-only ones).
EVALUATIONS_DIR = "evaluations"
ACTIVE_FILE = "ACTIVE"
BUNDLE_FORMAT_VERSION = 1

STATES = ("queued", "running", "stopping", "stopped", "finished", "failed")
ACTIVE_STATES = ("queued", "running", "stopping")
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
HEARTBEAT_STALE_S = 120.0


class RunError(ValueError):
    """A run, bundle or job problem with a one-line message for the user."""


# --- atomic files ------------------------------------------------------------------------------------


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
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


# --- run folders -------------------------------------------------------------------------------------


def default_runs_dir() -> Path:
    return Path(os.environ.get("MTFER_RUNS", "runs")).resolve()


def validate_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.match(run_id) or ".." in run_id:
        raise RunError(f"invalid run id {run_id!r}: use letters, digits, '-', '_' and '.' only")
    return run_id


def new_run_id(label: str = "") -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower()[:40]
    return f"{stamp}-{slug}" if slug else stamp


def run_dir(run_id: str, runs_dir: str | os.PathLike | None = None) -> Path:
    return Path(runs_dir or default_runs_dir()) / validate_run_id(run_id)


def list_runs(runs_dir: str | os.PathLike | None = None) -> list[Path]:
    """Run folders (those with a config.json), newest first."""
    root = Path(runs_dir or default_runs_dir())
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if p.is_dir() and RUN_ID_PATTERN.match(p.name) and (p / CONFIG_FILE).exists()]
    return sorted(runs, key=lambda p: p.name, reverse=True)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextlib.contextmanager
def _progress_lock(run: str | os.PathLike) -> Iterator[None]:
    """An exclusive lock on a run's progress.json for a read-modify-write: the job, the page that stops it and a
    reader that finds it dead each change progress.json, and none may undo another's change (a "stopped" written
    by the job must not be overwritten by a "stopping" read a moment before)."""
    import fcntl

    Path(run).mkdir(parents=True, exist_ok=True)
    with open(Path(run) / ".progress.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def write_progress(run: str | os.PathLike, **fields: Any) -> dict:
    """Merge `fields` into progress.json (atomically, under the run's progress lock) and stamp the heartbeat."""
    path = Path(run) / PROGRESS_FILE
    with _progress_lock(run):
        try:
            progress = read_json(path)
        except RunError:
            progress = {}
        progress.update(fields)
        if progress.get("state") not in STATES:
            raise RunError(f"unknown run state {progress.get('state')!r}")
        progress["heartbeat"] = time.time()
        atomic_write_json(path, progress)
    return progress


def pid_alive(pid: int | None) -> bool:
    """True when `pid` is a live process (a zombie counts as dead; its exit is reaped if it is our child)."""
    if not pid:
        return False
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def read_progress(run: str | os.PathLike) -> dict:
    """progress.json, with a dead job (killed, crashed) reported as failed instead of running forever."""
    reap_children()
    path = Path(run) / PROGRESS_FILE
    try:
        progress = read_json(path)
    except RunError:
        return {"state": "failed", "error": f"no readable {PROGRESS_FILE} in {Path(run).name}"}
    if progress.get("state") in ACTIVE_STATES and not pid_alive(progress.get("pid") or progress.get("starter")):
        gone = "the training process is gone (killed or crashed); see the log tail"
        try:
            with _progress_lock(run):
                progress = read_json(path)  # what the job wrote last, perhaps "stopped" just before it exited
                if progress.get("state") in ACTIVE_STATES:
                    progress["state"] = "failed"
                    progress.setdefault("error", gone)
                    atomic_write_json(path, progress)
        except (OSError, RunError):  # a read-only run folder: report it failed all the same
            progress["state"] = "failed"
            progress.setdefault("error", gone)
    return progress


def log_tail(run: str | os.PathLike, lines: int = 30, *, clean: bool = False) -> str:
    """The last `lines` lines of the run's train.log; `clean`: without TensorFlow's start-up noise (clean_log)."""
    path = Path(run) / LOG_FILE
    if not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64_000))
        text = f.read().decode("utf-8", errors="replace")
    kept = clean_log(text.splitlines()) if clean else text.splitlines()
    return "\n".join(kept[-lines:])


# TensorFlow's and Keras' start-up lines that tell a person nothing they can act on, beyond the native log records
# that mtfer.quiet.is_noise knows (absl preamble, native INFO/WARNING lines, CUDA probing errors): the same messages
# in other shapes, Python's absl logging, a Keras warning about shuffling a tf.data pipeline, and the bare "{}" that
# `mtfer train` printed for a run without metrics (a stopped one).
_LOG_NOISE = re.compile(
    r"failed call to cuInit|Could not find cuda drivers|oneDNN custom operations are on"
    r"|TF_ENABLE_ONEDNN_OPTS|This TensorFlow binary is optimized|rebuild TensorFlow with the appropriate compiler"
    r"|Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered|TF-TRT Warning"
    r"|`shuffle=True` was passed, but will be ignored|^(INFO|WARNING|DEBUG|ERROR):absl:|^\{\}$"
)
# A line that belongs to the record before it: indented (a warning's source line, a traceback's body) or the second
# line of the CPU-instructions notice.
_CONTINUATION = re.compile(r"^(\s+\S|To enable the following instructions:)")


def clean_log(lines: Iterable[str]) -> list[str]:
    """A log's lines without TensorFlow's start-up noise (see _LOG_NOISE) and the continuation lines of a noise
    record; everything else is kept, in order. The log file itself is left as it is."""
    from mtfer import quiet

    kept: list[str] = []
    dropping = False
    for line in lines:
        text = line.rstrip("\r\n")
        if dropping and _CONTINUATION.match(text):
            continue
        dropping = quiet.is_noise(text) or bool(_LOG_NOISE.search(text.strip()))
        if not dropping:
            kept.append(text)
    return kept


# --- bundles -----------------------------------------------------------------------------------------


@dataclass
class Bundle:
    """A trained model with the metadata that travels with it (tasks, classes, input size, preprocessing)."""

    path: Path
    model: Any  # keras.Model
    metadata: dict

    @property
    def tasks(self) -> list[str]:
        return list(self.metadata["tasks"])

    @property
    def input_size(self) -> int:
        return int(self.metadata["input"]["size"])


def validate_metadata(metadata: dict, where: str = "metadata.json") -> dict:
    from mtfer.tasks import TASKS

    tasks = metadata.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise RunError(f"{where}: 'tasks' must map task names to class lists")
    for name, classes in tasks.items():
        if name not in TASKS:
            raise RunError(f"{where}: unknown task {name!r}")
        if list(classes) != list(TASKS[name].classes):
            raise RunError(f"{where}: {name} classes {classes} differ from this version's {list(TASKS[name].classes)}")
    size = metadata.get("input", {}).get("size") if isinstance(metadata.get("input"), dict) else None
    if not isinstance(size, int) or size < 8:
        raise RunError(f"{where}: 'input.size' must be an integer >= 8")
    if not isinstance(metadata.get("preprocessing"), dict):
        raise RunError(f"{where}: 'preprocessing' settings are missing")
    return metadata


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Load model.keras + metadata.json (Keras safe mode: no arbitrary code) and check they agree."""
    import keras

    path = Path(path)
    if not path.is_dir():
        raise RunError(f"model bundle {path} not found (expected a folder with {MODEL_FILE} and {METADATA_FILE})")
    metadata = validate_metadata(read_json(path / METADATA_FILE), str(path / METADATA_FILE))
    model_path = path / MODEL_FILE
    if not model_path.exists():
        raise RunError(f"{path} has no {MODEL_FILE} (training not finished?)")
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
    return Bundle(path, model, metadata)


def save_bundle(model: Any, metadata: dict, path: str | os.PathLike) -> None:
    """Write model.keras (weights and architecture, no optimizer state: a bundle is for inference; the run's
    checkpoint keeps the optimizer) then metadata.json, each atomically: a bundle with metadata is always complete."""
    import keras

    path = Path(path)
    validate_metadata(metadata)
    try:
        inference_model = keras.Model.from_config(model.get_config())
        inference_model.set_weights(model.get_weights())
    except (ValueError, TypeError):  # a layer that will not rebuild from its config: save the model as it is
        inference_model = model
    with atomic_path(path / MODEL_FILE) as tmp:
        inference_model.save(tmp)
    atomic_write_json(path / METADATA_FILE, metadata)


def active_model_file(runs_dir: str | os.PathLike | None = None) -> Path:
    return Path(runs_dir or default_runs_dir()) / ACTIVE_FILE


def set_active_model(bundle_path: str | os.PathLike, runs_dir: str | os.PathLike | None = None) -> None:
    path = Path(bundle_path).resolve()
    validate_metadata(read_json(path / METADATA_FILE), str(path / METADATA_FILE))
    atomic_write_text(active_model_file(runs_dir), str(path) + "\n")


def resolve_model(spec: str | os.PathLike | None = None, runs_dir: str | os.PathLike | None = None) -> Path:
    """A bundle folder from 'default', 'active' (or None), a run id, or a path."""
    if spec in (None, "", "active"):
        active = active_model_file(runs_dir)
        if active.exists():
            path = Path(active.read_text(encoding="utf-8").strip())
            if (path / METADATA_FILE).exists():
                return path
        return Path(os.environ.get("MTFER_MODEL", DEFAULT_BUNDLE))
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


# --- background jobs ---------------------------------------------------------------------------------


def active_jobs(runs_dir: str | os.PathLike | None = None) -> list[Path]:
    return [r for r in list_runs(runs_dir) if read_progress(r).get("state") in ACTIVE_STATES]


@contextlib.contextmanager
def _start_lock(runs_dir: Path) -> Iterator[None]:
    """An exclusive lock on the runs folder, released when the block ends (or its process dies)."""
    import fcntl

    with open(runs_dir / ".start.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def start_job(config: dict, runs_dir: str | os.PathLike | None = None, *, allow_concurrent: bool = False) -> Path:
    """Start `mtfer train --config` as a separate process (own session: survives page reloads and closed
    browsers). Returns the run folder; progress.json holds the pid."""
    runs_dir = Path(runs_dir or default_runs_dir())
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        probe = runs_dir / f".write-test-{os.getpid()}-{threading.get_ident()}"  # one per caller: no races
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise RunError(f"cannot write to the runs folder {runs_dir}: {exc.strerror or exc}") from None
    with _start_lock(runs_dir):  # two sessions pressing Start at the same moment start one job, not two
        if not allow_concurrent and (busy := active_jobs(runs_dir)):
            raise RunError(f"a training job is already running ({busy[0].name}); stop it or wait for it to finish")
        run_id = config.get("run_id") or new_run_id(config.get("name", ""))
        folder = run_dir(run_id, runs_dir)
        if folder.exists():
            raise RunError(f"run {run_id} already exists")
        config = {**config, "run_id": run_id}
        try:
            atomic_write_json(folder / CONFIG_FILE, config)
            # Until the child's pid is known, the starting process stands for it (another session reading this
            # progress.json meanwhile must not take the job for dead).
            write_progress(folder, state="queued", epoch=0, created=now_iso(), starter=os.getpid())
            log = open(folder / LOG_FILE, "ab")  # noqa: SIM115 - handed to the child
        except OSError as exc:  # the disk filled up, or the folder became read-only, since the probe
            raise RunError(f"cannot write run {run_id} in {runs_dir}: {exc.strerror or exc}") from None
        _launch(folder, log, ["--run-dir", str(folder), "--config", str(folder / CONFIG_FILE)])
        return folder


# The training processes this process started, by pid: polled by reap_children so that an ended one does not stay
# a zombie under a long-lived server (the app) until it exits.
_CHILDREN: dict[int, subprocess.Popen] = {}
_CHILDREN_LOCK = threading.Lock()


def reap_children() -> list[int]:
    """Collect the exit status of every training process this process started that has ended (Popen.poll), so
    that none stays a zombie; returns their pids. Cheap: called whenever progress is read."""
    with _CHILDREN_LOCK:
        ended = [pid for pid, proc in _CHILDREN.items() if proc.poll() is not None]
        for pid in ended:
            del _CHILDREN[pid]
    return ended


def _launch(folder: Path, log: Any, args: list[str]) -> subprocess.Popen:
    """Start `mtfer train ARGS` for the run `folder` in its own session, output appended to `log` (an open file,
    closed here); progress.json gets the pid. RunError (progress.json: failed) when it cannot start."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "mtfer.cli", "train", *args]
    try:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=os.getcwd()
        )
    except OSError as exc:
        with contextlib.suppress(OSError, RunError):
            write_progress(folder, state="failed", error=f"could not start the trainer: {exc.strerror or exc}")
        raise RunError(f"could not start the training process: {exc.strerror or exc}") from None
    finally:
        log.close()
    with _CHILDREN_LOCK:
        _CHILDREN[proc.pid] = proc
    write_progress(folder, pid=proc.pid)
    return proc


def can_resume(run: str | os.PathLike, progress: dict | None = None) -> bool:
    """A stopped run, or a failed one (killed, crashed), that has its config and no finished model: resume_job
    continues it from its last complete epoch (or starts it again when no epoch was complete)."""
    run = Path(run)
    progress = read_progress(run) if progress is None else progress
    return (
        progress.get("state") in ("stopped", "failed")
        and (run / CONFIG_FILE).is_file()
        and not (run / METADATA_FILE).exists()
    )


def resume_job(run: str | os.PathLike, runs_dir: str | os.PathLike | None = None) -> Path:
    """Continue a stopped (or failed) run as a background job, `mtfer train --resume RUN`, in the same run folder.
    RunError when another job runs or the run cannot be resumed (can_resume)."""
    run = Path(run)
    runs_dir = Path(runs_dir) if runs_dir else run.parent
    with _start_lock(runs_dir):
        if busy := active_jobs(runs_dir):
            raise RunError(f"a training job is already running ({busy[0].name}); stop it or wait for it to finish")
        progress = read_progress(run)
        if not can_resume(run, progress):
            raise RunError(f"run {run.name} cannot be resumed (it is {progress.get('state', 'unknown')})")
        try:
            # A fresh start of the record: no error or stop point left over from before.
            kept = {k: v for k, v in progress.items() if k not in ("error", "stop", "stopped", "pid", "phase")}
            atomic_write_json(run / PROGRESS_FILE, {**kept, "state": "queued", "starter": os.getpid()})
            log = open(run / LOG_FILE, "ab")  # noqa: SIM115 - handed to the child
            log.write(f"--- resumed {now_iso()} ---\n".encode())
            log.flush()
        except OSError as exc:
            raise RunError(f"cannot write run {run.name}: {exc.strerror or exc}") from None
        _launch(run, log, ["--resume", str(run)])
        return run


def stop_job(run: str | os.PathLike) -> bool:
    """Ask a running job to stop gracefully (SIGTERM: it finishes the step and marks itself stopped, keeping the
    last complete epoch's checkpoint and history; mtfer.training)."""
    progress = read_progress(run)
    pid = progress.get("pid")
    if progress.get("state") not in ACTIVE_STATES or not pid_alive(pid):
        return False
    # "stopping" first, and only over a state that is still active: the job's own writes ("stopped", "finished")
    # must come after it, never before.
    path = Path(run) / PROGRESS_FILE
    with _progress_lock(run):
        current = read_json(path)
        if current.get("state") not in ACTIVE_STATES:
            return False
        atomic_write_json(path, {**current, "state": "stopping", "heartbeat": time.time()})
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:  # ended meanwhile; read_progress reports what it left
        return False
    return True
