"""Train: choose data sets, a preset (quick demo, the shipped recipe, the paper's settings) and its settings, see how
long it will take, start the shared trainer in the background, follow it live, stop and resume it, evaluate the
result and make it the model that Predict uses."""

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from mtfer.app import cards, figures, job_view, wording
from mtfer.core import bundles
from mtfer.core.model import ARCHITECTURES
from mtfer.core.tasks import TASK_NAMES
from mtfer.store import jobs, runs, settings
from mtfer.train import config as train_config
from mtfer.train import planning, pseudo
from mtfer.train.config import (
    AUGMENTATIONS,
    CLASS_WEIGHTINGS,
    LOSS_WEIGHTS_MODES,
    LR_SCHEDULES,
    PROTOCOLS,
    TrainConfig,
    augmentation_level,
)
from pages.common.operator import operator_access
from pages.common.setup import setup_page
from pages.common.widgets import keep_widgets, remember, save_widgets

setup_page(__file__)


POLL_SECONDS = 3.0  # how often a running job's progress is read: calm enough not to slow the job down
MULTI, SINGLE = "Multi-task: emotion, gender, race and age", "Single task"
PROTOCOL_LABELS = {
    "holdout": "Hold-out (fair): validation carved from the training images, scored on untouched test images",
    "paper": "The paper's (optimistic): one 90/10 split; the 10% chooses when to stop and gives the score",
}
SCHEDULE_LABELS = {
    "plateau": "plateau: lower it 5x when validation stops improving (paper)",
    "cosine": "cosine: warm up, then decay smoothly to zero",
    "onecycle": "one-cycle: warm up over 30% of the steps, then decay",
}
WEIGHTING_LABELS = {
    "none": "none (paper)",
    "balanced": "balanced: rare emotions count more",
    "sqrt": "square root of balanced (gentler)",
}
AUGMENT_LABELS = {
    "none": "none",
    "light": "light: flips, small shifts, turns, zooms (paper)",
    "strong": "strong: also light, contrast, blur, noise, erasing",
}
LOSS_WEIGHTS_LABELS = {
    "fixed": "Fixed: the numbers below (the paper's by default)",
    "learned": "Learned during training (uncertainty weighting)",
}
PSEUDO_LABELS = {
    "off": "Off: each face teaches only the labels its data set has",
    "hard": "On: the teacher model's answer",
    "soft": "On: the teacher model's probabilities (soft labels)",
}
START_LABELS = {
    "scratch": "Random weights: learn everything from the data (a full run)",
    "default": "The shipped model: train it further (minutes give a sensible model)",
}
DETECTOR_LABELS = {
    "blazeface": "BlazeFace (finds more faces; the shipped model's)",
    "haar": "Haar cascades (the paper's)",
}


@st.cache_data(ttl=120, show_spinner="Looking for data sets ...")
def find_datasets(roots: tuple[str, ...]) -> list[settings.FoundDataset]:
    return settings.discover_datasets(roots)


@st.cache_data(ttl=60, show_spinner=False)
def training_rate(architecture: str, precision: str, runs_dir: str) -> planning.Rate:
    """Faces/s measured in earlier runs (reads their histories: cached for a minute)."""
    return planning.training_rate(architecture, precision, runs_dir)


@st.cache_data(ttl=600)
def shipped_architecture() -> str:
    """The network of the shipped model, which "Start from: the shipped model" continues."""
    return str(bundles.load_bundle(bundles.DEFAULT_BUNDLE, keras=False).metadata["architecture"])


def widget_values(config: TrainConfig) -> dict[str, Any]:
    """The settings widgets' values (by key) for a preset's config."""
    return {
        "train_architecture": config.architecture,
        "train_epochs": int(config.epochs),
        "train_batch_size": int(config.batch_size),
        "train_learning_rate": float(config.learning_rate),
        "train_limit": int(config.limit or 0),
        "train_steps": int(config.steps_per_epoch or 0),
        "train_preprocessing": config.preprocessing,
        "train_augment": augmentation_level(config.augment),
        "train_lr_schedule": config.lr_schedule,
        "train_weight_decay": float(config.weight_decay),
        "train_label_smoothing": float(config.label_smoothing),
        "train_class_weighting": config.class_weighting,
        "train_mixup": float(config.mixup),
        "train_ema": float(config.ema),
        "train_tta_flip": bool(config.tta_flip),
        "train_loss_weights_mode": config.loss_weights_mode,
        "train_init_from": "default" if config.init_from == "default" else "scratch",
    }


