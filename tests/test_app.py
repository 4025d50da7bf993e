"""The Streamlit app, page by page through streamlit.testing.v1.AppTest, and the pure helpers behind it
(mtfer.app.cards, mtfer.store.settings). Models are tiny runs trained here in seconds; nothing touches runs/ or models/."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from mtfer.app import cards, figures, job_view, wording
from mtfer.assess import paper
from mtfer.assess.evaluation import confusion_frame, load_evaluation
from mtfer.core import bundles
from mtfer.core.tasks import TASK_NAMES, TASKS, display_name
from mtfer.datasets.splits import Split
from mtfer.store import jobs, runs, settings
from mtfer.train import callbacks, planning
from mtfer.train.config import TrainConfig
from mtfer.train.trainer import train

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
TIMEOUT = 60

# --- fixtures -------------------------------------------------------------------------------------------------


def _split(rng: np.random.Generator, n: int, folder: Path, start: int) -> Split:
    """Half 'rafdb' faces with all four labels, half 'fer2013' faces with emotion only; images saved as PNG files
    so that the evaluations' sources exist."""
    images = rng.integers(0, 255, (n, 50, 50), dtype=np.uint8)
    labels = np.full((n, 4), -1)
    for j, name in enumerate(TASK_NAMES):
        labels[: n // 2, j] = rng.integers(0, TASKS[name].num_classes, n // 2)
    labels[n // 2 :, 0] = rng.integers(0, TASKS["emotion"].num_classes, n - n // 2)
    sources = []
    for i, image in enumerate(images):
        path = folder / f"face{start + i}.png"
        cv2.imwrite(str(path), image)
        sources.append(str(path))
    datasets = np.array(["rafdb"] * (n // 2) + ["fer2013"] * (n - n // 2))
    return Split(images, labels, np.array(sources), datasets)


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> Path:
    """A runs folder with two finished runs: 'tiny-multi' (four tasks) and 'tiny-single' (emotion only)."""
    root = tmp_path_factory.mktemp("app-runs")
    faces_dir = root / "faces"
    faces_dir.mkdir()
    rng = np.random.default_rng(0)
    splits = {
        "train": _split(rng, 64, faces_dir, 0),
        "val": _split(rng, 24, faces_dir, 100),
        "test": _split(rng, 24, faces_dir, 200),
    }
    runs_dir = root / "runs"
    common = {"architecture": "fast", "epochs": 2, "batch_size": 16, "augment": False}
    train(TrainConfig(**common), runs_dir / "tiny-multi", splits=splits, install_signal_handler=False)
    train(
        TrainConfig(tasks=["emotion"], **common), runs_dir / "tiny-single", splits=splits, install_signal_handler=False
    )
    return runs_dir


@pytest.fixture()
def app_env(tiny_runs, tmp_path, monkeypatch) -> Path:
    """Environment of one app session: its own runs folder (a copy-free view of the tiny runs), model, data roots
    and cache, all in tmp."""
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    for run in tiny_runs.iterdir():
        if run.is_dir():
            (runs_dir / run.name).symlink_to(run, target_is_directory=True)
    monkeypatch.setenv("MTFER_RUNS", str(runs_dir))
    monkeypatch.setenv("MTFER_MODEL", str(runs_dir / "tiny-multi"))
    monkeypatch.setenv("MTFER_DATA_ROOTS", str(tmp_path / "data"))
    monkeypatch.setenv("MTFER_CACHE", str(tmp_path / "cache"))
    return runs_dir


def _app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for e in (*at.error, *at.warning, *at.info, *at.success)]
    return "\n".join(parts)


def _write_noise(path: Path, rng: np.random.Generator, side: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rng.integers(0, 255, (side, side), dtype=np.uint8))


def _make_data(root: Path, per_class: int = 6) -> None:
    """A small FER2013-like folder tree and a small UTKFace-named folder under a data root."""
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for emotion in ("happy", "sad"):
            for i in range(per_class if split == "train" else 2):
                _write_noise(root / "mini-fer" / split / emotion / f"{i}.png", rng)
    for i in range(16):
        age, gender, race = (5, 25, 50, 80)[i % 4], i % 2, i % 3
        _write_noise(root / "mini-utk" / "UTKFace" / f"{age}_{gender}_{race}_2017010{i % 9}120000000.jpg.chip.jpg", rng)


# --- Home ---------------------------------------------------------------------------------------------------


def test_home_shows_the_active_model_card(app_env):
    at = _app()
    text = _texts(at)
    assert "#### Multi-task network (fast), trained " in text  # a readable name, not the folder's
    assert "Emotion, gender, race and age group, all at once (multi-task)" in text
    labels = [m.label for m in at.metric]
    assert "Emotion · RAF-DB" in labels and "Age group · RAF-DB" in labels
    # The paper's RAF-DB multi-task emotion figure beside ours, in grey (another protocol), explained in one line.
    emotion = next(m for m in at.metric if m.label == "Emotion · RAF-DB")
    assert emotion.proto.delta == "Paper: 79.3%" and emotion.proto.color == emotion.proto.GRAY
    assert "Paper: 79.3% on RAF-DB (multi-task) with its own optimistic split; not directly comparable." in text
    assert "pts vs paper" not in text and not any("pts" in m.proto.delta for m in at.metric)
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d", text)  # a date people read, not an ISO timestamp
    assert len(at.get("page_link")) == 3


def test_home_without_any_model_says_how_to_get_one(app_env, tmp_path, monkeypatch):
    monkeypatch.setenv("MTFER_MODEL", str(tmp_path / "nothing-here"))
    at = _app()
    assert "No trained model" in "\n".join(w.value for w in at.warning)
    assert not at.metric


@pytest.mark.parametrize("page", ["predict", "evaluate", "train"])
def test_a_page_run_on_its_own_hands_over_to_the_navigation(app_env, page, monkeypatch):
    """A page opened by its URL before app.py ran (Streamlit's pages-folder mode) hands over to a navigation and
    renders once, without looping. (Home links to the other pages, which exist only in app.py's navigation.)"""
    # A server puts app.py's folder on sys.path, where the pages import their shared code from (pages.common);
    # AppTest puts the folder of the script it runs there, here pages/.
    monkeypatch.syspath_prepend(str(REPO))
    at = AppTest.from_file(str(REPO / "pages" / f"{page}.py"), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == [page.capitalize()]


def test_every_page_hands_over_through_the_one_shared_setup():
    """Each page calls the shared setup_page(__file__) once, at its top level; no page, nor any module beside them,
    repeats the hand-over to app.py's navigation."""
    setup = REPO / "pages" / "common" / "setup.py"
    pages = sorted(p for p in (REPO / "pages").glob("*.py") if p.name != "__init__.py")
    assert [p.stem for p in pages] == ["evaluate", "home", "predict", "train"]
    for path in pages:
        text = path.read_text()
        assert "\nfrom pages.common.setup import setup_page\n" in text, path.name
        assert re.findall(r"^setup_page\(.*$", text, re.M) == ["setup_page(__file__)"], path.name
    for path in sorted((REPO / "pages").rglob("*.py")):
        if path != setup:
            text = path.read_text()
            assert "mtfer_app" not in text and "st.navigation(" not in text, f"{path} repeats the hand-over"
    assert "mtfer_app" in setup.read_text() and "st.navigation(" in setup.read_text()


# --- Predict ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def face_photo(shared_data) -> bytes:
    """A real UTKFace chip padded onto a larger canvas, as a JPEG photo."""
    chip = next(p for p in sorted((shared_data / "utkface" / "UTKFace").iterdir()) if p.name.startswith("10_0_0_"))
    image = cv2.imread(str(chip))
    canvas = cv2.copyMakeBorder(image, 140, 140, 180, 180, cv2.BORDER_CONSTANT, value=(200, 200, 200))
    ok, data = cv2.imencode(".jpg", canvas)
    assert ok
    return data.tobytes()


def test_predict_shows_four_labels_and_every_probability(app_env, face_photo):
    at = _app("pages/predict.py")
    assert at.file_uploader[0].label.startswith("Upload photos")
    at.file_uploader[0].set_value(("face.jpg", face_photo, "image/jpeg")).run()
    assert not at.exception and not at.error
    line = next(m.value for m in at.markdown if m.value.startswith("**Face 1:**"))
    for task in ("Emotion", "Gender", "Race", "Age group"):
        assert f"{task}: " in line
    figures = at.get("plotly_chart")
    assert len(figures) == 4
    bars = {json.loads(f.proto.spec)["layout"]["title"]["text"].split(":")[0]: json.loads(f.proto.spec)["data"][0]
            for f in figures}  # fmt: skip
    assert bars["Race"]["y"] == ["Caucasian", "African American", "Asian", "Other"]
    assert bars["Gender"]["y"] == ["Male", "Female"]  # "unsure": no data set teaches it
    assert bars["Age group"]["y"][0] == "0-3 years" and len(bars["Emotion"]["y"]) == 7
    assert all(abs(sum(bars[t]["x"]) - 1) < 1e-3 for t in ("Emotion", "Race", "Age group"))
    captions = [c for image in at.image for c in image.captions]
    assert "1 face found" in captions
    assert any(c.startswith("The face as the model saw it") and "50×50 pixels" in c for c in captions)
    downloads = at.get("download_button")
    assert [d.proto.label for d in downloads] == ["Download CSV", "Download JSON"]
    table = at.dataframe[0].value
    assert list(table.columns[:6]) == ["Photo", "Face", "Emotion", "Gender", "Race", "Age group"]
    # people's words everywhere on the page: no model identifiers, the race note in one sentence
    page = _texts(at) + " ".join(table.columns) + table.to_csv()
    assert "african_american" not in page and "Gender: Unsure" not in page and "network" not in page
    assert "three groups only" in page and "Other / not sure" in page


def _bundle_with_thresholds(app_env: Path, folder: Path, min_confidence: float) -> Path:
    """tiny-multi's model with a metadata.json whose abstain thresholds are all `min_confidence`."""
    folder.mkdir()
    for f in (app_env / "tiny-multi").iterdir():
        if f.is_file() and f.name != bundles.METADATA_FILE:
            (folder / f.name).symlink_to(f)
    metadata = json.loads((app_env / "tiny-multi" / bundles.METADATA_FILE).read_text())
    metadata["abstain"] = {t: {"min_confidence": min_confidence} for t in TASK_NAMES}
    (folder / bundles.METADATA_FILE).write_text(json.dumps(metadata))
    return folder


@pytest.mark.parametrize("min_confidence", [1.0, 0.0])
def test_predict_says_not_sure_by_the_models_own_thresholds(app_env, face_photo, tmp_path, monkeypatch, min_confidence):
    """metadata.json's abstain.<task>.min_confidence decides: 1.0 -> "not sure" with the two likeliest answers
    (race: "other / not sure"), 0.0 -> every answer stated."""
    bundle = _bundle_with_thresholds(app_env, tmp_path / "bundle", min_confidence)
    monkeypatch.setenv("MTFER_MODEL", str(bundle))
    at = _app("pages/predict.py")
    at.file_uploader[0].set_value(("face.jpg", face_photo, "image/jpeg")).run()
    line = next(m.value for m in at.markdown if m.value.startswith("**Face 1:**"))
    answers = at.dataframe[0].value.loc[0, ["Emotion", "Race"]].tolist()
    if min_confidence:
        assert "Emotion: **not sure** (" in line and "Race: **other / not sure** (" in line and " or " in line
        assert answers[0].startswith("Not sure (") and answers[1].startswith("Other / not sure (")
        titles = [json.loads(f.proto.spec)["layout"]["title"]["text"] for f in at.get("plotly_chart")]
        assert "Emotion: not sure" in titles
    else:
        assert "not sure" not in line, line
        assert answers[0] in {c.capitalize() for c in TASKS["emotion"].classes}


@pytest.fixture(scope="session")
def two_faces_photo(shared_data) -> bytes:
    """Two UTKFace chips of different sizes side by side on one canvas."""
    chips = [p for p in sorted((shared_data / "utkface" / "UTKFace").iterdir()) if p.name.startswith("10_0_0_")][:2]
    big, small = (cv2.imread(str(c)) for c in chips)
    small = cv2.copyMakeBorder(cv2.resize(small, (140, 140)), 30, 30, 30, 30, cv2.BORDER_CONSTANT, value=(200,) * 3)
    canvas = cv2.copyMakeBorder(np.hstack([big, small]), 100, 100, 100, 100, cv2.BORDER_CONSTANT, value=(200,) * 3)
    return cv2.imencode(".jpg", canvas)[1].tobytes()


def test_predict_largest_face_only_and_the_camera(app_env, two_faces_photo, face_photo):
    at = _app("pages/predict.py")
    at.file_uploader[0].set_value(("two.jpg", two_faces_photo, "image/jpeg")).run()
    faces_shown = [m.value for m in at.markdown if m.value.startswith("**Face ")]
    assert len(faces_shown) == 2 and len(at.get("plotly_chart")) == 8
    captions = [c for image in at.image for c in image.captions]
    assert "2 faces found" in captions
    at.toggle(key="predict_largest_only").set_value(True).run()
    assert [m.value[:11] for m in at.markdown if m.value.startswith("**Face ")] == ["**Face 1:**"]
    captions = [c for image in at.image for c in image.captions]
    assert "2 faces found, showing the largest" in captions

    at.file_uploader[0].set_value(None)
    at.toggle(key="predict_use_camera").set_value(True).run()
    at.camera_input(key="predict_camera").set_value(("camera.jpg", face_photo, "image/jpeg")).run()
    assert not at.exception and not at.error
    assert at.subheader[0].value == "camera.jpg"
    assert any(m.value.startswith("**Face 1:**") for m in at.markdown)


def test_predict_bad_file_gives_a_clear_error_and_keeps_working(app_env, face_photo):
    at = _app("pages/predict.py")
    at.file_uploader[0].set_value(
        [("broken.jpg", b"this is not an image", "image/jpeg"), ("face.jpg", face_photo, "image/jpeg")]
    ).run()
    assert not at.exception
    assert len(at.error) == 1 and "broken" in at.error[0].value and "not a photo" in at.error[0].value
    assert any(m.value.startswith("**Face 1:**") for m in at.markdown)  # the good photo still went through


def test_predict_without_a_face_gives_tips(app_env):
    at = _app("pages/predict.py")
    blank = np.full((240, 320, 3), 180, np.uint8)
    at.file_uploader[0].set_value(("wall.png", cv2.imencode(".png", blank)[1].tobytes(), "image/png")).run()
    assert not at.exception and not at.error
    assert "No face was found" in at.warning[0].value and "well-lit" in at.warning[0].value


def test_predict_lists_the_models_in_the_sidebar(app_env):
    at = _app("pages/predict.py")
    options = at.sidebar.selectbox(key="predict_model").options
    assert options[0] == "Active model (tiny-multi)"
    assert "Run tiny-single" in options
    assert "Upload one or more photos" in at.info[0].value


# --- Evaluate -----------------------------------------------------------------------------------------------


def test_evaluate_renders_every_view(app_env):
    at = _app("pages/evaluate.py")
    assert at.selectbox(key="evaluate_model").value == "Active model (tiny-multi)"
    assert at.selectbox(key="evaluate_key").value == "fer2013-test"
    at.selectbox(key="evaluate_key").set_value("rafdb-test").run()
    assert not at.exception and not at.error
    assert [m.label for m in at.metric][:4] == [display_name(t) for t in TASK_NAMES]
    assert "Accuracy on RAF-DB, test images (" in [s.value for s in at.subheader][0]
    assert [t.label for t in at.tabs] == [
        "Confusion matrices",
        "Per-class scores",
        "Training curves",
        "Misclassified faces",
        "Accuracy by group",
        "Compare runs",
        "Confidence",
    ]
    keys = {f.proto.id for f in at.get("plotly_chart")}
    specs = {json.loads(f.proto.spec)["layout"].get("title", {}).get("text", ""): f for f in at.get("plotly_chart")}
    assert {"Emotion", "Gender", "Race", "Age group", "Learning rate"} <= set(specs)
    assert "**Emotion accuracy by group**" in [m.value for m in at.markdown]  # its panels, one chart each
    assert len(keys) >= 4 + 4 + 1 + 1 + 1  # confusion x4, history x4, learning rate, slices, comparison
    assert len(at.dataframe) >= 4 + 1 + 1  # per-class x4, slices table, comparison table
    gallery = [c for image in at.image for c in image.captions]
    assert gallery and all("→" in c and "not available" not in c for c in gallery)  # faces framed from sources
    assert "misclassified faces" in _texts(at)

    at.toggle(key="evaluate_normalized").set_value(True).run()
    heatmap = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]
    assert heatmap["zmax"] == 1

    at.selectbox(key="gallery_task").set_value("emotion").run()
    at.selectbox(key="gallery_predicted").set_value(TASKS["emotion"].classes[0]).run()
    assert not at.exception
    compare = at.selectbox(key="compare_model")
    assert compare.value == "Run tiny-single"


def test_compare_runs_uses_the_same_images_or_offers_to_evaluate_them(app_env, tmp_path):
    at = _app("pages/evaluate.py")
    at.selectbox(key="evaluate_key").set_value("rafdb-test").run()
    assert "**Both models on RAF-DB, test images**" in [m.value for m in at.markdown]
    other = [s for s in at.selectbox if s.key.startswith("compare_key-")][0]
    assert other.value == "rafdb-test"  # a new evaluation viewed: the other model follows to the same images
    at.selectbox(key="evaluate_key").set_value("fer2013-test").run()
    assert [s for s in at.selectbox if s.key.startswith("compare_key-")][0].value == "fer2013-test"
    layout = json.loads(at.get("plotly_chart")[-2].proto.spec)["layout"]
    assert layout["legend"]["y"] > 1  # above the bars, never over the task names on the axis

    # tiny-single evaluated on images that tiny-multi never saw: the page says so and offers to evaluate it there.
    # (tiny-multi is evaluated into its own folder: a copy for this test, not the runs the other tests share.)
    shared = (app_env / "tiny-multi").resolve()
    (app_env / "tiny-multi").unlink()
    shutil.copytree(shared, app_env / "tiny-multi")
    _make_data(tmp_path / "data")
    source = app_env / "tiny-single" / "evaluation" / "fer2013-test"
    saved = app_env / bundles.EVALUATIONS_DIR / "tiny-single-20261207-120000-utkface-train"
    shutil.copytree(source, saved)
    metrics = json.loads((saved / "metrics.json").read_text())
    (saved / "metrics.json").write_text(json.dumps({**metrics, "model": str(app_env / "tiny-single")}))
    at = _app("pages/evaluate.py")
    at.selectbox(key="evaluate_model").set_value("Run tiny-single").run()
    at.selectbox(key="evaluate_key").set_value(saved.name).run()
    at.selectbox(key="compare_model").set_value("Active model (tiny-multi)").run()
    assert any("has no evaluation on UTKFace, training images" in i.value for i in at.info)
    at.button(key="compare_evaluate_now").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.selectbox(key="compare_model").set_value("Active model (tiny-multi)").run()
    assert any(m.value.startswith("**Both models on UTKFace, training images") for m in at.markdown)


def test_evaluate_shows_how_far_the_confidence_can_be_trusted(app_env):
    at = _app("pages/evaluate.py")
    at.selectbox(key="evaluate_key").set_value("rafdb-test").run()
    assert not at.exception and not at.error
    metrics = load_evaluation(app_env / "tiny-multi" / "evaluation" / "rafdb-test").metrics
    diagrams = {
        json.loads(f.proto.spec)["layout"]["title"]["text"]: json.loads(f.proto.spec)
        for f in at.get("plotly_chart")
        if "how sure" in json.dumps(json.loads(f.proto.spec)["layout"].get("xaxis", {}))
    }
    assert len(diagrams) == 4  # one reliability diagram per task, each with its calibration error
    for task in TASK_NAMES:
        title = next(t for t in diagrams if t.startswith(f"{display_name(task)} · "))
        assert f"calibration error {metrics['tasks'][task]['ece']:.1%}" in title
        bars, diagonal = diagrams[title]["data"]
        assert diagonal["x"] == [0, 1] and diagonal["y"] == [0, 1]  # where confidence and accuracy agree
        reliability = metrics["tasks"][task]["reliability"]
        assert bars["y"] == [a for a, n in zip(reliability["accuracy"], reliability["count"], strict=True) if n]
    captions = _texts(at)
    assert figures.RELIABILITY_NOTE in captions and "confidences are calibrated" in captions


def test_evaluate_explains_an_evaluation_saved_before_calibration(app_env):
    old = app_env / "old-model"
    shutil.copytree(app_env / "tiny-single", old)
    metadata = json.loads((old / "metadata.json").read_text())
    metadata.pop("calibration", None)
    (old / "metadata.json").write_text(json.dumps(metadata))
    for path in (old / "evaluation").glob("*/metrics.json"):
        metrics = json.loads(path.read_text())
        metrics.pop("calibration", None)
        for entry in metrics["tasks"].values():
            for key in ("ece", "reliability", "ece_uncalibrated"):
                entry.pop(key, None)
        path.write_text(json.dumps(metrics))
    at = _app("pages/evaluate.py")
    at.selectbox(key="evaluate_model").set_value("Run old-model").run()
    assert not at.exception and not at.error
    assert "saved before calibration was measured" in _texts(at)
    assert "not calibrated yet: `mtfer calibrate --model" in _texts(at)


def test_evaluate_now_on_a_found_data_set(app_env, tmp_path):
    _make_data(tmp_path / "data")
    at = _app("pages/evaluate.py")
    at.selectbox(key="evaluate_model").set_value("Run tiny-single").run()
    options = at.selectbox(key="evaluate_dataset").options  # as shown: names people read
    assert "mini-fer: FER2013, 16 images labelled with emotion" in options
    at.selectbox(key="evaluate_dataset").select_index(
        options.index("mini-fer: FER2013, 16 images labelled with emotion")
    )
    at.run()
    own = (app_env / "tiny-single" / "evaluation" / "fer2013-test" / "metrics.json").read_bytes()
    at.button(key="evaluate_now").click().run()
    assert not at.exception and not at.error
    # the run's own held-out evaluation (the model card's figures) stays; the new one has its own folder, shown
    key = at.selectbox(key="evaluate_key").value
    folder = app_env / "tiny-single" / "evaluation" / key
    try:
        assert re.fullmatch(r"\d{8}-\d{6}-fer2013-test", key), key
        assert (app_env / "tiny-single" / "evaluation" / "fer2013-test" / "metrics.json").read_bytes() == own
        evaluation = load_evaluation(folder)
        assert evaluation.metrics["n"] == 4 and evaluation.metrics["dataset"]["format"] == "fer2013"
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # the tiny runs are shared by the tests of this module


def test_evaluate_keeps_its_choices_in_the_url(app_env):
    """Model, evaluation and gallery filters go into the query parameters; a reload (a new session with the same
    URL) shows the same view."""
    at = _app("pages/evaluate.py")
    at.selectbox(key="evaluate_key").set_value("rafdb-test").run()
    at.selectbox(key="gallery_task").set_value("race").run()
    at.selectbox(key="gallery_true").set_value("african_american").run()
    at.toggle(key="evaluate_normalized").set_value(True).run()
    params = dict(at.query_params)
    assert params == {
        "model": "active",
        "evaluation": "rafdb-test",
        "task": "race",
        "true": "african_american",
        "normalized": "1",
        "compare": "tiny-single",
    }
    # The filters read as people write them.
    assert at.selectbox(key="gallery_true").format_func("african_american") == "African American"
    assert at.selectbox(key="evaluate_key").format_func("rafdb-test") == "RAF-DB, test images"

    reloaded = AppTest.from_file(APP, default_timeout=TIMEOUT)
    reloaded.query_params.update({**params, "model": "tiny-single", "evaluation": "fer2013-test", "task": "emotion"})
    reloaded.switch_page("pages/evaluate.py").run()
    assert not reloaded.exception
    assert reloaded.selectbox(key="evaluate_model").value == "Run tiny-single"
    assert reloaded.selectbox(key="evaluate_key").value == "fer2013-test"
    assert reloaded.selectbox(key="gallery_task").value == "emotion"
    assert reloaded.toggle(key="evaluate_normalized").value is True
    assert reloaded.selectbox(key="gallery_true").value == "any"  # not an emotion class: ignored
    # A URL naming what is not there falls back to the defaults instead of failing.
    broken = AppTest.from_file(APP, default_timeout=TIMEOUT)
    broken.query_params.update({"model": "gone", "evaluation": "nothing-test", "task": "mood"})
    broken.switch_page("pages/evaluate.py").run()
    assert not broken.exception and broken.selectbox(key="evaluate_model").value == "Active model (tiny-multi)"


def test_evaluate_explains_accuracy_by_group_and_hides_what_no_data_teaches(app_env):
    at = _app("pages/evaluate.py")
    # FER2013-like faces: emotion only, so nothing by group, and both reasons given.
    infos = "\n".join(i.value for i in at.info)
    assert "Emotion accuracy by gender, race and age group cannot be computed" in infos
    assert "FER2013's faces carry only an emotion label" in infos
    assert "No face in this evaluation has two of gender, race and age group labelled" in infos
    # RAF-DB-like faces carry all four labels: emotion and every attribute task by group.
    at.selectbox(key="evaluate_key").set_value("rafdb-test").run()
    headings = [m.value for m in at.markdown]
    for task in ("Emotion", "Gender", "Race", "Age group"):
        assert f"**{task} accuracy by group**" in headings
    by_group = at.dataframe[-2].value if len(at.dataframe) > 1 else None
    assert by_group is not None and {"Accuracy of", "By", "Group", "Faces", "Accuracy"} <= set(by_group.columns)
    assert "African American" in set(by_group["Group"]) or "African American" not in TASKS["race"].classes
    # Display names everywhere: confusion matrices and per-class tables.
    race = next(f for f in at.get("plotly_chart") if json.loads(f.proto.spec)["layout"]["title"]["text"] == "Race")
    assert json.loads(race.proto.spec)["data"][0]["x"] == ["Caucasian", "African American", "Asian", "Other"]
    per_class = [d.value for d in at.dataframe]
    assert any(
        list(t.index) == ["0-3 years", "4-19 years", "20-39 years", "40-69 years", "70+ years"] for t in per_class
    )
    assert "Macro F1" in _texts(at) and "averaged over the" in _texts(at)
    # A gallery caption says which is true and which is predicted.
    captions = [c for image in at.image for c in image.captions]
    assert captions and all(c.startswith("True: ") and " → predicted: " in c for c in captions)


def test_evaluate_shows_race_beyond_the_three_groups_for_the_shipped_model(app_env, monkeypatch):
    """On UTKFace, each of its five groups: how many faces get "other / not sure" (the promise to Indian and Others
    faces) and how many of the three groups' faces get their group right, from the shipped model's saved
    evaluation and its own race threshold."""
    monkeypatch.setenv("MTFER_MODEL", str(REPO / "models" / "default"))
    at = _app("pages/evaluate.py")
    at.selectbox(key="evaluate_model").set_value(
        next(o for o in at.selectbox(key="evaluate_model").options if "default" in o.lower())
    )
    at.run()
    at.selectbox(key="evaluate_key").set_value("utkface-test").run()
    assert not at.exception, [e.value for e in at.exception]
    table = next(
        d.value for d in at.dataframe if "Group" in d.value.columns and "Accuracy (three groups)" in d.value.columns
    )
    assert list(table["Group"]) == ["White", "Black", "Asian", "Indian", "Others"]
    assert table.loc[table["Group"] == "Indian", "Accuracy (three groups)"].item() == "—"
    assert all(v.endswith("%") for v in table['Answered "other / not sure"'])
    assert "Race beyond the three groups" in _texts(at) and "of Indian and Others faces get" in _texts(at)


def _continued(app_env: Path, tmp_path: Path) -> Path:
    """A bundle that continued tiny-multi's training and records its lineage (as the trainer now writes it)."""
    from mtfer.store.lineage import parent_lineage

    parent = app_env / "tiny-multi"
    folder = tmp_path / "models" / "continued"
    folder.mkdir(parents=True)
    for name in (bundles.MODEL_FILE, bundles.HISTORY_FILE):
        (folder / name).write_bytes((parent / name).read_bytes())
    shutil.copytree(parent / bundles.EVALUATION_DIR, folder / bundles.EVALUATION_DIR)
    metadata = bundles.read_json(parent / bundles.METADATA_FILE)
    metadata["config"]["init_from"] = str(parent)
    metadata.update(
        title="Demo reader",
        description="Reads emotion, gender, race and age group from one face.",
        created="2026-11-30T08:58:06+00:00",
        train_seconds=600.0,
        machine="x86_64 2 cpu",
        lineage=[{**stage, "train_seconds": 1200.0} for stage in parent_lineage(str(parent), app_env)],
    )
    bundles.atomic_write_json(folder / bundles.METADATA_FILE, metadata)
    return folder


def test_home_and_evaluate_show_a_continued_model_whole(app_env, tmp_path, monkeypatch):
    model = _continued(app_env, tmp_path)
    monkeypatch.setenv("MTFER_MODEL", str(model))
    at = _app()
    text = _texts(at)
    assert "#### Demo reader" in text and "Reads emotion, gender, race and age group from one face." in text
    assert "**Trained:** 30 November 2026" in text
    epochs = len(pd.read_csv(model / bundles.HISTORY_FILE))
    line = f"**Training time:** 30 min in all on a 2-core computer\\: {2 * epochs} epochs, {epochs} in an earlier run"
    assert line in text  # 1,200 s for tiny-multi + 600 s for its continuation

    at.switch_page("pages/evaluate.py").run()
    assert not at.exception
    emotion = next(
        json.loads(f.proto.spec)
        for f in at.get("plotly_chart")
        if json.loads(f.proto.spec)["layout"].get("title", {}).get("text") == "Emotion"
        and "shapes" in json.loads(f.proto.spec)["layout"]
    )
    x = emotion["data"][0]["x"]  # plotly sends numeric arrays as base64 ("bdata")
    x = np.frombuffer(base64.b64decode(x["bdata"]), dtype=x["dtype"]).tolist() if isinstance(x, dict) else x
    assert x == list(range(1, 2 * epochs + 1))  # both runs, numbered on
    marks = {shape["x0"] for shape in emotion["layout"]["shapes"]}
    assert epochs + 0.5 in marks and len(marks) == 2  # where training continued, and the epoch the model kept
    texts = [a["text"] for a in emotion["layout"]["annotations"]]
    assert "training continued" in texts and any(t.startswith("model kept (epoch ") for t in texts)
    assert f"The whole training: {2 * epochs} epochs in 2 runs" in _texts(at)


# --- Train --------------------------------------------------------------------------------------------------


def test_train_starts_a_background_job_and_sees_it_finish(app_env, tmp_path):
    _make_data(tmp_path / "data")
    at = _app("pages/train.py")
    options = at.multiselect(key="train_datasets").options  # as shown: names people read, never "fer2013 (fer2013)"
    assert len(options) == 2 and len(at.multiselect(key="train_datasets").value) == 2  # all chosen at first
    assert "mini-fer: FER2013, 16 images labelled with emotion" in options
    # The paper's settings are the defaults.
    assert at.number_input(key="train_epochs").value == 100
    assert at.number_input(key="train_batch_size").value == 32
    assert at.number_input(key="train_weight_age").value == 4.0
    at.selectbox(key="train_architecture").set_value("fast")
    at.number_input(key="train_epochs").set_value(1)
    at.number_input(key="train_batch_size").set_value(8)
    at.text_input(key="train_name").set_value("ui test")
    at.button(key="train_start").click().run()
    assert not at.exception and not at.error

    started = [r for r in runs.list_runs(app_env) if r.name.endswith("ui-test")]
    assert len(started) == 1
    run = started[0]
    assert at.button(key="train_start").disabled  # one job at a time
    config = bundles.read_json(run / bundles.CONFIG_FILE)
    assert config["epochs"] == 1 and config["tasks"] == list(TASK_NAMES) and len(config["datasets"]) == 2

    try:
        deadline = time.monotonic() + 240
        while runs.read_progress(run)["state"] in runs.ACTIVE_STATES and time.monotonic() < deadline:
            time.sleep(1.0)
            at.run()
            assert not at.exception
    finally:
        jobs.stop_job(run)  # a no-op once finished; never leave a job behind a failed test
    at.run()
    assert runs.read_progress(run)["state"] == "finished", runs.log_tail(run)
    progress = at.get("progress")[0].proto
    assert progress.value == 100 and progress.text.startswith("Finished")
    assert "Emotion · fer2013-test" in [m.label for m in at.metric]  # the held-out scores of the finished run
    assert not at.button(key="train_start").disabled

    at.button(key="train_activate").click().run()  # first says what it does, for everyone
    assert "for **everyone** using this app" in at.warning[0].value
    at.button(key="train_activate_no").click().run()
    assert bundles.resolve_model(None, app_env).resolve() != run.resolve() and at.button(key="train_activate")
    at.button(key="train_activate").click().run()
    at.button(key="train_activate_yes").click().run()
    assert bundles.resolve_model(None, app_env).resolve() == run.resolve()
    assert "This run is the active model" in "\n".join(s.value for s in at.success)

    at.button(key="train_evaluate").click().run()
    assert not at.exception
    assert at.selectbox(key="evaluate_model").value == f"Active model ({run.name})"

    home = _app()  # app.py's sidebar, on every page: the model that answers, and the way back
    assert f"(run {run.name})" in "\n".join(m.value for m in home.sidebar.markdown)
    home.sidebar.button(key="active_back_to_shipped").click().run()  # one click, for everyone
    assert settings.active_model(app_env).shipped
    home = _app()  # (AppTest keeps the sidebar of a first run only: a new session shows it)
    assert "(the shipped model)" in "\n".join(m.value for m in home.sidebar.markdown)
    assert not [b for b in home.sidebar.button if b.key == "active_back_to_shipped"]
    assert (run / bundles.METADATA_FILE).is_file()  # the run is kept


def _wait(run: Path, done, seconds: float = 240) -> dict:
    """Poll progress.json until done(progress) or the deadline."""
    deadline = time.monotonic() + seconds
    progress = runs.read_progress(run)
    while not done(progress) and time.monotonic() < deadline:
        time.sleep(0.5)
        progress = runs.read_progress(run)
    return progress


def test_train_stop_ends_a_job_gracefully(app_env, tmp_path):
    # Epochs long enough (30 steps) that early stopping cannot end the job between epoch 1 and the click.
    _make_data(tmp_path / "data", per_class=30)
    at = _app("pages/train.py")
    at.radio(key="train_mode").set_value("Single task").run()
    at.selectbox(key="train_task").set_value("age").run()
    at.multiselect(key="train_datasets").set_value(
        [v for v in at.multiselect(key="train_datasets").value if "fer" in v]
    )
    at.run()
    assert "has age labels" in at.error[0].value and at.button(key="train_start").disabled
    at.selectbox(key="train_task").set_value("emotion")
    at.selectbox(key="train_architecture").set_value("fast")
    at.number_input(key="train_epochs").set_value(500)
    at.number_input(key="train_batch_size").set_value(4).run()
    at.button(key="train_start").click().run()
    (run,) = jobs.active_jobs(app_env)
    try:
        # Stop once the first epoch is done, so that there is a complete epoch to keep.
        progress = _wait(run, lambda p: p.get("metrics") or p["state"] not in runs.ACTIVE_STATES)
        assert progress["state"] == "running", runs.log_tail(run)
        at.run()
        stop = at.button(key="train_stop")
        assert stop.label == "Stop training" and stop.proto.type == "primary"
        stop.click().run()
        assert runs.read_progress(run)["state"] == "running"  # asks first
        assert "Stop training now?" in _texts(at)
        at.button(key="train_stop_cancel").click().run()
        assert at.button(key="train_stop") and runs.read_progress(run)["state"] == "running"
        at.button(key="train_stop").click().run()
        at.button(key="train_stop_confirm").click().run()
        assert runs.read_progress(run)["state"] in ("stopping", "stopped")
        progress = _wait(run, lambda p: p["state"] not in runs.ACTIVE_STATES)
    finally:
        jobs.stop_job(run)
    assert progress["state"] == "stopped", runs.log_tail(run)
    at.run()
    complete = progress["stop"]["completed_epochs"]
    headline = at.get("progress")[0].proto.text
    assert headline.startswith(("Stopped during epoch", "Stopped after epoch")) and complete >= 1, headline
    assert f"Resume continues from epoch {complete + 1}." in headline
    assert len(pd.read_csv(run / bundles.HISTORY_FILE)) == complete  # complete epochs only
    assert bundles.read_json(run / bundles.CONFIG_FILE)["tasks"] == ["emotion"]
    assert not at.button(key="train_start").disabled

    at.button(key="train_resume").click().run()  # continues in the background from the last complete epoch
    assert not at.exception and not at.error
    try:
        assert jobs.active_jobs(app_env) == [run] and at.button(key="train_start").disabled
        progress = _wait(
            run,
            # "phase" is cleared on resume, so these are the resumed job's own step and epoch, not the stopped one's.
            lambda p: (
                p.get("phase") == "training"
                and p.get("step", 0) >= 1
                and p.get("epoch", 0) > complete
                or p["state"] not in runs.ACTIVE_STATES
            ),
        )
        assert progress["state"] == "running" and progress["epoch"] >= complete + 1, runs.log_tail(run)
        assert f"resuming after epoch {complete}" in runs.log_tail(run, 100)
    finally:
        jobs.stop_job(run)
        progress = _wait(run, lambda p: p["state"] not in runs.ACTIVE_STATES)
    assert progress["state"] == "stopped", runs.log_tail(run)


def test_train_without_data_explains_where_to_put_it(app_env):
    at = _app("pages/train.py")  # MTFER_DATA_ROOTS names a folder that does not exist (yet)
    assert at.warning[0].value.startswith("None of the folders MTFER_DATA_ROOTS names exists")
    assert at.button(key="train_start").disabled


def _widget_values(at: AppTest) -> dict:
    widgets = (*at.selectbox, *at.number_input, *at.toggle, *at.radio)
    return {w.key: w.value for w in widgets if w.key and w.key.startswith("train_")}


def test_train_presets_fill_every_setting_and_the_estimate_comes_before_start(app_env, tmp_path, monkeypatch):
    _make_data(tmp_path / "data")
    started: list[dict] = []

    def start_job(config, runs_dir=None, **kwargs):  # records what Start would run, and starts nothing
        started.append(config)
        raise bundles.RunError("not started in this test")

    monkeypatch.setattr(jobs, "start_job", start_job)
    at = _app("pages/train.py")
    preset = at.radio(key="train_preset")
    assert preset.value == "paper" and preset.options == ["Quick demo (minutes)", "Recipe", "Paper"]
    paper = _widget_values(at)
    assert (paper["train_architecture"], paper["train_preprocessing"], paper["train_epochs"]) == ("paper", "haar", 100)
    assert (paper["train_lr_schedule"], paper["train_augment"], paper["train_tta_flip"]) == ("plateau", "light", False)
    assert any(i.value.startswith("Estimated time: **") and "faces/s" in i.value for i in at.info)

    at.radio(key="train_preset").set_value("demo").run()
    demo = _widget_values(at)
    assert {k: demo[k] for k in ("train_architecture", "train_epochs", "train_limit", "train_batch_size")} == {
        "train_architecture": "fast",
        "train_epochs": 3,
        "train_limit": 4000,
        "train_batch_size": 64,
    }
    assert (demo["train_learning_rate"], demo["train_label_smoothing"], demo["train_weight_decay"]) == (2e-4, 0.1, 1e-2)
    assert demo["train_init_from"] == "default" and paper["train_init_from"] == "scratch"
    assert (demo["train_lr_schedule"], demo["train_class_weighting"], demo["train_augment"]) == (
        "cosine",
        "sqrt",
        "strong",
    )
    assert (demo["train_tta_flip"], demo["train_preprocessing"], demo["train_mixup"], demo["train_ema"]) == (
        True,
        "blazeface",
        0.0,
        0.0,
    )
    assert "in minutes" in _texts(at)

    at.number_input(key="train_mixup").set_value(0.2)
    at.number_input(key="train_ema").set_value(0.99)
    at.button(key="train_start").click().run()
    assert [e.value for e in at.error] == ["Training was not started: not started in this test"]
    config = TrainConfig.from_dict(started[0])
    expected = TrainConfig.from_preset("demo", mixup=0.2, ema=0.99)
    assert {k for k, v in config.to_dict().items() if expected.to_dict()[k] != v} == {
        "datasets",
        "early_stopping_patience",  # the trainer's rule: never within the epochs under a schedule, as the preset's
    }
    assert config.early_stopping_patience == config.epochs and len(config.datasets) == 2
    assert config.init_from == "default"  # fine-tunes the shipped model

    at.selectbox(key="train_architecture").set_value("paper").run()  # not the shipped model's network
    assert any("the shipped model is the fast network" in e.value for e in at.error)
    assert at.button(key="train_start").disabled
    at.radio(key="train_init_from").set_value("scratch").run()
    assert not at.error and not at.button(key="train_start").disabled

    at.radio(key="train_preset").set_value("recipe").run()
    assert _widget_values(at)["train_epochs"] == 30 and _widget_values(at)["train_mixup"] == 0.0


def test_train_offers_pseudo_labels_once_they_exist(app_env, tmp_path, monkeypatch):
    from mtfer.train.pseudo import pseudo_label

    _make_data(tmp_path / "data")
    started: list[dict] = []

    def start_job(config, runs_dir=None, **kwargs):
        started.append(config)
        raise bundles.RunError("not started in this test")

    monkeypatch.setattr(jobs, "start_job", start_job)
    at = _app("pages/train.py")
    assert at.radio(key="train_pseudo").disabled and "mtfer pseudo-label --model" in _texts(at)

    made = pseudo_label(app_env / "tiny-multi", "fer2013", tmp_path / "data" / "mini-fer", threshold=0.0)
    at = _app("pages/train.py")
    text = _texts(at)
    assert f"**fer2013**: gender for {len(made):,} faces, race for {len(made):,} faces" in text
    assert "from the model tiny-multi" in text and "**utkface**: none yet" in text
    at.radio(key="train_pseudo").set_value("soft")
    at.button(key="train_start").click().run()
    config = TrainConfig.from_dict(started[-1])
    assert config.pseudo_labels == ["auto"] and config.pseudo_targets == "soft"

    at.radio(key="train_pseudo").set_value("off")
    at.button(key="train_start").click().run()
    assert TrainConfig.from_dict(started[-1]).pseudo_labels is None


def test_train_asks_before_a_job_of_hours(app_env, tmp_path):
    _make_data(tmp_path / "data")
    # A slow machine, as an earlier run measured it: 1,000 faces per epoch in 10,000 s.
    slow = app_env / "20991231-slow"
    bundles.atomic_write_json(
        slow / bundles.CONFIG_FILE, {"architecture": "paper", "batch_size": 32, "tasks": ["emotion"]}
    )
    runs.write_progress(slow, state="failed", epoch_faces=1000, precision=planning.resolved_precision("auto"))
    pd.DataFrame({"epoch": [1, 2], "seconds": [10_000.0, 10_000.0]}).to_csv(slow / bundles.HISTORY_FILE, index=False)
    at = _app("pages/train.py")
    (warning,) = [w.value for w in at.warning if w.value.startswith("Estimated time")]
    assert "measured on this machine in run 20991231-slow" in warning and " h " in warning
    confirm = at.checkbox(key="train_confirm_long")
    assert confirm.label.startswith("Yes, start a job of ") and at.button(key="train_start").disabled
    confirm.check().run()
    assert not at.button(key="train_start").disabled
    at.radio(key="train_preset").set_value("demo").run()  # minutes: no question
    assert not any(c.key == "train_confirm_long" for c in at.checkbox)
    assert not at.button(key="train_start").disabled


def test_train_page_shows_preparation_a_clean_log_and_where_a_stop_left_off(app_env, tmp_path, monkeypatch):
    _make_data(tmp_path / "data")
    sleeper = subprocess.Popen(["sleep", "300"])  # the job's process
    run = app_env / "20991231-job"
    try:
        bundles.atomic_write_json(run / bundles.CONFIG_FILE, {"tasks": list(TASK_NAMES), "epochs": 30})
        runs.write_progress(
            run, state="running", pid=sleeper.pid, phase="preparing", dataset="fer2013", dataset_index=1, datasets=2,
            done=12_345, total=35_887, rate=95.0, eta_s=241, epoch=0, epochs=30,
        )  # fmt: skip
        (run / runs.LOG_FILE).write_text(
            "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            "I0000 00:00:1796029909.040048   15985 port.cc:153] oneDNN custom operations are on. You may see ...\n"
            "E0000 00:00:1796029909.071105   15985 cuda_executor.cc:1309] failed call to cuInit: INTERNAL: CUDA error\n"
            "2026-11-30 09:11:58,639 INFO loading data sets ['fer2013', 'utkface']\n"
            "{}\n"
        )
        at = _app("pages/train.py")
        bar = at.get("progress")[0].proto
        assert bar.text == (
            "Preparing fer2013 (1 of 2), the first time only: 12,345 of 35,887 faces · 95 faces/s · 4-5 min left"
        )
        assert bar.value == 34
        assert at.code[0].value == "2026-11-30 09:11:58,639 INFO loading data sets ['fer2013', 'utkface']"
        assert at.button(key="train_stop").label == "Stop training"
    finally:
        sleeper.kill()
        sleeper.wait()
    runs.write_progress(run, state="stopped", stop=callbacks.stop_point(2, 216, 808, 1), epoch=2)
    resumed: list[Path] = []
    monkeypatch.setattr(jobs, "resume_job", lambda r, runs_dir=None: resumed.append(Path(r)) or Path(r))
    at.run()
    assert at.get("progress")[0].proto.text == (
        "Stopped during epoch 2 at step 216 of 808; epoch 1 complete; Resume continues from epoch 2."
    )
    at.button(key="train_resume").click().run()
    assert not at.exception and resumed == [run]


# --- mtfer.store.settings -----------------------------------------------------------------------------------------


def test_data_roots_from_the_environment_and_defaults(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "data").mkdir()
    env = {settings.ENV_DATA_ROOTS: os.pathsep.join([str(tmp_path / "a"), "missing", str(tmp_path / "a"), "data"])}
    assert settings.data_roots(env, base=tmp_path) == [tmp_path / "a", tmp_path / "data"]
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    assert settings.data_roots({}, base=repo) == [(repo / "data").resolve()]
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert settings.data_roots({}, base=repo) == [tmp_path / "shared" / "data", repo / "data"]


def test_discover_datasets_finds_each_layout_once(tmp_path):
    _make_data(tmp_path)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a data set")
    found = settings.discover_datasets([tmp_path])
    by_name = {d.name: d for d in found}
    assert sorted(by_name) == ["mini-fer", "mini-utk"]  # the fer tree is not listed again as 'folders'
    fer, utk = by_name["mini-fer"], by_name["mini-utk"]
    assert (fer.format, fer.samples, fer.splits, fer.tasks) == ("fer2013", 16, {"test": 4, "train": 12}, ["emotion"])
    assert utk.format == "utkface" and utk.tasks == ["gender", "race", "age"]
    assert utk.to_config() == {"format": "utkface", "root": str(tmp_path / "mini-utk")}
    assert "16 images" in fer.label
    # A root that is itself a data set is found too.
    assert [d.format for d in settings.discover_datasets([tmp_path / "mini-fer"])] == ["fer2013"]


def test_model_choices_and_evaluations(app_env, tmp_path):
    choices = settings.model_choices(app_env)
    assert [(c.kind, c.path.name) for c in choices] == [("active", "tiny-multi"), ("run", "tiny-single")]
    bundles.set_active_model(app_env / "tiny-single", app_env)
    assert [c.path.name for c in settings.model_choices(app_env)] == ["tiny-single", "tiny-multi"]
    (app_env / "broken").mkdir()
    (app_env / "broken" / bundles.CONFIG_FILE).write_text("{}")
    assert "broken" not in [c.path.name for c in settings.model_choices(app_env)]
    names = settings.list_evaluations(app_env / "tiny-multi")
    assert names == ["fer2013-test", "rafdb-test", "fer2013-val", "rafdb-val"]
    assert settings.list_evaluations(tmp_path) == []


def test_a_model_no_run_made_is_listed_and_an_ensemble_says_why_it_has_no_curves(app_env):
    """`mtfer ensemble` writes a bundle under the runs folder without a run's config or history."""

    ensemble = app_env / "both"
    shutil.copytree(app_env / "tiny-multi", ensemble, ignore=shutil.ignore_patterns("config.json", "history.csv"))
    meta = bundles.read_json(ensemble / bundles.METADATA_FILE)
    members = [{"path": "/runs/a", "architecture": "fast"}, {"path": "/runs/b", "architecture": "wide"}]
    meta.update(architecture="ensemble", title="Ensemble of 2 networks", ensemble={"members": members})
    meta.pop("lineage", None)
    bundles.atomic_write_json(ensemble / bundles.METADATA_FILE, meta)
    choices = settings.model_choices(app_env)
    assert [(c.kind, c.path.name) for c in choices][-1] == ("bundle", "both")
    assert cards.choice_title("bundle", "both", meta) == "Model both · Ensemble of 2 networks"
    assert dict(cards.model_card(meta, ensemble).facts)["Network"].startswith(
        "the average of 2 trained networks (fast and wide)"
    )
    assert dict(cards.model_card(meta, ensemble).facts)["Training time"].startswith("none of its own")

    at = _app("pages/evaluate.py")
    at.selectbox(key="evaluate_model").set_value("Model both").run()
    assert not at.exception
    assert "This model was not trained itself: the average of 2 trained networks" in _texts(at)


# --- mtfer.app.cards -------------------------------------------------------------------------------------------


def test_paper_references_match_the_data_set_and_setting():
    ref, same = paper.paper_reference("fer2013", "emotion", multi_task=True)
    assert (ref.accuracy, same) == (0.6791, True)
    assert paper.paper_reference("fer2013-csv", "emotion", False)[0].accuracy == 0.6791
    assert paper.paper_reference("rafdb", "emotion", True)[0].accuracy == 0.7926
    assert paper.paper_reference("rafdb", "emotion", False)[0].accuracy == 0.4538
    ref, same = paper.paper_reference("utkface", "age", True)
    assert (ref.accuracy, same) == (0.7476, False)
    assert paper.paper_reference("folders", "emotion", False) == (None, False)
    assert wording.evaluation_dataset("fer2013-csv-test") == "fer2013-csv"
    assert wording.evaluation_dataset("custom") == "custom"


def test_accuracy_cards_compare_only_on_the_same_data():
    summary = {
        "fer2013-test": {"emotion": {"accuracy": 0.7, "n": 100}},
        "utkface-test": {"gender": {"accuracy": 0.9, "n": 50}, "emotion": {"accuracy": None, "n": 0}},
        "fer2013-val": {"emotion": {"accuracy": 0.9, "n": 10}},
    }
    shown = cards.summary_cards(summary, multi_task=True)
    assert [(c.label, c.value) for c in shown] == [
        ("Emotion · fer2013-test", "70.0%"),
        ("Gender · utkface-test", "90.0%"),
    ]
    # A test score against the paper's optimistic 90/10 figure is not like for like: no coloured difference.
    assert shown[0].delta is None and shown[0].badge == "Paper: 67.9%" and "not directly" in shown[0].paper_text
    assert shown[1].delta is None and "different data set" in shown[1].paper_text
    paper_protocol = cards.summary_cards({"fer2013-val": summary["fer2013-val"]}, multi_task=False, protocol="paper")
    assert paper_protocol[0].delta == "+22.1 pts vs paper"  # same data set, protocol and setting
    assert "100 labelled faces" in shown[0].help
    only_val = cards.summary_cards({"fer2013-val": summary["fer2013-val"]}, multi_task=False)
    assert [c.evaluation for c in only_val] == ["fer2013-val"]


def test_model_card_in_plain_words():
    metadata = {
        "tasks": {t: list(TASKS[t].classes) for t in ("emotion", "age")},
        "datasets": [{"format": "fer2013", "root": "/x/fer2013"}],
        "samples": {"train": 1000, "test": 200},
        "protocol": "paper",
        "optimistic": True,
        "architecture": "paper",
        "train_seconds": 3725,
        "metrics": {"fer2013-val": {"emotion": {"accuracy": 0.5, "n": 200}}},
    }
    card = cards.model_card(metadata, "/runs/my-run")
    facts = dict(card.facts)
    assert card.name == "Multi-task network (the paper's design)" and card.optimistic and card.multi_task
    assert card.folder == "my-run"
    assert facts["Taught with"] == "FER2013 (emotions)"
    assert facts["Faces used"] == "1,000 to learn from and 200 held back for the final test"
    assert "optimistic" in facts["How it was scored"] and facts["Training time"] == "1 h 02 min"
    assert facts["Trained"] == "date not recorded"
    assert [c.label for c in card.cards] == ["Emotion · fer2013-val"]
    assert not cards.model_card({"tasks": {"emotion": []}}, "m").optimistic
    assert "Extra labels" not in facts

    metadata["pseudo_labels"] = [
        {
            "dataset": {"format": "fer2013"},
            "teacher": {"path": "/work/models/default"},
            "filled": {"emotion": 0, "gender": 100, "race": 100, "age": 80},
            "targets": "soft",
        },
        {"dataset": {"format": "utkface"}, "teacher": {"path": "/work/models/default"}, "filled": {"emotion": 40}},
    ]
    facts = cards.model_card(metadata, "/runs/my-run").facts
    assert facts[2] == (
        "Extra labels",
        "Gender, race and age group for up to 100 FER2013 faces and emotion for 40 UTKFace faces, from an earlier "
        "model shipped with the app (its probabilities, where it was sure enough); training images only, never the ones it is scored on",
    )
    # a teacher that says when it was made is named with that time: the model shipped before this one
    for entry in metadata["pseudo_labels"]:
        entry["teacher"]["created"] = "2026-11-30T10:41:46+00:00"
    assert (
        "from an earlier model shipped with the app made 30 November 2026, 10:41 (its probabilities"
        in cards.model_card(metadata, "/work/models/default").facts[2][1]
    )


def test_markdown_escapes_and_enlarged_faces():
    assert wording.escape_markdown("my_[photo]*<b>.jpg") == r"my\_\[photo\]\*\<b\>.jpg"
    assert figures.enlarge(np.eye(50, dtype=np.uint8) * 255, 200).shape == (200, 200)


def test_confusion_history_slices_and_comparison_figures():
    metrics = {
        "tasks": {"gender": {"classes": list(TASKS["gender"].classes), "confusion": [[3, 1, 0], [2, 2, 0], [0, 0, 0]]}}
    }
    counts = figures.confusion_figure(confusion_frame(metrics, "gender"), normalized=False, title="Gender")
    assert counts.data[0].text[0] == ["3", "1", "0"] and counts.data[0].zmax == 3
    shares = figures.confusion_figure(confusion_frame(metrics, "gender", normalize=True), normalized=True)
    assert shares.data[0].text[0] == ["75%", "25%", "0%"] and shares.data[0].zmax == 1
    # every cell can be clicked (a point on it: Streamlit selects points, not heatmap cells), its hover kept
    cells = counts.data[1]
    assert len(cells.x) == len(cells.y) == 9 and (cells.y[1], cells.x[1], cells.text[1]) == ("male", "female", "1")
    assert (
        cells.marker.opacity == 0 and "true %{y}" in cells.hovertemplate and counts.layout.clickmode == "event+select"
    )

    history = pd.DataFrame(
        {"epoch": [1, 2], "emotion_loss": [2.0, 1.5], "val_emotion_loss": [2.1, 1.9], "emotion_accuracy": [0.2, 0.3],
         "val_emotion_accuracy": [0.2, 0.25], "age_loss": [1.0, 0.9], "learning_rate": [3e-4, 6e-5]}
    )  # fmt: skip
    assert figures.history_tasks(history) == ["emotion", "age"]
    assert [t.name for t in figures.history_figure(history, "emotion").data] == ["training", "validation"] * 2
    # The epoch the model was kept from: the best validation emotion accuracy of the last stage, marked and named.
    longer = pd.DataFrame({"epoch": [1, 2, 3, 4], "val_emotion_accuracy": [0.3, 0.5, 0.4, 0.45]})
    assert figures.kept_epoch(longer) == 2
    assert figures.kept_epoch(longer, starts=[(3, "continued")]) == 4  # a continued run keeps its own best
    assert figures.kept_epoch(pd.DataFrame({"epoch": [1], "val_mean_accuracy": [0.4]})) == 1
    assert figures.kept_epoch(pd.DataFrame({"epoch": [1], "loss": [0.4]})) is None
    marked = figures.history_figure(history, "emotion", kept=2)
    assert any("model kept (epoch 2)" in a.text for a in marked.layout.annotations)
    assert not any("model kept" in a.text for a in figures.history_figure(history, "emotion").layout.annotations)
    assert figures.learning_rate_figure(history).layout.yaxis.type == "linear"  # a factor of 5: linear reads best
    assert figures.learning_rate_figure(history.assign(learning_rate=[3e-4, 1e-6])).layout.yaxis.type == "log"
    assert figures.learning_rate_figure(history.drop(columns="learning_rate")) is None

    slices = pd.DataFrame(
        {"attribute": ["gender", "gender", "age"], "group": ["male", "female", "0-3"], "n": [10, 0, 4],
         "accuracy": [0.5, np.nan, 0.25]}
    )  # fmt: skip
    fig = figures.slices_figure(slices)
    assert [list(t.x) for t in fig.data] == [["Male<br>10<br>faces"], ["0-3<br>years<br>4<br>faces"]]
    assert fig.layout.xaxis.tickangle == 0  # level labels, a word per line, never turned on their side
    assert figures.slices_figure(slices[slices["n"] == 0]) is None

    table = pd.DataFrame({"emotion": [0.6, 0.5], "age": [0.7, np.nan]}, index=pd.Index(["a", "b"], name="run"))
    fig = figures.comparison_figure(table)
    assert [t.name for t in fig.data] == ["a", "b"] and list(fig.data[1].text) == ["50.0%", "n/a"]


def test_sample_face_frames_files_and_skips_what_it_cannot_read(tmp_path):
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8))
    face, found = figures.sample_face(str(path))
    assert face.shape == (50, 50) and face.dtype == np.uint8
    assert found is False  # noise: the framing is a guess, and the gallery says so
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    assert figures.sample_face(str(tmp_path / "bad.jpg")) is None
    assert figures.sample_face(str(tmp_path / "fer2013.csv") + "#12") is None
    assert figures.sample_face("") is None
    # Relative sources (the shipped model's evaluations) are found under the data roots.
    assert figures.sample_face("face.png") is None
    assert figures.sample_face("face.png", None, [tmp_path / "elsewhere", tmp_path])[0].shape == (50, 50)
    row = {"emotion_true": "sad", "emotion_pred": "happy", "emotion_confidence": "0.87"}
    assert figures.gallery_caption(row, "emotion") == "True: Sad → predicted: Happy (87% sure)"
    named = {**row, "source": "fer2013/test/sad/PublicTest_123.jpg"}
    assert figures.gallery_caption(named, "emotion").endswith("(87% sure) · PublicTest_123.jpg")
    # Every mistake can be reached, a page at a time.
    wrong = pd.DataFrame({"source": [f"{i}.jpg" for i in range(130)]})
    shown, what = figures.gallery_page(wrong, 2)
    assert shown["source"].tolist()[0] == "24.jpg" and len(shown) == 24 and what == "Faces 25-48 of 130"
    last, what = figures.gallery_page(wrong, 99)
    assert last["source"].tolist()[-1] == "129.jpg" and what == "Faces 121-130 of 130"


