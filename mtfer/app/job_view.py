"""A training job in words and numbers for the Train page: its status line, the latest epoch's metrics, and
the time estimate before it starts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mtfer.app.wording import about, about_range, format_duration, percent
from mtfer.train.planning import Estimate


@dataclass(frozen=True)
class JobStatus:
    state: str
    fraction: float  # 0..1 of all epochs
    headline: str
    active: bool
    finished: bool


def _preparing_line(progress: Mapping) -> tuple[float, str]:
    """Progress bar fraction and line while a job frames a data set's faces (mtfer.train.trainer.PreparationProgress)."""
    name = progress.get("dataset") or "the data sets"
    of = f" ({progress['dataset_index']} of {progress['datasets']})" if progress.get("datasets", 0) > 1 else ""
    done, total = int(progress.get("done") or 0), int(progress.get("total") or 0)
    if not total:
        return 0.0, f"Loading {name}{of} ..."
    line = f"Preparing {name}{of}, the first time only: {done:,} of {total:,} faces"
    if progress.get("rate"):
        line += f" · {float(progress['rate']):,.0f} faces/s"
    if progress.get("eta_s") is not None:
        line += eta_text(float(progress["eta_s"]))
    return float(np.clip(done / total, 0.0, 1.0)), line


def _stopped_line(progress: Mapping) -> tuple[float | None, str]:
    """Progress bar fraction (None: unknown) and line of a stopped job: where it stopped, the complete epochs it
    kept (mtfer.train.trainer.stop_point) and where Resume continues."""
    stop = progress.get("stop")
    if not isinstance(stop, Mapping):  # stopped by an older version
        return None, f"Stopped at epoch {int(progress.get('epoch') or 0)}. Resume continues it."
    complete = int(stop.get("completed_epochs") or 0)
    epochs = int(progress.get("epochs") or 0)
    kept = {0: "no epoch complete yet", 1: "epoch 1 complete"}.get(complete, f"epochs 1-{complete} complete")
    then = f"Resume continues from epoch {complete + 1}." if complete else "Resume starts again from epoch 1."
    if epochs and complete >= epochs:  # every epoch done: the stop came before the final evaluation
        then = "Resume evaluates and saves the model."
    epoch, step, steps = int(stop.get("epoch") or 0), int(stop.get("step") or 0), int(stop.get("steps") or 0)
    if stop.get("phase") == "preparing":
        where = "Stopped while preparing the data sets"
    elif complete >= epoch:  # asked during the epoch's validation: the epoch completed
        where = f"Stopped after epoch {epoch}"
    else:
        where = f"Stopped during epoch {epoch} at step {step} of {steps}"
    return (complete / epochs if epochs else None), f"{where}; {kept}; {then}"


def job_status(progress: Mapping) -> JobStatus:
    """A progress.json (runs.read_progress) as a progress-bar fraction and one line for people."""
    state = str(progress.get("state", "unknown"))
    epochs = int(progress.get("epochs") or 0)
    epoch = int(progress.get("epoch") or 0)
    step, steps = int(progress.get("step") or 0), int(progress.get("steps") or 0)
    if epochs:
        within = step / steps if steps else 0.0
        done = epoch - 1 + within if epoch else 0.0
        fraction = float(np.clip(done / epochs, 0.0, 1.0))
    else:
        fraction = 0.0
    if state == "finished":
        fraction = 1.0
        headline = f"Finished after {epoch} epoch{'s' if epoch != 1 else ''}."
    elif state == "queued":
        headline = "Starting: loading TensorFlow and preparing the data sets ..."
    elif state == "running" and progress.get("phase") == "evaluating":
        headline = "Training done; evaluating on the held-out data ..."
    elif state == "running" and progress.get("phase") == "preparing":
        fraction, headline = _preparing_line(progress)
    elif state == "running":
        if not epoch:
            headline = "Preparing the data sets (the first time, faces are found and aligned) ..."
        else:
            eta = progress.get("eta_s")
            left = eta_text(float(eta)) if eta is not None else ""
            headline = f"Epoch {epoch} of {epochs} · step {step} of {steps}{left}"
    elif state == "stopping":
        headline = "Stopping after the current step ..."
    elif state == "stopped":
        stopped_fraction, headline = _stopped_line(progress)
        fraction = fraction if stopped_fraction is None else float(np.clip(stopped_fraction, 0.0, 1.0))
    elif state == "failed":
        headline = f"Failed: {progress.get('error') or 'see the log'}"
    else:
        headline = f"State: {state}"
    if progress.get("stalled_s") and state in ("queued", "running", "stopping"):
        pid = f" (process {progress['pid']})" if progress.get("pid") else ""
        headline = (
            f"No progress for {format_duration(float(progress['stalled_s']), 'rough')}: the training process{pid} "
            "may be hung. Stop training ends it; if nothing changes, end that process and resume the run."
        )
    active = state in ("queued", "running", "stopping")
    return JobStatus(state, fraction, headline, active, state == "finished")


def epoch_metrics(row: Mapping[str, Any] | None, tasks: Sequence[str]) -> list[tuple[str, str]]:
    """(label, value) of the last epoch's validation accuracy per task and its validation loss."""
    if not row:
        return []
    out = []
    for task in tasks:
        for key in (f"val_{task}_accuracy", f"{task}_accuracy"):
            if key in row and row[key] is not None:
                out.append((f"{task} {'val ' if key.startswith('val_') else ''}accuracy", percent(float(row[key]))))
                break
    for key in ("val_loss", "loss"):
        if key in row and row[key] is not None:
            out.append((key.replace("_", " "), f"{float(row[key]):.3f}"))
            break
    return out


BUSY_SLOWDOWN = 1.3  # from here on the estimate says that the machine's other work slows the job down


def eta_text(eta_s: float) -> str:
    """' · 3-4 min left': the time left that a running job measures from its own steps, as a range (its rate
    moves with the machine's load, and validation and the final evaluation are still to come)."""
    return f" · {about_range(eta_s * 0.9, eta_s * 1.25)} left"


def estimate_text(e: Estimate) -> str:
    """The estimate in a sentence or two for people (Markdown)."""
    if e.rate.source == "measured":
        source = f"measured on this machine in run {e.rate.run}"
    else:
        source = "from the benchmark on this machine; no earlier run to measure yet"
    epochs = f"{e.epochs} epoch{'s' if e.epochs != 1 else ''}"
    total = about_range(*e.span)
    text = (
        f"**{total[0].upper()}{total[1:]}{' at most' if e.may_stop_early else ''}.** Training: {epochs} × "
        f"{e.epoch_faces:,} faces at about {e.rate.faces_per_s:,.0f} faces/s ({source})."
    )
    if e.slowdown >= BUSY_SLOWDOWN:
        text += f" The machine is busy with other work now, which makes it about {e.slowdown:.1f}× slower."
    if e.to_prepare:
        text += (
            f" Before that, {' and '.join(e.to_prepare)} {'are' if len(e.to_prepare) > 1 else 'is'} prepared "
            f"({e.prepare_faces:,} faces at about {e.prepare_rate:,.0f} faces/s, {about(e.prepare_seconds)}); "
            "later runs reuse them."
        )
    if e.may_stop_early:
        text += " Early stopping usually ends it sooner."
    return text
