"""Face finding, eye alignment (10-degree cap), framing of data-set crops, and image decoding."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtfer.core.decoding import ImageError, decode_image
from mtfer.core.faces import (
    Face,
    align,
    alignment_matrix,
    crop_face_box,
    eye_tilt,
    find_eyes,
    find_faces,
    frame_crop,
    to_network_input,
)
from mtfer.core.preprocess import PreprocessConfig

CFG = PreprocessConfig()
PAPER = PreprocessConfig.paper()
# Eye-line precision differs by detector: Haar's eye cascade on a 120 px face, BlazeFace's keypoints on 128 px.
EYE_TOLERANCE = {"blazeface": (6.0, 3.5, 8.0), "haar": (4.0, 2.0, 5.0)}  # vs upright, residual median, max


# --- real faces from the shared data sets ------------------------------------------------------------------------


def _spread(paths: list[Path], n: int) -> list[Path]:
    """n files spread evenly over a sorted listing (deterministic, covers many ages / identities)."""
    paths = sorted(paths)
    return [paths[round(i * (len(paths) - 1) / (n - 1))] for i in range(n)]


@pytest.fixture(scope="module")
def utk_chips(shared_data: Path) -> list[np.ndarray]:
    """Frontal-enough UTKFace chips (200x200 BGR): the first 12 of a spread whose face the detector finds."""
    paths = _spread(list((shared_data / "utkface" / "UTKFace").glob("*.jpg")), 40)
    chips = [decode_image(p) for p in paths]
    chips = [c for c in chips if find_faces(_on_canvas(c, 0.0))]
    assert len(chips) >= 12, "the frontal face detector should find most UTKFace chips"
    return chips[:12]


@pytest.fixture(scope="module")
def fer_images(shared_data: Path) -> list[np.ndarray]:
    root = shared_data / "fer2013"
    paths = _spread(list((root / "train").glob("*/*.jpg")), 10) + _spread(list((root / "test").glob("*/*.jpg")), 10)
    return [decode_image(p) for p in paths]


def _on_canvas(chip: np.ndarray, angle: float, pad: int = 100) -> np.ndarray:
    """The chip padded (edge pixels repeated) and rotated by ``angle`` degrees counter-clockwise as displayed."""
    canvas = cv2.copyMakeBorder(chip, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    h, w = canvas.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(canvas, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _map(m: np.ndarray, point: tuple[float, float]) -> tuple[float, float]:
    x, y = m @ np.array([point[0], point[1], 1.0])
    return float(x), float(y)


# --- rotation: sign convention, 10-degree cap, level eye line ------------------------------------------------------


@pytest.mark.parametrize("detector", ["blazeface", "haar"])
@pytest.mark.parametrize("angle", [3, -3, 8, -8, 15, -15, 25, -25])
def test_alignment_levels_eyes_within_the_cap(utk_chips: list[np.ndarray], angle: float, detector: str) -> None:
    cfg = PreprocessConfig.named(detector)
    vs_upright, residual_median, residual_max = EYE_TOLERANCE[detector]
    found = with_eyes = 0
    residuals: list[float] = []
    for chip in utk_chips:
        upright = find_faces(_on_canvas(chip, 0.0), cfg)
        image = _on_canvas(chip, angle)
        faces = find_faces(image, cfg)
        if not faces:
            continue
        found += 1
        face = faces[0]
        assert abs(face.rotation) <= CFG.max_rotation + 1e-9
        assert face.aligned.shape == (CFG.size, CFG.size) and face.aligned.dtype == np.uint8
        if face.eyes is None:
            assert face.rotation == 0.0  # no eyes -> no rotation
            continue
        with_eyes += 1
        tilt = eye_tilt(face.eyes)
        assert face.rotation == pytest.approx(float(np.clip(tilt, -10, 10)))
        # Turning the picture counter-clockwise by `angle` lifts the image-right eye: the tilt drops by `angle`.
        if upright and upright[0].eyes is not None and abs(eye_tilt(upright[0].eyes) - angle) <= 20:
            assert tilt == pytest.approx(eye_tilt(upright[0].eyes) - angle, abs=vs_upright)
        # The detected eyes, carried into the aligned crop by the applied transform, end level, or tilted by
        # exactly the excess over the cap; in the upper half, the image-left eye on the left.
        m = alignment_matrix(face.box, face.rotation, cfg)
        left, right = _map(m, face.eyes[0]), _map(m, face.eyes[1])
        excess = tilt - face.rotation
        assert eye_tilt((left, right)) == pytest.approx(excess, abs=1e-6)
        assert 0 < left[0] < CFG.size / 2 < right[0] < CFG.size
        assert 0 < left[1] < 0.6 * CFG.size and 0 < right[1] < 0.6 * CFG.size
        if abs(tilt) > 10:
            assert face.rotation == pytest.approx(10.0 * math.copysign(1, tilt))
        # Eyes found afresh on the aligned face (rendered large enough for the eye detector) agree.
        again = find_eyes(align(image, face.box, face.rotation, PAPER, size=200), (0, 0, 200, 200))
        if again is not None and abs(angle) <= 10:
            residuals.append(eye_tilt(again) - excess)
    if residuals:
        print(f"re-detected eye line after alignment: {np.round(residuals, 1).tolist()}")
        assert np.median(np.abs(residuals)) <= residual_median
        assert max(np.abs(residuals)) <= residual_max
    print(f"rotated {angle:+d} deg: face found {found}/{len(utk_chips)}, eyes found {with_eyes}/{found}")
    if abs(angle) <= 8:
        assert found >= 0.8 * len(utk_chips)
        assert with_eyes >= 0.6 * found


def test_align_turns_the_eye_line_level_and_matches_its_matrix() -> None:
    # Two bright dots as eyes, the image-right one lower: a tilt of +7 degrees in image coordinates.
    for side, size in [(120, 50), (900, 50), (300, 200)]:  # 900 -> 50 takes the shrink-first path
        canvas = np.zeros((3 * side, 3 * side), np.uint8)
        c = 1.5 * side
        d = 0.2 * side
        t = math.radians(7.0)
        eyes = (
            (c - d * math.cos(t), c - 0.1 * side - d * math.sin(t)),
            (c + d * math.cos(t), c - 0.1 * side + d * math.sin(t)),
        )
        for x, y in eyes:
            cv2.circle(canvas, (round(x), round(y)), max(3, side // 25), 255, -1)
        box = (side, side, side, side)
        rotation = eye_tilt(eyes)
        assert rotation == pytest.approx(7.0, abs=0.5)
        out = align(canvas, box, rotation, CFG, size=size)
        m = alignment_matrix(box, rotation, CFG, size=size)
        for eye, half in zip(eyes, (slice(0, size // 2), slice(size // 2, size)), strict=True):
            blob = out[:, half].astype(float)
            ys, xs = np.mgrid[0 : blob.shape[0], 0 : blob.shape[1]]
            cx = (xs * blob).sum() / blob.sum() + half.start
            cy = (ys * blob).sum() / blob.sum()
            ex, ey = _map(m, eye)
            assert (cx, cy) == pytest.approx((ex, ey), abs=0.05 * size)
        (lx, ly), (rx, ry) = _map(m, eyes[0]), _map(m, eyes[1])
        assert abs(math.degrees(math.atan2(ry - ly, rx - lx))) < 0.5


# --- several faces, sizes ------------------------------------------------------------------------------------------


def test_tiled_faces_are_all_found_in_place(utk_chips: list[np.ndarray]) -> None:
    pad = 40
    tiles = [cv2.copyMakeBorder(c, pad, pad, pad, pad, cv2.BORDER_REPLICATE) for c in utk_chips[:6]]
    canvas = np.vstack([np.hstack(tiles[:3]), np.hstack(tiles[3:])])
    tile = tiles[0].shape[0]
    faces = find_faces(canvas)
    assert len(faces) == 6
    areas = [f.box[2] * f.box[3] for f in faces]
    assert areas == sorted(areas, reverse=True)
    cells = set()
    for f in faces:
        x, y, w, h = f.box
        cx, cy = x + w / 2, y + h / 2
        col, row = int(cx // tile), int(cy // tile)
        cells.add((row, col))
        # the box sits on the chip inside its tile and is about the chip's size
        assert abs(cx - (col * tile + tile / 2)) < 0.15 * tile
        assert abs(cy - (row * tile + tile / 2)) < 0.2 * tile
        assert 0.7 * 200 < w < 1.3 * 200
    assert cells == {(r, c) for r in range(2) for c in range(3)}


def test_tiny_image_is_upscaled(utk_chips: list[np.ndarray]) -> None:
    tiny = cv2.resize(utk_chips[0], (40, 40), interpolation=cv2.INTER_AREA)
    faces = find_faces(tiny)
    assert len(faces) == 1
    x, y, w, h = faces[0].box
    assert x >= 0 and y >= 0 and x + w <= 40 and y + h <= 40 and w >= 25
    assert faces[0].aligned.shape == (50, 50)


def test_very_large_photo_maps_boxes_back(utk_chips: list[np.ndarray]) -> None:
    rng = np.random.default_rng(0)
    big = cv2.resize(rng.integers(40, 220, (40, 60, 3), dtype=np.uint8), (6000, 4000), interpolation=cv2.INTER_CUBIC)
    face = cv2.resize(cv2.copyMakeBorder(utk_chips[1], 30, 30, 30, 30, cv2.BORDER_REPLICATE), (780, 780))
    big[2000:2780, 4100:4880] = face  # chip (200 px of 260) -> 600 px at (4190, 2090)
    ok, jpg = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    image = decode_image(jpg.tobytes())
    faces = find_faces(image)
    assert len(faces) == 1
    x, y, w, h = faces[0].box
    assert abs(x + w / 2 - (4190 + 300)) < 60 and abs(y + h / 2 - (2090 + 300)) < 100
    assert 450 < w < 750


@pytest.mark.parametrize("shape", [(300, 400), (300, 400, 3), (64, 64), (1, 1), (5, 3000, 3)])
def test_blank_image_has_no_face(shape: tuple[int, ...]) -> None:
    assert find_faces(np.full(shape, 200, np.uint8)) == []
    face = frame_crop(np.full(shape, 200, np.uint8))  # never fails: falls back to the whole crop
    assert face.aligned.shape == (50, 50) and face.eyes is None and face.rotation == 0.0
    assert (face.aligned == 200).all()


def test_textured_backgrounds_give_few_false_faces() -> None:
    """Haar fires on blotchy texture; detections without an eye pair must also pass a second cascade. BlazeFace
    (the default) finds no face there at all."""
    rng = np.random.default_rng(7)
    strict = lenient = blaze = 0
    for i in range(12):
        (w, h), (gh, gw) = [((640, 480), (30, 40)), ((1280, 960), (60, 80)), ((1024, 768), (15, 20))][i % 3]
        texture = cv2.resize(rng.integers(0, 255, (gh, gw, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
        strict += len(find_faces(texture, PAPER))
        lenient += len(find_faces(texture, dataclasses.replace(PAPER, verify_cascade=None)))
        blaze += len(find_faces(texture))
    assert strict <= 1 < lenient
    assert blaze == 0


def test_gray_bgr_and_bgra_arrays_give_the_same_faces(utk_chips: list[np.ndarray]) -> None:
    bgr = _on_canvas(utk_chips[2], 0.0, pad=60)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    for cfg in (PAPER, CFG):
        results = [find_faces(a, cfg) for a in (bgr, gray, gray[..., None], bgra)]
        assert len(results[0]) == 1 and all(len(r) == 1 for r in results)
        same = [results[0], results[3]] if cfg.detector == "blazeface" else results  # BlazeFace sees colour
        for r in same[1:]:
            assert [f.box for f in r] == [f.box for f in same[0]]
            assert np.array_equal(r[0].aligned, same[0][0].aligned)
        for r in results[1:]:  # gray or colour: the same face, framed within a few pixels
            assert np.allclose(r[0].box, results[0][0].box, atol=0.06 * results[0][0].box[2])


def test_thread_safe(utk_chips: list[np.ndarray]) -> None:
    images = [_on_canvas(c, 5.0, pad=40) for c in utk_chips[:8]] * 2
    expected = [[(f.box, f.rotation) for f in find_faces(im)] for im in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda im: [(f.box, f.rotation) for f in find_faces(im)], images))
    assert got == expected


# --- data-set crops ------------------------------------------------------------------------------------------------


def test_frame_crop_on_dataset_images(utk_chips: list[np.ndarray], fer_images: list[np.ndarray]) -> None:
    detected = 0
    for image in utk_chips + fer_images:
        face = frame_crop(image)
        assert isinstance(face, Face)
        assert face.aligned.shape == (50, 50) and face.aligned.dtype == np.uint8
        assert abs(face.rotation) <= 10
        x, y, w, h = face.box
        assert x >= 0 and y >= 0 and x + w <= image.shape[1] and y + h <= image.shape[0]
        assert face.detected == crop_face_box(image)[1]
        detected += face.detected
    for gray48 in fer_images:
        assert gray48.shape == (48, 48, 3)
    assert frame_crop(cv2.cvtColor(fer_images[0], cv2.COLOR_BGR2GRAY)).aligned.shape == (50, 50)
    assert all(crop_face_box(c)[1] for c in utk_chips)  # the detector frames (almost) every UTKFace chip
    assert detected >= len(utk_chips) + 3


def test_frame_crop_frames_like_find_faces(utk_chips: list[np.ndarray]) -> None:
    """A chip framed by frame_crop and the same chip found in a photo give (nearly) the same network input."""
    pad = 100
    for chip in utk_chips[:6]:
        crop_box, found = crop_face_box(chip)
        assert found
        photo_face = find_faces(_on_canvas(chip, 0.0, pad=pad))[0]
        x, y, w, h = photo_face.box
        assert abs(x - pad - crop_box[0]) < 0.1 * w and abs(y - pad - crop_box[1]) < 0.1 * w
        assert abs(w - crop_box[2]) < 0.15 * w
        diff = np.abs(frame_crop(chip).aligned.astype(int) - photo_face.aligned.astype(int))
        assert np.median(diff) < 25


def test_frame_crop_falls_back_to_the_configured_box() -> None:
    rng = np.random.default_rng(1)
    coarse = rng.integers(0, 255, (12, 12), dtype=np.uint8)
    noise = cv2.resize(coarse, (100, 100), interpolation=cv2.INTER_CUBIC)  # smooth, no face
    box, found = crop_face_box(noise)
    assert not found and box == (7, 15, 86, 86)  # the default: BlazeFace's median box on FER2013 crops
    assert crop_face_box(noise, PAPER) == ((2, 2, 96, 96), False)  # Haar's median box on FER2013 crops
    assert frame_crop(noise).box == (7, 15, 86, 85)  # Face.box is clipped to the image
    assert np.array_equal(frame_crop(noise).aligned, align(noise, (7, 15, 86, 86), 0.0, CFG))
    cfg = dataclasses.replace(PAPER, fallback_box=(0.5, 0.6, 0.8))
    assert crop_face_box(noise, cfg) == ((10, 20, 80, 80), False)
    expected = cv2.resize(noise[20:100, 10:90], (50, 50), interpolation=cv2.INTER_AREA)
    face = frame_crop(noise, cfg)
    assert face.box == (10, 20, 80, 80) and face.eyes is None and not face.detected
    assert np.corrcoef(face.aligned.ravel(), expected.ravel())[0, 1] > 0.95


# --- decoding ------------------------------------------------------------------------------------------------------


def _exif(orientation: int) -> bytes:
    """A TIFF header with one IFD entry: Orientation."""
    return b"MM\x00\x2a" + struct.pack(">IH", 8, 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + b"\0" * 4


def _jpeg_with_exif(jpeg: bytes, orientation: int) -> bytes:
    payload = b"Exif\x00\x00" + _exif(orientation)
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def _png(width: int, height: int, color_type: int, depth: int, pixels: bytes, *chunks: tuple[bytes, bytes]) -> bytes:
    """A PNG written by hand (for palette images, which OpenCV cannot write)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    row = len(pixels) // height
    raw = b"".join(b"\x00" + pixels[i * row : (i + 1) * row] for i in range(height))
    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    body = b"".join(chunk(tag, data) for tag, data in chunks)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + body + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def _marked() -> np.ndarray:
    img = np.zeros((30, 50, 3), np.uint8)
    img[:10, :15] = (0, 0, 255)
    img[20:, 40:] = (255, 0, 0)
    return img


