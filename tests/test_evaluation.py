"""Evaluation on a small hand-computed example: metrics, slices, files and the Evaluate page's views."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtfer.app import wording
from mtfer.assess.evaluation import (
    Evaluation,
    compare_runs,
    confusion_frame,
    default_evaluation_dir,
    evaluate_predictions,
    group_accuracy,
    load_evaluation,
    macro_f1,
    misclassified,
    per_class_frame,
    save_evaluation,
    untaught_unseen,
)
from mtfer.core import bundles
from mtfer.core.tasks import AGE, EMOTION, GENDER, RACE, TASK_NAMES
from mtfer.store import settings

E = EMOTION.index


def _rows(task, rows: list[dict[str, float]]) -> np.ndarray:
    """Probabilities from {class name: prob} rows (unlisted classes get 0)."""
    out = np.zeros((len(rows), task.num_classes))
    for i, row in enumerate(rows):
        for name, p in row.items():
            out[i, task.index(name)] = p
    return out


# Six samples. Emotion: s4 unlabelled; s1 (happy->sad, 0.6) and s3 (angry->happy, 0.7) wrong.
# Gender: s3 unlabelled; s2 and s5 wrong. Age: nobody labelled. Race: labelled but not predicted.
EMOTION_TRUE = ["happy", "happy", "sad", "angry", None, "happy"]
EMOTION_PROBS = [
    {"happy": 0.8, "sad": 0.2},
    {"happy": 0.4, "sad": 0.6},
    {"sad": 0.9, "happy": 0.1},
    {"happy": 0.7, "angry": 0.3},
    {"surprise": 1.0},
    {"happy": 0.5, "neutral": 0.25, "fear": 0.25},
]
GENDER_TRUE = ["male", "female", "male", None, "female", "female"]
GENDER_PROBS = [
    {"male": 0.9, "female": 0.1},
    {"female": 0.6, "male": 0.4},
    {"female": 0.7, "male": 0.3},
    {"unsure": 1.0},
    {"female": 0.8, "male": 0.2},
    {"male": 0.6, "female": 0.4},
]
RACE_TRUE = ["asian", "asian", "caucasian", "caucasian", "african_american", None]
SOURCES = ["fer/a.jpg", "fer/b.jpg", "NA", "fer/d.jpg", "utk/e.jpg", "fer/f.jpg"]
SPLITS = ["test"] * 6


def _labels() -> np.ndarray:
    labels = np.full((6, len(TASK_NAMES)), -1, dtype=np.int64)
    for column, task, values in (
        (TASK_NAMES.index("emotion"), EMOTION, EMOTION_TRUE),
        (TASK_NAMES.index("gender"), GENDER, GENDER_TRUE),
        (TASK_NAMES.index("race"), RACE, RACE_TRUE),
    ):
        labels[:, column] = [-1 if v is None else task.index(v) for v in values]
    return labels


def _probabilities() -> dict[str, np.ndarray]:
    return {
        "emotion": _rows(EMOTION, EMOTION_PROBS),
        "gender": _rows(GENDER, GENDER_PROBS),
        "age": np.full((6, AGE.num_classes), 1 / AGE.num_classes),
    }


def _with_label(labels: np.ndarray, task: str, value: int) -> np.ndarray:
    out = labels.copy()
    out[0, TASK_NAMES.index(task)] = value
    return out


@pytest.fixture
def evaluation() -> Evaluation:
    return evaluate_predictions(_probabilities(), _labels(), sources=SOURCES, splits=SPLITS)


def test_emotion_metrics_match_hand_computation(evaluation):
    m = evaluation.metrics["tasks"]["emotion"]
    assert m["n"] == 5
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["loss"] == pytest.approx(-np.mean(np.log([0.8, 0.4, 0.9, 0.3, 0.5])))
    # happy: P = 2/3, R = 2/3; sad: P = 1/2, R = 1 -> F1 2/3; angry 0. The four classes without a true label are
    # not in the average (they are absent from the data, not the model's failure).
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert m["macro_f1_classes"] == ["happy", "sad", "angry"]  # model order
    assert m["classes"] == list(EMOTION.classes)
    expected = np.zeros((7, 7), dtype=int)
    expected[E("happy"), E("happy")] = 2
    expected[E("happy"), E("sad")] = 1
    expected[E("sad"), E("sad")] = 1
    expected[E("angry"), E("happy")] = 1
    assert m["confusion"] == expected.tolist()
    happy, sad, angry, fear = (m["per_class"][c] for c in ("happy", "sad", "angry", "fear"))
    assert (happy["precision"], happy["recall"], happy["f1"], happy["support"]) == pytest.approx(
        (2 / 3, 2 / 3, 2 / 3, 3)
    )
    assert (sad["precision"], sad["recall"], sad["f1"], sad["support"]) == pytest.approx((0.5, 1.0, 2 / 3, 1))
    assert (angry["precision"], angry["recall"], angry["f1"], angry["support"]) == (0.0, 0.0, 0.0, 1)
    assert fear == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_missing_labels_are_ignored_per_task(evaluation):
    gender = evaluation.metrics["tasks"]["gender"]
    assert gender["n"] == 5  # s3 unlabelled for gender, but counted for emotion
    assert gender["accuracy"] == pytest.approx(3 / 5)
    assert np.asarray(gender["confusion"]).sum() == 5
    assert gender["loss"] == pytest.approx(-np.mean(np.log([0.9, 0.6, 0.3, 0.8, 0.4])))
    # The same metrics as if the unlabelled samples were not there at all.
    labels = _labels()
    keep = labels[:, TASK_NAMES.index("emotion")] >= 0
    subset = evaluate_predictions({"emotion": _probabilities()["emotion"][keep]}, labels[keep])
    assert subset.metrics["tasks"]["emotion"] == evaluation.metrics["tasks"]["emotion"]


def test_task_without_labels_reports_nulls(evaluation):
    age = evaluation.metrics["tasks"]["age"]
    assert age["n"] == 0
    assert age["accuracy"] is None and age["loss"] is None and age["macro_f1"] is None
    assert age["macro_f1_classes"] == [] and macro_f1(evaluation.metrics, "age") == (None, [])
    assert age["confusion"] == [[0] * 5 for _ in range(5)]
    assert age["per_class"]["70+"] == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert evaluation.samples["age_correct"].isna().all()
    assert per_class_frame(evaluation.metrics, "age")["f1"].isna().all()
    assert (confusion_frame(evaluation.metrics, "age", normalize=True).to_numpy() == 0).all()


def test_metrics_shape_is_json_and_only_predicted_tasks(evaluation):
    metrics = evaluation.metrics
    assert set(metrics) == {"n", "tasks", "slices"} and metrics["n"] == 6
    assert list(metrics["tasks"]) == ["emotion", "gender", "age"]  # race was not predicted
    assert json.loads(json.dumps(metrics, allow_nan=False)) == metrics


def test_samples_table(evaluation):
    s = evaluation.samples
    assert len(s) == 6
    assert list(s["source"]) == SOURCES and list(s["split"]) == SPLITS
    assert list(s["emotion_true"]) == ["happy", "happy", "sad", "angry", "", "happy"]
    assert list(s["emotion_pred"]) == ["happy", "sad", "sad", "happy", "surprise", "happy"]
    assert s["emotion_confidence"].to_numpy() == pytest.approx([0.8, 0.6, 0.9, 0.7, 1.0, 0.5])
    assert s["emotion_correct"].tolist() == [True, False, True, False, pd.NA, True]
    assert "race_true" not in s.columns
    no_split = evaluate_predictions(_probabilities(), _labels())
    assert "split" not in no_split.samples.columns and (no_split.samples["source"] == "").all()


def test_slices_match_hand_computation(evaluation):
    slices = evaluation.metrics["slices"]
    # Only samples with an emotion label count: s4 (female, african_american) drops out.
    assert slices["gender"] == {
        "male": {"n": 2, "accuracy": 1.0},
        "female": {"n": 2, "accuracy": 0.5},
        "unsure": {"n": 0, "accuracy": None},
    }
    assert slices["race"]["asian"] == {"n": 2, "accuracy": 0.5}
    assert slices["race"]["caucasian"] == {"n": 2, "accuracy": 0.5}
    assert slices["race"]["african_american"] == {"n": 0, "accuracy": None}
    assert all(v["n"] == 0 for v in slices["age"].values())

    frame = evaluation.slices
    assert list(frame.columns) == ["attribute", "group", "n", "accuracy"]
    assert len(frame) == GENDER.num_classes + RACE.num_classes + AGE.num_classes
    male = frame[(frame["attribute"] == "gender") & (frame["group"] == "male")].iloc[0]
    assert (male["n"], male["accuracy"]) == (2, 1.0)
    assert frame.loc[frame["n"] == 0, "accuracy"].isna().all()


def test_no_emotion_head_means_no_slices():
    ev = evaluate_predictions({"gender": _probabilities()["gender"]}, _labels())
    assert ev.metrics["slices"] == {} and ev.slices.empty
    assert list(ev.slices.columns) == ["attribute", "group", "n", "accuracy"]


def test_save_load_round_trip(evaluation, tmp_path):
    out = tmp_path / "run" / "eval"
    save_evaluation(evaluation, out)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "samples.csv", "slices.csv"]  # no temps
    loaded = load_evaluation(out)
    assert loaded.metrics == evaluation.metrics
    pd.testing.assert_frame_equal(loaded.samples, evaluation.samples)
    pd.testing.assert_frame_equal(loaded.slices, evaluation.slices)
    assert loaded.samples.loc[2, "source"] == "NA" and loaded.samples.loc[4, "emotion_true"] == ""
    save_evaluation(loaded, out)  # overwriting works
    assert load_evaluation(out).metrics == evaluation.metrics


def test_load_reports_missing_and_malformed_files(evaluation, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_evaluation(tmp_path / "nowhere")
    save_evaluation(evaluation, tmp_path)
    (tmp_path / "slices.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"slices\.csv"):
        load_evaluation(tmp_path)

    save_evaluation(evaluation, tmp_path)
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"metrics\.json is not valid JSON"):
        load_evaluation(tmp_path)
    (tmp_path / "metrics.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="'tasks'"):
        load_evaluation(tmp_path)

    save_evaluation(evaluation, tmp_path)
    evaluation.samples.drop(columns=["gender_pred"]).to_csv(tmp_path / "samples.csv", index=False)
    with pytest.raises(ValueError, match="gender_pred"):
        load_evaluation(tmp_path)
    evaluation.samples.assign(emotion_correct="maybe").to_csv(tmp_path / "samples.csv", index=False)
    with pytest.raises(ValueError, match="maybe"):
        load_evaluation(tmp_path)


def test_save_refuses_nan_metrics(evaluation, tmp_path):
    bad = Evaluation({**evaluation.metrics, "n": math.nan}, evaluation.samples, evaluation.slices)
    with pytest.raises(ValueError, match="JSON"):
        save_evaluation(bad, tmp_path)
    assert not (tmp_path / "metrics.json").exists()


def test_misclassified_filters_and_orders(evaluation):
    s = evaluation.samples
    wrong = misclassified(s, "emotion")
    assert list(wrong.index) == [3, 1]  # confidence 0.7 before 0.6; unlabelled s4 never listed
    assert list(misclassified(s, "emotion", true="happy").index) == [1]
    assert list(misclassified(s, "emotion", predicted="happy").index) == [3]
    assert misclassified(s, "emotion", true="happy", predicted="happy").empty
    assert list(misclassified(s, "gender").index) == [2, 5]  # 0.7, 0.6
    with pytest.raises(ValueError, match="not a emotion class"):
        misclassified(s, "emotion", true="joyful")
    with pytest.raises(ValueError, match="no race predictions"):
        misclassified(s, "race")


def test_confusion_frame_counts_and_normalised(evaluation):
    counts = confusion_frame(evaluation.metrics, "emotion")
    assert list(counts.index) == list(EMOTION.classes) == list(counts.columns)
    assert counts.loc["happy", "sad"] == 1 and counts.loc["angry", "happy"] == 1
    norm = confusion_frame(evaluation.metrics, "emotion", normalize=True)
    assert not norm.isna().any().any()
    assert norm.loc["happy", "happy"] == pytest.approx(2 / 3)
    row_sums = norm.sum(axis=1)
    for cls in EMOTION.classes:
        expected = 1.0 if cls in ("happy", "sad", "angry") else 0.0
        assert row_sums[cls] == pytest.approx(expected)
    with pytest.raises(ValueError, match="was not evaluated"):
        confusion_frame(evaluation.metrics, "race")


def test_per_class_frame(evaluation):
    frame = per_class_frame(evaluation.metrics, "emotion")
    assert list(frame.columns) == ["precision", "recall", "f1", "support"]
    assert list(frame.index) == list(EMOTION.classes)
    assert frame.loc["sad", "recall"] == 1.0 and frame.loc["happy", "support"] == 3
    assert frame["support"].sum() == 5


def test_compare_runs(evaluation):
    emotion_only = evaluate_predictions({"emotion": _probabilities()["emotion"]}, _labels())
    table = compare_runs({"multi": evaluation.metrics, "single": emotion_only.metrics})
    assert list(table.index) == ["multi", "single"] and list(table.columns) == ["emotion", "gender", "age"]
    assert table.loc["multi", "emotion"] == pytest.approx(0.6)
    assert table.loc["single", "emotion"] == pytest.approx(0.6)
    assert table.loc["multi", "gender"] == pytest.approx(0.6)
    assert math.isnan(table.loc["single", "gender"]) and math.isnan(table.loc["multi", "age"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p, y: ({**p, "emotion": p["emotion"][:, :6]}, y), r"shape \(6, 7\)"),
        (lambda p, y: ({**p, "mood": p["emotion"]}, y), "unknown task"),
        (lambda p, y: ({**p, "emotion": p["emotion"] * 2}, y), "sum to 1"),
        (lambda p, y: ({**p, "emotion": np.full((6, 7), np.nan)}, y), "finite"),
        (
            lambda p, y: (p, _with_label(y, "gender", 3)),
            r"gender labels must be -1 \(missing\) or 0\.\.2, got 3",
        ),
        (lambda p, y: (p, y[:, :3]), r"shape \(N, 4\)"),
        (lambda p, y: ({}, y), "empty"),
    ],
)
def test_bad_input_gets_a_clear_message(change, message):
    probabilities, labels = change(_probabilities(), _labels())
    with pytest.raises(ValueError, match=message):
        evaluate_predictions(probabilities, labels)


def test_sources_must_match_samples():
    with pytest.raises(ValueError, match="sources has 2 entries but there are 6 samples"):
        evaluate_predictions(_probabilities(), _labels(), sources=["a", "b"])


def test_float32_softmax_and_empty_input():
    logits = np.random.default_rng(0).normal(size=(6, 7)).astype(np.float32)
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    ev = evaluate_predictions({"emotion": softmax}, _labels())
    assert 0 < ev.metrics["tasks"]["emotion"]["loss"] < 10
    empty = evaluate_predictions({"emotion": np.zeros((0, 7))}, np.zeros((0, 4), dtype=int))
    assert empty.metrics["n"] == 0 and empty.metrics["tasks"]["emotion"]["accuracy"] is None
    assert empty.samples.empty


# --- where evaluations are saved, and how the Evaluate page finds them -----------------------------------------


def _bundle(folder: Path, run: bool = True) -> Path:
    """A folder that list_runs takes for a run (config.json); default_evaluation_dir needs nothing more."""
    folder.mkdir(parents=True)
    if run:
        (folder / bundles.CONFIG_FILE).write_text("{}")
    return folder


def test_a_run_of_the_runs_folder_keeps_its_evaluations(tmp_path):
    runs_dir = tmp_path / "runs"
    run = _bundle(runs_dir / "20250101-000000-multi")
    assert default_evaluation_dir(run, "fer2013", "test", runs_dir) == run / "evaluation" / "fer2013-test"
    # Through a symlink in the runs folder (as the app's tests and some setups have it) it is still its run.
    elsewhere = _bundle(tmp_path / "store" / "shared-run")
    (runs_dir / "linked").symlink_to(elsewhere, target_is_directory=True)
    assert default_evaluation_dir(elsewhere, "utkface", "val", runs_dir) == elsewhere / "evaluation" / "utkface-val"
    # The held-out evaluations training wrote are never replaced (the model card quotes them): a later evaluation
    # of the same data set and split, on another copy of the data, gets its own folder, found as the others are.
    (run / "evaluation" / "fer2013-test").mkdir(parents=True)
    later = default_evaluation_dir(run, "fer2013", "test", runs_dir)
    assert later.parent == run / "evaluation" and re.fullmatch(r"\d{8}-\d{6}-fer2013-test", later.name), later.name
    assert wording.evaluation_dataset(later.name) == "fer2013" and wording.evaluation_split(later.name) == "test"


@pytest.mark.parametrize("where", ["shipped", "elsewhere"])
def test_other_bundles_are_never_written_to(tmp_path, where):
    runs_dir = tmp_path / "runs"
    bundle = bundles.DEFAULT_BUNDLE if where == "shipped" else _bundle(tmp_path / "models" / "mine")
    out = default_evaluation_dir(bundle, "fer2013", "test", runs_dir)
    assert out.parent == runs_dir / "evaluations"
    assert re.fullmatch(rf"{bundle.name}-\d{{8}}-\d{{6}}-fer2013-test", out.name), out.name
    assert wording.evaluation_dataset(out.name) == "fer2013" and out.name.endswith("-test")
    # A second evaluation in the same second gets its own folder.
    out.mkdir(parents=True)
    second = default_evaluation_dir(bundle, "fer2013", "test", runs_dir)
    assert second != out and second.parent == out.parent and second.name.endswith("-fer2013-test")


def test_list_evaluations_finds_those_saved_under_the_runs_folder(tmp_path):
    runs_dir = tmp_path / "runs"
    model = _bundle(tmp_path / "models" / "default", run=False)
    (model / "evaluation" / "utkface-test").mkdir(parents=True)
    (model / "evaluation" / "utkface-test" / "metrics.json").write_text('{"n": 0, "tasks": {}}')
    saved = runs_dir / "evaluations"
    for name, owner in (
        ("default-20250101-120000-fer2013-test", model),
        ("default-20250101-120500-fer2013-val", model),
        ("default-20250101-130000-fer2013-test", tmp_path / "other" / "default"),  # another model called default
    ):
        (saved / name).mkdir(parents=True)
        (saved / name / "metrics.json").write_text(json.dumps({"n": 0, "tasks": {}, "model": str(owner)}))
    (saved / "default-half-written-fer2013-test").mkdir()  # no metrics.json
    (saved / "mine-20250101-120000-fer2013-test").mkdir()

    names = settings.list_evaluations(model, runs_dir)
    assert names == [
        "default-20250101-120000-fer2013-test",
        "utkface-test",
        "default-20250101-120500-fer2013-val",
    ]
    assert settings.evaluation_dir(model, "utkface-test", runs_dir) == model / "evaluation" / "utkface-test"
    assert settings.evaluation_dir(model, names[0], runs_dir) == saved / names[0]
    assert settings.list_evaluations(tmp_path / "nothing", runs_dir) == []


def test_evaluation_dataset_of_saved_names():
    assert wording.evaluation_dataset("fer2013-test") == "fer2013"
    assert wording.evaluation_dataset("fer2013-csv-val") == "fer2013-csv"
    assert wording.evaluation_dataset("default-20250101-120000-fer2013-csv-test") == "fer2013-csv"
    assert wording.evaluation_dataset("default-20250101-120000.2-utkface-all") == "utkface"
    assert wording.evaluation_dataset("bands-test") == "bands"


# --- macro F1 over the classes present, untaught classes, accuracy by group ---------------------------------------


def test_macro_f1_averages_over_the_classes_the_data_has(evaluation):
    """Gender: no face is "unsure" (no data set teaches it); the average is over male and female only."""
    gender = evaluation.metrics["tasks"]["gender"]
    # male: s1 right, s3 missed, s6 wrongly male -> P 1/2, R 1/2, F1 1/2; female: s2, s5 right, s6 missed, s3
    # wrongly female -> P 2/3, R 2/3, F1 2/3. "unsure" (F1 0, no face) is not averaged in.
    assert gender["macro_f1_classes"] == ["male", "female"]
    assert gender["macro_f1"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert macro_f1(evaluation.metrics, "gender") == (gender["macro_f1"], ["male", "female"])
    # the same as scikit-learn's own macro average over the labels present, so figures compare with others'
    from sklearn.metrics import f1_score

    y = [0, 1, 0, 1, 1]
    p = [0, 1, 1, 1, 0]
    assert gender["macro_f1"] == pytest.approx(f1_score(y, p, labels=[0, 1], average="macro"))


def test_macro_f1_of_evaluations_saved_before_it_counted_present_classes(evaluation):
    """An older metrics.json (macro F1 over every class, no macro_f1_classes) is recomputed from its per-class F1."""
    old = json.loads(json.dumps(evaluation.metrics))
    for entry in old["tasks"].values():
        entry.pop("macro_f1_classes")
    old["tasks"]["emotion"]["macro_f1"] = (2 / 3 + 2 / 3) / 7  # what the old code saved
    score, classes = macro_f1(old, "emotion")
    assert classes == ["happy", "sad", "angry"] and score == pytest.approx(4 / 9)
    assert macro_f1(old, "age") == (None, [])


def test_untaught_classes_are_hidden_only_when_no_face_has_them(evaluation):
    metrics = evaluation.metrics
    # s4 was predicted "unsure" but has no gender label: no true "unsure" row, nor any column count.
    assert untaught_unseen(metrics, "gender") == ["unsure"]
    assert untaught_unseen(metrics, "gender", predicted_too=True) == ["unsure"]
    assert untaught_unseen(metrics, "emotion") == []  # nothing untaught in emotion
    frame = confusion_frame(metrics, "gender", hide_untaught=True)
    assert list(frame.index) == ["male", "female"] and list(frame.columns) == ["male", "female"]
    assert list(confusion_frame(metrics, "gender").index) == ["male", "female", "unsure"]  # the default keeps all
    assert list(per_class_frame(metrics, "gender", hide_untaught=True).index) == ["male", "female"]
    # A face predicted "unsure" keeps the column (its row stays hidden); a face labelled "unsure" shows it all.
    predicted = json.loads(json.dumps(metrics))
    predicted["tasks"]["gender"]["confusion"][0] = [1, 0, 1]
    frame = confusion_frame(predicted, "gender", hide_untaught=True)
    assert list(frame.index) == ["male", "female"] and list(frame.columns) == ["male", "female", "unsure"]
    labelled = json.loads(json.dumps(metrics))
    labelled["tasks"]["gender"]["confusion"][2] = [0, 0, 1]
    assert untaught_unseen(labelled, "gender") == []
    assert list(per_class_frame(labelled, "gender", hide_untaught=True).index) == ["male", "female", "unsure"]


def test_group_accuracy_from_the_samples_table():
    """Hand-made samples: five UTKFace-like faces (gender, race, age) and two FER2013-like ones (emotion only)."""
    rows = [
        # gender_true, gender_correct, race_true, age_true, age_correct, emotion_true, emotion_correct
        ("male", True, "asian", "20-39", True, "", None),
        ("female", False, "asian", "20-39", False, "", None),
        ("female", True, "caucasian", "70+", True, "", None),
        ("male", True, "", "70+", False, "", None),  # UTKFace "Indian": no race label
        ("female", True, "caucasian", "", None, "", None),
        ("", None, "", "", None, "happy", True),
        ("", None, "", "", None, "sad", False),
    ]
    samples = pd.DataFrame(
        rows,
        columns=["gender_true", "gender_correct", "race_true", "age_true", "age_correct", "emotion_true",
                 "emotion_correct"],
    ).astype({"gender_correct": "boolean", "age_correct": "boolean", "emotion_correct": "boolean"})  # fmt: skip
    groups = group_accuracy(samples)
    assert list(groups.columns) == ["task", "attribute", "group", "n", "accuracy"]
    by = {(r.task, r.attribute, r.group): (r.n, r.accuracy) for r in groups.itertuples()}
    assert by == {
        ("gender", "race", "caucasian"): (2, 1.0),  # in class order: caucasian before asian
        ("gender", "race", "asian"): (2, 0.5),
        ("gender", "age", "20-39"): (2, 0.5),
        ("gender", "age", "70+"): (2, 1.0),
        ("age", "gender", "male"): (2, 0.5),
        ("age", "gender", "female"): (2, 0.5),
        ("age", "race", "caucasian"): (1, 1.0),
        ("age", "race", "asian"): (2, 0.5),
    }
    assert list(groups["task"]) == ["gender"] * 4 + ["age"] * 4  # model order; groups never empty
    assert list(groups[groups["task"] == "gender"]["group"]) == ["caucasian", "asian", "20-39", "70+"]
    only = group_accuracy(samples, tasks=["gender"], attributes=["age"])
    assert set(zip(only["task"], only["attribute"], strict=True)) == {("gender", "age")}
    # Emotion-only faces (FER2013) give nothing: no face has an emotion and an attribute label.
    assert group_accuracy(samples.iloc[5:]).empty
    assert group_accuracy(pd.DataFrame({"source": ["a"]})).empty


def test_group_accuracy_of_emotion_matches_the_slices(evaluation):
    """Where faces have emotion and gender labels (RAF-DB-like), the samples table gives the slices' figures."""
    groups = group_accuracy(evaluation.samples, tasks=["emotion"])
    by = {(r.attribute, r.group): (r.n, r.accuracy) for r in groups.itertuples()}
    slices = evaluation.metrics["slices"]["gender"]
    assert by == {("gender", g): (v["n"], v["accuracy"]) for g, v in slices.items() if v["n"]}