def apply_preset() -> None:
    """Preset callback (and first visit): every settings widget takes the preset's value."""
    preset = train_config.PRESETS[st.session_state["train_preset"]]
    st.session_state.update(widget_values(preset.config()))


def loss_weights_section(tasks: list[str], weights: dict[str, float]) -> str:
    """The loss-weights choices: fixed weights (filled into `weights`) or weights learned during training (Kendall
    et al.'s uncertainty weighting, mtfer.train.loss_weights). Returns the TrainConfig.loss_weights_mode."""
    mode = st.radio(
        "How the weights are set",
        LOSS_WEIGHTS_MODES,
        format_func=LOSS_WEIGHTS_LABELS.get,
        key="train_loss_weights_mode",
        horizontal=True,
    )
    learned = mode == "learned"
    columns = st.columns(len(tasks))
    for column, task in zip(columns, tasks, strict=True):
        weights[task] = column.number_input(
            task, 0.0, 100.0, float(weights[task]), step=0.1, key=f"train_weight_{task}", disabled=learned
        )
    if learned:
        st.caption(
            "The numbers above are not used: every task starts at weight 1 and training adjusts the weights, giving "
            "less to a task whose answers stay uncertain. They are logged every epoch, drawn with the training "
            "curves on the Evaluate page and stored with the model."
        )
    return mode


def pseudo_labels_section(datasets: list[dict]) -> str:
    """Pseudo-labels: a teacher model's answers fill the labels a data set lacks (mtfer.train.pseudo). Returns "off",
    "hard" or "soft"."""
    available = pseudo.describe_available(datasets)
    for fmt, text in available.items():
        st.markdown(f"- **{fmt}**: {text or 'none yet'}")
    if not any(available.values()):
        st.caption(
            "Make them first with a trained multi-task model as the teacher, e.g. `mtfer pseudo-label --model "
            "default --format fer2013 --data DIR`. Only the training images get them; validation and test keep "
            "their true labels."
        )
    else:
        st.caption("Only the training images get them; validation and test scores use true labels only.")
    return st.radio(
        "Pseudo-labels",
        list(PSEUDO_LABELS),
        format_func=PSEUDO_LABELS.get,
        key="train_pseudo",
        horizontal=True,
        disabled=not any(available.values()),
        label_visibility="collapsed",
    )


def current_run(runs_dir: Path) -> Path | None:
    """The job to follow: a running one, else the one this session started or last followed, else the newest run."""
    active = jobs.active_jobs(runs_dir)
    if active:
        return active[0]
    mine = st.session_state.get("train_run")
    if mine and Path(mine).is_dir():
        return Path(mine)
    listed = runs.list_runs(runs_dir)
    return listed[0] if listed else None


st.title("Train")
# Starting, stopping and resuming jobs and choosing the model change what everyone shares: on a server other machines
# can reach, only the operator may (mtfer.store.operator).
may_change = operator_access().allowed
runs_dir = bundles.default_runs_dir()
runs.reap_children()  # training processes this server started and that have ended: no zombies
roots = settings.data_roots()
found = find_datasets(tuple(str(r) for r in roots))
busy = jobs.active_jobs(runs_dir)
# Poll while a job runs (whoever started it); the monitor reruns the whole page once it ends.
st.session_state["train_was_active"] = bool(busy)
# The form's choices last for the session: back from another page, it shows what was chosen, not the defaults.
FORM_KEYS = [
    "train_preset",
    "train_datasets",
    "train_mode",
    "train_task",
    "train_protocol",
    "train_name",
    "train_pseudo",
    *widget_values(TrainConfig()),
]
keep_widgets(FORM_KEYS)
if any(label not in {d.label for d in found} for label in st.session_state.get("train_datasets", [])):
    del st.session_state["train_datasets"]  # the data sets changed meanwhile: all of those found, as at first
