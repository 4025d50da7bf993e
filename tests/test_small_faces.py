"""The second look for small faces: tile geometry, one box per face across tile borders, the switch, and no false
faces on busy scenes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtfer.core import small_faces
from mtfer.core.decoding import decode_image
from mtfer.core.faces import find_faces
from mtfer.core.preprocess import PreprocessConfig

ON = PreprocessConfig()
OFF = dataclasses.replace(ON, small_faces=False)


@pytest.mark.parametrize("length", [1, 399, 400, 401, 640, 720, 960, 1280, 1999])
@pytest.mark.parametrize(("tile", "overlap"), [(400, 120), (256, 64), (440, 140)])
def test_tiles_cover_the_side_once_and_hold_every_face_up_to_the_overlap(length: int, tile: int, overlap: int) -> None:
    windows = small_faces.tiles(length, tile, overlap)
    owns = [(a, b) for _, _, a, b in windows]
    assert owns[0][0] == 0 and owns[-1][1] == length
    assert all(b == c for (_, b), (c, _) in zip(owns, owns[1:], strict=False)), "own ranges must touch, not overlap"
    for (_, e0, _, _), (s1, _, _, _) in zip(windows, windows[1:], strict=False):
        assert e0 - s1 >= overlap
    for start, end, _, _ in windows:
        assert 0 <= start < end <= length and end - start == min(tile, length)
    for centre in np.linspace(0, length - 1e-6, 97):  # a face of side `overlap` centred anywhere
        start, end, _, _ = next(w for w in windows if w[2] <= centre < w[3])
        lo, hi = max(0.0, centre - overlap / 2), min(float(length), centre + overlap / 2)
        assert start <= lo and hi <= end


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


def test_small_faces_are_found_once_each_also_across_tile_borders(chips: list[np.ndarray]) -> None:
    # Where tiles of a 960 px side meet: own ranges split at 340 and 620 (the middle of each overlap), so faces
    # centred there lie in two tiles at once; 720 px rows split at 300 and 420.
    borders_x = [b for _, _, _, b in small_faces.tiles(960)[:-1]]
    borders_y = [b for _, _, _, b in small_faces.tiles(720)[:-1]]
    centres = [(borders_x[0], 150), (borders_x[1], borders_y[0]), (150, borders_y[-1]), (800, 600), (480, 620)]
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
    real = small_faces.tiled
    monkeypatch.setattr(small_faces, "tiled", lambda *a, **k: calls.append(1) or real(*a, **k))
    group = _group(chips, [(200, 200), (700, 500)], side=50)
    find_faces(group, OFF)
    assert calls == []
    find_faces(group, ON)
    assert calls == [1]
    calls.clear()
    close_up = _group(chips, [(480, 360)], side=420)  # a portrait: the face fills most of the photo's height
    assert len(find_faces(close_up, ON)) == 1 and calls == []
    find_faces(cv2.resize(group, (400, 300)), ON)  # no larger than one tile: the first pass already sees it whole
    assert calls == []


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
    real = small_faces.tiled
    monkeypatch.setattr(small_faces, "tiled", lambda image, *a, **k: seen.append(image.shape) or real(image, *a, **k))
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
