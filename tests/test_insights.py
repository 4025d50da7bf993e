"""The "why" heatmap on the Predict page, learned loss weights on the Train and Evaluate pages and emotion accuracy
by predicted group: the pure helpers on synthetic data, and the pages through streamlit.testing.v1.AppTest on a tiny
run trained here with learned weights."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from mtfer.app import figures
from mtfer.assess import explain
from mtfer.assess.evaluation import emotion_by_predicted_group, evaluate_predictions, group_accuracy, load_evaluation
from mtfer.core import bundles
from mtfer.core.tasks import TASK_NAMES, TASKS, display_name
from mtfer.datasets.splits import Split
from mtfer.store import jobs
from mtfer.train.config import TrainConfig
from mtfer.train.trainer import train

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
TIMEOUT = 120


# --- pure helpers -------------------------------------------------------------------------------------------


def test_why_caption_says_in_one_sentence_what_warm_colours_mean():
    heat = np.zeros((50, 50), np.float32)
    occlusion = explain.Explanation(heat, "occlusion", "emotion", "happy", 3, 0.8)
    text = explain.why_caption(occlusion)
    assert text.startswith("Red and yellow mark the parts of the face") and "“happy”" in text
    assert "covering them with grey lowers its confidence the most" in text and "the rest mattered little" in text
    assert text.count(".") == 1 and text.endswith(".")  # one sentence
    layercam = explain.Explanation(heat, "layercam", "race", "african_american", 1, 0.6)
    assert "“african american”" in explain.why_caption(layercam)  # people's words, not identifiers
    assert "covering" not in explain.why_caption(layercam)  # only occlusion covers parts of the face


def test_highlight_colours_only_where_the_map_is_high():
    face = np.full((50, 50), 128, np.uint8)
    heat = np.zeros((50, 50), np.float32)
    heat[10:20, 30:40] = 1.0
    image = explain.highlight(face, heat, size=200)
    assert image.shape == (200, 200, 3) and image.dtype == np.uint8
    hot, cold = image[60, 140].astype(int), image[170, 30].astype(int)
    assert hot[0] > hot[2] + 60  # red where the map is 1 (rows are y: 15 x 4, columns x: 35 x 4)
    assert np.abs(cold - 128).max() <= 1  # the plain gray face where it is 0: no blue wash over the face
    unblurred = explain.highlight(face, heat, size=50, smooth=0)
    red, green, blue = unblurred[15, 35].astype(int)
    assert np.array_equal(unblurred[0, 0], [128, 128, 128]) and red > green + 60 and red > blue + 60
    with pytest.raises(ValueError, match="same size"):
        explain.highlight(face, heat[:40])
    with pytest.raises(ValueError, match="strength"):
        explain.highlight(face, heat, strength=2)


def _samples() -> pd.DataFrame:
    """Five FER2013-like faces: emotion labels only (the fourth has none), the model's own attribute answers."""
    return pd.DataFrame(
        {
            "emotion_correct": pd.array([True, False, True, None, True], dtype="boolean"),
            "gender_true": [""] * 5,
            "gender_pred": ["male", "male", "female", "female", "female"],
            "gender_correct": pd.array([None] * 5, dtype="boolean"),
            "age_true": [""] * 5,
            "age_pred": ["20-39", "20-39", "20-39", "70+", "4-19"],
        }
    )


def test_group_accuracy_by_predicted_groups_counts_each_face_where_the_model_put_it():
    samples = _samples()
    assert group_accuracy(samples).empty  # no true attribute labels: nothing by true group
    predicted = group_accuracy(samples, groups_from="predicted")
    rows = {(r.task, r.attribute, r.group): (r.n, r.accuracy) for r in predicted.itertuples(index=False)}
    assert rows == {
        ("emotion", "gender", "male"): (2, 0.5),
        ("emotion", "gender", "female"): (2, 1.0),  # the face without an emotion label is not counted
        ("emotion", "age", "4-19"): (1, 1.0),
        ("emotion", "age", "20-39"): (3, 2 / 3),
    }
    # Model and class order, the same columns as by true group; gender has no true label, so no gender accuracy.
    assert list(predicted.columns) == ["task", "attribute", "group", "n", "accuracy"]
    assert list(predicted["group"]) == ["male", "female", "4-19", "20-39"]
    only_age = group_accuracy(samples, tasks=["emotion"], attributes=["age"], groups_from="predicted")
    assert set(only_age["attribute"]) == {"age"}
    with pytest.raises(ValueError, match="groups_from"):
        group_accuracy(samples, groups_from="guessed")