if "train_preset" not in st.session_state:
    # A shared link or a reload: the preset and tasks in the URL, else the paper's preset for all four tasks.
    wanted = st.query_params.get("preset")
    st.session_state["train_preset"] = wanted if wanted in train_config.PRESETS else train_config.DEFAULT_PRESET
    apply_preset()
    if st.query_params.get("task") in TASK_NAMES:
        st.session_state["train_mode"], st.session_state["train_task"] = SINGLE, st.query_params["task"]

with st.expander("New training run", expanded=not busy):
    if not found:
        st.warning(settings.no_datasets_text(roots))
    else:
        st.caption(
            f"Data sets found under: {', '.join(str(r) for r in roots)} (set {settings.ENV_DATA_ROOTS} to change)."
        )
    if st.button("Look for data sets again", key="train_refresh", type="tertiary"):
        find_datasets.clear()
        st.rerun()
    labels = [d.label for d in found]
    readable = {d.label: wording.dataset_choice(d.name, d.format, d.samples, d.tasks) for d in found}
    chosen_labels = st.multiselect(
        "Data sets", labels, default=labels, key="train_datasets", format_func=lambda label: readable.get(label, label)
    )
    chosen = [found[labels.index(label)] for label in chosen_labels]

    mode = st.radio("Tasks", [MULTI, SINGLE], key="train_mode", horizontal=True)
    tasks = list(TASK_NAMES)
    if mode == SINGLE:
        tasks = [st.selectbox("Task", TASK_NAMES, key="train_task")]
    remember("task", tasks[0] if mode == SINGLE else None)
    labelled = {t for d in chosen for t in d.tasks}
    unlabelled = [t for t in tasks if t not in labelled]
    trainable = bool(chosen) and len(unlabelled) < len(tasks)
    if chosen and not trainable:
        st.error(f"None of the chosen data sets has {', '.join(unlabelled)} labels: choose other data sets or tasks.")
    elif chosen and unlabelled:
        st.warning(f"None of the chosen data sets has {', '.join(unlabelled)} labels; that head will learn nothing.")

    preset_name = st.radio(
        "Preset",
        list(train_config.PRESETS),
        format_func=lambda p: train_config.PRESETS[p].label,
        key="train_preset",
        on_change=apply_preset,
        horizontal=True,
        help="Fills in every setting below; change any of them afterwards.",
    )
    preset = train_config.PRESETS[preset_name]
    remember("preset", None if preset_name == train_config.DEFAULT_PRESET else preset_name)
    st.caption(preset.description)
    start_from = st.radio(
        "Start from", list(START_LABELS), format_func=START_LABELS.get, key="train_init_from", horizontal=True
    )

    left, middle, right = st.columns(3)
    architecture = left.selectbox(
        "Network",
        list(ARCHITECTURES),
        format_func=lambda a: f"{a}: {cards.ARCHITECTURE_TEXT.get(a, a)}",
        key="train_architecture",
    )
    epochs = middle.number_input("Epochs (at most)", 1, 1000, key="train_epochs")
    batch_size = right.number_input("Batch size", 1, 4096, key="train_batch_size")
    learning_rate = left.number_input("Learning rate", 1e-7, 1.0, step=1e-4, format="%.1e", key="train_learning_rate")
    limit = middle.number_input(
        "Faces per data set at most (0 = all)", 0, 10_000_000, step=500, key="train_limit",
        help="A quick run uses a sample of each data set that keeps its mix of classes.",
    )  # fmt: skip
    name = right.text_input("Run name (optional)", key="train_name", max_chars=40)
    protocol = st.radio(
        "Protocol",
        PROTOCOLS,
        index=PROTOCOLS.index(TrainConfig().protocol),
        format_func=PROTOCOL_LABELS.get,
        key="train_protocol",
    )
    weights = dict(TrainConfig().loss_weights)
    weights_mode = "fixed"
    if len(tasks) > 1:
        with st.expander("Loss weights (how much each task counts; the paper's by default)"):
            weights_mode = loss_weights_section(tasks, weights)
    pseudo_mode = "off"
    if len(tasks) > 1 and chosen:
        with st.expander("Pseudo-labels (give every face all four labels, from a teacher model)"):
            pseudo_mode = pseudo_labels_section([d.to_config() for d in chosen])
    with st.expander("Advanced: training recipe and face detector (set by the preset)"):
        left, right = st.columns(2)
        preprocessing = left.selectbox(
            "Face detector (framing the training faces; saved with the model)",
            ["blazeface", "haar"],
            format_func=DETECTOR_LABELS.get,
            key="train_preprocessing",
        )
        augment = right.selectbox("Augmentation", AUGMENTATIONS, format_func=AUGMENT_LABELS.get, key="train_augment")
        lr_schedule = left.selectbox(
            "Learning-rate schedule", LR_SCHEDULES, format_func=SCHEDULE_LABELS.get, key="train_lr_schedule"
        )
        weight_decay = right.number_input(
            "Weight decay (0 = Adam, > 0 = AdamW)", 0.0, 1.0, step=1e-3, format="%g", key="train_weight_decay"
        )
        label_smoothing = left.number_input(
            "Label smoothing", 0.0, 0.5, step=0.05, format="%.2f", key="train_label_smoothing"
        )
        class_weighting = right.selectbox(
            "Emotion class weighting", CLASS_WEIGHTINGS, format_func=WEIGHTING_LABELS.get, key="train_class_weighting"
        )
        mixup = left.number_input(
            "Mixup (0 = off; e.g. 0.2 blends pairs of faces)", 0.0, 10.0, step=0.1, format="%.2f", key="train_mixup"
        )
        ema = right.number_input(
            "Moving average of the weights (0 = off; e.g. 0.999)", 0.0, 0.9999, step=0.001, format="%.4f",
            key="train_ema",
        )  # fmt: skip
        tta_flip = left.toggle("Test-time flip: average each face with its mirror image", key="train_tta_flip")
        steps = right.number_input("Steps per epoch at most (0 = all)", 0, 1_000_000, key="train_steps")

    config: TrainConfig | None = None
    try:
        config = TrainConfig(
            # Found under the data roots a while ago (cached); checked again against the roots at Start.
            datasets=[d.to_config() for d in chosen],
            tasks=tasks,
            architecture=architecture,
            loss_weights={t: float(w) for t, w in weights.items()},
            learning_rate=float(learning_rate),
            batch_size=int(batch_size),
            epochs=int(epochs),
            protocol=protocol,
            augment=augment,
            limit=int(limit) or None,
            steps_per_epoch=int(steps) or None,
            preprocessing=preprocessing,
            label_smoothing=float(label_smoothing),
            lr_schedule=lr_schedule,
            warmup_epochs=preset.config().warmup_epochs,  # no widget of its own: the preset's
            weight_decay=float(weight_decay),
            class_weighting=class_weighting,
            mixup=float(mixup),
            ema=float(ema),
            tta_flip=bool(tta_flip),
            loss_weights_mode=weights_mode,
            pseudo_labels=None if pseudo_mode == "off" else ["auto"],
            pseudo_targets="soft" if pseudo_mode == "soft" else "hard",
            # early stopping: left to the trainer's rule (11 epochs with the plateau schedule, none with the others)
            init_from=None if start_from == "scratch" else start_from,
            name=name.strip(),
        )
        if config.init_from and (shipped := shipped_architecture()) != config.architecture:
            raise ValueError(
                f"the shipped model is the {shipped} network: choose that network to start from it, or start "
                "from random weights"
            )
    except ValueError as error:
        config = None
        st.error(f"These settings do not work together: {error}")

    long_job_confirmed = True
    if config is not None and chosen:
        rate = training_rate(config.architecture, planning.resolved_precision(config.precision), str(runs_dir))
        estimate = planning.estimate(config, chosen, runs_dir, rate=rate)
        show = st.warning if estimate.long else st.info
        show(f"Estimated time: {job_view.estimate_text(estimate)}", icon=":material/schedule:")
        if estimate.long and not busy:
            long_job_confirmed = st.checkbox(
                f"Yes, start a job of {wording.about_range(*estimate.span)} (the Quick demo preset takes minutes)",
                key="train_confirm_long",
            )

    if busy:
        st.info(
            f"A training job is already running ({busy[0].name}). One job runs at a time: stop it below or wait "
            "for it to finish."
        )
    start = st.button(
        "Start training",
        key="train_start",
        type="primary",
        icon=":material/play_arrow:",
        disabled=bool(busy) or not trainable or config is None or not long_job_confirmed or not may_change,
    )
    if start and config is not None and may_change:
        try:
            # Found under the data roots a while ago (cached): still inside them, symlinks resolved?
            config.datasets = [{**d.to_config(), "root": str(settings.confine(d.root, roots))} for d in chosen]
            folder = jobs.start_job(config.to_dict(), runs_dir)
        except ValueError as error:  # data outside the roots, RunError (busy, unwritable or full)
            st.error(f"Training was not started: {error}")
        else:
            st.session_state["train_run"] = str(folder)
            st.rerun()  # the job is busy now: poll it, disable Start


