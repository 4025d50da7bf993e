"""Hardening (issue 6): hostile uploads, data-root confinement, safe model loading, training job faults.

Uploads go through mtfer.media.uploads.analyse_upload, the function the Predict page calls; the model is an untrained
bundle built here in a second (no training). Training jobs are stood in for by `sleep` processes, so no test here
starts TensorFlow in a subprocess."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import signal
import struct
import subprocess
import threading
import time
import tomllib
import tracemalloc
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamlit.testing.v1 import AppTest

from mtfer.app import job_view, wording
from mtfer.core import bundles, decoding
from mtfer.core.decoding import MAX_PIXELS, ImageError, decode_image
from mtfer.core.inference import FacePrediction, Predictor
from mtfer.core.model import build_model
from mtfer.core.preprocess import PreprocessConfig
from mtfer.core.tasks import TASK_NAMES, TASKS
from mtfer.media import webrtc
from mtfer.media.uploads import UploadResult, analyse_upload, upload_error
from mtfer.store import jobs, operator, runs
from mtfer.store import settings as app_settings

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
TIMEOUT = 60


def _metadata(tasks=TASK_NAMES) -> dict:
    return {
        "tasks": {t: list(TASKS[t].classes) for t in tasks},
        "input": {"size": 50},
        "preprocessing": PreprocessConfig().to_dict(),
    }


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """An untrained four-head bundle: real weights file, real metadata, no training."""
    path = tmp_path_factory.mktemp("bundle") / "untrained"
    bundles.save_bundle(build_model("fast", TASK_NAMES), _metadata(), path)
    return path


@pytest.fixture(scope="module")
def predictor(bundle) -> Predictor:
    return Predictor(bundle)


# --- image files made here ---------------------------------------------------------------------------------

# Frame 1: left half blue, right half red (BGR). Frame 2: gray. A decoder that returns frame 2 is caught.
FRAME_1 = np.zeros((40, 60, 3), np.uint8)
FRAME_1[:, :30] = (255, 0, 0)
FRAME_1[:, 30:] = (0, 0, 255)
FRAME_2 = np.full((40, 60, 3), 128, np.uint8)


def _encode(ext: str, image: np.ndarray, *params: int) -> bytes:
    ok, buf = cv2.imencode(ext, image, list(params))
    assert ok
    return buf.tobytes()


def _animation(ext: str) -> bytes:
    animation = cv2.Animation()
    animation.frames = [FRAME_1, FRAME_2]
    animation.durations = [100, 100]
    ok, buf = cv2.imencodeanimation(ext, animation)
    assert ok
    return buf.tobytes()


def _multi_page_tiff() -> bytes:
    ok, buf = cv2.imencodemulti(".tiff", [FRAME_1, FRAME_2])
    assert ok
    return buf.tobytes()


def _with_size(data: bytes, width: int, height: int) -> bytes:
    """`data` (an encoded image) with its header's declared size replaced; the pixel data is left as it was."""
    out = bytearray(data)
    kind = decoding._sniff(data)
    if kind == "PNG":
        struct.pack_into(">II", out, 16, width, height)
    elif kind == "JPEG":
        sof = next(i for i in range(2, len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1, 0xC2))
        struct.pack_into(">HH", out, sof + 5, height, width)
    elif kind == "GIF":
        struct.pack_into("<HH", out, 6, width, height)
    elif kind == "BMP":
        struct.pack_into("<ii", out, 18, width, height)
    elif kind == "TIFF":
        end = "<" if data[:2] == b"II" else ">"
        (ifd,) = struct.unpack_from(end + "I", data, 4)
        (count,) = struct.unpack_from(end + "H", data, ifd)
        for i in range(count):
            tag, typ = struct.unpack_from(end + "HH", data, ifd + 2 + 12 * i)
            if tag in (256, 257):
                value = width if tag == 256 else height
                struct.pack_into(
                    end + ("H" if typ == 3 else "I"), out, ifd + 10 + 12 * i, value & 0xFFFF if typ == 3 else value
                )
    elif kind == "WebP" and data[12:16] == b"VP8 ":
        struct.pack_into("<HH", out, 26, width & 0x3FFF, height & 0x3FFF)
    elif kind == "WebP" and data[12:16] == b"VP8L":
        (bits,) = struct.unpack_from("<I", data, 21)
        struct.pack_into("<I", out, 21, ((width - 1) & 0x3FFF) | ((height - 1) & 0x3FFF) << 14 | bits & ~0xFFFFFFF)
    elif kind == "WebP" and data[12:16] == b"VP8X":
        out[24:27] = (max(width, 1) - 1).to_bytes(3, "little")
        out[27:30] = (max(height, 1) - 1).to_bytes(3, "little")
    else:
        raise AssertionError(f"no size to patch in a {kind} file")
    return bytes(out)


def _samples() -> dict[str, bytes]:
    """One valid file per container (and WebP flavour), each 60x40 pixels."""
    return {
        "jpeg": _encode(".jpg", FRAME_1),
        "png": _encode(".png", FRAME_1),
        "gif": _encode(".gif", FRAME_1),
        "bmp": _encode(".bmp", FRAME_1),
        "tiff": _encode(".tiff", FRAME_1),
        "webp-lossy": _encode(".webp", FRAME_1, cv2.IMWRITE_WEBP_QUALITY, 80),
        "webp-lossless": _encode(".webp", FRAME_1),
        "webp-extended": _animation(".webp"),
    }


