"""Background jobs: training runs as separate processes that survive reloads, stopped and resumed safely."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mtfer.core.bundles import (
    CONFIG_FILE,
    METADATA_FILE,
    RunError,
    atomic_write_json,
    default_runs_dir,
    now_iso,
    read_json,
    run_dir,
)
from mtfer.store.runs import (
    ACTIVE_STATES,
    CHILDREN,
    CHILDREN_LOCK,
    LOG_FILE,
    PROGRESS_FILE,
    list_runs,
    new_run_id,
    pid_alive,
    progress_lock,
    read_progress,
    reap_children,
    write_progress,
)


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
    with CHILDREN_LOCK:
        CHILDREN[proc.pid] = proc
    # Waited for as soon as it ends, not at the next read of its progress: no zombie in the meantime.
    threading.Thread(target=_reap_when_done, args=(proc,), name=f"mtfer-reap-{proc.pid}", daemon=True).start()
    write_progress(folder, pid=proc.pid)
    return proc


def _reap_when_done(proc: subprocess.Popen) -> None:
    proc.wait()
    reap_children()


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


EXIT_WAIT_S = 30.0  # how long a resume waits for the stopped trainer's process to end


def refuse_resuming(run: str | os.PathLike) -> None:
    """RunError when `mtfer train --resume RUN` must not train in `run`: it is finished (resuming would replace its
    model, perhaps the one people use, with a later epoch's weights) or a live trainer is at work in it (two would
    write the same checkpoints). A job that resume_job has just queued passes."""
    run = Path(run)
    if (run / METADATA_FILE).exists():
        raise RunError(
            f"run {run.name} is finished: resuming would replace its model; to train it further, start a new run "
            f"from it with --init-from {run.name}"
        )
    progress = read_progress(run)
    if (
        progress.get("state") in ("running", "stopping")
        and pid_alive(progress.get("pid"))
        and progress.get("pid") != os.getpid()
    ):
        raise RunError(f"run {run.name} is being trained now (process {progress['pid']}): stop it first")


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
        # A stopped trainer marks itself stopped, then takes a moment to exit: the new one starts only after.
        deadline = time.monotonic() + EXIT_WAIT_S
        while pid_alive(progress.get("pid")) and progress.get("pid") != os.getpid() and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(progress.get("pid")) and progress.get("pid") != os.getpid():
            raise RunError(f"run {run.name} is still shutting down (process {progress['pid']}); try again shortly")
        try:
            # A fresh start of the record: no error, stop point or position within an epoch left over from before,
            # so that nothing reads the stopped job's step as the resumed job's progress.
            stale = ("error", "stop", "stopped", "pid", "phase", "step", "eta_s")
            kept = {k: v for k, v in progress.items() if k not in stale}
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
    last complete epoch's checkpoint and history; mtfer.train.trainer)."""
    progress = read_progress(run)
    pid = progress.get("pid")
    if progress.get("state") not in ACTIVE_STATES or not pid_alive(pid):
        return False
    # "stopping" first, and only over a state that is still active: the job's own writes ("stopped", "finished")
    # must come after it, never before.
    path = Path(run) / PROGRESS_FILE
    with progress_lock(run):
        current = read_json(path)
        if current.get("state") not in ACTIVE_STATES:
            return False
        atomic_write_json(path, {**current, "state": "stopping", "heartbeat": time.time()})
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:  # ended meanwhile; read_progress reports what it left
        return False
    return True