def test_job_status_lines():
    running = {"state": "running", "epoch": 2, "epochs": 4, "step": 5, "steps": 10, "eta_s": 130}
    status = job_view.job_status(running)
    assert status.active and status.fraction == pytest.approx(0.375)
    assert status.headline == "Epoch 2 of 4 · step 5 of 10 · 2-3 min left"
    assert job_view.job_status({"state": "finished", "epoch": 3, "epochs": 4}).fraction == 1.0
    failed = job_view.job_status({"state": "failed", "error": "boom"})
    assert not failed.active and failed.headline == "Failed: boom"
    assert job_view.job_status({"state": "running", "epoch": 0, "epochs": 4}).headline.startswith("Preparing")
    assert job_view.job_status({"state": "queued"}).active
    row = {"val_emotion_accuracy": 0.5, "age_accuracy": 0.25, "val_loss": 1.23456}
    assert job_view.epoch_metrics(row, ["emotion", "age"]) == [
        ("emotion val accuracy", "50.0%"),
        ("age accuracy", "25.0%"),
        ("val loss", "1.235"),
    ]
    assert wording.format_duration(None) == "unknown" and wording.format_duration(59.6) == "1 min 00 s"


def test_an_evaluation_that_differs_from_the_model_card_says_why():
    metadata = {"metrics": {"utkface-test": {"race": {"accuracy": 0.804, "three_groups_accuracy": 0.908, "n": 2186},
                                             "gender": {"accuracy": 0.893, "n": 2186}}}}  # fmt: skip
    same = {
        "race": {"accuracy": 0.8041, "three_groups_accuracy": 0.9081, "n": 2186},
        "gender": {"accuracy": 0.893, "n": 2186},
    }
    assert cards.card_difference_text(metadata, "utkface-test", same) is None  # equal to the 0.1% shown
    assert cards.card_difference_text(metadata, "fer2013-test", same) is None  # the card has no such figure
    tie = {
        "race": {"accuracy": 0.803, "three_groups_accuracy": 0.907, "n": 2186},
        "gender": {"accuracy": 0.893, "n": 2186},
    }
    text = cards.card_difference_text({**metadata, "precision": "bfloat16"}, "utkface-test", tie)
    assert text.startswith("This evaluation gives race 90.7% (card 90.8%): the network runs here in float32")
    refound = {"race": {"accuracy": 0.803, "three_groups_accuracy": 0.907, "n": 2180}}
    assert "2,180 faces now, 2,186 then" in cards.card_difference_text(metadata, "utkface-test", refound)