@pytest.fixture()
def count_decodes(monkeypatch) -> Counter:
    """Counts every call of OpenCV's decoders while the test runs."""
    calls: Counter = Counter()
    for name in ("imdecode", "imdecodeWithMetadata", "imdecodemulti"):
        original = getattr(cv2, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(cv2, name, counted)
    return calls


# --- limits ------------------------------------------------------------------------------------------------


def test_streamlit_caps_upload_size_and_keeps_its_protections():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    server = config["server"]
    assert 1 <= server["maxUploadSize"] <= 200  # MB per file: a video (mtfer.media.video.MAX_UPLOAD_MB)
    page = (REPO / "pages" / "predict_modes" / "photos.py").read_text()  # the Predict page's photo mode
    assert "PHOTO_MAX_UPLOAD_MB = 50" in page and "max_upload_size=PHOTO_MAX_UPLOAD_MB" in page  # photos: 50 MB
    assert server.get("enableXsrfProtection", True) and server.get("enableCORS", True)


def test_every_format_is_size_checked_from_its_header_before_decoding(count_decodes):
    for name, data in _samples().items():
        assert decoding._declared_size(data, decoding._sniff(data)) == (60, 40), name
        assert decode_image(data).shape == (40, 60, 3), name
        with pytest.raises(ImageError, match=r"too large: 60x40 pixels \(at most 2,000\)"):
            decode_image(data, max_pixels=2000)
        # Headers that claim more pixels than MAX_PIXELS (16000 x 16000 is the most VP8 and VP8L can say).
        huge = (
            _with_size(data, 16000, 16000)
            if name in ("webp-lossy", "webp-lossless")
            else _with_size(data, 40000, 30000)
        )
        before = sum(count_decodes.values())
        with pytest.raises(ImageError, match=r"too large: (16000x16000|40000x30000) pixels") as info:
            decode_image(huge)
        assert "\n" not in str(info.value)
        assert sum(count_decodes.values()) == before, f"{name}: decoded although the header was over the cap"
    assert MAX_PIXELS < 16000 * 16000
    # A big-endian TIFF header (ImageWidth as LONG, ImageLength as SHORT), no pixel data at all.
    motorola = b"MM\x00*" + struct.pack(">IH", 8, 2) + struct.pack(">HHII", 256, 4, 1, 40000)
    motorola += struct.pack(">HHIH2x", 257, 3, 1, 30000) + struct.pack(">I", 0)
    with pytest.raises(ImageError, match=r"too large: 40000x30000 pixels"):
        decode_image(motorola)


def test_other_formats_opencv_reads_are_refused_unread(count_decodes):
    """PPM/PGM, Radiance HDR, Sun raster ... carry sizes that decode_image does not check: not decoded at all."""
    for ext in (".ppm", ".pgm", ".hdr", ".ras", ".pfm"):
        image = FRAME_1.astype(np.float32) / 255 if ext in (".hdr", ".pfm") else FRAME_1
        image = image[..., 0] if ext == ".pgm" else image
        data = _encode(ext, image)
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is not None  # OpenCV would
        count_decodes.clear()
        with pytest.raises(ImageError, match=r"not an image \(unrecognised file format; JPEG, PNG, WebP"):
            decode_image(data)
        assert not count_decodes
    bomb = b"P5\n60000 60000\n255\n" + bytes(100)  # a PGM claiming 3.6 gigapixels
    with pytest.raises(ImageError, match="unrecognised file format"):
        decode_image(bomb)


def test_animated_and_multi_page_files_give_their_first_frame():
    files = {
        "multi-page tiff": _multi_page_tiff(),
        "animated gif": _animation(".gif"),
        "animated png": _animation(".png"),
        "animated webp": _animation(".webp"),
    }
    for name, data in files.items():
        ok, frames = cv2.imdecodemulti(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert ok and len(frames) == 2, name  # the file really holds two frames
        out = decode_image(data)
        assert out.shape == (40, 60, 3) and out.dtype == np.uint8, name
        # Frame 1, not the gray frame 2 (lossy WebP blurs the colour edge, hence the mean).
        assert np.abs(out.astype(int) - FRAME_1).mean() < 5, name


def test_cmyk_jpeg_and_tiff_are_converted_to_colour():
    image_module = pytest.importorskip("PIL.Image")
    rgb = image_module.fromarray(np.ascontiguousarray(FRAME_1[..., ::-1])).convert("CMYK")
    for fmt in ("JPEG", "TIFF"):
        buf = io.BytesIO()
        rgb.save(buf, format=fmt, quality=95)
        data = buf.getvalue()
        assert image_module.open(io.BytesIO(data)).mode == "CMYK"
        out = decode_image(data)
        assert out.shape == (40, 60, 3)
        assert np.abs(out.astype(int) - FRAME_1).max() <= 12, fmt


def test_pixel_formats_in_other_containers():
    """Gaps left by tests/test_faces.py (PNG/JPEG gray, RGBA, palette, 16-bit): the same in TIFF, WebP, BMP."""
    gray = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (8, 1))
    bgra = np.zeros((8, 10, 4), np.uint8)
    bgra[:, :5] = (10, 20, 30, 255)
    bgra[:, 5:] = (10, 20, 30, 0)  # transparent -> white
    composited = np.where(np.arange(10)[None, :, None] < 5, [10, 20, 30], 255) * np.ones((8, 1, 1), int)
    cases = {
        "16-bit tiff": (_encode(".tiff", np.full((8, 10, 3), 40000, np.uint16)), np.full((8, 10, 3), 156)),
        "float tiff": (_encode(".tiff", np.full((8, 10), 0.5, np.float32)), np.full((8, 10, 3), 128)),
        "gray tiff": (_encode(".tiff", gray), np.repeat(gray[..., None], 3, axis=2)),
        "palette bmp": (_encode(".bmp", gray), np.repeat(gray[..., None], 3, axis=2)),
        "rgba webp": (_encode(".webp", bgra), composited),
        "rgba tiff": (_encode(".tiff", bgra), composited),
    }
    for name, (data, expected) in cases.items():
        out = decode_image(data)
        assert out.dtype == np.uint8 and out.shape == (*expected.shape[:2], 3), name
        assert np.abs(out.astype(int) - expected).max() <= 1, name
    with pytest.raises(ImageError, match="unsupported pixel format"):
        decode_image(_encode(".tiff", np.zeros((4, 4), np.int16)))


# --- the property: any upload ends as faces or one line --------------------------------------------------

MAGICS = [
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"RIFF\x00\x00\x00\x00WEBPVP8X",
]
NAMES = ["photo.jpg", "scan.PNG", "x.webp", "<img src=x onerror=alert(1)>.png", "a\nb\r\x00.jpg", "", "..", "ü.gif"]
EXTENSIONS = ["jpg", "png", "webp", "bmp", "tiff", "gif", "txt", ""]


def _valid_pool() -> list[tuple[str, bytes]]:
    """Valid files of every container, small and odd sizes, colour, gray, alpha, 16-bit, animated."""
    rng = np.random.default_rng(0)
    pool = []
    for h, w in ((1, 1), (3, 200), (64, 48), (90, 120)):
        color = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        pool += [(ext, _encode(ext, color)) for ext in (".jpg", ".png", ".gif", ".bmp", ".tiff", ".webp")]
        pool.append((".png", _encode(".png", color[..., 0])))
        pool.append((".png", _encode(".png", cv2.cvtColor(color, cv2.COLOR_BGR2BGRA))))
        pool.append((".png", _encode(".png", color.astype(np.uint16) * 257)))
        pool.append((".webp", _encode(".webp", color, cv2.IMWRITE_WEBP_QUALITY, 60)))
    pool += [(".gif", _animation(".gif")), (".png", _animation(".png")), (".webp", _animation(".webp"))]
    pool.append((".tiff", _multi_page_tiff()))
    return pool


VALID = _valid_pool()


@st.composite
def hostile_uploads(draw) -> tuple[str, str, bytes]:
    """(kind, file name, bytes) of an upload built to break the Predict page."""
    name = draw(st.sampled_from(NAMES) | st.text(max_size=24))
    kind = draw(
        st.sampled_from(["empty", "random", "magic", "truncated", "corrupted", "wrong-extension", "huge", "declared"])
    )
    ext, valid = draw(st.sampled_from(VALID))
    if kind == "empty":
        return kind, name, b""
    if kind == "random":
        return kind, name, draw(st.binary(min_size=1, max_size=3000).filter(lambda b: decoding._sniff(b) is None))
    if kind == "magic":  # a real signature, then garbage
        return kind, name, draw(st.sampled_from(MAGICS)) + draw(st.binary(max_size=3000))
    if kind == "truncated":
        return kind, name, valid[: draw(st.integers(0, len(valid) - 1))]
    if kind == "corrupted":
        data = bytearray(valid)
        for _ in range(draw(st.integers(1, 12))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return kind, name, bytes(data)
    if kind == "wrong-extension":
        other = draw(st.sampled_from([e for e in EXTENSIONS if f".{e}" != ext]))
        return kind, f"photo.{other}" if other else "photo", valid
    if kind == "huge":  # an absurd declared size over the pixel cap (at most 16383 a side for VP8 / VP8L)
        big = 16383 if valid[12:16] in (b"VP8 ", b"VP8L") else 65535
        width = draw(st.integers(MAX_PIXELS // big + 1, big))
        return kind, name, _with_size(valid, width, big)
    limit = 16383 if valid[12:16] in (b"VP8 ", b"VP8L") else 65535
    return kind, name, _with_size(valid, draw(st.integers(0, limit)), draw(st.integers(0, limit)))


def test_hostile_uploads_end_as_faces_or_one_clear_line(predictor, count_decodes):
    seen: Counter = Counter()
    outcomes: Counter = Counter()

    @settings(
        max_examples=500,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(upload=hostile_uploads(), largest_only=st.booleans())
    def check(upload: tuple[str, str, bytes], largest_only: bool) -> None:
        kind, name, data = upload
        decodes = sum(count_decodes.values())
        result = analyse_upload(predictor, name, data, largest_only)  # must not raise
        assert isinstance(result, UploadResult) and (result.faces is None) != (result.error is None)
        if result.error is not None:
            assert isinstance(result.error, str) and result.error.startswith(upload_error(name, ""))
            assert not any(c in result.error for c in "\n\r\x00") and len(result.error) < 200
        else:
            assert all(isinstance(f, FacePrediction) for f in result.faces)
            assert len(result.faces) <= 1 or not largest_only
            for face in result.faces:
                assert list(face.probabilities) == list(TASK_NAMES)
                assert all(abs(sum(p.values()) - 1) < 1e-3 for p in face.probabilities.values())
        if kind in ("empty", "random"):
            assert result.error is not None
        if kind == "wrong-extension":
            assert result.error is None  # the content decides, not the name
        if kind == "huge":
            assert "too large" in result.error
            assert sum(count_decodes.values()) == decodes  # refused from the header, never decoded
        seen[kind] += 1
        outcomes["faces" if result.error is None else "error"] += 1

    started = time.perf_counter()
    check()
    elapsed = time.perf_counter() - started
    print(f"\n{sum(seen.values())} uploads in {elapsed:.1f} s: {dict(seen)}, {dict(outcomes)}")
    assert sum(seen.values()) >= 500
    assert set(seen) == {"empty", "random", "magic", "truncated", "corrupted", "wrong-extension", "huge", "declared"}
    assert outcomes["faces"] > 0 and outcomes["error"] > 0


@pytest.mark.parametrize("height, width", [(2560, 1), (1, 2560), (3000, 25)])
def test_sliver_photos_are_read_and_have_no_face(predictor, height: int, width: int):
    """Valid photos a few pixels wide, as a fuzzed JPEG header once produced: read, no face, no error."""
    data = _encode(".jpg", np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8))
    result = analyse_upload(predictor, "sliver.jpg", data, False)
    assert result.error is None and result.faces == []


def test_upload_errors_are_one_line_whatever_the_name():
    assert upload_error("a\nb\r\x00.jpg", "bad\n  header") == "a?b??.jpg is not a photo this app can read: bad header"
    assert upload_error("", "x").startswith("(no name) is not")


# --- confinement -------------------------------------------------------------------------------------------


def _write_fer(root: Path, per_class: int = 3) -> Path:
    """A tiny FER2013-like tree (train|test/happy|sad/*.png of noise)."""
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for emotion in ("happy", "sad"):
            folder = root / split / emotion
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 255, (48, 48), dtype=np.uint8))
    return root


def test_confine_resolves_symlinks_and_refuses_dotdot(tmp_path):
    data, outside = tmp_path / "data", tmp_path / "outside"
    (data / "fer").mkdir(parents=True)
    outside.mkdir()
    (data / "escape").symlink_to(outside, target_is_directory=True)
    (data / "alias").symlink_to(data / "fer", target_is_directory=True)
    (tmp_path / "root-link").symlink_to(data, target_is_directory=True)
    roots = [tmp_path / "root-link"]  # a root given through a symlink is resolved too

    assert app_settings.confine(data / "fer", roots) == (data / "fer").resolve()
    assert app_settings.confine(data / "alias", roots) == (data / "fer").resolve()  # a link that stays inside
    assert app_settings.confine(data, roots) == data.resolve()
    for path, words in (
        (data / "escape", "outside the data roots"),
        (data / "escape" / "x.csv", "outside the data roots"),
        (outside, "outside the data roots"),
        (Path("/etc"), "outside the data roots"),
        (data / ".." / "outside", "'..' is not allowed"),
        (data / "fer" / ".." / "fer", "'..' is not allowed"),  # refused even when it would land inside
    ):
        with pytest.raises(app_settings.ConfinementError, match=words) as info:
            app_settings.confine(path, roots)
        assert isinstance(info.value, ValueError)
    with pytest.raises(app_settings.ConfinementError):
        app_settings.confine(data / "fer", [])


def test_discovery_does_not_follow_symlinks_out_of_the_roots(tmp_path):
    data, outside = tmp_path / "data", tmp_path / "outside"
    _write_fer(outside / "secret-fer")
    _write_fer(data / "mine")
    data.joinpath("linked").symlink_to(outside / "secret-fer", target_is_directory=True)
    data.joinpath("alias").symlink_to(data / "mine", target_is_directory=True)
    assert [d.name for d in app_settings.discover_datasets([outside])] == ["secret-fer"]  # readable as such
    found = app_settings.discover_datasets([data])
    assert "mine" in {Path(d.root).name for d in found} and "linked" not in {Path(d.root).name for d in found}
    assert all(not Path(d.root).resolve().is_relative_to(outside) for d in found)


def _app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture()
def app_env(bundle, tmp_path, monkeypatch) -> Path:
    """One app session's environment in tmp: runs folder, the untrained model, a data root, the cache."""
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("MTFER_RUNS", str(runs_dir))
    monkeypatch.setenv("MTFER_MODEL", str(bundle))
    monkeypatch.setenv("MTFER_DATA_ROOTS", str(tmp_path / "data"))
    monkeypatch.setenv("MTFER_CACHE", str(tmp_path / "cache"))
    return runs_dir


def _swap_for_symlink_out(folder: Path, outside: Path) -> None:
    """Move a data set out of the data roots and leave a symlink to it in its place."""
    outside.parent.mkdir(parents=True, exist_ok=True)
    folder.rename(outside)
    folder.symlink_to(outside, target_is_directory=True)


def test_train_page_refuses_a_data_set_that_now_leads_out_of_the_roots(app_env, tmp_path):
    _write_fer(tmp_path / "data" / "mini-fer")
    at = _app("pages/train.py")
    assert len(at.multiselect(key="train_datasets").value) == 1 and not at.button(key="train_start").disabled
    # Between listing (cached for two minutes) and the click, the folder becomes a symlink out of the roots.
    _swap_for_symlink_out(tmp_path / "data" / "mini-fer", tmp_path / "elsewhere" / "mini-fer")
    at.button(key="train_start").click().run()
    assert not at.exception
    (error,) = at.error
    assert error.value.startswith("Training was not started:") and "outside the data roots" in error.value
    assert runs.list_runs(app_env) == []


def test_evaluate_page_refuses_a_data_set_that_now_leads_out_of_the_roots(app_env, tmp_path):
    _write_fer(tmp_path / "data" / "mini-fer")
    at = _app("pages/evaluate.py")
    assert at.selectbox(key="evaluate_dataset").options
    _swap_for_symlink_out(tmp_path / "data" / "mini-fer", tmp_path / "elsewhere" / "mini-fer")
    at.button(key="evaluate_now").click().run()
    assert not at.exception
    assert any("The evaluation failed" in e.value and "outside the data roots" in e.value for e in at.error)
    assert app_settings.list_evaluations(os.environ["MTFER_MODEL"]) == []


def test_run_ids_cannot_leave_the_runs_folder(tmp_path):
    for bad in ("../x", "a/b", "/etc", ".hidden", "-x", "", "x..y", "a\x00b", "a" * 101):
        with pytest.raises(bundles.RunError, match="invalid run id"):
            bundles.run_dir(bad, tmp_path)
    for label in ("../../etc/passwd", "..", "a/../../b", "<script>"):
        run_id = runs.new_run_id(label)  # what the Train page makes of its "Run name" box
        assert bundles.validate_run_id(run_id) == run_id and "/" not in run_id and ".." not in run_id
        assert bundles.run_dir(run_id, tmp_path).parent == tmp_path
    for name in ("ok-run", ".hidden", "-dash"):
        (tmp_path / name).mkdir()
        (tmp_path / name / bundles.CONFIG_FILE).write_text("{}")
    assert [p.name for p in runs.list_runs(tmp_path)] == ["ok-run"]  # what the pages list


def test_pages_never_render_raw_html():
    sources = [REPO / "app.py", *sorted((REPO / "pages").rglob("*.py"))]  # the pages and the modules they share
    assert len(sources) >= 10
    for path in sources:
        text = path.read_text()
        for risky in ("unsafe_allow_html", "st.html(", "components.html", "components.v1"):
            assert risky not in text, f"{path.name} uses {risky}"
    # What the pages do instead: user text is escaped before it reaches markdown.
    assert wording.escape_markdown("<img src=x onerror=alert(1)>") == r"\<img src=x onerror=alert(1)\>"


def test_predict_page_shows_hostile_uploads_escaped_and_one_error_each(app_env):
    at = _app("pages/predict.py")
    html_name = "<img src=x onerror=alert(1)>.png"
    bomb = _with_size(_encode(".png", FRAME_1), 40000, 30000)
    at.file_uploader[0].set_value(
        [
            (html_name, b"<html>not a photo</html>", "image/png"),
            ("bomb.png", bomb, "image/png"),
            ("moving.gif", _animation(".gif"), "image/gif"),
        ]
    ).run()
    assert not at.exception, [e.value for e in at.exception]
    assert [s.value for s in at.subheader] == [
        wording.escape_markdown(n) for n in (html_name, "bomb.png", "moving.gif")
    ]
    errors = [e.value for e in at.error]
    assert len(errors) == 2 and all("\n" not in e for e in errors)
    assert errors[0].startswith(wording.escape_markdown(upload_error(html_name, "")))  # the page's own message
    assert "unrecognised file format" in errors[0]
    assert "too large\\: 40000x30000 pixels" in errors[1]
    assert "No face was found" in at.warning[0].value  # the GIF's first frame was read and searched


# --- models load in Keras safe mode ------------------------------------------------------------------------


def test_a_bundle_with_a_lambda_layer_is_refused(tmp_path):
    inputs = keras.Input((50, 50, 1), name="face")
    x = keras.layers.Lambda(lambda t: t * 2.0, name="code")(inputs)  # arbitrary Python, saved as bytecode
    x = keras.layers.Flatten()(x)
    outputs = {t: keras.layers.Dense(TASKS[t].num_classes, activation="softmax", name=t)(x) for t in TASK_NAMES}
    path = tmp_path / "lambda-bundle"
    bundles.save_bundle(keras.Model(inputs, outputs), _metadata(), path)
    # The bundle is otherwise complete: without safe mode Keras would load it (and run its code).
    assert keras.saving.load_model(path / bundles.MODEL_FILE, compile=False, safe_mode=False) is not None
    with pytest.raises(bundles.RunError, match=r"could not load .*(Lambda|safe_mode)") as info:
        bundles.load_bundle(path, keras=True)
    assert "\n" not in str(info.value)
    with pytest.raises(bundles.RunError):
        Predictor(path, backend="keras")
    # Served from its LiteRT file the bundle runs no Python: a flatbuffer of TensorFlow Lite's builtin operations
    # (what the Lambda computed when it was saved). Whatever needs its Keras model is refused the same way.
    served = Predictor(path)
    assert served.backend == "litert" and served.predict_faces(np.zeros((1, 50, 50), np.uint8))["emotion"].shape == (
        1,
        7,
    )
    with pytest.raises(bundles.RunError, match="could not load"):
        _ = served.bundle.model


# --- training job faults -----------------------------------------------------------------------------------


def _make_data(root: Path) -> None:
    _write_fer(root / "mini-fer")


@contextlib.contextmanager
def _fake_job(runs_dir: Path, name: str = "20250101-000000-fake"):
    """A run folder whose job is a live `sleep` process, mid-epoch, with a log."""
    proc = subprocess.Popen(["sleep", "300"])
    run = runs_dir / name
    bundles.atomic_write_json(run / bundles.CONFIG_FILE, {"tasks": list(TASK_NAMES), "epochs": 5})
    runs.write_progress(run, state="running", pid=proc.pid, epoch=2, epochs=5, step=3, steps=10)
    lines = [f"epoch 2 step {i}: loss 1.{i}" for i in range(40)]
    (run / runs.LOG_FILE).write_text("\n".join(lines) + "\n")
    try:
        yield run, proc
    finally:
        with contextlib.suppress(OSError):
            proc.kill()
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            proc.wait(timeout=5)


def test_killed_job_shows_failed_with_its_log_tail_within_seconds(app_env, tmp_path):
    _make_data(tmp_path / "data")
    with _fake_job(app_env) as (run, proc):
        at = _app("pages/train.py")
        assert at.get("progress")[0].proto.text.startswith("Epoch 2 of 5")
        assert at.button(key="train_start").disabled and at.button(key="train_stop")
        assert any("already running" in i.value for i in at.info)

        os.kill(proc.pid, signal.SIGKILL)  # kill -9 mid-epoch: no chance to write anything
        killed = time.monotonic()
        at.run()
        assert time.monotonic() - killed < 5
    assert not at.exception
    progress = at.get("progress")[0].proto
    assert progress.text.startswith("Failed: the training process is gone"), progress.text
    code = at.code[0].value
    assert code.splitlines() == [f"epoch 2 step {i}: loss 1.{i}" for i in range(10, 40)]  # the last 30 lines
    assert not at.button(key="train_start").disabled  # a new run can start
    assert bundles.read_json(run / runs.PROGRESS_FILE)["state"] == "failed"  # recorded, not only shown
    assert job_view.job_status(runs.read_progress(run)).state == "failed"


def test_a_second_start_while_a_job_runs_is_refused(app_env, tmp_path):
    _make_data(tmp_path / "data")
    at = _app("pages/train.py")
    assert not at.button(key="train_start").disabled and not any("already running" in i.value for i in at.info)
    with _fake_job(app_env) as (run, _):  # another session started a job after this page was drawn
        at.button(key="train_start").click().run()  # the click on the page drawn before
        assert not at.exception
        assert runs.list_runs(app_env) == [run]  # nothing started
        assert any(i.value.startswith(f"A training job is already running ({run.name})") for i in at.info)
        assert at.button(key="train_start").disabled
        with pytest.raises(bundles.RunError, match=f"a training job is already running \\({run.name}\\)"):
            jobs.start_job({"name": "x"}, app_env)


def test_simultaneous_starts_start_one_job(tmp_path, monkeypatch):
    """Sessions pressing Start at the same moment: one job; the others get the one-line refusal."""
    children: list[subprocess.Popen] = []
    real_popen = subprocess.Popen

    def fake_trainer(cmd, **kwargs):  # a stand-in child that stays alive, instead of TensorFlow
        child = real_popen(["sleep", "300"])
        children.append(child)
        return child

    monkeypatch.setattr(runs.subprocess, "Popen", fake_trainer)
    barrier = threading.Barrier(4)

    def start(i: int) -> str:
        barrier.wait()
        try:
            return jobs.start_job({"run_id": f"run-{i}"}, tmp_path)
        except bundles.RunError as error:
            return str(error)

    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(start, range(4)))
        started = [r for r in results if isinstance(r, Path)]
        assert len(started) == 1 and len(children) == 1, results
        assert all("a training job is already running" in r for r in results if isinstance(r, str))
        assert jobs.active_jobs(tmp_path) == started
    finally:
        for child in children:
            child.kill()
            child.wait()


def test_unwritable_runs_folder_gives_a_clear_error(app_env, tmp_path, monkeypatch):
    _make_data(tmp_path / "data")
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("MTFER_RUNS", str(tmp_path / "a-file" / "runs"))  # root can write anywhere, but not here
    at = _app("pages/train.py")
    at.button(key="train_start").click().run()
    assert not at.exception
    (error,) = at.error
    assert error.value.startswith("Training was not started: cannot write to the runs folder")
    assert "Not a directory" in error.value


def test_full_runs_folder_gives_a_clear_error(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(Path, "write_text", full)  # the write probe
        with pytest.raises(bundles.RunError, match="cannot write to the runs folder .*: No space left on device"):
            jobs.start_job({"name": "x"}, tmp_path / "runs")
    with monkeypatch.context() as m:
        m.setattr(jobs, "atomic_write_json", full)  # the disk fills up just after the probe
        m.setattr(runs, "atomic_write_json", full)
        with pytest.raises(bundles.RunError, match="cannot write run .*: No space left on device"):
            jobs.start_job({"name": "x"}, tmp_path / "runs")


def test_a_starting_job_is_not_taken_for_dead(tmp_path):
    """Between writing progress.json and learning the child's pid, other sessions must not mark it failed."""
    run = tmp_path / "starting"
    runs.write_progress(run, state="queued", epoch=0, starter=os.getpid())
    assert runs.read_progress(run)["state"] == "queued"
    proc = subprocess.Popen(["true"])
    proc.wait()
    runs.write_progress(run, state="queued", starter=proc.pid)  # the starter died before the child's pid came
    assert runs.read_progress(run)["state"] == "failed"


def test_special_files_are_never_read_and_a_walk_never_hangs(tmp_path, capsys):
    """A pipe named .jpg (would wait forever), a link to /dev/zero (would fill the memory) and an oversized file are
    refused in one line each, in a folder walk and as a file given by name, and the other photos go through."""
    import os

    import pandas as pd

    from mtfer import cli
    from mtfer.core import decoding
    from mtfer.media.folders import photo_files

    folder = tmp_path / "photos"
    folder.mkdir()
    os.mkfifo(folder / "pipe.jpg")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    for name in ("pipe.jpg", "zero.jpg"):
        with pytest.raises(decoding.ImageError, match="not a regular file"):
            decoding.decode_image(folder / name)
    big = folder / "big.jpg"
    big.write_bytes(b"\xff\xd8" + b"\0" * 2000)
    with pytest.raises(decoding.ImageError, match="file too large"):
        decoding.read_photo_file(big, max_bytes=1000)
    # reading a small photo sets aside its size, not the limit (256 MB per photo and thread, once)
    tracemalloc.start()
    try:
        assert decoding.read_photo_file(big) == big.read_bytes()
        assert tracemalloc.get_traced_memory()[1] < 1_000_000
    finally:
        tracemalloc.stop()
    assert {p.name for p in photo_files(folder)} == {"pipe.jpg", "zero.jpg", "big.jpg"}
    out = tmp_path / "faces.csv"
    assert cli.main(["predict", str(folder), "--csv", str(out), "--model", "default"]) == 0
    errors = dict(zip(*(pd.read_csv(out)[c].tolist() for c in ("source", "error")), strict=True))
    assert (
        "not a regular file" in errors[str(folder / "pipe.jpg")]
        and "not a regular file" in errors[str(folder / "zero.jpg")]
    )
    assert cli.main(["predict", str(folder / "pipe.jpg"), "--csv", str(out), "--model", "default"]) == 2
    assert "pipe.jpg is not a regular file" in capsys.readouterr().err


# --- private by default --------------------------------------------------------------------------------------------


def test_the_server_is_private_and_shows_no_tracebacks_by_default():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"  # this machine only, whatever the banner says
    assert config["client"]["showErrorDetails"] == "none"  # no traceback, no absolute path in the browser
    assert operator.is_private("127.0.0.1") and operator.is_private("localhost") and operator.is_private("::1")
    assert not operator.is_private("0.0.0.0") and not operator.is_private("") and not operator.is_private(None)


def test_on_a_shared_server_only_the_operator_changes_what_everyone_shares():
    private = operator.access("127.0.0.1", None, env={})
    assert private.allowed and not private.ask
    closed = operator.access("0.0.0.0", "guess", env={})  # no password set: read-only, nothing to ask
    assert not closed.allowed and not closed.ask and operator.ENV_OPERATOR_PASSWORD in closed.why
    env = {operator.ENV_OPERATOR_PASSWORD: "s3cret"}
    assert operator.access("0.0.0.0", None, env=env) == operator.access("0.0.0.0", "wrong", env=env)
    asked = operator.access("0.0.0.0", "wrong", env=env)
    assert not asked.allowed and asked.ask and "operator password" in asked.why
    assert operator.access("0.0.0.0", "s3cret", env=env).allowed


@pytest.fixture()
def shared_server():
    """The app as if started with --server.address 0.0.0.0 (reachable from other machines)."""
    from streamlit import config

    before = config.get_option("server.address")
    config.set_option("server.address", "0.0.0.0")
    yield
    config.set_option("server.address", before)


def test_a_shared_server_is_read_only_until_the_operator_password_is_given(
    app_env, tmp_path, shared_server, monkeypatch
):
    _write_fer(tmp_path / "data" / "mini-fer")
    monkeypatch.delenv(operator.ENV_OPERATOR_PASSWORD, raising=False)
    at = _app("pages/train.py")
    assert at.button(key="train_start").disabled and not at.sidebar.text_input
    assert any("read-only" in i.value for i in at.info)
    evaluate = _app("pages/evaluate.py")
    assert evaluate.button(key="evaluate_now").disabled
    # with a password set: asked for in the sidebar; a wrong one keeps everything off, the right one opens it
    monkeypatch.setenv(operator.ENV_OPERATOR_PASSWORD, "s3cret")
    at = _app("pages/train.py")
    assert at.button(key="train_start").disabled
    at.sidebar.text_input(key="operator_password").input("wrong").run()
    assert at.button(key="train_start").disabled and any("operator password" in i.value for i in at.info)
    at.sidebar.text_input(key="operator_password").input("s3cret").run()
    assert not at.exception and not at.button(key="train_start").disabled
    assert not any("operator password" in i.value for i in at.info)


def _png_header(width: int, height: int, depth: int, color_type: int) -> bytes:
    """A PNG's signature and IHDR chunk: what check_photo reads (no pixel data follows)."""
    body = b"IHDR" + struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + body + struct.pack(">I", zlib.crc32(body))


def test_a_photo_is_budgeted_by_its_decoded_bytes_not_only_its_pixels():
    # 100 megapixels: under the pixel cap, but as 16-bit RGBA 800 MB once decoded (8 bytes a pixel)
    bomb = _png_header(10_000, 10_000, 16, 6)
    with pytest.raises(ImageError, match=r"too large to decode: 10000x10000 pixels would take 800 MB"):
        decoding.check_photo(bomb)
    assert decoding.check_photo(_png_header(10_000, 10_000, 8, 0)) == "PNG"  # 8-bit gray: 100 MB, fine
    assert decoding.check_photo(_png_header(10_000, 10_000, 8, 6)) == "PNG"  # 8-bit RGBA: 400 MB, fine
    with pytest.raises(ImageError, match="too large to decode"):
        decoding.check_photo(_png_header(10_000, 9_000, 16, 2))  # 16-bit RGB: 540 MB
    with pytest.raises(ImageError, match="cut short"):
        decoding.check_photo(_png_header(100, 100, 8, 6)[:25])


def test_sixteen_bit_and_transparent_photos_convert_without_a_float_copy_of_the_whole():
    rng = np.random.default_rng(0)
    rgba16 = rng.integers(0, 65536, (1500, 1000, 4), dtype=np.uint16)  # 12 MB decoded
    expected_color = np.round(rgba16[..., :3] / 257.0)
    alpha = np.round(rgba16[..., 3:] / 257.0) / 255.0
    expected = np.round(expected_color * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    tracemalloc.start()
    try:
        out = decoding.to_bgr8(rgba16)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (1500, 1000, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - expected).max() <= 1  # rounding at exact halves only
    assert peak < 20e6  # the 4.5 MB result, its 6 MB 8-bit copy, blocks of rows; a float32 copy alone: 24 MB
    floats = rng.random((200, 300, 3)).astype(np.float32)
    floats[0, 0] = [np.nan, -1.0, 2.0]
    converted = decoding.to_bgr8(floats.copy())
    assert tuple(converted[0, 0]) == (0, 0, 255) and converted.dtype == np.uint8


def test_messages_say_what_is_wrong_and_what_to_do(tmp_path):
    # a damaged best-weights file: named as damaged, with the way out (numpy would suggest allow_pickle)
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / runs.BEST_WEIGHTS_FILE).write_bytes(b"\x80\x04not a zip archive")
    with pytest.raises(bundles.RunError, match=r"best\.npz is damaged .*delete it to resume") as info:
        runs.read_best_weights(tmp_path / "checkpoint")
    assert "allow_pickle" not in str(info.value)
    assert runs.read_best_weights(tmp_path) is None  # none kept: nothing to read
    # no data set: why, by the case
    unset = app_settings.no_datasets_text([], env={})
    assert unset.startswith(f"{app_settings.ENV_DATA_ROOTS} is not set, and neither default folder")
    named = app_settings.no_datasets_text([], env={app_settings.ENV_DATA_ROOTS: "/nowhere"})
    assert named.startswith(f"None of the folders {app_settings.ENV_DATA_ROOTS} names exists (/nowhere)")
    assert "under the data roots (/data)" in app_settings.no_datasets_text([Path("/data")], env={})
    # STUN/TURN settings with a line break inside a URL, or a credential that is not text: refused
    with pytest.raises(ValueError, match="is not a STUN/TURN URL"):
        webrtc.ice_servers({webrtc.ENV_ICE_SERVERS: "stun:stun.example.org:3478\nevil"})
    with pytest.raises(ValueError, match="credential must be text"):
        webrtc.ice_servers(
            {webrtc.ENV_ICE_SERVERS: '[{"urls": "turn:t.example.org", "username": "u", "credential": 5}]'}
        )
    assert webrtc.ice_servers({webrtc.ENV_ICE_SERVERS: "stun:stun.example.org:3478"}) == [
        {"urls": ["stun:stun.example.org:3478"]}
    ]


def test_files_written_whole_get_the_permissions_the_umask_gives(tmp_path):
    before = os.umask(0o022)
    try:
        bundles.atomic_write_json(tmp_path / "run" / "progress.json", {"state": "running"})
        with bundles.atomic_path(tmp_path / "run" / "model.bin") as tmp:
            tmp.write_bytes(b"weights")
        os.umask(0o077)  # a private setup stays private
        bundles.atomic_write_text(tmp_path / "run" / "secret.txt", "x")
    finally:
        os.umask(before)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "run").iterdir()}
    assert modes == {"progress.json": 0o644, "model.bin": 0o644, "secret.txt": 0o600}