def test_emotion_by_predicted_group_leaves_out_groups_no_data_teaches():
    samples = _samples()
    samples.loc[0, "gender_pred"] = "unsure"  # the untaught class: a stray face or two, no group of people
    every = group_accuracy(samples, groups_from="predicted")
    assert ((every["attribute"] == "gender") & (every["group"] == "unsure")).sum() == 1
    shown = emotion_by_predicted_group(samples)
    assert list(shown[["attribute", "group", "n"]].itertuples(index=False, name=None)) == [
        ("gender", "male", 1),
        ("gender", "female", 2),
        ("age", "4-19", 1),
        ("age", "20-39", 3),
    ]
    assert set(shown["task"]) == {"emotion"}


def test_predicted_groups_from_a_whole_evaluation_of_emotion_only_faces():
    rng = np.random.default_rng(0)
    n = 40
    probabilities = {t: rng.dirichlet(np.ones(TASKS[t].num_classes), n) for t in TASK_NAMES}
    labels = np.full((n, 4), -1)
    labels[:, 0] = rng.integers(0, 7, n)  # emotion only, as FER2013
    evaluation = evaluate_predictions(probabilities, labels)
    assert evaluation.slices["n"].sum() == 0  # no true groups
    predicted = group_accuracy(evaluation.samples, tasks=["emotion"], groups_from="predicted")
    right = probabilities["emotion"].argmax(axis=1) == labels[:, 0]
    for attribute in ("gender", "race", "age"):
        guessed = probabilities[attribute].argmax(axis=1)
        part = predicted[predicted["attribute"] == attribute]
        assert part["n"].sum() == n  # every face in exactly one predicted group
        for row in part.itertuples(index=False):
            member = guessed == TASKS[attribute].classes.index(row.group)
            assert row.n == member.sum() and row.accuracy == pytest.approx(right[member].mean())


def test_slices_figure_marks_predicted_groups():
    groups = group_accuracy(_samples(), tasks=["emotion"], groups_from="predicted")
    figure = figures.slices_figure(groups, "emotion", overall=0.75, overall_n=4, predicted=True)
    assert figure.layout.title.text == "Emotion accuracy by predicted group"
    assert [a.text for a in figure.layout.annotations] == ["By predicted gender", "By predicted age group"]
    gender = figure.data[0]
    assert list(gender.x)[0].startswith("<b>All faces</b>") and list(gender.y) == [0.75, 0.5, 1.0]
    assert list(gender.marker.pattern.shape) == ["", "/", "/"]  # hatched: the groups are guesses
    plain = figures.slices_figure(groups, "emotion", overall=0.75, overall_n=4)
    assert plain.layout.title.text == "Emotion accuracy by group" and set(plain.data[0].marker.pattern.shape) == {""}


def test_loss_weights_figure_draws_each_learned_weight_per_epoch():
    history = pd.DataFrame({"epoch": [1, 2, 3], "loss": [2.0, 1.5, 1.2], "emotion_loss": [1.9, 1.4, 1.1]})
    assert figures.loss_weights_figure(history) is None  # fixed weights: nothing learned to draw
    history["weight_emotion"] = [1.0, 0.8, 0.7]
    history["weight_age"] = [1.0, 1.3, 1.6]
    figure = figures.loss_weights_figure(history, starts=[(3, "continued")])
    assert figure.layout.title.text == "Learned task weights"
    assert [t.name for t in figure.data] == ["Emotion (0.70)", "Age group (1.60)"]  # model order, the last weight
    assert list(figure.data[1].y) == [1.0, 1.3, 1.6] and list(figure.data[1].x) == [1, 2, 3]
    assert figures.loss_weight_tasks(history) == ["emotion", "age"]


# --- the pages ----------------------------------------------------------------------------------------------