def test_what_home_says_of_how_a_model_learned_comes_from_its_metadata():
    assert "only" in cards.how_it_learned_text({"tasks": {"emotion": []}})
    taught = {
        "pseudo_labels": [{"dataset": {"format": "utkface"}, "teacher": {"path": "/m/x"}, "filled": {"emotion": 4}}]
    }
    assert "an earlier model filled in" in cards.how_it_learned_text(taught)
    home = (REPO / "pages" / "home.py").read_text()
    assert "The model in use learned that way" not in home  # no claim about a model the page has not read


def test_the_calibration_text_says_what_its_numbers_say():
    mixed = {"tasks": {"emotion": {"ece": 0.02, "ece_uncalibrated": 0.05}, "gender": {"ece": 0.04, "ece_uncalibrated": 0.03},
                       "race": {"ece": 0.05, "ece_uncalibrated": 0.04}, "age": {"ece": 0.06, "ece_uncalibrated": 0.05}}}  # fmt: skip
    text = figures.calibration_effect_text(mixed)
    assert text.endswith("went down for emotion and up for gender, race and age group.")
    assert "so that they match" not in text
    worse = {"tasks": {"gender": {"ece": 0.04, "ece_uncalibrated": 0.03}}}
    assert "it did not help: the calibration error went up for gender" in figures.calibration_effect_text(worse)
    better = {"tasks": {"gender": {"ece": 0.02, "ece_uncalibrated": 0.03}}}
    assert figures.calibration_effect_text(better).endswith("went down for gender.")


