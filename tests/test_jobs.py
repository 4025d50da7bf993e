"""Training jobs as the Train page runs them: preparation progress in progress.json, where a stop took effect and
what it keeps, resuming, reaping ended child processes, and the log tail without TensorFlow's start-up noise.
Every run folder is made in tmp."""

from __future__ import annotations

import os
import subprocess
import time

import pandas as pd
import pytest
from helpers import tiny_splits, write_fer_tree

from mtfer.app import job_view
from mtfer.core import bundles
from mtfer.store import jobs, runs
from mtfer.train import callbacks, trainer
from mtfer.train.callbacks import PreparationProgress, StopRequested, TrainingStopped
from mtfer.train.config import TrainConfig
from mtfer.train.pipeline import load_prepared
from mtfer.train.trainer import train

# --- preparation progress -------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_preparation_progress_gives_faces_rate_and_time_left():
    clock, written = FakeClock(), []
    stop = StopRequested()
    progress = PreparationProgress(
        "run", ["fer2013", "utkface"], stop, interval=1.0, clock=clock, write=lambda run, **f: written.append(f)
    )
    progress(0, 0, 0)  # fer2013's turn: reading it, or loading it from the cache
    assert written[-1] == {
        "state": "running",
        "phase": "preparing",
        "dataset": "fer2013",
        "dataset_index": 1,
        "datasets": 2,
        "done": 0,
        "total": 0,
        "rate": None,
        "eta_s": None,
    }
    progress(0, 0, 1000)  # prepare() starts framing
    clock.now += 2.0
    progress(0, 200, 1000)
    assert (written[-1]["done"], written[-1]["rate"], written[-1]["eta_s"]) == (200, 100.0, 8)
    clock.now += 0.5
    progress(0, 250, 1000)  # within a second of the last write: not written
    assert written[-1]["done"] == 200
    clock.now += 0.1
    progress(0, 1000, 1000)  # the end of a data set is always written
    assert (written[-1]["done"], written[-1]["eta_s"]) == (1000, 0)
    status = job_view.job_status({**written[-2], "epochs": 3})
    assert status.headline == (
        "Preparing fer2013 (1 of 2), the first time only: 200 of 1,000 faces · 100 faces/s · under a minute left"
    )
    assert status.fraction == pytest.approx(0.2) and status.active
    assert job_view.job_status({**written[0], "epochs": 3}).headline == "Loading fer2013 (1 of 2) ..."
    stop.flag = True
    with pytest.raises(TrainingStopped):
        progress(1, 10, 2000)


def test_load_prepared_reports_each_data_set(tmp_path, monkeypatch):
    monkeypatch.setenv("MTFER_CACHE", str(tmp_path / "cache"))
    fer = write_fer_tree(tmp_path / "fer", per_class=3)
    config = TrainConfig(datasets=[{"format": "fer2013", "root": str(fer)}], preprocessing="haar")
    calls: list[tuple[int, int, int]] = []
    load_prepared(config, lambda index, done, total: calls.append((index, done, total)))
    assert calls[0] == (0, 0, 0) and calls[1] == (0, 0, 42) and calls[-1] == (0, 42, 42)
    calls.clear()
    load_prepared(config, lambda index, done, total: calls.append((index, done, total)))
    assert calls == [(0, 0, 0)]  # loaded from the cache: nothing to frame


# --- stop and resume ------------------------------------------------------------------------------------------


def stop_at(monkeypatch, epoch: int | None, batch: int | str | None) -> None:
    """Make the next train() receive a stop (as SIGTERM would) in 0-based `epoch` after step `batch` + 1, or during
    that epoch's validation when `batch` is None, or once model.fit has returned when `batch` is "end"."""
    real = callbacks.callback_classes

    def patched():
        RunCallback, AfterEpoch = real()

        class StopThere(RunCallback):
            def on_train_batch_end(self, b, logs=None):
                if batch is not None and (self.epoch, b) == (epoch, batch):
                    self.stop.flag = True
                super().on_train_batch_end(b, logs)

            def on_epoch_end(self, e, logs=None):
                if batch is None and e == epoch:
                    self.stop.flag = True
                super().on_epoch_end(e, logs)

            def on_train_end(self, logs=None):
                if batch == "end":  # a SIGTERM landing between the last epoch and the evaluation
                    self.stop.flag = True

        return StopThere, AfterEpoch

    monkeypatch.setattr(trainer, "callback_classes", patched)  # where the trainer looks it up


CONFIG = {"architecture": "fast", "epochs": 3, "batch_size": 16, "augment": False, "precision": "float32"}