def _split(rng: np.random.Generator, n: int, folder: Path, start: int) -> Split:
    """Half FER2013-like faces (emotion only), half UTKFace-like faces (gender, race, age), saved as PNG files."""
    images = rng.integers(0, 255, (n, 50, 50), dtype=np.uint8)
    labels = np.full((n, 4), -1)
    half = n // 2
    labels[:half, 0] = rng.integers(0, 7, half)
    for j, name in enumerate(TASK_NAMES[1:], start=1):
        labels[half:, j] = rng.integers(0, 2 if name == "gender" else 3, n - half)  # no "unsure" gender
    sources = []
    for i, image in enumerate(images):
        path = folder / f"face{start + i}.png"
        cv2.imwrite(str(path), image)
        sources.append(str(path))
    return Split(images, labels, np.array(sources), np.array(["fer2013"] * half + ["utkface"] * (n - half)))


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory) -> Path:
    """A runs folder with one finished multi-task run trained with learned loss weights."""
    root = tmp_path_factory.mktemp("insights")
    (root / "faces").mkdir()
    rng = np.random.default_rng(0)
    splits = {
        "train": _split(rng, 64, root / "faces", 0),
        "val": _split(rng, 24, root / "faces", 100),
        "test": _split(rng, 32, root / "faces", 200),
    }
    config = TrainConfig(architecture="fast", epochs=2, batch_size=16, augment=False, loss_weights_mode="learned")
    train(config, root / "runs" / "learned", splits=splits, install_signal_handler=False)
    return root / "runs"


@pytest.fixture()
def app_env(learned_run, tmp_path, monkeypatch) -> Path:
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    (runs_dir / "learned").symlink_to(learned_run / "learned", target_is_directory=True)
    monkeypatch.setenv("MTFER_RUNS", str(runs_dir))
    monkeypatch.setenv("MTFER_MODEL", str(runs_dir / "learned"))
    monkeypatch.setenv("MTFER_DATA_ROOTS", str(tmp_path / "data"))
    monkeypatch.setenv("MTFER_CACHE", str(tmp_path / "cache"))
    return runs_dir


def _app(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _titles(at: AppTest) -> list[str]:
    return [json.loads(f.proto.spec)["layout"].get("title", {}).get("text", "") for f in at.get("plotly_chart")]


def test_learned_weights_are_stored_and_drawn_on_the_evaluate_page(app_env):
    run = app_env / "learned"
    metadata = bundles.load_bundle(run).metadata
    assert metadata["config"]["loss_weights_mode"] == "learned"
    assert set(metadata["loss_weights_learned"]) == set(TASK_NAMES)
    history = pd.read_csv(run / bundles.HISTORY_FILE)
    assert len(history) == 2 and all(history[f"weight_{t}"].notna().all() for t in TASK_NAMES)

    at = _app("pages/evaluate.py")
    figure = next(f for f in at.get("plotly_chart") if json.loads(f.proto.spec)["layout"].get("title", {}).get(
        "text") == "Learned task weights")  # fmt: skip
    lines = {t["name"].split(" (")[0]: t["y"] for t in json.loads(figure.proto.spec)["data"] if t.get("name")}
    assert list(lines) == ["Emotion", "Gender", "Race", "Age group"]
    assert lines["Age group"] == pytest.approx(history["weight_age"].tolist())
    # The last epoch's weights are those the metadata stores (the run kept its last epoch's weights or its best).
    assert any(metadata["loss_weights_learned"]["age"] == pytest.approx(w, rel=1e-4) for w in history["weight_age"])
    assert figures.LOSS_WEIGHTS_NOTE in [c.value for c in at.caption]


def test_evaluate_shows_emotion_accuracy_by_predicted_group_on_fer2013(app_env):
    at = _app("pages/evaluate.py")
    assert at.selectbox(key="evaluate_key").value == "fer2013-test"
    headings = [m.value for m in at.markdown]
    assert "**Emotion accuracy by predicted group**" in headings
    specs = [json.loads(f.proto.spec) for f in at.get("plotly_chart")]
    firsts = [s["layout"].get("annotations", [{}])[0].get("text", "") for s in specs]
    panels = [s for s, first in zip(specs, firsts, strict=True) if first.startswith("By predicted")]
    assert len(panels) >= 2  # race, age group (gender where guessed): one chart each, stacked on a phone
    assert not any(first.startswith("By gender") for first in firsts)  # no chart by true group: none is known
    captions = "\n".join(c.value for c in at.caption)
    assert "Caution: these are the model's guesses, not true groups (FER2013's faces carry no gender" in captions
    assert any("Instead, by the groups the model guessed" in m.value for m in at.markdown)

    # The bars are the evaluation's own per-face answers, grouped independently here.
    samples = load_evaluation(app_env / "learned" / "evaluation" / "fer2013-test").samples
    correct = samples["emotion_correct"].astype(bool)
    expected = {
        display_name(attribute, group): accuracy
        for attribute in ("gender", "race", "age")
        for group, accuracy in correct.groupby(samples[f"{attribute}_pred"]).mean().items()
        if group != "unsure"
    }
    bars = {
        " ".join(x.split("<br>")[:-2]): y
        for spec in panels
        for trace in spec["data"]
        for x, y in zip(trace["x"], trace["y"], strict=True)
    }
    assert bars.pop("<b>All faces</b>") == pytest.approx(correct.mean())
    assert bars == pytest.approx(expected)
    table = at.dataframe[-1].value
    shown_by = {f"Predicted {display_name(a).lower()}" for a in ("gender", "race", "age")
                if (samples[f"{a}_pred"] != "unsure").any()}  # fmt: skip
    assert {"Predicted race", "Predicted age group"} <= shown_by
    assert set(table["By"]) == shown_by  # FER2013: no row by true group

    # A data set with true attributes but no emotion: no predicted-group chart there.
    at.selectbox(key="evaluate_key").set_value("utkface-test").run()
    assert not at.exception and "**Emotion accuracy by predicted group**" not in [m.value for m in at.markdown]


def test_train_page_offers_learned_loss_weights(app_env, tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for emotion in ("happy", "sad"):
            for i in range(4):
                path = tmp_path / "data" / "mini-fer" / split / emotion / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), rng.integers(0, 255, (48, 48), dtype=np.uint8))
    for i in range(8):
        path = tmp_path / "data" / "mini-utk" / "UTKFace" / f"{20 + i}_{i % 2}_{i % 3}_2017010{i}120000000.jpg.chip.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), rng.integers(0, 255, (48, 48), dtype=np.uint8))
    started: list[dict] = []

    def fake_start(config: dict, runs_dir=None, **_) -> Path:
        started.append(config)
        raise ValueError("not started in this test")

    monkeypatch.setattr(jobs, "start_job", fake_start)
    at = _app("pages/train.py")
    mode = at.radio(key="train_loss_weights_mode")
    assert mode.value == "fixed" and mode.options == [
        "Fixed: the numbers below (the paper's by default)",
        "Learned during training (uncertainty weighting)",
    ]
    assert not at.number_input(key="train_weight_age").disabled
    mode.set_value("learned").run()
    assert at.number_input(key="train_weight_age").disabled  # not used when learned
    assert any("every task starts at weight 1" in c.value for c in at.caption)
    at.selectbox(key="train_architecture").set_value("fast")
    at.number_input(key="train_epochs").set_value(1).run()
    at.button(key="train_start").click().run()
    assert started and started[-1]["loss_weights_mode"] == "learned"
    assert "Training was not started: not started in this test" in [e.value for e in at.error]