def ask_to_stop() -> None:
    st.session_state["train_confirm_stop"] = True


def stop(run: Path) -> None:
    """Button callback: runs before the rerun, so the page shows "Stopping ..." at once."""
    st.session_state["train_confirm_stop"] = False
    if operator_access(note=False).allowed:  # checked again where it acts, not only on the button
        jobs.stop_job(run)


def keep_training() -> None:
    st.session_state["train_confirm_stop"] = False


def cancel_activate() -> None:
    st.session_state["train_confirm_activate"] = False


def activate(run: Path) -> None:
    st.session_state["train_confirm_activate"] = False
    if not operator_access(note=False).allowed:
        return
    try:
        bundles.set_active_model(run, bundles.default_runs_dir())
    except bundles.RunError as error:
        st.session_state["train_activate_error"] = str(error)


def stop_controls(run: Path, progress: dict, state: str) -> None:
    """ "Stop training" (unlike Streamlit's own Stop in the toolbar, which only stops this page's script), then a
    confirmation that says what is kept."""
    if not st.session_state.get("train_confirm_stop"):
        st.button(
            "Stop training",
            key="train_stop",
            icon=":material/stop_circle:",
            type="primary",
            disabled=state == "stopping" or not may_change,
            on_click=ask_to_stop,
            help="Stops the background training job; asks first.",
        )
        return
    epoch = int(progress.get("epoch") or 0)
    kept = f"epochs 1-{epoch - 1}" if epoch > 2 else "epoch 1" if epoch == 2 else "no complete epoch yet"
    with st.container(border=True):
        st.markdown(
            f"**Stop training now?** The complete epochs are kept ({kept}); the epoch in progress is dropped. "
            "**Resume** continues from there later."
        )
        left, right, _ = st.columns([1, 1, 3])
        left.button(
            "Yes, stop training",
            key="train_stop_confirm",
            icon=":material/stop_circle:",
            type="primary",
            on_click=stop,
            args=(run,),
        )
        right.button("Keep training", key="train_stop_cancel", on_click=keep_training)