def test_train_keeps_its_choices_when_another_page_was_visited(app_env, tmp_path):
    _make_data(tmp_path / "data")
    at = _app("pages/train.py")
    at.radio(key="train_preset").set_value("demo").run()
    at.number_input(key="train_epochs").set_value(4).run()
    assert not at.exception
    at.switch_page("pages/home.py").run()
    at.switch_page("pages/train.py").run()
    assert not at.exception
    assert at.radio(key="train_preset").value == "demo" and at.number_input(key="train_epochs").value == 4
    assert dict(at.query_params) == {"preset": "demo"}  # and in the URL: a reload or a shared link opens it

    at.radio(key="train_mode").set_value("Single task").run()
    at.selectbox(key="train_task").set_value("age").run()
    params = dict(at.query_params)
    assert params == {"preset": "demo", "task": "age"}
    reloaded = AppTest.from_file(APP, default_timeout=TIMEOUT)  # a new session with the same URL
    reloaded.query_params.update(params)
    reloaded.switch_page("pages/train.py").run()
    assert not reloaded.exception
    assert reloaded.radio(key="train_preset").value == "demo" and reloaded.number_input(key="train_epochs").value == 3
    assert (
        reloaded.radio(key="train_mode").value == "Single task" and reloaded.selectbox(key="train_task").value == "age"
    )
    at.radio(key="train_preset").set_value("paper").run()
    at.radio(key="train_mode").set_value("Multi-task: emotion, gender, race and age").run()
    assert dict(at.query_params) == {}  # the defaults leave the URL clean
