"""Train: choose data sets and settings (the paper's by default), start the shared trainer in the background,
follow it live, stop it, evaluate the result and make it the model that Predict uses."""

from pathlib import Path

import pandas as pd
import streamlit as st

from mtfer import charts, runs, settings
from mtfer.datasets import FORMATS
from mtfer.model import ARCHITECTURES
from mtfer.tasks import TASK_NAMES
from mtfer.training import PROTOCOLS, TrainConfig

if not st.session_state.get("mtfer_app"):
    # Opened by its URL before app.py ever ran in this server, Streamlit runs a pages/ file on its own (its
    # pages-folder mode). Hand over to app.py's navigation, which then shows this same page.
    st.session_state["mtfer_app"] = True
    st.navigation([st.Page(lambda: None, url_path="start", default=True), st.Page(__file__)], position="hidden")
    st.rerun()


POLL_SECONDS = 2.0
MULTI, SINGLE = "Multi-task: emotion, gender, race and age", "Single task"
PROTOCOL_LABELS = {
    "holdout": "Hold-out (fair): validation carved from the training images, scored on untouched test images",
    "paper": "The paper's (optimistic): one 90/10 split; the 10% chooses when to stop and gives the score",
}


@st.cache_data(ttl=120, show_spinner="Looking for data sets ...")
def find_datasets(roots: tuple[str, ...]) -> list[settings.FoundDataset]:
    return settings.discover_datasets(roots)


def current_run(runs_dir: Path) -> Path | None:
    """The job to follow: a running one, else the one started in this session, else the newest run."""
    active = runs.active_jobs(runs_dir)
    if active:
        return active[0]
    mine = st.session_state.get("train_run")
    if mine and Path(mine).is_dir():
        return Path(mine)
    listed = runs.list_runs(runs_dir)
    return listed[0] if listed else None


st.title("Train")
runs_dir = runs.default_runs_dir()
defaults = TrainConfig()
roots = settings.data_roots()
found = find_datasets(tuple(str(r) for r in roots))
busy = runs.active_jobs(runs_dir)

with st.expander("New training run", expanded=not busy):
    if not found:
        where = ", ".join(str(r) for r in roots) or "none of the default folders exists"
        st.warning(
            f"No data set was found under the data roots ({where}). Put data sets there, or set "
            f"{settings.ENV_DATA_ROOTS} to folders that hold them ({', '.join(FORMATS)} layouts)."
        )
    else:
        st.caption(
            f"Data sets found under: {', '.join(str(r) for r in roots)} (set {settings.ENV_DATA_ROOTS} to change)."
        )
    if st.button("Look for data sets again", key="train_refresh", type="tertiary"):
        find_datasets.clear()
        st.rerun()
    labels = [d.label for d in found]
    chosen_labels = st.multiselect("Data sets", labels, default=labels, key="train_datasets")
    chosen = [found[labels.index(label)] for label in chosen_labels]

    mode = st.radio("Tasks", [MULTI, SINGLE], key="train_mode", horizontal=True)
    tasks = list(TASK_NAMES)
    if mode == SINGLE:
        tasks = [st.selectbox("Task", TASK_NAMES, key="train_task")]
    labelled = {t for d in chosen for t in d.tasks}
    unlabelled = [t for t in tasks if t not in labelled]
    trainable = bool(chosen) and len(unlabelled) < len(tasks)
    if chosen and not trainable:
        st.error(f"None of the chosen data sets has {', '.join(unlabelled)} labels: choose other data sets or tasks.")
    elif chosen and unlabelled:
        st.warning(f"None of the chosen data sets has {', '.join(unlabelled)} labels; that head will learn nothing.")

    left, middle, right = st.columns(3)
    architecture = left.selectbox(
        "Network",
        list(ARCHITECTURES),
        index=list(ARCHITECTURES).index(defaults.architecture),
        format_func=lambda a: f"{a}: {charts.ARCHITECTURE_TEXT.get(a, a)}",
        key="train_architecture",
    )
    epochs = middle.number_input("Epochs (at most)", 1, 1000, defaults.epochs, key="train_epochs")
    batch_size = right.number_input("Batch size", 1, 4096, defaults.batch_size, key="train_batch_size")
    learning_rate = left.number_input(
        "Learning rate", 1e-7, 1.0, defaults.learning_rate, step=1e-4, format="%.1e", key="train_learning_rate"
    )
    protocol = st.radio(
        "Protocol",
        PROTOCOLS,
        index=PROTOCOLS.index(defaults.protocol),
        format_func=PROTOCOL_LABELS.get,
        key="train_protocol",
    )
    weights = dict(defaults.loss_weights)
    if len(tasks) > 1:
        with st.expander("Loss weights (how much each task counts; the paper's by default)"):
            columns = st.columns(len(tasks))
            for column, task in zip(columns, tasks, strict=True):
                weights[task] = column.number_input(
                    task, 0.0, 100.0, float(defaults.loss_weights[task]), step=0.1, key=f"train_weight_{task}"
                )
    with st.expander("More settings"):
        left, right = st.columns(2)
        limit = left.number_input(
            "Use at most this many images per data set (0 = all)", 0, 10_000_000, 0, step=100, key="train_limit"
        )
        steps = right.number_input("Steps per epoch at most (0 = all)", 0, 1_000_000, 0, key="train_steps")
        augment = left.checkbox("Augment (flips, small shifts, turns, zooms)", defaults.augment, key="train_augment")
        name = right.text_input("Run name (optional)", key="train_name", max_chars=40)

    if busy:
        st.info(
            f"A training job is already running ({busy[0].name}). One job runs at a time: stop it below or wait "
            "for it to finish."
        )
    start = st.button("Start training", key="train_start", type="primary", disabled=bool(busy) or not trainable)
    if start:
        try:
            config = TrainConfig(
                # Found under the data roots a while ago (cached): still inside them, symlinks resolved?
                datasets=[{**d.to_config(), "root": str(settings.confine(d.root, roots))} for d in chosen],
                tasks=tasks,
                architecture=architecture,
                loss_weights={t: float(w) for t, w in weights.items()},
                learning_rate=float(learning_rate),
                batch_size=int(batch_size),
                epochs=int(epochs),
                protocol=protocol,
                augment=bool(augment),
                limit=int(limit) or None,
                steps_per_epoch=int(steps) or None,
                name=name.strip(),
            )
            folder = runs.start_job(config.to_dict(), runs_dir)
        except ValueError as error:  # bad settings, data outside the roots, RunError (busy, unwritable or full)
            st.error(f"Training was not started: {error}")
        else:
            st.session_state["train_run"] = str(folder)
            st.session_state["train_was_active"] = True
            st.rerun()


