"""mtfer.explain: where on the face the network looked (Grad-CAM, occlusion), and `mtfer predict --explain`."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from helpers import random_split, tiny_run

from mtfer.assess import explain
from mtfer.cli import main
from mtfer.core import bundles, faces, preprocess
from mtfer.core.inference import Predictor


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    folder = tiny_run(tmp_path_factory.mktemp("explain") / "run")
    keras.mixed_precision.set_global_policy("float32")  # training leaves its policy set; the app trains apart
    return folder


@pytest.fixture(scope="module")
def shipped() -> Predictor:
    if not (bundles.DEFAULT_BUNDLE / bundles.METADATA_FILE).exists():
        pytest.skip("no shipped model in models/default")
    return Predictor(bundles.DEFAULT_BUNDLE)


def brightness_model(size: int = 50) -> keras.Model:
    """A network whose first emotion's logit is 0.05 x the sum of its last convolution's activations, which are
    the face's pixels max-pooled by 2 (the other logits are 0): the evidence for that class is exactly the bright
    part of the face."""
    inputs = keras.Input((size, size, 1), name="face")
    x = keras.layers.Conv2D(1, 1, kernel_initializer="ones", bias_initializer="zeros", name="c1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Conv2D(1, 1, kernel_initializer="ones", bias_initializer="zeros", name="c2")(x)
    x = keras.layers.Flatten()(x)
    dense = keras.layers.Dense(7, name="emotion_logits")
    model = keras.Model(inputs, {"emotion": keras.layers.Activation("softmax", name="emotion")(dense(x))})
    kernel = np.zeros(dense.kernel.shape, np.float32)
    kernel[:, 0] = 0.05
    dense.set_weights([kernel, np.zeros(7, np.float32)])
    return model


@pytest.mark.parametrize("method", explain.METHODS)
def test_the_map_lies_on_the_face_pixels_it_explains(method):
    face = np.zeros((50, 50), np.uint8)
    face[8:20, 30:44] = 255  # a bright patch, upper right: rows are y, columns x
    result = explain.explain_face(brightness_model(), face, method=method)
    assert result.method == method and result.class_index == 0 and result.heatmap.shape == (50, 50)
    x, y = result.peak()
    assert 30 <= x < 44 and 8 <= y < 20
    assert result.heatmap[30:, :25].max() == 0  # nothing far from the patch
    ys, xs = np.nonzero(result.heatmap > 0.5)
    if method == "occlusion":  # an 8x8 occluder touches the patch from up to 7 pixels away
        assert ys.min() >= 1 and ys.max() <= 27 and xs.min() >= 23 and xs.max() <= 49
    else:
        assert result.layer == "c2"
        assert ys.min() >= 7 and ys.max() <= 20 and xs.min() >= 29 and xs.max() <= 44
        assert result.heatmap[8:20, 30:44].mean() > 0.9


def test_both_methods_give_a_unit_map_per_face_for_the_top_class(run_folder):
    predictor = Predictor(run_folder)
    aligned = random_split(6, seed=3).images
    probs = predictor.predict_faces(aligned)
    for method in explain.METHODS:
        results = explain.explain_faces(predictor, aligned, method=method)
        assert len(results) == 6
        for i, r in enumerate(results):
            assert r.heatmap.shape == (50, 50) and r.heatmap.dtype == np.float32
            assert r.heatmap.min() >= 0.0 and r.heatmap.max() <= 1.0
            assert r.task == "emotion" and r.class_index == int(probs["emotion"][i].argmax())
            assert r.class_name == predictor.classes["emotion"][r.class_index]
            assert r.probability == pytest.approx(float(probs["emotion"][i].max()), abs=1e-5)
    chosen = explain.explain_face(predictor, aligned[0], task="age", class_name="70+")
    assert (chosen.task, chosen.class_name, chosen.class_index) == ("age", "70+", 4)
    data = chosen.to_dict()
    assert data["method"] == "occlusion" and data["class"] == "70+"
    assert len(data["map"]) == 50 and all(len(row) == 50 for row in data["map"])
    assert all(round(v, 3) == v for row in data["map"] for v in row)


def test_bad_requests_are_refused_with_a_helpful_message(run_folder):
    predictor = Predictor(run_folder)
    face = random_split(2).images[0]
    with pytest.raises(ValueError, match="unknown task 'mood'"):
        explain.explain_face(predictor, face, task="mood")
    with pytest.raises(ValueError, match="unknown emotion class 'bored'.*surprise"):
        explain.explain_face(predictor, face, class_name="bored")
    with pytest.raises(ValueError, match="unknown explanation method"):
        explain.explain_face(predictor, face, method="lime")
    with pytest.raises(ValueError, match="uint8"):
        explain.explain_face(predictor, face.astype(np.float32))
    with pytest.raises(ValueError, match="no convolution"):
        inputs = keras.Input((50, 50, 1))
        dense = keras.layers.Dense(7, name="emotion_logits")(keras.layers.Flatten()(inputs))
        flat = keras.Model(inputs, {"emotion": keras.layers.Activation("softmax", name="emotion")(dense)})
        explain.explain_face(flat, face, method="layercam")
    assert explain.explain_face(flat, face).heatmap.shape == (50, 50)  # occlusion needs no convolution
    assert explain.explain_faces(predictor, np.zeros((0, 50, 50), np.uint8)) == []


def test_overlay_is_a_colour_image_of_the_face():
    face = np.tile(np.arange(50, dtype=np.uint8) * 5, (50, 1))
    heat = np.zeros((50, 50), np.float32)
    heat[10:20, 10:20] = 1.0
    image = explain.overlay(face, heat)
    assert image.shape == (50, 50, 3) and image.dtype == np.uint8
    hot, cold = image[15, 15], image[40, 15]
    assert hot[0] > hot[2] and cold[2] > cold[0]  # RGB: red where the map is 1, blue where it is 0
    assert explain.overlay(face, heat, size=200).shape == (200, 200, 3)
    assert np.array_equal(explain.overlay(face, heat, alpha=0.0), cv2.cvtColor(face, cv2.COLOR_GRAY2RGB))
    with pytest.raises(ValueError, match="same size"):
        explain.overlay(face, heat[:40])
    with pytest.raises(ValueError, match="alpha"):
        explain.overlay(face, heat, alpha=2)


def fer_test_faces(shared_data: Path, config: preprocess.PreprocessConfig, per_class: int = 3) -> np.ndarray:
    folders = sorted(p for p in (shared_data / "fer2013" / "test").iterdir() if p.is_dir())
    paths = [q for d in folders for q in sorted(d.glob("*.jpg"))[:per_class]]
    return np.stack([faces.frame_crop(cv2.imread(str(q)), config).aligned for q in paths])


def hottest_window(heatmap: np.ndarray, side: int) -> tuple[int, int]:
    """(y, x) of the side x side window holding the most of the map (the argmax of the box-smoothed map)."""
    smoothed = cv2.boxFilter(heatmap, -1, (side, side), normalize=True, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
    valid = smoothed[: heatmap.shape[0] - side + 1, : heatmap.shape[1] - side + 1]
    y, x = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return int(y), int(x)


# How many times more the hottest patch must lower the top emotion than a random one. Measured on these 21 faces
# with the shipped recipe model: occlusion 4.9x, LayerCAM 2.4x, Grad-CAM 2.1x; with the earlier shipped model
# occlusion 3.9x, LayerCAM 1.6x and Grad-CAM 0.8x (no better than chance: mtfer.explain's docstring says why). A
# newly shipped model may need Grad-CAM's bar looked at again; occlusion, the default, held on both.
FAITHFULNESS = {"occlusion": 2.5, "layercam": 1.3, "gradcam": 1.2}


@pytest.mark.parametrize("method", explain.METHODS)
def test_covering_the_hottest_region_lowers_the_top_emotion_more_than_a_random_one(method, shipped, shared_data):
    side, randoms = 12, 6
    aligned = fer_test_faces(shared_data, shipped.config)
    assert len(aligned) >= 20
    results = explain.explain_faces(shipped, aligned, method=method)
    rng = np.random.default_rng(0)
    hot_drop, random_drop = [], []
    for face, r in zip(aligned, results, strict=True):
        fill = np.uint8(round(float(face.mean())))
        covered = []
        for y, x in [hottest_window(r.heatmap, side), *rng.integers(0, 50 - side + 1, (randoms, 2))]:
            patched = face.copy()
            patched[y : y + side, x : x + side] = fill
            covered.append(patched)
        p = shipped.predict_faces(np.stack(covered))["emotion"][:, r.class_index]
        hot_drop.append(r.probability - p[0])
        random_drop.append(r.probability - p[1:].mean())
    hot, random = float(np.mean(hot_drop)), float(np.mean(random_drop))
    print(f"{method}: hottest {side}x{side} patch -{hot:.4f}, random patch -{random:.4f} ({hot / random:.2f}x)")
    assert hot > FAITHFULNESS[method] * random > 0, (hot, random)


def test_cli_predict_explain_adds_a_map_per_face(shared_data, tmp_path, capsys):
    chip = sorted((shared_data / "utkface" / "UTKFace").glob("2*_0_0_*.jpg"))[0]
    canvas = np.full((360, 360, 3), 200, np.uint8)
    canvas[80:280, 80:280] = cv2.imread(str(chip))
    photo = tmp_path / "one.jpg"
    cv2.imwrite(str(photo), canvas)
    assert main(["predict", str(photo), "--model", "default", "--json", "--explain"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["faces"]) == 1
    face = out["faces"][0]
    why = face["explain"]
    assert why["method"] == "occlusion" and why["task"] == "emotion" and why["class"] == face["top"]["emotion"]
    grid = np.array(why["map"])
    assert grid.shape == (50, 50) and grid.min() >= 0 and grid.max() == 1.0
    assert main(["predict", str(photo), "--model", "default", "--explain", "--explain-task", "age"]) == 0
    assert "why: occlusion for age" in capsys.readouterr().out
    assert main(["predict", str(photo), "--model", "default", "--json"]) == 0
    assert "explain" not in json.loads(capsys.readouterr().out)["faces"][0]