@pytest.mark.parametrize(
    ("epoch", "batch", "completed", "headline"),
    [
        (1, 1, 1, "Stopped during epoch 2 at step 2 of 4; epoch 1 complete; Resume continues from epoch 2."),
        (0, 2, 0, "Stopped during epoch 1 at step 3 of 4; no epoch complete yet; Resume starts again from epoch 1."),
        (1, None, 2, "Stopped after epoch 2; epochs 1-2 complete; Resume continues from epoch 3."),
        (None, "end", 3, "Stopped after epoch 3; epochs 1-3 complete; Resume evaluates and saves the model."),
    ],
)
def test_a_stop_keeps_complete_epochs_only_and_resume_continues_after_them(
    tmp_path, monkeypatch, epoch, batch, completed, headline
):
    run = tmp_path / "run"
    config = TrainConfig(**CONFIG)
    stop_at(monkeypatch, epoch, batch)
    train(config, run, splits=tiny_splits(), install_signal_handler=False)
    progress = runs.read_progress(run)
    assert progress["state"] == "stopped"
    assert progress["stop"]["completed_epochs"] == completed == callbacks.completed_epochs(run)
    assert job_view.job_status(progress).headline == headline
    assert job_view.job_status(progress).fraction == pytest.approx(completed / 3)
    history = pd.read_csv(run / bundles.HISTORY_FILE) if completed else None
    assert completed == 0 or list(history["epoch"]) == list(range(1, completed + 1))  # no unfinished epoch
    assert jobs.can_resume(run)

    monkeypatch.undo()
    train(config, run, splits=tiny_splits(), resume=True, install_signal_handler=False)
    progress = runs.read_progress(run)
    assert progress["state"] == "finished" and progress["stop"] is None
    assert list(pd.read_csv(run / bundles.HISTORY_FILE)["epoch"]) == [1, 2, 3]
    assert bundles.load_bundle(run).tasks == list(config.tasks)
    assert not jobs.can_resume(run)


def test_a_stop_while_preparing_is_a_stop_not_a_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("MTFER_CACHE", str(tmp_path / "cache"))
    fer = write_fer_tree(tmp_path / "fer", per_class=3)
    config = TrainConfig(datasets=[{"format": "fer2013", "root": str(fer)}], tasks=["emotion"], **CONFIG)

    def stopped(self, index, done, total):
        raise TrainingStopped("stopped while preparing the data sets")

    monkeypatch.setattr(PreparationProgress, "__call__", stopped)
    train(config, tmp_path / "run", install_signal_handler=False)
    progress = runs.read_progress(tmp_path / "run")
    assert progress["state"] == "stopped" and progress["stop"]["phase"] == "preparing"
    assert job_view.job_status(progress).headline == (
        "Stopped while preparing the data sets; no epoch complete yet; Resume starts again from epoch 1."
    )


# --- background jobs: resume, zombies -------------------------------------------------------------------------