ORIENTED = {  # what a viewer shows for each EXIF orientation of a stored image a
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, -1)[::-1],
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_jpeg_and_png(orientation: int) -> None:
    ok, jpg = cv2.imencode(".jpg", _marked(), [cv2.IMWRITE_JPEG_QUALITY, 100])
    upright = decode_image(jpg.tobytes())
    got = decode_image(_jpeg_with_exif(jpg.tobytes(), orientation))
    assert np.array_equal(got, ORIENTED[orientation](upright))
    exif = [np.frombuffer(_exif(orientation), np.uint8)]
    ok, png = cv2.imencodeWithMetadata(".png", _marked(), [cv2.IMAGE_METADATA_EXIF], exif)
    assert ok
    assert np.array_equal(decode_image(png.tobytes()), ORIENTED[orientation](_marked()))


def test_sideways_photo_with_exif_tag_finds_the_face(utk_chips: list[np.ndarray], tmp_path: Path) -> None:
    photo = _on_canvas(utk_chips[3], 0.0, pad=60)
    stored = np.ascontiguousarray(np.rot90(photo, 1))  # camera held sideways: tag 6 says "turn 90 clockwise"
    assert find_faces(stored, PAPER) == []  # upright-only detector: the sideways face is missed
    sideways = find_faces(stored)  # BlazeFace finds it, but the paper's 10-degree cap leaves it on its side
    assert all(abs(f.rotation) <= 10 for f in sideways)
    ok, jpg = cv2.imencode(".jpg", stored, [cv2.IMWRITE_JPEG_QUALITY, 95])
    path = tmp_path / "sideways.jpg"
    path.write_bytes(_jpeg_with_exif(jpg.tobytes(), 6))
    image = decode_image(path)
    assert image.shape == photo.shape
    assert len(find_faces(image)) == 1
    assert len(find_faces(decode_image(str(path)))) == 1