@pytest.fixture(scope="module")
def face_photo(shared_data) -> bytes:
    """A real UTKFace chip padded onto a larger canvas (skipped, saying where it looked, without the data)."""
    chip = next(p for p in sorted((shared_data / "utkface" / "UTKFace").iterdir()) if p.name.startswith("10_0_0_"))
    canvas = cv2.copyMakeBorder(cv2.imread(str(chip)), 140, 140, 180, 180, cv2.BORDER_CONSTANT, value=(200,) * 3)
    return cv2.imencode(".jpg", canvas)[1].tobytes()


def test_predict_why_this_emotion_shows_a_heatmap_only_when_asked(app_env, face_photo):
    at = _app("pages/predict.py")
    at.file_uploader[0].set_value(("face.jpg", face_photo, "image/jpeg")).run()
    assert not at.exception and not at.error
    why = at.toggle(key="why-0-1")
    assert why.label == "Why this emotion?" and why.value is False
    before = len(at.image)
    assert not any(c.startswith("Red and yellow") for image in at.image for c in image.captions)

    why.set_value(True).run()
    assert not at.exception and not at.error
    assert len(at.image) == before + 1
    heatmap = next(image for image in at.image if any(c.startswith("Red and yellow") for c in image.captions))
    caption = heatmap.captions[0]
    # It explains the top emotion of the bars shown beside it.
    emotion = next(
        json.loads(f.proto.spec)["data"][0]
        for f in at.get("plotly_chart")
        if json.loads(f.proto.spec)["layout"]["title"]["text"].startswith("Emotion")
    )
    top = emotion["y"][int(np.argmax(emotion["x"]))]
    assert f"“{top.lower()}”" in caption and "the rest mattered little" in caption
    assert heatmap.proto.imgs[0].url.startswith("/mock/media/")  # an image was sent to the browser

    why.set_value(False).run()
    assert len(at.image) == before