def _process_state(pid: int) -> str | None:
    """The state letter of /proc/<pid>/stat ("Z": a zombie), None when the process is gone (reaped)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


@pytest.fixture()
def short_lived_trainer(monkeypatch):
    """Background jobs whose process is a real `true` (ends at once) instead of TensorFlow; yields the commands."""
    commands: list[list[str]] = []
    real_popen = subprocess.Popen

    def popen(cmd, **kwargs):
        commands.append(cmd)
        return real_popen(["true"], **kwargs)

    monkeypatch.setattr(runs.subprocess, "Popen", popen)
    return commands


def test_ended_job_processes_are_reaped_not_left_as_zombies(tmp_path, short_lived_trainer):
    folder = jobs.start_job({"run_id": "short"}, tmp_path)
    pid = bundles.read_json(folder / runs.PROGRESS_FILE)["pid"]
    runs.write_progress(folder, state="stopped")  # as the job leaves it
    # Nothing reads its progress: the process is waited for as soon as it ends, never left a zombie meanwhile.
    deadline = time.monotonic() + 60
    while (pid in runs.CHILDREN or _process_state(pid) is not None) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _process_state(pid) is None and pid not in runs.CHILDREN
    assert runs.reap_children() == []


def test_resume_job_continues_a_stopped_run_in_the_background(tmp_path, short_lived_trainer):
    folder = jobs.start_job({"run_id": "to-resume"}, tmp_path)
    runs.write_progress(folder, state="stopped", error="old", stop=callbacks.stop_point(2, 5, 10, 1), epoch=2, epochs=3)
    assert jobs.can_resume(folder)

    assert jobs.resume_job(folder, tmp_path) == folder
    assert short_lived_trainer[-1][-3:] == ["train", "--resume", str(folder)]
    progress = bundles.read_json(folder / runs.PROGRESS_FILE)
    assert progress["state"] == "queued" and "error" not in progress and "stop" not in progress
    assert progress["pid"] != progress["starter"] and progress["epochs"] == 3
    assert "--- resumed " in (folder / runs.LOG_FILE).read_text()

    runs.write_progress(folder, state="finished")
    (folder / bundles.METADATA_FILE).write_text("{}")
    with pytest.raises(bundles.RunError, match="cannot be resumed"):
        jobs.resume_job(folder, tmp_path)


def test_resume_waits_for_the_stopped_trainer_to_exit(tmp_path, short_lived_trainer, monkeypatch):
    """A stopped trainer writes "stopped", then takes a moment to exit: Resume starts the next one only after.
    (os.spawnlp: short_lived_trainer replaces subprocess.Popen.)"""
    import os

    folder = jobs.start_job({"run_id": "slow-exit"}, tmp_path)
    exiting = os.spawnlp(os.P_NOWAIT, "sleep", "sleep", "1")
    runs.write_progress(folder, state="stopped", pid=exiting)
    assert jobs.resume_job(folder, tmp_path) == folder
    assert not runs.pid_alive(exiting)  # gone before the new job was launched
    assert short_lived_trainer[-1][-3:] == ["train", "--resume", str(folder)]

    hung = os.spawnlp(os.P_NOWAIT, "sleep", "sleep", "60")
    try:
        runs_dir = tmp_path / "elsewhere"
        other = runs_dir / "hung"
        runs.write_progress(other, state="stopped", pid=hung)
        bundles.atomic_write_json(other / bundles.CONFIG_FILE, {})
        monkeypatch.setattr(jobs, "EXIT_WAIT_S", 0.2)
        with pytest.raises(bundles.RunError, match="still shutting down"):
            jobs.resume_job(other, runs_dir)
        assert runs.read_progress(other)["state"] == "stopped"  # nothing started, nothing changed
    finally:
        os.kill(hung, 9)
        os.waitpid(hung, 0)


def test_resume_is_refused_while_another_job_runs(tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        runs.write_progress(tmp_path / "busy", state="running", pid=sleeper.pid)
        bundles.atomic_write_json(tmp_path / "busy" / bundles.CONFIG_FILE, {})
        runs.write_progress(tmp_path / "stopped", state="stopped")
        bundles.atomic_write_json(tmp_path / "stopped" / bundles.CONFIG_FILE, {})
        with pytest.raises(bundles.RunError, match=r"already running \(busy\)"):
            jobs.resume_job(tmp_path / "stopped", tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_command_line_never_resumes_a_finished_run_or_one_being_trained(tmp_path, capsys):
    from mtfer import cli

    finished = tmp_path / "finished"
    runs.write_progress(finished, state="finished")
    bundles.atomic_write_json(finished / bundles.CONFIG_FILE, {})
    bundles.atomic_write_json(finished / bundles.METADATA_FILE, {"tasks": {}})
    before = (finished / bundles.METADATA_FILE).read_bytes()
    assert cli.main(["train", "--resume", str(finished)]) != 0
    assert "is finished: resuming would replace its model" in capsys.readouterr().err
    assert (finished / bundles.METADATA_FILE).read_bytes() == before
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        busy = tmp_path / "busy"
        runs.write_progress(busy, state="running", pid=sleeper.pid)
        bundles.atomic_write_json(busy / bundles.CONFIG_FILE, {})
        assert cli.main(["train", "--resume", str(busy)]) != 0
        assert f"is being trained now (process {sleeper.pid})" in capsys.readouterr().err
        assert runs.read_progress(busy)["state"] == "running"  # the live job's record untouched
    finally:
        sleeper.kill()
        sleeper.wait()
    jobs.refuse_resuming(tmp_path / "busy")  # its trainer is gone: a crashed run may be resumed


# --- the log tail ---------------------------------------------------------------------------------------------

NOISY_LOG = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796029909.040048   15985 port.cc:153] oneDNN custom operations are on. You may see slightly different \
numerical results due to floating-point round-off errors from different computation orders. To turn them off, set \
the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.
I0000 00:00:1796029909.040370   15985 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
E0000 00:00:1796029909.071105   15985 cuda_executor.cc:1309] failed call to cuInit: INTERNAL: CUDA error: Failed call \
to cuInit: UNKNOWN ERROR (303)
I0000 00:00:1796029909.091113   15985 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available \
CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, rebuild \
TensorFlow with the appropriate compiler flags.
2026-11-30 09:11:58,639 INFO loading data sets ['fer2013']
WARNING:absl:Compiled the loaded model, but the compiled metrics have yet to be built.
/venv/lib/python3.11/site-packages/keras/src/trainers/epoch_iterator.py:74: UserWarning: `shuffle=True` was passed, \
but will be ignored since the data `x` was provided as a tf.data.Dataset.
  self.data_adapter = data_adapters.get_data_adapter(
3/3 - 6s - 2s/step - loss: 6.1518 - val_loss: 6.1522
2026-11-30 09:12:06,486 INFO stopped during epoch 2 at step 216 of 808 with 1 complete epoch(s)
run /tmp/runs/x
{}
Traceback (most recent call last):
  File "train.py", line 1, in <module>
ValueError: something the user must see
"""


