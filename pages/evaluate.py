"""Evaluate: a model's accuracy per task beside the paper's, confusions, per-class scores, training curves,
misclassified faces, accuracy by group, and two runs side by side."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from mtfer import charts, faces, runs, settings
from mtfer.datasets import FORMATS
from mtfer.evaluation import (
    EVAL_SPLITS,
    METRICS_FILE,
    EvaluationError,
    compare_runs,
    confusion_frame,
    evaluate_dataset,
    load_evaluation,
    misclassified,
    per_class_frame,
)
from mtfer.tasks import TASKS

if not st.session_state.get("mtfer_app"):
    # Opened by its URL before app.py ever ran in this server, Streamlit runs a pages/ file on its own (its
    # pages-folder mode). Hand over to app.py's navigation, which then shows this same page.
    st.session_state["mtfer_app"] = True
    st.navigation([st.Page(lambda: None, url_path="start", default=True), st.Page(__file__)], position="hidden")
    st.rerun()

MISSING_FACE = np.full((50, 50), 200, np.uint8)


@st.cache_data(ttl=120, show_spinner="Looking for data sets ...")
def find_datasets(roots: tuple[str, ...]) -> list[settings.FoundDataset]:
    return settings.discover_datasets(roots)


@st.cache_data(show_spinner=False, max_entries=16)
def read_evaluation(folder: str, modified: int):
    return load_evaluation(folder)


@st.cache_data(show_spinner=False, max_entries=2000)
def gallery_face(source: str, preprocessing: str) -> np.ndarray | None:
    return charts.sample_face(
        source, faces.PreprocessConfig.from_dict(json.loads(preprocessing)), settings.data_roots()
    )


def read_metadata(path: Path) -> dict:
    try:
        return runs.read_json(path / runs.METADATA_FILE)
    except runs.RunError:
        return {}


def show_cards(cards: list[charts.AccuracyCard]) -> None:
    if not cards:
        st.info("This evaluation has no labelled faces for any task.")
        return
    columns = st.columns(min(4, len(cards)))
    for i, card in enumerate(cards):
        with columns[i % len(columns)]:
            st.metric(card.label, card.value, card.delta, help=card.help, border=True)
            st.caption(card.paper_text)


st.title("Evaluate")

choices = settings.model_choices()
if not choices:
    st.info("No trained model yet: train one on the Train page, then come back here.")
    st.stop()
labels = [c.label for c in choices]
paths = [c.path for c in choices]

# The Train page's "Evaluate this run" asks for a model by path before this page's widgets exist.
if (request := st.session_state.pop("evaluate_request", None)) is not None:
    wanted = Path(request).resolve()
    if wanted in paths:
        st.session_state["evaluate_model"] = labels[paths.index(wanted)]

chosen = st.selectbox("Model or run", labels, key="evaluate_model")
model = choices[labels.index(chosen)]
metadata = read_metadata(model.path)
multi_task = len(metadata.get("tasks", {})) > 1

with st.expander("Evaluate this model on a data set now", expanded=not settings.list_evaluations(model.path)):
    roots = settings.data_roots()
    found = find_datasets(tuple(str(r) for r in roots))
    if not found:
        where = ", ".join(str(r) for r in roots) or "none found"
        st.info(
            f"No data set was found under the data roots ({where}). Put data sets there, or set "
            f"{settings.ENV_DATA_ROOTS} to folders that hold them ({', '.join(FORMATS)} layouts)."
        )
    else:
        left, right = st.columns([3, 1])
        dataset_label = left.selectbox("Data set", [d.label for d in found], key="evaluate_dataset")
        split = right.selectbox("Split", EVAL_SPLITS, index=EVAL_SPLITS.index("test"), key="evaluate_split")
        if st.button("Evaluate", key="evaluate_now", type="primary"):
            dataset = found[[d.label for d in found].index(dataset_label)]
            bar = st.progress(0.0, text="Finding and aligning the faces ...")

            def on_progress(done: int, total: int) -> None:
                bar.progress(done / total if total else 1.0, text=f"Finding and aligning faces: {done:,} of {total:,}")

            try:
                with st.spinner("Evaluating ..."):
                    # Found under the data roots a while ago (cached): still inside them, symlinks resolved?
                    root = str(settings.confine(dataset.root, roots))
                    _, out = evaluate_dataset(str(model.path), dataset.format, root, split, progress=on_progress)
            except (ValueError, OSError) as error:  # settings.ConfinementError is a ValueError
                st.error(f"The evaluation failed: {error}")
            else:
                st.session_state["evaluate_key_request"] = out.name
                st.rerun()

evaluations = settings.list_evaluations(model.path)
if not evaluations:
    st.info("This model has no saved evaluation yet: evaluate it on a data set above.")
    st.stop()
if (key_request := st.session_state.pop("evaluate_key_request", None)) in evaluations:
    st.session_state["evaluate_key"] = key_request
key = st.selectbox(
    "Evaluation",
    evaluations,
    key="evaluate_key",
    help="<data set>-<split>: the images the model was scored on. 'test' images were never used in training.",
)
folder = settings.evaluation_dir(model.path, key)
try:
    evaluation = read_evaluation(str(folder), (folder / METRICS_FILE).stat().st_mtime_ns)
except (FileNotFoundError, EvaluationError) as error:
    st.error(f"This evaluation cannot be read: {error}")
    st.stop()
task_metrics = evaluation.metrics.get("tasks", {})
tasks = [t for t in TASKS if task_metrics.get(t, {}).get("n")]

st.subheader(f"Accuracy on {key} ({evaluation.metrics.get('n', 0):,} faces)")
if charts.is_optimistic(metadata):
    st.warning(
        "Optimistic: this run was trained with the paper's protocol, where the same 10% of the images chose when "
        "to stop training and gave these scores.",
        icon=":material/info:",
    )
elif key.endswith("-val"):
    st.caption("Validation images chose when training stopped; the test evaluation is the fairer score.")
show_cards(charts.accuracy_cards(key, task_metrics, multi_task))

tabs = st.tabs(
    [
        "Confusion matrices",
        "Per-class scores",
        "Training curves",
        "Misclassified faces",
        "Accuracy by group",
        "Compare runs",
    ]
)


with tabs[0]:
    normalized = st.toggle(
        "Row-normalised (share of each true class)", key="evaluate_normalized", help="Off: counts of faces."
    )
    columns = st.columns(2)
    for i, task in enumerate(tasks):
        frame = confusion_frame(evaluation.metrics, task, normalize=normalized)
        columns[i % 2].plotly_chart(
            charts.confusion_figure(frame, normalized, task.capitalize()), key=f"confusion-{task}"
        )

with tabs[1]:
    st.caption(
        "Precision: of the faces given this label, the share that had it. Recall: of the faces that had it, the "
        "share found. F1 combines both. Support: faces with this true label."
    )
    for task in tasks:
        st.markdown(f"**{task.capitalize()}**")
        st.dataframe(per_class_frame(evaluation.metrics, task).style.format(precision=3, na_rep="n/a"))

with tabs[2]:
    history_path = model.path / runs.HISTORY_FILE
    history = pd.read_csv(history_path) if history_path.is_file() else None
    if history is None or history.empty:
        st.info("This model folder has no training history (history.csv).")
    else:
        for task in charts.history_tasks(history):
            st.plotly_chart(charts.history_figure(history, task), key=f"history-{task}")
        if (figure := charts.learning_rate_figure(history)) is not None:
            st.plotly_chart(figure, key="history-learning-rate")

with tabs[3]:
    if not tasks:
        st.info("No labelled faces in this evaluation.")
    else:
        left, middle, right = st.columns(3)
        task = left.selectbox("Task", tasks, key="gallery_task")
        classes = ["any", *TASKS[task].classes]
        true = middle.selectbox("True class", classes, key="gallery_true")
        predicted = right.selectbox("Predicted class", classes, key="gallery_predicted")
        wrong = misclassified(
            evaluation.samples, task, None if true == "any" else true, None if predicted == "any" else predicted
        )
        st.caption(f"{len(wrong):,} misclassified faces, the most confident mistakes first.")
        if len(wrong):
            most = int(min(60, len(wrong)))
            count = st.slider("How many to show", 1, most, min(24, most), key="gallery_count") if most > 1 else 1
            preprocessing = json.dumps(metadata.get("preprocessing", {}), sort_keys=True)
            shown = wrong.head(count)
            images, captions = [], []
            for _, row in shown.iterrows():
                face = gallery_face(str(row["source"]), preprocessing)
                images.append(charts.enlarge(MISSING_FACE if face is None else face, 100))
                caption = charts.gallery_caption(row, task)
                captions.append(caption if face is not None else caption + " (image not available)")
            st.image(images, caption=captions, width=100)

with tabs[4]:
    figure = charts.slices_figure(evaluation.slices) if "emotion" in tasks else None
    if figure is None:
        st.info(
            "Emotion accuracy by gender, race and age needs faces labelled with emotion and with those attributes "
            "(RAF-DB has both; FER2013 has only emotion, UTKFace no emotion)."
        )
    else:
        st.plotly_chart(figure, key="slices")
        st.dataframe(
            evaluation.slices.assign(accuracy=evaluation.slices["accuracy"].map(charts.percent)), hide_index=True
        )

with tabs[5]:
    others = [c for c in choices if c.path != model.path and settings.list_evaluations(c.path)]
    if not others:
        st.info("Only one model has evaluations. Train another run (for example single-task) to compare them.")
    else:
        left, right = st.columns(2)
        other_label = left.selectbox("Compare with", [c.label for c in others], key="compare_model")
        other = others[[c.label for c in others].index(other_label)]
        other_keys = settings.list_evaluations(other.path)
        other_key = right.selectbox(
            "Its evaluation", other_keys, index=other_keys.index(key) if key in other_keys else 0, key="compare_key"
        )
        other_folder = settings.evaluation_dir(other.path, other_key)
        try:
            other_evaluation = read_evaluation(str(other_folder), (other_folder / METRICS_FILE).stat().st_mtime_ns)
        except (FileNotFoundError, EvaluationError) as error:
            st.error(f"That evaluation cannot be read: {error}")
        else:
            name_a, name_b = f"{model.path.name} · {key}", f"{other.path.name} · {other_key}"
            table = compare_runs({name_a: evaluation.metrics, name_b: other_evaluation.metrics})
            st.dataframe(table.map(charts.percent))
            st.plotly_chart(charts.comparison_figure(table), key="compare")
            other_multi = len(read_metadata(other.path).get("tasks", {})) > 1
            left, right = st.columns(2)
            for column, name, cards in (
                (left, name_a, charts.accuracy_cards(key, task_metrics, multi_task)),
                (
                    right,
                    name_b,
                    charts.accuracy_cards(other_key, other_evaluation.metrics.get("tasks", {}), other_multi),
                ),
            ):
                column.markdown(f"**{charts.escape_markdown(name)}**")
                for card in cards:
                    delta = f" ({card.delta})" if card.delta else ""
                    column.markdown(f"{card.task.capitalize()}: **{card.value}**{delta}", help=card.help)