def test_decode_gray_rgba_palette_and_16_bit() -> None:
    gray = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (8, 1))
    for ext in (".png", ".jpg"):
        ok, data = cv2.imencode(ext, gray)
        out = decode_image(data.tobytes())
        assert out.shape == (8, 25, 3) and out.dtype == np.uint8
        assert (out[..., 0] == out[..., 1]).all() and np.abs(out[..., 0].astype(int) - gray).max() <= 3

    bgra = np.zeros((10, 20, 4), np.uint8)
    bgra[:, :10] = (10, 20, 30, 255)  # opaque
    bgra[:, 10:] = (10, 20, 30, 0)  # transparent -> white
    ok, data = cv2.imencode(".png", bgra)
    out = decode_image(data.tobytes())
    assert out.shape == (10, 20, 3)
    assert (out[:, :10] == (10, 20, 30)).all() and (out[:, 10:] == 255).all()

    # palette: red / blue (RGB in the PLTE chunk), index 2 fully transparent via tRNS
    idx = bytes([0] * 4 + [1] * 4 + [2] * 4) * 6
    plte = bytes([255, 0, 0, 0, 0, 255, 0, 255, 0])
    png = _png(12, 6, 3, 8, idx, (b"PLTE", plte), (b"tRNS", bytes([255, 255, 0])))
    out = decode_image(png)
    assert out.shape == (6, 12, 3)
    assert (out[:, :4] == (0, 0, 255)).all() and (out[:, 4:8] == (255, 0, 0)).all() and (out[:, 8:] == 255).all()
    assert (decode_image(_png(12, 6, 3, 8, idx, (b"PLTE", plte)))[:, 8:] == (0, 255, 0)).all()

    deep = np.full((6, 6, 3), 40000, np.uint16)
    deep[:, 3:] = 65535
    ok, data = cv2.imencode(".png", deep)
    out = decode_image(data.tobytes())
    assert out.dtype == np.uint8 and (out[:, :3] == 156).all() and (out[:, 3:] == 255).all()
    gray16 = _png(4, 2, 0, 16, struct.pack(">8H", *([0, 65535] * 4)))
    assert decode_image(gray16).tolist() == [[[0] * 3, [255] * 3] * 2] * 2