def resume_controls(run: Path) -> None:
    """ "Resume training": continue a stopped (or failed) run in the background from its last complete epoch."""
    clicked = st.button(
        "Resume training",
        key="train_resume",
        icon=":material/play_circle:",
        disabled=bool(jobs.active_jobs(runs_dir)) or not may_change,
        help="Continues this run in the background from its last complete epoch.",
    )
    if not clicked or not may_change:
        return
    try:
        jobs.resume_job(run, runs_dir)
    except bundles.RunError as error:
        st.error(f"Training was not resumed: {error}")
    else:
        st.session_state["train_run"] = str(run)
        st.rerun(scope="app")  # poll again, and disable Start while it runs


@st.cache_data(show_spinner=False, max_entries=8)
def history_figures(path: str, modified: int) -> tuple[list[tuple[str, Any]], Any]:
    """The training curves of a history.csv, built once per change of the file (once an epoch), not at every poll
    of a running job: following a job should not slow it down."""
    try:
        history = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError):
        return [], None
    if not len(history):
        return [], None
    curves = [(task, figures.history_figure(history, task)) for task in figures.history_tasks(history)]
    return curves, figures.loss_weights_figure(history)


@st.fragment(run_every=POLL_SECONDS if busy else None)
def monitor() -> None:
    run = current_run(runs_dir)
    if run is None:
        st.info("No training run yet.")
        return
    progress = runs.read_progress(run)
    status = job_view.job_status(progress)
    if status.active:  # keep following this run once it ends (stopped, failed, finished)
        st.session_state["train_run"] = str(run)
    if st.session_state.get("train_was_active") and not status.active:  # ended since the last full run
        st.session_state["train_was_active"] = False
        st.session_state["train_confirm_stop"] = False
        st.rerun(scope="app")  # stop polling, enable Start again
    st.subheader(f"Run {run.name}")
    st.progress(status.fraction, text=status.headline)
    try:
        config = bundles.read_json(run / bundles.CONFIG_FILE)
    except bundles.RunError:
        config = {}
    tasks = config.get("tasks", list(TASK_NAMES))

    if status.active:
        stop_controls(run, progress, status.state)
    elif jobs.can_resume(run, progress):
        resume_controls(run)

    if status.finished:  # progress.json then holds the held-out evaluations' summary
        summary = cards.summary_cards(progress.get("metrics") or {}, len(tasks) > 1)
        columns = st.columns(min(4, len(summary))) if summary else []
        for i, card in enumerate(summary):
            columns[i % len(columns)].metric(card.label, card.value, card.delta, help=card.help, border=True)
    elif metrics := job_view.epoch_metrics(progress.get("metrics"), tasks):
        columns = st.columns(len(metrics))
        for column, (label, value) in zip(columns, metrics, strict=True):
            column.metric(label, value)
    history_path = run / bundles.HISTORY_FILE
    if history_path.is_file():
        curves, weights_figure = history_figures(str(history_path), history_path.stat().st_mtime_ns)
        if curves:
            columns = st.columns(2 if len(curves) > 1 else 1)
            for i, (task, figure) in enumerate(curves):
                columns[i % len(columns)].plotly_chart(figure, key=f"train-history-{task}")
        if weights_figure is not None:
            st.caption(figures.LOSS_WEIGHTS_NOTE)
            st.plotly_chart(weights_figure, key="train-history-loss-weights")
    with st.expander("Log (last lines)", expanded=status.state == "failed"):
        st.code(runs.log_tail(run, 30, clean=True) or "(nothing written yet)", language=None)
        st.caption(f"TensorFlow's start-up messages are left out here; the whole log is {run / runs.LOG_FILE}.")

    if status.finished:
        left, right = st.columns(2)
        if left.button("Evaluate this run", key="train_evaluate"):
            st.session_state["evaluate_request"] = str(run)
            st.switch_page("pages/evaluate.py")
        if bundles.resolve_model(None, runs_dir).resolve() == run.resolve():
            right.success(
                "This run is the active model: Predict uses it. The sidebar's button goes back to the shipped one.",
                icon=":material/check_circle:",
            )
        elif not st.session_state.get("train_confirm_activate"):
            right.button(
                "Use this model for Predict ...",
                key="train_activate",
                on_click=lambda: st.session_state.update(train_confirm_activate=True),
                disabled=not may_change,
            )
        else:
            right.warning(
                f"This changes the model for **everyone** using this app: Predict, Evaluate, Home and the command "
                f"line will answer with run {run.name} instead of the shipped model. The sidebar's \"Back to the "
                'shipped model" undoes it at any time.',
                icon=":material/group:",
            )
            yes, no = right.columns(2)
            yes.button(
                "Yes, use it for everyone", key="train_activate_yes", type="primary", on_click=activate, args=(run,)
            )
            no.button("Cancel", key="train_activate_no", on_click=cancel_activate)
        if error := st.session_state.pop("train_activate_error", None):
            right.error(f"Could not make it the active model: {error}")


save_widgets(FORM_KEYS)
st.divider()
monitor()
