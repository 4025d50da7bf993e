"""The second look for small faces: the edited full-range graph, one box per face wherever it is, the switch, and no
false faces on busy scenes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtfer.core import any_size, detectors, small_faces
from mtfer.core.decoding import decode_image
from mtfer.core.faces import find_faces
from mtfer.core.preprocess import PreprocessConfig

ON = PreprocessConfig()
OFF = dataclasses.replace(ON, small_faces=False)


def test_the_edited_graph_is_the_stock_model_at_its_own_size() -> None:
    """At 192x192 the graph edited to take any size computes what the stock file computes (to float rounding: one
    more thread may sum in another order): the edit drops only the final reshapes."""
    rng = np.random.default_rng(0)
    rgb = rng.uniform(-1, 1, (192, 192, 3)).astype(np.float32)
    stock = sorted(detectors._net("full", detectors.runtime())(rgb), key=lambda o: o.shape[-1])
    edited = sorted(detectors._scan_net(192, 192, detectors.runtime())(rgb), key=lambda o: o.shape[-1])
    for a, b in zip(stock, edited, strict=True):
        assert b.shape == (1, 48, 48, a.shape[-1])
        assert np.allclose(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]), atol=1e-4)


def test_the_scan_takes_any_photo_size_and_other_graphs_are_refused() -> None:
    full = detectors.blazeface_model_path("full").read_bytes()
    for height, width in ((352, 480), (32, 1280)):
        rgb = np.zeros((height, width, 3), np.float32)
        outputs = detectors._scan_net(height, width, detectors.runtime())(rgb)
        assert sorted(o.shape for o in outputs) == [(1, height // 4, width // 4, 1), (1, height // 4, width // 4, 16)]
    with pytest.raises(any_size.GraphError, match="multiples of 32"):
        any_size.any_size(full, 100, 96)
    with pytest.raises(any_size.GraphError, match="full-range"):
        any_size.any_size(detectors.blazeface_model_path("short").read_bytes(), 128, 128)
    with pytest.raises(any_size.GraphError):
        any_size.any_size(b"\x00" * 64, 64, 64)
    assert detectors.blazeface_scan(np.full((100, 700, 3), 90, np.uint8), 0.6) == []  # any shape, padded


def test_scan_interpreters_are_kept_for_a_few_photo_sizes_only() -> None:
    image = np.full((64, 64, 3), 90, np.uint8)
    for side in range(64, 64 + 32 * (detectors.SCAN_SIZES_KEPT + 3), 32):
        detectors.blazeface_scan(cv2.resize(image, (side, 64)), 1.0)
    assert len(detectors._local.scans) == detectors.SCAN_SIZES_KEPT


def _busy(rng: np.random.Generator, w: int = 960, h: int = 720) -> np.ndarray:
    coarse = rng.integers(0, 255, (h // 24, w // 24, 3), dtype=np.uint8)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(12):
        p0, p1 = (int(rng.integers(0, w)), int(rng.integers(0, h))), (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, p0, p1, tuple(int(c) for c in rng.integers(0, 255, 3)), int(rng.integers(1, 6)))
    return img


@pytest.fixture(scope="module")
def chips(shared_data: Path) -> list[np.ndarray]:
    """UTKFace chips that the detector finds when they fill a photo (a spread over the listing)."""
    paths = sorted((shared_data / "utkface" / "UTKFace").glob("*.jpg"))
    picked = [decode_image(paths[round(i * (len(paths) - 1) / 59)]) for i in range(60)]
    return [c for c in picked if len(find_faces(c)) == 1][:8]


def _group(chips: list[np.ndarray], centres: list[tuple[int, int]], side: int, seed: int = 0) -> np.ndarray:
    photo = _busy(np.random.default_rng(seed))
    for chip, (cx, cy) in zip(chips, centres, strict=False):
        photo[cy - side // 2 : cy - side // 2 + side, cx - side // 2 : cx - side // 2 + side] = cv2.resize(
            chip, (side, side), interpolation=cv2.INTER_AREA
        )
    return photo


def test_small_faces_are_found_once_each_wherever_they_are(chips: list[np.ndarray]) -> None:
    # Where 400 px tiles met when the look was tiled (a face there lay in two tiles), near an edge, and elsewhere.
    centres = [(340, 150), (620, 300), (150, 420), (800, 600), (480, 620), (40, 360)]
    photo = _group(chips, centres, side=52)
    on, off = find_faces(photo, ON), find_faces(photo, OFF)
    assert len(off) < len(centres), "the whole-photo pass alone should miss faces this small"
    found = []
    for face in on:
        x, y, w, h = face.box
        near = [i for i, (cx, cy) in enumerate(centres) if abs(x + w / 2 - cx) < 20 and abs(y + h / 2 - cy) < 20]
        assert len(near) == 1, f"a box away from every pasted face: {face.box}"
        found += near
        assert face.aligned.shape == (50, 50) and 25 <= w <= 80
    assert sorted(found) == sorted(set(found)), "one face reported twice"
    assert len(found) >= len(centres) - 1, f"found {sorted(found)} of {len(centres)} faces"


def test_the_switch_and_close_ups_skip_the_second_look(chips: list[np.ndarray], monkeypatch) -> None:
    calls = []
    real = small_faces.candidates
    monkeypatch.setattr(small_faces, "candidates", lambda *a, **k: calls.append(1) or real(*a, **k))
    group = _group(chips, [(200, 200), (700, 500)], side=50)
    find_faces(group, OFF)
    assert calls == []
    find_faces(group, ON)
    assert calls == [1]
    calls.clear()
    close_up = _group(chips, [(480, 360)], side=420)  # a portrait: the face fills most of the photo's height
    assert len(find_faces(close_up, ON)) == 1 and calls == []
    side = int(192 / small_faces.SCALE)  # the whole-photo pass sees this photo at SCALE already
    find_faces(cv2.resize(group, (side, side * 3 // 4)), ON)
    assert calls == []


def test_a_model_that_cannot_scan_turns_the_look_off_not_the_photo(chips: list[np.ndarray], monkeypatch, caplog):
    """Another release of the detector's model file may not be the graph the scan edits: photos keep the whole-photo
    pass, and the log says once why small faces are not looked for."""
    photo = _group(chips, [(200, 200)], side=150)
    expected = [f.box for f in find_faces(photo, ON)]

    def refuse(*args, **kwargs):
        raise any_size.GraphError("not the full-range BlazeFace model")

    monkeypatch.setattr(detectors, "blazeface_scan", refuse)
    small_faces._warn_no_look.cache_clear()
    with caplog.at_level("WARNING"):
        assert [f.box for f in find_faces(photo, ON)] == expected
        find_faces(photo, ON)
    said = [r.getMessage() for r in caplog.records if "small-face look is off" in r.getMessage()]
    assert expected and len(said) == 1 and "not the full-range BlazeFace model" in said[0]


def test_busy_scenes_give_no_false_small_faces() -> None:
    rng = np.random.default_rng(11)
    assert sum(len(find_faces(_busy(rng), ON)) for _ in range(8)) == 0


@pytest.mark.parametrize("shape", [(2560, 1, 3), (1, 2560, 3), (3000, 25, 3), (401, 19)])
def test_slivers_get_no_second_look_and_no_error(shape: tuple[int, ...]) -> None:
    """A photo a few pixels wide (a valid JPEG can be 2560x1) cannot hold a face worth labelling: no look, no
    shrinking it to nothing."""
    image = np.full(shape, 128, np.uint8)
    assert not small_faces.needed(image.shape, [], PreprocessConfig())
    assert (
        small_faces.second_look(
            image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), [], PreprocessConfig()
        )
        == []
    )
    assert find_faces(image, PreprocessConfig()) == []


def test_large_photos_are_looked_at_on_a_bounded_copy(chips: list[np.ndarray], monkeypatch) -> None:
    seen = []
    real = small_faces.candidates
    monkeypatch.setattr(
        small_faces, "candidates", lambda image, *a, **k: seen.append(image.shape) or real(image, *a, **k)
    )
    photo = cv2.resize(_group(chips, [(240, 200), (720, 520)], side=60), (1920, 1440))  # faces now 120 px
    found = find_faces(photo, ON)
    assert seen and max(seen[0][:2]) == small_faces.MAX_SIDE
    assert len(found) == 2
    assert all(abs(f.box[2] - 105) < 40 for f in found), [f.box for f in found]


def test_the_switch_from_python_and_the_cli(chips: list[np.ndarray]) -> None:
    from mtfer.cli import build_parser
    from mtfer.core.inference import Predictor

    model = Predictor()
    assert model.config.small_faces  # the shipped model's setting
    fast = Predictor(model.bundle, small_faces=False)
    photo = _group(chips, [(200, 200), (700, 500), (480, 360)], side=48)
    assert len(fast.predict_image(photo)) < len(model.predict_image(photo))
    assert build_parser().parse_args(["predict", "x.jpg", "--no-small-faces"]).small_faces is False
    assert build_parser().parse_args(["predict", "x.jpg"]).small_faces is None  # the model's own setting


def test_the_switch_is_saved_with_the_model_but_keeps_prepared_data_sets() -> None:
    assert PreprocessConfig.from_dict(OFF.to_dict()) == OFF  # travels in the bundle's metadata
    assert OFF.crop_settings() == ON.crop_settings()  # data-set crops never use it: their caches stay valid
    assert "small_faces" in ON.to_dict() and "small_faces" not in ON.crop_settings()


def test_the_scan_finds_faces_in_place_at_any_scale_with_either_runtime(chips: list[np.ndarray]) -> None:
    centres = [(200, 200), (700, 500)]
    photo = _group(chips, centres, side=90)
    runtimes = ["litert", "opencv"] if detectors.runtime() == "litert" else ["opencv"]
    for scale in (0.45, 0.6, 1.0):
        seen = {b: detectors.blazeface_scan(photo, scale, 0.5, backend=b) for b in runtimes}
        for found in seen.values():  # (a blob of the busy background may score too: only the faces are checked)
            for cx, cy in centres:
                d = min(found, key=lambda d: abs(d.box[0] + d.box[2] / 2 - cx) + abs(d.box[1] + d.box[3] / 2 - cy))
                assert abs(d.box[0] + d.box[2] / 2 - cx) < 12 and abs(d.box[1] + d.box[3] / 2 - cy) < 12
                assert 60 < d.box[2] < 130
        if len(seen) == 2:
            for a, b in zip(*seen.values(), strict=True):
                assert np.allclose(a.box, b.box, atol=0.5) and a.score == pytest.approx(b.score, abs=1e-3)
