"""Evaluate: a model's accuracy per task beside the paper's, confusions, per-class scores, training curves,
misclassified faces, accuracy by group, and two runs side by side. The choices (model, evaluation, filters) live in
the URL's query parameters, so a reload or a shared link shows the same view."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from mtfer.app import cards, figures, wording
from mtfer.assess.abstain import min_confidences
from mtfer.assess.evaluation import (
    EVAL_SPLITS,
    SLICE_ATTRIBUTES,
    EvaluationError,
    compare_runs,
    confusion_frame,
    emotion_by_predicted_group,
    evaluate_dataset,
    group_accuracy,
    load_evaluation,
    macro_f1,
    misclassified,
    per_class_frame,
    untaught_unseen,
)
from mtfer.assess.race_groups import paper_measure_text, race_coverage
from mtfer.core import bundles, preprocess
from mtfer.core.bundles import METRICS_FILE
from mtfer.core.tasks import TASKS, display_name
from mtfer.store import settings
from mtfer.store.lineage import Lineage, read_lineage
from pages.common.cards import show_accuracy_cards
from pages.common.operator import operator_access
from pages.common.setup import setup_page
from pages.common.widgets import remember, restore

setup_page(__file__)

MISSING_FACE = np.full((50, 50), 200, np.uint8)
ANY = "any"


@st.cache_data(ttl=120, show_spinner="Looking for data sets ...")
def find_datasets(roots: tuple[str, ...]) -> list[settings.FoundDataset]:
    return settings.discover_datasets(roots)


@st.cache_data(show_spinner=False, max_entries=16)
def read_evaluation(folder: str, modified: int):
    return load_evaluation(folder)


@st.cache_data(show_spinner=False, max_entries=16)
def read_history(folder: str, modified: int) -> Lineage:
    return read_lineage(folder)


@st.cache_data(show_spinner=False, max_entries=2000)
def gallery_face(source: str, preprocessing: str) -> tuple[np.ndarray, bool] | None:
    return figures.sample_face(
        source, preprocess.PreprocessConfig.from_dict(json.loads(preprocessing)), settings.data_roots()
    )


def read_metadata(path: Path) -> dict:
    try:
        return bundles.read_json(path / bundles.METADATA_FILE)
    except bundles.RunError:
        return {}


def modified(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def show_cards(cards: list[cards.AccuracyCard]) -> None:
    if not cards:
        st.info("This evaluation has no labelled faces for any task.")
        return
    # Titled with the task only: the evaluation is in the heading above. At least four columns: the same card width
    # whatever the number of tasks.
    show_accuracy_cards(cards, title=lambda card: display_name(card.task), columns=max(4, len(cards)))


def offer_evaluation(other: settings.ModelChoice, key: str, may_evaluate: bool) -> None:
    """ "Evaluate it on these images now" for a model that has no evaluation on the images of `key`."""
    fmt, split = wording.evaluation_dataset(key), wording.evaluation_split(key) or "test"
    roots = settings.data_roots()
    dataset = next((d for d in find_datasets(tuple(str(r) for r in roots)) if d.format == fmt), None)
    if dataset is None:
        st.caption(f"{wording.dataset_title(fmt)} is not under the data folders, so it cannot be evaluated here.")
        return
    if not st.button(
        f"Evaluate it on {wording.evaluation_title(f'{fmt}-{split}')} now",
        key="compare_evaluate_now",
        disabled=not may_evaluate,
    ):
        return
    bar = st.progress(0.0, text="Finding and aligning the faces ...")
    try:
        with st.spinner("Evaluating ..."):
            evaluate_dataset(
                str(other.path),
                dataset.format,
                str(settings.confine(dataset.root, roots)),
                split,
                progress=lambda d, t: bar.progress(d / t if t else 1.0, text=f"Finding faces: {d:,} of {t:,}"),
                predict_progress=lambda d, t: bar.progress(d / t if t else 1.0, text=f"Reading faces: {d:,} of {t:,}"),
            )
    except (ValueError, OSError) as error:
        st.error(f"The evaluation failed: {error}")
    else:
        st.rerun()


st.title("Evaluate")

choices = settings.model_choices()
if not choices:
    st.info("No trained model yet: train one on the Train page, then come back here.")
    st.stop()
labels = [c.label for c in choices]
paths = [c.path for c in choices]
titles = {c.label: cards.choice_title(c.kind, c.path.name, read_metadata(c.path)) for c in choices}

# The Train page's "Evaluate this run" asks for a model by path before this page's widgets exist.
if (request := st.session_state.pop("evaluate_request", None)) is not None:
    wanted = Path(request).resolve()
    if wanted in paths:
        st.session_state["evaluate_model"] = labels[paths.index(wanted)]
if "evaluate_model" not in st.session_state and (found := settings.find_choice(choices, st.query_params.get("model"))):
    st.session_state["evaluate_model"] = found.label

chosen = st.selectbox("Model or run", labels, key="evaluate_model", format_func=lambda label: titles.get(label, label))
model = choices[labels.index(chosen)]
remember("model", model.slug)
metadata = read_metadata(model.path)
multi_task = len(metadata.get("tasks", {})) > 1
protocol = metadata.get("protocol")

with st.expander("Evaluate this model on a data set now", expanded=not settings.list_evaluations(model.path)):
    # An evaluation takes the machine for minutes and is kept for everyone: on a server other machines can reach,
    # only the operator may start one (mtfer.store.operator).
    may_evaluate = operator_access().allowed
    roots = settings.data_roots()
    found_sets = find_datasets(tuple(str(r) for r in roots))
    if not found_sets:
        st.info(settings.no_datasets_text(roots))
    else:
        left, right = st.columns([3, 1])
        readable = {d.label: wording.dataset_choice(d.name, d.format, d.samples, d.tasks) for d in found_sets}
        dataset_label = left.selectbox(
            "Data set",
            [d.label for d in found_sets],
            key="evaluate_dataset",
            format_func=lambda label: readable.get(label, label),
        )
        split = right.selectbox(
            "Split",
            EVAL_SPLITS,
            index=EVAL_SPLITS.index("test"),
            key="evaluate_split",
            format_func=lambda name: wording.SPLIT_TITLES.get(name, name).capitalize(),
        )
        if st.button("Evaluate", key="evaluate_now", type="primary", disabled=not may_evaluate) and may_evaluate:
            dataset = found_sets[[d.label for d in found_sets].index(dataset_label)]
            bar = st.progress(0.0, text="Finding and aligning the faces ...")

            # Two phases, each with its own bar: finding the faces, then the network reading them.
            def on_progress(done: int, total: int) -> None:
                bar.progress(done / total if total else 1.0, text=f"Finding and aligning faces: {done:,} of {total:,}")

            def on_predict(done: int, total: int) -> None:
                bar.progress(done / total if total else 1.0, text=f"The model reads the faces: {done:,} of {total:,}")

            try:
                with st.spinner("Evaluating ..."):
                    # Found under the data roots a while ago (cached): still inside them, symlinks resolved?
                    root = str(settings.confine(dataset.root, roots))
                    _, out = evaluate_dataset(
                        str(model.path), dataset.format, root, split, progress=on_progress, predict_progress=on_predict
                    )
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
restore("evaluate_key", "evaluation", evaluations)
key = st.selectbox(
    "Evaluation",
    evaluations,
    key="evaluate_key",
    format_func=wording.evaluation_title,
    help=(
        "The images the model was scored on. Test images were never used in training; validation images chose "
        "when training stopped. Evaluations made here of the default model are kept in the runs folder."
    ),
)
remember("evaluation", key)
folder = settings.evaluation_dir(model.path, key)
try:
    evaluation = read_evaluation(str(folder), (folder / METRICS_FILE).stat().st_mtime_ns)
except (FileNotFoundError, EvaluationError) as error:
    st.error(f"This evaluation cannot be read: {error}")
    st.stop()
task_metrics = evaluation.metrics.get("tasks", {})
tasks = [t for t in TASKS if task_metrics.get(t, {}).get("n")]
dataset_name = wording.dataset_title(wording.evaluation_dataset(key))

st.subheader(f"Accuracy on {wording.evaluation_title(key)} ({evaluation.metrics.get('n', 0):,} faces)")
if cards.is_optimistic(metadata):
    st.warning(
        "Optimistic: this run was trained with the paper's protocol, where the same 10% of the images chose when "
        "to stop training and gave these scores.",
        icon=":material/info:",
    )
elif wording.evaluation_split(key) == "val":
    st.caption("Validation images chose when training stopped; the test evaluation is the fairer score.")
show_cards(cards.accuracy_cards(key, task_metrics, multi_task, protocol))
card_key = f"{wording.evaluation_dataset(key)}-{wording.evaluation_split(key)}"  # the same images on the model card
if difference := cards.card_difference_text(metadata, card_key, task_metrics):
    st.caption(difference)

tabs = st.tabs(
    [
        "Confusion matrices",
        "Per-class scores",
        "Training curves",
        "Misclassified faces",
        "Accuracy by group",
        "Compare runs",
        "Confidence",
    ]
)


def hidden_note(task: str) -> str:
    """Which untaught classes (gender "unsure") the matrices leave out, and why."""
    rows = untaught_unseen(evaluation.metrics, task)
    if not rows:
        return ""
    columns = untaught_unseen(evaluation.metrics, task, predicted_too=True)
    names = " and ".join(f"“{display_name(task, c)}”" for c in rows)
    where = "is left out" if columns == rows else "has no row, only a column for the faces the model put there"
    return f" {display_name(task)} {names} {where}: no data set here teaches it, so no face has it as its true class."


def show_faces(rows: pd.DataFrame, task: str) -> None:
    """Faces of the evaluation (rows of its samples), each framed as the model saw it, with its answer."""
    preprocessing = json.dumps(metadata.get("preprocessing", {}), sort_keys=True)
    images, captions = [], []
    for _, row in rows.iterrows():
        framed = gallery_face(str(row["source"]), preprocessing)
        images.append(figures.enlarge(MISSING_FACE if framed is None else framed[0], 150))
        caption = figures.gallery_caption(row, task)
        if framed is None:
            caption += " (image not available)"
        elif not framed[1]:
            caption += f" ({figures.NO_FACE_NOTE})"
        captions.append(caption)
    st.image(images, caption=captions, width=150)


def show_cell(task: str, event: Any) -> None:
    """The faces of the confusion-matrix cell just clicked (true class: its row, answer: its column)."""
    points = event.selection.points if event else []
    if not points:
        return
    by_name = {display_name(task, c): c for c in TASKS[task].classes}
    true, answered = by_name.get(str(points[0].get("y"))), by_name.get(str(points[0].get("x")))
    if true is None or answered is None:
        return
    if true == answered:
        st.caption(f"{display_name(task, true)} answered right: the gallery shows mistakes only.")
        return
    cell = misclassified(evaluation.samples, task, true, answered)
    st.markdown(f"**{display_name(task)}: {display_name(task, true)} faces answered {display_name(task, answered)}**")
    shown, what = figures.gallery_page(cell, 1)
    st.caption(
        f"{what}, the most confident mistakes first (all of them: Misclassified faces)." if len(cell) else "None."
    )
    show_faces(shown, task)


with tabs[0]:
    if "evaluate_normalized" not in st.session_state and st.query_params.get("normalized") == "1":
        st.session_state["evaluate_normalized"] = True
    normalized = st.toggle(
        "Row-normalised (share of each true class)", key="evaluate_normalized", help="Off: counts of faces."
    )
    remember("normalized", "1" if normalized else None)
    st.caption(
        "Each row is the faces of one true class; the columns say what the model answered. The diagonal is right."
        + "".join(hidden_note(t) for t in tasks)
    )
    st.caption("Click a cell to see its faces.")
    columns = st.columns(2)
    clicked = []
    for i, task in enumerate(tasks):
        frame = wording.display_frame(
            confusion_frame(evaluation.metrics, task, normalize=normalized, hide_untaught=True), task
        )
        event = columns[i % 2].plotly_chart(
            figures.confusion_figure(frame, normalized, display_name(task)),
            key=f"confusion-{task}",
            on_select="rerun",
            selection_mode="points",
            config={"displayModeBar": False},
        )
        clicked.append((task, event))
    for task, event in clicked:
        show_cell(task, event)

with tabs[1]:
    st.caption(
        "Precision: of the faces given this label, the share that had it. Recall: of the faces that had it, the "
        "share found. F1 combines both. Faces: how many had this true label. Macro F1 averages F1 over the "
        "classes this data set has, each class counting the same."
    )
    for task in tasks:
        st.markdown(f"**{display_name(task)}**")
        score, present = macro_f1(evaluation.metrics, task)
        absent = [c for c in TASKS[task].classes if c not in present]
        absent_text = f" (not in {dataset_name}: {', '.join(display_name(task, c) for c in absent)})" if absent else ""
        st.caption(
            f"Macro F1 {score:.3f}, averaged over the {len(present)} classes with faces{absent_text}."
            if score is not None
            else "No macro F1: no labelled face."
        )
        table = wording.display_frame(per_class_frame(evaluation.metrics, task, hide_untaught=True), task)
        table = table.rename(columns={"precision": "Precision", "recall": "Recall", "f1": "F1", "support": "Faces"})
        table.index.name = display_name(task)
        st.dataframe(table.style.format(precision=3, na_rep="n/a", thousands=","))

with tabs[2]:
    history_path = model.path / bundles.HISTORY_FILE
    lineage = read_history(str(model.path), modified(history_path) + modified(model.path / bundles.METADATA_FILE))
    history = lineage.history
    if history.empty:
        st.info(cards.no_history_text(metadata))
    else:
        own = lineage.stages[-1]
        if lineage.missing:
            st.info(
                f"This model continued the training of an earlier run whose history is not stored with it, so the "
                f"curves show only its last {own.epochs or len(history)} epochs, numbered from 1 here.",
                icon=":material/info:",
            )
        elif lineage.continued:
            st.caption(
                f"The whole training: {lineage.total_epochs or len(history)} epochs in {len(lineage.stages)} runs, "
                "each starting from the weights the one before ended with; a dotted line marks where training "
                "continued. A continued run may be taught something new (another answer for a task, other data or "
                "settings), so a curve can step up or down at that line."
            )
        st.caption(figures.HISTORY_NOTE)
        kept = figures.kept_epoch(history, lineage.starts)
        for task in figures.history_tasks(history):
            st.plotly_chart(figures.history_figure(history, task, lineage.starts, kept), key=f"history-{task}")
        if (figure := figures.learning_rate_figure(history, lineage.starts)) is not None:
            st.caption(
                "The learning rate: how big a step training takes at each update (schedules lower it as training settles)."
            )
            st.plotly_chart(figure, key="history-learning-rate")
        if (figure := figures.loss_weights_figure(history, lineage.starts)) is not None:
            st.caption(figures.LOSS_WEIGHTS_NOTE)
            st.plotly_chart(figure, key="history-loss-weights")

with tabs[3]:
    if not tasks:
        st.info("No labelled faces in this evaluation.")
    else:
        left, middle, right = st.columns(3)
        restore("gallery_task", "task", tasks)
        task = left.selectbox("Task", tasks, key="gallery_task", format_func=display_name)
        hidden = untaught_unseen(evaluation.metrics, task)
        classes = [ANY, *(c for c in TASKS[task].classes if c not in hidden)]
        restore("gallery_true", "true", classes)
        restore("gallery_predicted", "predicted", classes)

        def class_title(name: str, task: str = task) -> str:
            return "Any" if name == ANY else display_name(task, name)

        true = middle.selectbox("True class", classes, key="gallery_true", format_func=class_title)
        predicted = right.selectbox("Predicted class", classes, key="gallery_predicted", format_func=class_title)
        remember("task", task)
        remember("true", None if true == ANY else true)
        remember("predicted", None if predicted == ANY else predicted)
        wrong = misclassified(
            evaluation.samples, task, None if true == ANY else true, None if predicted == ANY else predicted
        )
        st.caption(f"{len(wrong):,} misclassified faces, the most confident mistakes first.")
        if len(wrong):
            pages = -(-len(wrong) // figures.GALLERY_PAGE)
            page = (
                st.number_input("Page", 1, pages, 1, key="gallery_page", help=f"{pages} pages of faces")
                if pages > 1
                else 1
            )
            shown, what = figures.gallery_page(wrong, page)
            st.caption(what)
            show_faces(shown, task)


def predicted_groups_panels() -> tuple[pd.DataFrame, tuple[str, list[go.Figure]]]:
    """Emotion accuracy by the gender, race and age group the model itself predicted (for faces that carry no such
    labels, like FER2013's): the table and its heading and charts (none without attribute heads or emotion
    labels)."""
    groups = emotion_by_predicted_group(evaluation.samples)
    emotion = task_metrics.get("emotion", {})
    return groups, figures.slices_panels(groups, "emotion", emotion.get("accuracy"), emotion.get("n"), predicted=True)


def show_panels(heading: str, panels: list[go.Figure], key: str) -> None:
    """A heading, then one chart per column: side by side on a wide screen, one under another on a phone."""
    st.markdown(f"**{heading}**")
    for i, (column, figure) in enumerate(zip(st.columns(len(panels)), panels, strict=True)):
        with column:
            st.plotly_chart(figure, key=f"{key}-{i}")


with tabs[4]:
    st.caption(
        "Does the model work as well for everyone? Each bar is the accuracy on the faces of one group, counted "
        "from their true labels; the first, darker bar is the accuracy on all faces. Small groups give uncertain "
        "figures."
    )
    emotion_heading, emotion_panels = (
        figures.slices_panels(
            evaluation.slices, "emotion", task_metrics["emotion"].get("accuracy"), task_metrics["emotion"].get("n")
        )
        if "emotion" in tasks
        else ("", [])
    )
    predicted_groups, predicted_panels = None, []  # emotion by the model's own guesses of the groups
    if emotion_panels:
        show_panels(emotion_heading, emotion_panels, "slices")
    else:
        st.markdown("**Emotion accuracy by group**")
        st.info(
            "Emotion accuracy by gender, race and age group cannot be computed for this evaluation: it needs faces "
            "labelled with their emotion and with those attributes. FER2013's faces carry only an emotion label and "
            "UTKFace's no emotion label, so no face here has both (RAF-DB has both).",
            icon=":material/info:",
        )
        if "emotion" in tasks:
            predicted_groups, (predicted_heading, predicted_panels) = predicted_groups_panels()
        if predicted_panels:
            st.markdown(
                "**Instead, by the groups the model guessed.** Below, each face counts in the gender, race and age "
                "group the model itself predicted for it (hatched bars)."
            )
            show_panels(predicted_heading, predicted_panels, "slices-predicted")
            st.caption(
                f"Caution: these are the model's guesses, not true groups ({dataset_name}'s faces carry no gender, "
                "race or age labels), so a face it places in the wrong group is counted there; take gaps between "
                "groups as a hint to look closer, not as proof."
            )
    groups = group_accuracy(evaluation.samples, tasks=[t for t in tasks if t in SLICE_ATTRIBUTES])
    attribute_tasks = [t for t in SLICE_ATTRIBUTES if t in set(groups["task"])]
    if not attribute_tasks:
        st.markdown("**Gender, race and age group accuracy by group**")
        st.info(
            f"No face in this evaluation has two of gender, race and age group labelled ({dataset_name} labels "
            f"{'only emotion' if dataset_name == 'FER2013' else 'too few of them'}), so there is nothing to break "
            "down here. Choose a UTKFace evaluation to see, for example, gender accuracy by race and by age group.",
            icon=":material/info:",
        )
    for task in attribute_tasks:
        heading, panels = figures.slices_panels(
            groups, task, task_metrics[task].get("accuracy"), task_metrics[task].get("n")
        )
        if panels:
            show_panels(heading, panels, f"groups-{task}")
    if attribute_tasks and wording.evaluation_dataset(key) == "utkface":
        st.caption(
            "UTKFace's Indian and “Other” faces have no label in the three race groups the model knows: they count "
            "in gender and age accuracy, but under no race group."
        )
    table = groups.assign(
        task=[display_name(t) for t in groups["task"]],
        attribute=[display_name(a) for a in groups["attribute"]],
        group=[display_name(a, g) for a, g in zip(groups["attribute"], groups["group"], strict=True)],
        accuracy=groups["accuracy"].map(wording.percent),
    )
    if emotion_panels:
        usable = evaluation.slices[evaluation.slices["n"] > 0]
        emotion_rows = usable.assign(
            task="Emotion",
            attribute=[display_name(a) for a in usable["attribute"]],
            group=[display_name(a, g) for a, g in zip(usable["attribute"], usable["group"], strict=True)],
            accuracy=usable["accuracy"].map(wording.percent),
        )
        table = pd.concat([emotion_rows[list(table.columns)], table], ignore_index=True)
    elif predicted_panels and predicted_groups is not None:
        guessed = predicted_groups.assign(
            task="Emotion",
            attribute=[f"Predicted {display_name(a).lower()}" for a in predicted_groups["attribute"]],
            group=[display_name(a, g) for a, g in predicted_groups[["attribute", "group"]].itertuples(index=False)],
            accuracy=predicted_groups["accuracy"].map(wording.percent),
        )
        table = pd.concat([guessed[list(table.columns)], table], ignore_index=True)
    if not table.empty:
        with st.expander("The figures as a table"):
            st.dataframe(
                table.rename(
                    columns={"task": "Accuracy of", "attribute": "By", "group": "Group", "n": "Faces",
                             "accuracy": "Accuracy"}
                ),
                hide_index=True,
            )  # fmt: skip
    coverage = (
        race_coverage(evaluation.samples, min_confidences(metadata, ["race"])["race"]) if "race" in tasks else None
    )
    if coverage is not None:
        st.markdown("**Race beyond the three groups**")
        st.caption(wording.race_groups_caption(metadata["tasks"]["race"], coverage.min_confidence))
        st.dataframe(wording.race_groups_table(coverage), hide_index=True)
        st.caption(coverage.summary() + paper_measure_text(task_metrics.get("race", {}).get("three_groups_accuracy")))

with tabs[5]:
    others = [c for c in choices if c.path != model.path and settings.list_evaluations(c.path)]
    if not others:
        st.info("Only one model has evaluations. Train another run (for example single-task) to compare them.")
    else:
        left, right = st.columns(2)
        other_labels = [c.label for c in others]
        if "compare_model" not in st.session_state and (
            wanted := settings.find_choice(others, st.query_params.get("compare"))
        ):
            st.session_state["compare_model"] = wanted.label
        other_label = left.selectbox(
            "Compare with", other_labels, key="compare_model", format_func=lambda label: titles.get(label, label)
        )
        other = others[other_labels.index(other_label)]
        remember("compare", other.slug)
        all_keys = settings.list_evaluations(other.path)
        same = wording.same_images(all_keys, key)
        other_keys = same + [k for k in all_keys if k not in same]
        # Keyed by this evaluation and the other model, so that each new pair starts on the same images (Streamlit
        # keeps a widget's old value and ignores a new default).
        other_key = right.selectbox(
            "Its evaluation",
            other_keys,
            key=f"compare_key-{other.slug}-{key}",
            format_func=wording.evaluation_title,
        )
        if same:
            heading = f"**Both models on {wording.evaluation_title(key)}**"
            st.markdown(heading if other_key in same else f"{heading} (chosen below: other images)")
        else:
            st.info(
                f"{titles.get(other_label, other_label)} has no evaluation on {wording.evaluation_title(key)} yet, "
                "so its numbers below come from other images.",
                icon=":material/info:",
            )
            offer_evaluation(other, key, may_evaluate=operator_access(note=False).allowed)
        if same and other_key not in same:
            st.warning(
                f"Not like for like: {wording.evaluation_title(key)} against {wording.evaluation_title(other_key)}.",
                icon=":material/warning:",
            )
        other_folder = settings.evaluation_dir(other.path, other_key)
        try:
            other_evaluation = read_evaluation(str(other_folder), (other_folder / METRICS_FILE).stat().st_mtime_ns)
        except (FileNotFoundError, EvaluationError) as error:
            st.error(f"That evaluation cannot be read: {error}")
        else:
            other_metadata = read_metadata(other.path)
            name_a, name_b = cards.model_title(metadata), cards.model_title(other_metadata)
            if other_key not in same:  # the heading names the images only when both models share them
                name_a = f"{name_a} · {wording.evaluation_title(key)}"
                name_b = f"{name_b} · {wording.evaluation_title(other_key)}"
            if name_a == name_b:
                name_a, name_b = f"{name_a} ({model.path.name})", f"{name_b} ({other.path.name})"
            counts = evaluation.metrics.get("n", 0), other_evaluation.metrics.get("n", 0)
            if counts[0] != counts[1]:  # e.g. a quick run scored on its own sample of the test split
                st.caption(
                    f"On {counts[0]:,} and {counts[1]:,} faces: a different number of them, so not the same ones."
                )
            table = compare_runs({name_a: evaluation.metrics, name_b: other_evaluation.metrics})
            table = table.rename(columns=display_name)
            st.dataframe(table.map(wording.percent))
            st.plotly_chart(figures.comparison_figure(table), key="compare", config={"displayModeBar": False})
            other_multi = len(other_metadata.get("tasks", {})) > 1
            left, right = st.columns(2)
            for column, name, pair_cards in (
                (left, name_a, cards.accuracy_cards(key, task_metrics, multi_task, protocol)),
                (
                    right,
                    name_b,
                    cards.accuracy_cards(
                        other_key,
                        other_evaluation.metrics.get("tasks", {}),
                        other_multi,
                        other_metadata.get("protocol"),
                    ),
                ),
            ):
                column.markdown(f"**{wording.escape_markdown(name)}**")
                for card in pair_cards:
                    delta = f" ({card.delta})" if card.delta else ""
                    column.markdown(f"{display_name(card.task)}: **{card.value}**{delta}", help=card.help)

with tabs[6]:
    st.caption(figures.RELIABILITY_NOTE)
    if evaluation.metrics.get("calibration", {}).get("temperature"):
        st.caption(figures.calibration_effect_text(evaluation.metrics))
    elif metadata.get("calibration"):
        st.caption(
            "This model is calibrated, but this evaluation was saved before it was: evaluate it again to see its "
            "calibrated confidences."
        )
    else:
        st.caption(
            f"This model's confidences are not calibrated yet: `mtfer calibrate --model {model.path}` adjusts them "
            "on its validation images (its answers stay the same)."
        )
    shown = 0
    columns = st.columns(2)
    for task in tasks:
        figure = figures.reliability_figure(task_metrics[task], display_name(task))
        if figure is not None:
            columns[shown % 2].plotly_chart(figure, key=f"reliability-{task}")
            shown += 1
    if not shown:
        st.info(
            "This evaluation was saved before calibration was measured: evaluate the model again (above) to see how "
            "far its confidence can be trusted.",
            icon=":material/info:",
        )