def stop(run: Path) -> None:
    """Button callback: runs before the rerun, so the page shows "Stopping ..." at once."""
    runs.stop_job(run)


def activate(run: Path) -> None:
    try:
        runs.set_active_model(run, runs.default_runs_dir())
    except runs.RunError as error:
        st.session_state["train_activate_error"] = str(error)


@st.fragment(run_every=POLL_SECONDS if busy or st.session_state.get("train_was_active") else None)
def monitor() -> None:
    run = current_run(runs_dir)
    if run is None:
        st.info("No training run yet.")
        return
    progress = runs.read_progress(run)
    status = charts.job_status(progress)
    if st.session_state.get("train_was_active") and not status.active:
        st.session_state["train_was_active"] = False
        st.rerun(scope="app")  # stop polling, enable Start again
    st.subheader(f"Run {run.name}")
    st.progress(status.fraction, text=status.headline)
    try:
        config = runs.read_json(run / runs.CONFIG_FILE)
    except runs.RunError:
        config = {}
    tasks = config.get("tasks", list(TASK_NAMES))
    if status.finished:  # progress.json then holds the held-out evaluations' summary
        cards = charts.summary_cards(progress.get("metrics") or {}, len(tasks) > 1)
        columns = st.columns(min(4, len(cards))) if cards else []
        for i, card in enumerate(cards):
            columns[i % len(columns)].metric(card.label, card.value, card.delta, help=card.help, border=True)
    elif metrics := charts.epoch_metrics(progress.get("metrics"), tasks):
        columns = st.columns(len(metrics))
        for column, (label, value) in zip(columns, metrics, strict=True):
            column.metric(label, value)
    history_path = run / runs.HISTORY_FILE
    if history_path.is_file():
        try:
            history = pd.read_csv(history_path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError):
            history = None
        if history is not None and len(history):
            shown = charts.history_tasks(history)
            columns = st.columns(2 if len(shown) > 1 else 1)
            for i, task in enumerate(shown):
                columns[i % len(columns)].plotly_chart(
                    charts.history_figure(history, task), key=f"train-history-{task}"
                )
    with st.expander("Log (last lines)", expanded=status.state == "failed"):
        st.code(runs.log_tail(run, 30) or "(nothing written yet)", language=None)

    if status.active:
        st.button(
            "Stop",
            key="train_stop",
            disabled=status.state == "stopping",
            on_click=stop,
            args=(run,),
            help="Stops after the current step and saves a checkpoint; `mtfer train --resume` continues it.",
        )
    if status.finished:
        left, right = st.columns(2)
        if left.button("Evaluate this run", key="train_evaluate"):
            st.session_state["evaluate_request"] = str(run)
            st.switch_page("pages/evaluate.py")
        if runs.resolve_model(None, runs_dir).resolve() == run.resolve():
            right.success("This run is the model that Predict uses.", icon=":material/check_circle:")
        else:
            right.button("Use this model for Predict", key="train_activate", on_click=activate, args=(run,))
            if error := st.session_state.pop("train_activate_error", None):
                right.error(f"Could not make it the active model: {error}")


st.divider()
monitor()