def test_the_log_tail_leaves_out_tensorflows_start_up_noise(tmp_path):
    assert runs.clean_log(NOISY_LOG.splitlines()) == [
        "2026-11-30 09:11:58,639 INFO loading data sets ['fer2013']",
        "3/3 - 6s - 2s/step - loss: 6.1518 - val_loss: 6.1522",
        "2026-11-30 09:12:06,486 INFO stopped during epoch 2 at step 216 of 808 with 1 complete epoch(s)",
        "run /tmp/runs/x",
        "Traceback (most recent call last):",
        '  File "train.py", line 1, in <module>',
        "ValueError: something the user must see",
    ]
    (tmp_path / runs.LOG_FILE).write_text(NOISY_LOG)
    assert runs.log_tail(tmp_path, 2, clean=True).splitlines() == [
        '  File "train.py", line 1, in <module>',
        "ValueError: something the user must see",
    ]
    assert runs.log_tail(tmp_path, 100) == NOISY_LOG.rstrip("\n")  # the file keeps everything


def test_stop_and_the_dead_job_check_never_undo_what_the_job_wrote_last(tmp_path, monkeypatch):
    """The job writes "stopped" (or "finished") just before it exits; a page reading or stopping it at that moment
    must not overwrite it with "failed" or "stopping"."""
    run = tmp_path / "run"
    runs.write_progress(run, state="stopping", pid=999_999_999)

    def job_ends_meanwhile(pid):
        runs.write_progress(run, state="stopped", stop=callbacks.stop_point(2, 5, 10, 1))
        return False

    monkeypatch.setattr(runs, "pid_alive", job_ends_meanwhile)
    assert runs.read_progress(run)["state"] == "stopped"
    assert bundles.read_json(run / runs.PROGRESS_FILE)["state"] == "stopped"

    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        runs.write_progress(run, state="running", pid=sleeper.pid, stop=None)

        def job_finishes_meanwhile(pid):
            if bundles.read_json(run / runs.PROGRESS_FILE)["state"] == "running":
                runs.write_progress(run, state="finished")
            return True

        monkeypatch.setattr(runs, "pid_alive", job_finishes_meanwhile)
        assert not jobs.stop_job(run)
        assert bundles.read_json(run / runs.PROGRESS_FILE)["state"] == "finished"
        assert sleeper.poll() is None  # not signalled
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_stop_in_the_last_step_of_an_epoch_is_not_after_it():
    progress = {"state": "stopped", "epochs": 3, "stop": callbacks.stop_point(1, 4, 4, 0)}
    assert job_view.job_status(progress).headline == (
        "Stopped during epoch 1 at step 4 of 4; no epoch complete yet; Resume starts again from epoch 1."
    )


def test_the_jobs_own_running_writes_never_hide_a_stop_that_was_asked(tmp_path):
    """stop_job marks the run "stopping" before signalling it; the trainer may write its step once more before it
    acts on the signal, and that write keeps "stopping" (what the page shows at once after Stop)."""
    run = tmp_path / "run"
    runs.write_progress(run, state="running", step=1)
    runs.write_progress(run, state="stopping")
    progress = runs.write_progress(run, state="running", step=2)
    assert progress["state"] == "stopping" and progress["step"] == 2
    assert runs.write_progress(run, state="stopped")["state"] == "stopped"  # the job's own end replaces it
    assert runs.write_progress(run, state="running")["state"] == "running"  # a resumed job runs again


def test_a_live_trainer_that_writes_nothing_for_long_shows_as_stalled(tmp_path, monkeypatch):
    run = tmp_path / "run"
    runs.write_progress(run, state="running", pid=os.getpid(), epoch=3, epochs=30, step=10, steps=674)  # alive: us
    assert "stalled_s" not in runs.read_progress(run)
    assert job_view.job_status(runs.read_progress(run)).headline.startswith("Epoch 3 of 30")
    later = time.time() + runs.STALLED_S + 120
    monkeypatch.setattr(runs.time, "time", lambda: later)
    progress = runs.read_progress(run)
    assert progress["state"] == "running" and progress["stalled_s"] >= runs.STALLED_S  # said, not written
    assert "stalled_s" not in bundles.read_json(run / runs.PROGRESS_FILE)
    status = job_view.job_status(progress)
    assert status.active and status.headline.startswith("No progress for 17 min: the training process")
    assert f"(process {os.getpid()})" in status.headline