def test_decode_rejects_bad_data_with_a_clear_message(tmp_path: Path, utk_chips: list[np.ndarray]) -> None:
    ok, jpg = cv2.imencode(".jpg", utk_chips[0])
    ok, png = cv2.imencode(".png", utk_chips[0])
    cases = {
        b"": "empty",
        b"hello, this is not a picture\n" * 20: "not an image",
        b"%PDF-1.7\n" + bytes(range(256)): "not an image",
        jpg.tobytes()[: len(jpg) // 2]: "truncated",
        jpg.tobytes()[:-2]: "truncated",
        png.tobytes()[: len(png) // 2]: "truncated",
    }
    for data, words in cases.items():
        with pytest.raises(ImageError, match=words) as info:
            decode_image(data)
        assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    with pytest.raises(ImageError, match="cannot read"):
        decode_image(tmp_path / "missing.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        decode_image(tmp_path / "empty.jpg")
    with pytest.raises(ImageError):
        find_faces(np.zeros((0, 10), np.uint8))


def test_decode_refuses_huge_images_before_decoding() -> None:
    small = np.zeros((200, 300, 3), np.uint8)
    ok, jpg = cv2.imencode(".jpg", small)
    ok, png = cv2.imencode(".png", small)
    jpg, png = jpg.tobytes(), png.tobytes()
    assert decode_image(io.BytesIO(jpg)).shape == (200, 300, 3)  # file-like objects (uploads) work too
    for data in (jpg, png, _jpeg_with_exif(jpg, 6)):
        with pytest.raises(ImageError, match=r"too large: 300x200 pixels"):
            decode_image(data, max_pixels=50_000)
    # A header that claims 40000x30000 is refused from the header alone (the pixel data is not there at all).
    sof = jpg.index(b"\xff\xc0")
    huge_jpg = jpg[: sof + 5] + struct.pack(">HH", 30000, 40000) + jpg[sof + 9 :]
    huge_png = png[:16] + struct.pack(">II", 40000, 30000) + png[24:]
    for data in (huge_jpg, huge_png):
        with pytest.raises(ImageError, match=r"too large: 40000x30000"):
            decode_image(data)


# --- config and network input --------------------------------------------------------------------------------------


def test_config_round_trips_through_json() -> None:
    for cfg in (
        PreprocessConfig(),
        PreprocessConfig(size=64, max_rotation=5.0, margin=1.2, fallback_box=(0.5, 0.45, 1)),
    ):
        d = json.loads(json.dumps(cfg.to_dict()))
        assert PreprocessConfig.from_dict(d) == cfg
        assert d["size"] == cfg.size and d["max_rotation"] == cfg.max_rotation
    with pytest.raises(ValueError, match="unknown preprocessing settings"):
        PreprocessConfig.from_dict({**PreprocessConfig().to_dict(), "blur": 3})
    bad_values = (
        dict(size=2),
        dict(size="50"),
        dict(max_rotation=-1),
        dict(eye_cascade="../../etc/passwd"),
        dict(margin=0),
        dict(fallback_box=5),
    )
    for bad in bad_values:
        with pytest.raises(ValueError):
            PreprocessConfig(**bad)


def test_config_size_and_cap_are_obeyed(utk_chips: list[np.ndarray]) -> None:
    cfg = PreprocessConfig(size=64, max_rotation=2.0)
    faces = find_faces(_on_canvas(utk_chips[0], 8.0), cfg)
    assert faces and faces[0].aligned.shape == (64, 64)
    assert abs(faces[0].rotation) <= 2.0
    assert frame_crop(utk_chips[0], cfg).aligned.shape == (64, 64)


def test_to_network_input() -> None:
    a = np.array([[0, 255], [51, 102]], np.uint8)
    x = to_network_input([a, a])
    assert x.shape == (2, 2, 2, 1) and x.dtype == np.float32
    assert x[0, 0, 1, 0] == 1.0 and x[0, 1, 0, 0] == pytest.approx(0.2)
    assert to_network_input(np.stack([a] * 3)).shape == (3, 2, 2, 1)
    assert to_network_input(np.stack([a] * 3)[..., None]).shape == (3, 2, 2, 1)
    assert to_network_input([], size=50).shape == (0, 50, 50, 1)
    with pytest.raises(ValueError, match="no faces"):
        to_network_input([])
    with pytest.raises(ValueError, match="different shapes"):
        to_network_input([a, np.zeros((3, 3), np.uint8)])
    with pytest.raises(ValueError, match="uint8"):
        to_network_input([a.astype(np.float32)])
    with pytest.raises(ValueError, match="expects 50x50"):
        to_network_input([a], size=50)


# --- BlazeFace, the default detector: every group, group photos, the paper's Haar kept as an option --------------


def _utk_by_race(shared_data: Path, per_race: int) -> dict[int, list[np.ndarray]]:
    """Adult UTKFace chips of each raw race code (0 White, 1 Black, 2 Asian, 3 Indian, 4 Others), spread over
    the listing."""
    by_race: dict[int, list[Path]] = {r: [] for r in range(5)}
    for path in (shared_data / "utkface" / "UTKFace").glob("*.jpg"):
        fields = path.name.split("_", 3)
        if len(fields) == 4 and all(f.isdigit() for f in fields[:3]) and int(fields[0]) >= 18 and int(fields[2]) < 5:
            by_race[int(fields[2])].append(path)
    return {r: [decode_image(p) for p in _spread(paths, per_race)] for r, paths in by_race.items()}


def _busy_background(rng: np.random.Generator, w: int = 640, h: int = 480) -> np.ndarray:
    coarse = rng.integers(0, 255, (h // 16, w // 16, 3), dtype=np.uint8)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(10):
        p0, p1 = (int(rng.integers(0, w)), int(rng.integers(0, h))), (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, p0, p1, tuple(int(c) for c in rng.integers(0, 255, 3)), int(rng.integers(1, 6)))
    return img


def test_faces_of_every_group_are_found_alone_and_in_group_photos(shared_data: Path) -> None:
    """The report that started the detector switch: a UTKFace portrait of a Black woman gave "No face was found".
    Every race group's faces are found as uploaded chips, on busy backgrounds, and in a group photo of four."""
    rng = np.random.default_rng(3)
    chips = _utk_by_race(shared_data, 8)
    missed: dict[int, int] = {}
    for race, group in chips.items():
        miss = 0
        for i, chip in enumerate(group):
            miss += len(find_faces(chip)) != 1  # the photo is the chip itself
            scene = _busy_background(rng)
            side = 110 + 20 * i
            x, y = int(rng.integers(0, 640 - side)), int(rng.integers(0, 480 - side))
            scene[y : y + side, x : x + side] = cv2.resize(chip, (side, side), interpolation=cv2.INTER_AREA)
            found = find_faces(scene)
            miss += not any(abs(f.box[0] + f.box[2] / 2 - x - side / 2) < side / 3 for f in found)
        group_photo = _busy_background(rng)
        for j, chip in enumerate(group[:4]):
            group_photo[140:290, 10 + 157 * j : 160 + 157 * j] = cv2.resize(chip, (150, 150))
        miss += 4 - len(find_faces(group_photo))
        missed[race] = miss
    assert all(m <= 1 for m in missed.values()), f"missed faces per race code (of 20): {missed}"
    assert sum(missed.values()) <= 2


def test_the_paper_haar_detector_stays_available(utk_chips: list[np.ndarray]) -> None:
    photo = _on_canvas(utk_chips[0], 0.0, pad=60)
    haar, blaze = find_faces(photo, PAPER), find_faces(photo)
    assert len(haar) == len(blaze) == 1
    hx, hy, hw, hh = haar[0].box
    bx, by, bw, bh = blaze[0].box
    assert abs(hx + hw / 2 - bx - bw / 2) < 0.2 * hw and 0.6 < bw / hw < 1.3  # the same face
    assert blaze[0].eyes is not None  # BlazeFace always brings its eye keypoints
    # Old bundles saved no detector: they were made with the Haar pipeline and are served with it.
    legacy = {k: v for k, v in PAPER.to_dict().items() if k not in ("detector", "blazeface_model")}
    assert PreprocessConfig.from_dict(legacy).detector == "haar"
    assert PreprocessConfig.from_dict(CFG.to_dict()) == CFG and CFG.detector == "blazeface"
    assert PreprocessConfig.named("paper") == PAPER
    with pytest.raises(ValueError, match="detector must be one of"):
        PreprocessConfig(detector="yolo")
    with pytest.raises(ValueError, match="unknown preprocessing"):
        PreprocessConfig.named("mtcnn")


def test_blazeface_frames_dataset_crops_with_its_eyes(
    utk_chips: list[np.ndarray], fer_images: list[np.ndarray]
) -> None:
    """On data-set crops the detector finds (nearly) every face, with both eyes: the framing and the rotation come
    from the same detector as in photos."""
    found = [frame_crop(image) for image in utk_chips + fer_images]
    assert sum(f.detected for f in found) >= len(found) - 2
    assert all(f.eyes is not None for f in found if f.detected)
    for f in found:
        if f.eyes is not None:
            assert f.rotation == pytest.approx(float(np.clip(eye_tilt(f.eyes), -10, 10)))
            (lx, _), (rx, _) = f.eyes
            assert lx < rx


def test_blazeface_runtimes_agree(utk_chips: list[np.ndarray]) -> None:
    """LiteRT (fast) and OpenCV's DNN (the fallback where LiteRT has no wheel) run the same model: same faces."""
    from mtfer.core import detectors

    if detectors.runtime() != "litert":
        pytest.skip("ai-edge-litert is not installed here")
    photo = _on_canvas(utk_chips[4], 6.0, pad=80)
    for model in ("short", "full"):
        fast, fallback = (detectors.blazeface(photo, model, backend=b) for b in ("litert", "opencv"))
        assert len(fast) == len(fallback) >= 1
        assert np.allclose(fast[0].box, fallback[0].box, atol=0.5)
        assert np.allclose(fast[0].eyes, fallback[0].eyes, atol=0.5)
        assert fast[0].score == pytest.approx(fallback[0].score, abs=1e-3)


def test_blazeface_on_many_images_matches_one_at_a_time(utk_chips: list[np.ndarray]) -> None:
    """Batches (8, then 2, then 1 here) give each image the detections it gets alone, in its own pixels: candidate
    patches go through the network together without changing what is found."""
    from mtfer.core import detectors

    images = [_on_canvas(utk_chips[k % len(utk_chips)], 2.0 + k / 3, pad=20 + 7 * k) for k in range(11)]
    images[5] = np.full((300, 200, 3), 128, np.uint8)  # one without a face, and of another shape
    for model in ("short", "full"):
        together = detectors.blazeface_many(images, model, 0.3)
        alone = [detectors.blazeface(image, model, 0.3) for image in images]
        assert len(together) == 11 and together[5] == []
        for a, b in zip(together, alone, strict=True):
            assert len(a) == len(b)
            for x, y in zip(a, b, strict=True):
                assert np.allclose(x.box, y.box, atol=1e-3) and np.allclose(x.eyes, y.eyes, atol=1e-3)
                assert x.score == pytest.approx(y.score, abs=1e-5)
    assert detectors.blazeface_many([], "full") == []
