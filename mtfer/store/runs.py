"""Run folders and their progress: run ids and folders, progress.json (the typed Progress) written under a lock
with a heartbeat, a dead job reported as failed, log tails without TensorFlow's noise, and the training processes
this process started.

A run folder `runs/<id>/` holds config.json, model.keras + metadata.json (the bundle, mtfer.core.bundles),
history.csv, progress.json, checkpoint/ and train.log. Every file is written atomically (temp file + os.replace).
Starting, stopping and resuming jobs is mtfer.store.jobs."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from mtfer.core import quiet
from mtfer.core.bundles import (
    CONFIG_FILE,
    RUN_ID_PATTERN,
    RunError,
    atomic_write_json,
    default_runs_dir,
    read_json,
)

PROGRESS_FILE = "progress.json"
LOG_FILE = "train.log"
CHECKPOINT_DIR = "checkpoint"
STATES = ("queued", "running", "stopping", "stopped", "finished", "failed")
ACTIVE_STATES = ("queued", "running", "stopping")
# A live trainer writes progress every few seconds (steps, validation, preparation): this long without a write, it
# is reported as stalled (hung, or frozen by the system), not as running forever. Generous: a slow validation or
# the final evaluation of a big network on a busy machine writes nothing for minutes.
STALLED_S = 15 * 60
HEARTBEAT_STALE_S = 120.0


def new_run_id(label: str = "") -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower()[:40]
    return f"{stamp}-{slug}" if slug else stamp


def list_runs(runs_dir: str | os.PathLike | None = None) -> list[Path]:
    """Run folders (those with a config.json), newest first."""
    root = Path(runs_dir or default_runs_dir())
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if p.is_dir() and RUN_ID_PATTERN.match(p.name) and (p / CONFIG_FILE).exists()]
    return sorted(runs, key=lambda p: p.name, reverse=True)


@contextlib.contextmanager
def progress_lock(run: str | os.PathLike) -> Iterator[None]:
    """An exclusive lock on a run's progress.json for a read-modify-write: the job, the page that stops it and a
    reader that finds it dead each change progress.json, and none may undo another's change (a "stopped" written
    by the job must not be overwritten by a "stopping" read a moment before)."""
    import fcntl

    Path(run).mkdir(parents=True, exist_ok=True)
    with open(Path(run) / ".progress.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


class Progress(TypedDict, total=False):
    """progress.json of a run: what its job writes as it goes and the pages and `mtfer runs` read. Every key is
    optional: a job fills them in as it gets there."""

    state: str  # one of STATES
    phase: str  # "preparing", "training" or "evaluating"
    pid: int  # the training process
    starter: int  # the process that started it, until the trainer writes its own pid
    created: str
    heartbeat: float  # time.time() of the last write
    finished: str
    stopped: str
    stop: dict  # where a stopped run stopped (mtfer.train.callbacks.stop_point)
    error: str
    epoch: int
    epochs: int
    step: int
    steps: int
    eta_s: float | None
    precision: str  # the precision really used (a time estimate reads it back)
    train_faces: int
    epoch_faces: int
    metrics: dict  # the held-out evaluations' summary, once finished
    dataset: str  # while preparing: the data set, faces done and total, faces per second
    datasets: list[str]
    done: int
    total: int
    rate: float


def write_progress(run: str | os.PathLike, **fields: Any) -> Progress:
    """Merge `fields` into progress.json (atomically, under the run's progress lock) and stamp the heartbeat."""
    path = Path(run) / PROGRESS_FILE
    with progress_lock(run):
        try:
            progress = read_json(path)
        except RunError:
            progress = {}
        if progress.get("state") == "stopping" and fields.get("state") == "running":
            # A stop was asked (stop_job): the job's own "running" writes until it acts on it must not hide that.
            fields = {**fields, "state": "stopping"}
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


def read_progress(run: str | os.PathLike) -> Progress:
    """progress.json, with a dead job (killed, crashed) reported as failed instead of running forever, and a live
    one that has written nothing for STALLED_S given `stalled_s` (seconds since its last write)."""
    reap_children()
    path = Path(run) / PROGRESS_FILE
    try:
        progress = read_json(path)
    except RunError:
        return {"state": "failed", "error": f"no readable {PROGRESS_FILE} in {Path(run).name}"}
    if progress.get("state") in ACTIVE_STATES and not pid_alive(progress.get("pid") or progress.get("starter")):
        gone = "the training process is gone (killed or crashed); see the log tail"
        try:
            with progress_lock(run):
                progress = read_json(path)  # what the job wrote last, perhaps "stopped" just before it exited
                if progress.get("state") in ACTIVE_STATES:
                    progress["state"] = "failed"
                    progress.setdefault("error", gone)
                    atomic_write_json(path, progress)
        except (OSError, RunError):  # a read-only run folder: report it failed all the same
            progress["state"] = "failed"
            progress.setdefault("error", gone)
    elif progress.get("state") in ACTIVE_STATES and isinstance(progress.get("heartbeat"), int | float):
        silent = time.time() - float(progress["heartbeat"])
        if silent > STALLED_S:  # alive but silent: said, not written (it may yet go on)
            progress["stalled_s"] = round(silent)
    return progress


BEST_WEIGHTS_FILE = "best.npz"  # in a run's checkpoint/: the weights of its best validation epoch so far


def read_best_weights(checkpoint: str | os.PathLike) -> list | None:
    """The best epoch's weights that a run's checkpoint keeps (None when it keeps none): RunError, saying what to do,
    for a damaged file (numpy would suggest allow_pickle, which would only let a damaged file run code)."""
    path = Path(checkpoint) / BEST_WEIGHTS_FILE
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as best:
            return [best[f"arr_{i}"] for i in range(len(best.files))]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise RunError(
            f"{path} is damaged ({type(error).__name__}): delete it to resume from the last epoch's weights instead "
            "of the best ones, or start the run again"
        ) from None


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
# that mtfer.core.quiet.is_noise knows (absl preamble, native INFO/WARNING lines, CUDA probing errors): the same messages
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


# The training processes this process started, by pid: polled by reap_children so that an ended one does not stay
# a zombie under a long-lived server (the app) until it exits.
CHILDREN: dict[int, subprocess.Popen] = {}
CHILDREN_LOCK = threading.Lock()


def reap_children() -> list[int]:
    """Collect the exit status of every training process this process started that has ended (Popen.poll), so
    that none stays a zombie; returns their pids. Cheap: called whenever progress is read."""
    with CHILDREN_LOCK:
        ended = [pid for pid, proc in CHILDREN.items() if proc.poll() is not None]
        for pid in ended:
            del CHILDREN[pid]
    return ended
