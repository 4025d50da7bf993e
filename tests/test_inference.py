"""Predictor: photo bytes -> faces -> every head's probabilities; bundles; the shipped default model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import tiny_run

from mtfer.core import bundles
from mtfer.core.decoding import ImageError
from mtfer.core.inference import Predictor
from mtfer.core.tasks import TASK_NAMES, TASKS
from mtfer.media.answers import thresholds
from mtfer.media.tables import predictions_table

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("inference") / "run")


@pytest.fixture(scope="module")
def photo(shared_data) -> bytes:
    """Two real faces (UTKFace chips) on a bigger canvas, as a JPEG."""
    chips = sorted((shared_data / "utkface" / "UTKFace").glob("2*_0_0_*.jpg"))[:2]
    canvas = np.full((420, 700, 3), 200, np.uint8)
    canvas[60:260, 40:240] = cv2.imread(str(chips[0]))
    canvas[120:360, 400:640] = cv2.resize(cv2.imread(str(chips[1])), (240, 240))
    return cv2.imencode(".jpg", canvas)[1].tobytes()


def test_predictor_returns_every_face_with_all_four_heads(run_folder, photo):
    predictor = Predictor(run_folder)
    found = predictor.predict_image(photo)
    assert len(found) == 2
    assert found[0].box[0] < found[1].box[0]  # numbered as people read: left to right
    for face in found:
        assert face.aligned.shape == (50, 50) and face.aligned.dtype == np.uint8
        assert abs(face.rotation) <= 10
        for task in TASK_NAMES:
            probs = face.probabilities[task]
            assert list(probs) == list(TASKS[task].classes)
            assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
        data = face.to_dict()
        assert set(TASK_NAMES) <= set(data) and json.dumps(data)
    assert len(predictor.predict_image(photo, largest_only=True)) == 1


def _real_faces(shared_data, count: int) -> np.ndarray:
    """Aligned faces of `count` UTKFace photos, as the Predictor frames them."""
    predictor = Predictor(bundles.DEFAULT_BUNDLE)
    aligned = []
    for path in sorted((shared_data / "utkface" / "UTKFace").glob("*.jpg"))[: count * 2]:
        found = predictor.predict_image(path)
        aligned += [f.aligned for f in found[:1]]
        if len(aligned) == count:
            break
    return np.stack(aligned)


def test_litert_serves_the_keras_models_probabilities(shared_data):
    # The shipped bundle is served from its LiteRT file; Keras (training, evaluation, Grad-CAM) gives the same answers.
    aligned = _real_faces(shared_data, 120)
    lite, keras = Predictor(bundles.DEFAULT_BUNDLE), Predictor(bundles.DEFAULT_BUNDLE, backend="keras")
    assert (lite.backend, keras.backend) == ("litert", "keras") and lite.bundle.keras_model is None
    served, reference = lite.predict_faces(aligned), keras.predict_faces(aligned)
    for task in lite.tasks:
        assert served[task].shape == reference[task].shape == (len(aligned), len(lite.classes[task]))
        assert np.abs(served[task] - reference[task]).max() <= 1e-3, task
    batches = []
    assert lite.predict_faces(aligned, progress=lambda done, total: batches.append((done, total)))  # one batch
    assert batches == [(len(aligned), len(aligned))]


def test_a_photo_is_answered_without_importing_tensorflow(photo, tmp_path):
    (tmp_path / "photo.jpg").write_bytes(photo)
    code = (
        "import sys; from mtfer.core.inference import Predictor; p = Predictor(); "
        f"found = p.predict_image({str(tmp_path / 'photo.jpg')!r}); "
        "print(p.backend, len(found), 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.stdout.split() == ["litert", "2", "False", "False"], out.stderr[-2000:]
    cli = subprocess.run(
        [sys.executable, "-m", "mtfer.cli", "predict", str(tmp_path / "photo.jpg")],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert cli.returncode == 0 and "2 face(s)" in cli.stdout
    assert "XNNPACK" not in cli.stderr and "cuInit" not in cli.stderr and "tensorflow" not in cli.stderr.lower()


def test_a_bundle_is_served_from_its_own_litert_file_or_else_by_keras(run_folder, photo, tmp_path):
    # save_bundle writes the LiteRT copy; a bundle without one (older) is served by Keras, the same answers
    assert (run_folder / bundles.SERVING_FILE).is_file()
    served = Predictor(run_folder)
    assert served.backend == "litert"
    older = tmp_path / "older"
    shutil.copytree(run_folder, older)
    (older / bundles.SERVING_FILE).unlink()
    by_keras = Predictor(older)
    assert by_keras.backend == "keras" and by_keras.bundle.keras_model is not None
    a, b = served.predict_image(photo), by_keras.predict_image(photo)
    for fa, fb in zip(a, b, strict=True):
        for task in TASK_NAMES:
            assert fa.probabilities[task] == pytest.approx(fb.probabilities[task], abs=1e-3)
    # a LiteRT file that is not this network's (another network's, not a flatbuffer): never served
    for foreign in ((bundles.DEFAULT_BUNDLE / bundles.SERVING_FILE).read_bytes(), b"not a flatbuffer"):
        (older / bundles.SERVING_FILE).write_bytes(foreign)
        assert Predictor(older).backend == "keras"  # auto: falls back
    with pytest.raises(ValueError, match="LiteRT cannot serve older: .*not the one saved with it"):
        Predictor(older, backend="litert")
    with pytest.raises(ValueError, match="unknown backend"):
        Predictor(older, backend="gpu")
    # saving a new network over a bundle never leaves the old one's LiteRT file behind
    bundles.save_bundle(by_keras.bundle.model, by_keras.bundle.metadata, older)
    assert (older / bundles.SERVING_FILE).read_bytes() != b"not a flatbuffer"
    assert Predictor(older).backend == "litert"


def test_the_face_shown_is_the_face_the_network_saw(run_folder, photo):
    from mtfer.core.backends import predict_arrays

    predictor = Predictor(run_folder)
    face = predictor.predict_image(photo)[0]
    probs = predict_arrays(predictor.bundle.model, face.aligned[None])
    for task in TASK_NAMES:
        np.testing.assert_allclose(list(face.probabilities[task].values()), probs[task][0], atol=1e-5)


def test_old_bundles_with_blur_settings_still_load_and_are_not_blurred(run_folder, photo, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(run_folder, old)
    meta = json.loads((old / "metadata.json").read_text())
    meta["input"].update(blur_sigma=3.0, blur_threshold=50.0)  # the removed blur-matching step's settings
    (old / "metadata.json").write_text(json.dumps(meta))
    then, now = Predictor(old).predict_image(photo)[0], Predictor(run_folder).predict_image(photo)[0]
    np.testing.assert_array_equal(then.aligned, now.aligned)
    for task in TASK_NAMES:
        assert then.probabilities[task] == pytest.approx(now.probabilities[task], abs=1e-6)


def test_predictor_averages_each_face_with_its_mirror_when_the_bundle_says_so(run_folder, photo, tmp_path):
    from mtfer.core.backends import predict_arrays

    flipped = tmp_path / "flipped"
    shutil.copytree(run_folder, flipped)
    meta = json.loads((flipped / "metadata.json").read_text())
    meta["input"]["tta_flip"] = True
    (flipped / "metadata.json").write_text(json.dumps(meta))
    predictor = Predictor(flipped)
    face = predictor.predict_image(photo)[0]
    model = predictor.bundle.model
    plain = predict_arrays(model, face.aligned[None])
    mirror = predict_arrays(model, face.aligned[None, :, ::-1].copy())
    for task in TASK_NAMES:
        expected = (plain[task][0] + mirror[task][0]) / 2
        np.testing.assert_allclose(list(face.probabilities[task].values()), expected, atol=1e-5)


def test_batches_and_threads_give_the_same_answers(run_folder, photo):
    predictor = Predictor(run_folder)
    single = predictor.predict_image(photo)
    batched = predictor.predict_images([photo, photo, photo])
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(predictor.predict_image, [photo] * 8))
    for result in [*batched, *threaded]:
        assert len(result) == len(single)
        for a, b in zip(result, single, strict=True):
            for task in TASK_NAMES:
                np.testing.assert_allclose(
                    list(a.probabilities[task].values()), list(b.probabilities[task].values()), atol=1e-5
                )


def test_bad_files_and_blank_photos(run_folder):
    predictor = Predictor(run_folder)
    for data in (b"", b"not an image at all", cv2.imencode(".jpg", np.zeros((80, 80, 3), np.uint8))[1].tobytes()[:60]):
        with pytest.raises(ImageError):
            predictor.predict_image(data)
    blank = cv2.imencode(".png", np.full((300, 300, 3), 255, np.uint8))[1].tobytes()
    assert predictor.predict_image(blank) == []


def test_predictions_table_has_one_row_per_face(run_folder, photo):
    predictor = Predictor(run_folder)
    table = predictions_table(
        [("a.jpg", predictor.predict_image(photo)), ("blank.png", [])],
        thresholds(predictor),
        predictor.classes,
        [("bad.gif", "empty file")],
    )
    tops = [name for t in TASK_NAMES for name in (t, f"{t}_confidence", f"{t}_answer")]
    probabilities = [f"{t}_{c}" for t in TASK_NAMES for c in TASKS[t].classes]
    assert list(table.columns) == ["source", "face", "x", "y", "w", "h", *tops, *probabilities, "error"]
    assert list(table["source"]) == ["a.jpg", "a.jpg", "blank.png", "bad.gif"]
    assert list(table["face"].astype("float").fillna(0)) == [1, 2, 0, 0]  # a photo without a face: one empty row
    assert table["error"].isna().tolist() == [True, True, True, False]
    assert table.iloc[3]["error"] == "empty file" and table.iloc[2:]["emotion"].isna().all()
    assert "file" not in table and not any(c.startswith("p_") for c in table.columns)


def test_bundles_with_wrong_metadata_are_refused(run_folder, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(run_folder, broken)
    meta = json.loads((broken / "metadata.json").read_text())
    meta["tasks"]["emotion"] = list(reversed(meta["tasks"]["emotion"]))
    (broken / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(bundles.RunError, match="classes"):
        bundles.load_bundle(broken)
    (broken / "metadata.json").write_text("{not json")
    with pytest.raises(bundles.RunError, match="not valid JSON"):
        bundles.load_bundle(broken)
    with pytest.raises(bundles.RunError, match="not found"):
        bundles.load_bundle(tmp_path / "missing")


def test_active_model_pointer(run_folder, tmp_path):
    assert bundles.resolve_model(None, tmp_path) in (bundles.DEFAULT_BUNDLE, Path(bundles.DEFAULT_BUNDLE))
    bundles.set_active_model(run_folder, tmp_path)
    assert bundles.resolve_model(None, tmp_path) == run_folder.resolve()
    assert bundles.resolve_model("default", tmp_path) == bundles.DEFAULT_BUNDLE
    with pytest.raises(bundles.RunError):
        bundles.resolve_model("no-such-run", tmp_path)
    with pytest.raises(bundles.RunError, match="invalid run id"):
        bundles.run_dir("../escape", tmp_path)


def test_shipped_default_model_loads_and_carries_its_evaluation():
    if not (bundles.DEFAULT_BUNDLE / bundles.METADATA_FILE).exists():
        pytest.skip("no shipped model in models/default yet")
    bundle = bundles.load_bundle(bundles.DEFAULT_BUNDLE)
    assert bundle.tasks == list(TASK_NAMES)
    assert bundle.metadata["protocol"] == "holdout"
    assert (bundles.DEFAULT_BUNDLE / "history.csv").exists()
    assert any((bundles.DEFAULT_BUNDLE / "evaluation").glob("*/metrics.json"))
    size = sum(p.stat().st_size for p in bundles.DEFAULT_BUNDLE.rglob("*") if p.is_file())
    assert size < 25 * 1024 * 1024


def test_the_network_pass_reports_its_progress_batch_by_batch():
    from mtfer.core.backends import run_network

    calls: list[tuple[int, int]] = []
    faces = np.zeros((5, 50, 50), np.uint8)
    out = run_network(
        lambda x: {"emotion": np.full((len(x), 7), 1 / 7, np.float32)},
        faces,
        {"emotion": 7},
        batch_size=2,
        flip=True,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert out["emotion"].shape == (5, 7)
    assert calls == [(2, 5), (4, 5), (5, 5)]
