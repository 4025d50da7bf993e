"""The preprocessing cache on small data sets made here: alignment with the reader's table, masks, reuse,
rebuilds on change, unreadable images, damaged or half-written caches, subsets and the progress bar."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mtfer.cli.progress import TextProgress
from mtfer.core.preprocess import PreprocessConfig
from mtfer.core.tasks import TASK_NAMES, TASKS
from mtfer.datasets import cache as cache_module
from mtfer.datasets import read_dataset
from mtfer.datasets.base import samples_frame
from mtfer.datasets.cache import CacheError, Prepared, default_cache_dir, load_prepared, prepare, subset_indices

# name -> (age, gender, race); race 3 (Indian) has no class in the 3-class race task.
UTK_FACES = {
    "25_0_0_20170101000000001.jpg.chip.jpg": (25, 0, 0),
    "2_1_1_20170101000000002.jpg.chip.jpg": (2, 1, 1),
    "45_0_2_20170101000000003.jpg.chip.jpg": (45, 0, 2),
    "80_1_3_20170101000000004.jpg.chip.jpg": (80, 1, 3),
    "15_1_0_20170101000000005.jpg.chip.jpg": (15, 1, 0),
    "33_0_4_20170101000000006.jpg.chip.jpg": (33, 0, 4),
}
BROKEN = "30_0_0_20170101000000099.jpg.chip.jpg"


def face_image(seed: int, side: int = 96) -> np.ndarray:
    """A face-like BGR image: skin-toned oval, two dark eyes, a mouth, on a textured background."""
    rng = np.random.default_rng(seed)
    image = rng.integers(40, 90, (side, side, 3), dtype=np.uint8)
    c = side // 2
    cv2.ellipse(image, (c, c), (side * 3 // 10, side * 4 // 10), 0, 0, 360, (150, 170, 200), -1)
    for dx in (-side // 7, side // 7):
        cv2.circle(image, (c + dx, c - side // 10), max(2, side // 20), (30, 30, 30), -1)
    cv2.ellipse(image, (c, c + side // 6), (side // 8, side // 20), 0, 0, 180, (60, 60, 120), -1)
    return cv2.GaussianBlur(image, (3, 3), 0)


def write_jpg(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    path.write_bytes(data.tobytes())


@pytest.fixture
def utk_root(tmp_path: Path) -> Path:
    """A UTKFace tree of 6 readable faces and one truncated JPEG."""
    root = tmp_path / "data" / "UTKFace"
    root.mkdir(parents=True)
    for i, name in enumerate(UTK_FACES):
        write_jpg(root / name, face_image(i))
    ok, data = cv2.imencode(".jpg", face_image(99))
    (root / BROKEN).write_bytes(data.tobytes()[:40])  # header only: cannot be decoded
    return root


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def run(root: Path, cache_dir: Path, **kwargs) -> Prepared:
    kwargs.setdefault("workers", 1)
    return prepare("utkface", root, cache_dir=cache_dir, **kwargs)


def test_arrays_line_up_with_the_reader_table(utk_root: Path, cache_dir: Path) -> None:
    prepared = run(utk_root, cache_dir)
    df, _ = read_dataset("utkface", utk_root)
    df = df[~df["source"].str.endswith(BROKEN)].reset_index(drop=True)

    assert prepared.name == "utkface"
    assert prepared.root == str(utk_root.resolve())
    assert prepared.images.shape == (len(df), 50, 50) and prepared.images.dtype == np.uint8
    assert prepared.labels.shape == (len(df), len(TASK_NAMES)) and prepared.labels.dtype == np.int16
    assert prepared.sources.tolist() == df["source"].tolist()
    assert prepared.splits.tolist() == df["split"].tolist()
    expected = df[list(TASK_NAMES)].astype("Int64").fillna(-1).to_numpy()
    np.testing.assert_array_equal(prepared.labels, expected)
    # Each image is the framing of its own source, row by row.
    config = PreprocessConfig()
    for i in (0, len(df) - 1):
        face, _ = cache_module.frame_sample(prepared.sources[i], None, config)
        np.testing.assert_array_equal(prepared.images[i], face.aligned)
    assert prepared.config == config.to_dict()
    assert not prepared.from_cache


def test_missing_labels_are_minus_one_and_masked_and_indian_others_are_race_other(
    utk_root: Path, cache_dir: Path
) -> None:
    prepared = run(utk_root, cache_dir)
    by_name = {Path(s).name: i for i, s in enumerate(prepared.sources)}
    emotion, race, gender, age = (TASK_NAMES.index(t) for t in ("emotion", "race", "gender", "age"))
    assert (prepared.labels[:, emotion] == -1).all() and not prepared.masks[:, emotion].any()
    for name, (_, _, race_code) in UTK_FACES.items():
        row = by_name[name]
        assert prepared.masks[row, race]
        assert prepared.labels[row, race] == (race_code if race_code in (0, 1, 2) else TASKS["race"].index("other"))
        assert prepared.masks[row, gender] and prepared.masks[row, age]
    row = by_name["80_1_3_20170101000000004.jpg.chip.jpg"]
    assert prepared.labels[row, gender] == TASKS["gender"].index("female")
    assert prepared.labels[row, age] == TASKS["age"].index("70+")
    np.testing.assert_array_equal(prepared.masks, prepared.labels >= 0)


def test_unreadable_image_is_counted_listed_and_left_out(utk_root: Path, cache_dir: Path) -> None:
    prepared = run(utk_root, cache_dir)
    unreadable = prepared.report["unreadable"]
    assert unreadable["count"] == 1
    assert [Path(f["source"]).name for f in unreadable["files"]] == [BROKEN]
    assert unreadable["files"][0]["error"]
    assert not any(s.endswith(BROKEN) for s in prepared.sources)
    assert len(prepared) == len(UTK_FACES)
    assert prepared.report["listed"] == len(UTK_FACES) + 1
    assert prepared.report["prepared"] == len(UTK_FACES)
    framing = prepared.report["framing"]
    assert framing["framed"] == len(UTK_FACES)
    for share in ("face_detected", "eyes_found", "rotated"):
        assert 0.0 <= framing[share] <= 1.0
    assert framing["mean_abs_rotation"] <= PreprocessConfig().max_rotation
    # The unreadable file is still listed after a reload from the cache.
    assert run(utk_root, cache_dir).report["unreadable"] == unreadable


def test_second_prepare_loads_from_cache(utk_root: Path, cache_dir: Path, monkeypatch) -> None:
    first = run(utk_root, cache_dir)

    def must_not_run(*args, **kwargs):
        raise RuntimeError("framed an image although the cache holds it")

    monkeypatch.setattr(cache_module, "frame_sample", must_not_run)
    calls: list[tuple[int, int]] = []
    second = run(utk_root, cache_dir, progress=lambda done, total: calls.append((done, total)))
    assert second.from_cache and second.path == first.path
    assert not calls
    for name in ("images", "labels", "splits", "sources"):
        np.testing.assert_array_equal(getattr(second, name), getattr(first, name))
    assert second.report == json.loads(json.dumps(first.report))
    # rebuild=True recomputes even so.
    with pytest.raises(RuntimeError, match="cache holds it"):
        run(utk_root, cache_dir, rebuild=True)


def test_changed_config_rebuilds(utk_root: Path, cache_dir: Path) -> None:
    first = run(utk_root, cache_dir)
    small = run(utk_root, cache_dir, config=PreprocessConfig(size=32))
    assert not small.from_cache and small.path != first.path
    assert small.images.shape == (len(UTK_FACES), 32, 32)
    assert small.config["size"] == 32
    # Both stay cached side by side.
    assert run(utk_root, cache_dir).from_cache
    assert run(utk_root, cache_dir, config=PreprocessConfig(size=32)).from_cache


def test_added_file_rebuilds(utk_root: Path, cache_dir: Path) -> None:
    first = run(utk_root, cache_dir)
    write_jpg(utk_root / "50_1_2_20170101000000007.jpg.chip.jpg", face_image(7))
    second = run(utk_root, cache_dir)
    assert not second.from_cache and second.path != first.path
    assert len(second) == len(first) + 1
    assert any(s.endswith("50_1_2_20170101000000007.jpg.chip.jpg") for s in second.sources)


@pytest.mark.parametrize("damage", ["truncate", "flip", "no-meta", "bad-meta"])
def test_damaged_cache_is_detected_and_rebuilt(utk_root: Path, cache_dir: Path, damage: str) -> None:
    first = run(utk_root, cache_dir)
    folder = Path(first.path)
    images = folder / "images.npy"
    data = bytearray(images.read_bytes())
    if damage == "truncate":
        images.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        data[-10] ^= 0xFF
        images.write_bytes(bytes(data))
    elif damage == "no-meta":
        (folder / "meta.json").unlink()
    else:
        (folder / "meta.json").write_text('{"key": ')
    with pytest.raises(CacheError, match="cache"):
        load_prepared(folder)

    again = run(utk_root, cache_dir)
    assert not again.from_cache and again.path == first.path
    np.testing.assert_array_equal(again.images, first.images)
    assert load_prepared(folder).from_cache


def test_killed_prepare_leaves_no_cache_that_loads(utk_root: Path, cache_dir: Path, monkeypatch) -> None:
    real_save = np.save
    saved: list[str] = []

    def save_then_die(file, array, **kwargs):
        real_save(file, array, **kwargs)
        saved.append(str(file))
        if len(saved) == 2:
            raise KeyboardInterrupt  # killed half-way through writing

    monkeypatch.setattr(cache_module.np, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(utk_root, cache_dir)
    monkeypatch.undo()
    assert not [p for p in cache_dir.iterdir() if not p.name.startswith(".")]

    prepared = run(utk_root, cache_dir)
    assert not prepared.from_cache and len(prepared) == len(UTK_FACES)
    assert run(utk_root, cache_dir).from_cache


def test_stale_temporary_folder_is_removed(utk_root: Path, cache_dir: Path) -> None:
    stale = cache_dir / ".tmp-utkface-0123-999999999"  # no such pid
    stale.mkdir(parents=True)
    (stale / "images.npy").write_bytes(b"half")
    run(utk_root, cache_dir)
    assert not stale.exists()


def test_worker_threads_give_the_same_arrays(utk_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    for i in range(40):  # enough samples for several chunks
        write_jpg(utk_root / f"{20 + i}_{i % 2}_{i % 5}_2017010200{i:07d}.jpg.chip.jpg", face_image(100 + i))
    calls: list[tuple[int, int]] = []
    opencv_threads = cv2.getNumThreads()
    pooled = run(utk_root, cache_dir, workers=2, progress=lambda d, t: calls.append((d, t)))
    assert cv2.getNumThreads() == opencv_threads  # restored after framing on one OpenCV thread per worker
    serial = run(utk_root, tmp_path / "other-cache", workers=1)
    for name in ("images", "labels", "splits", "sources"):
        np.testing.assert_array_equal(getattr(pooled, name), getattr(serial, name))
    assert pooled.report["unreadable"]["count"] == 1
    total = len(UTK_FACES) + 41
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert len(calls) > 2


def test_limit_takes_a_stable_proportional_subset(utk_root: Path, cache_dir: Path) -> None:
    full = run(utk_root, cache_dir)
    part = run(utk_root, cache_dir, limit=3)
    assert part.report["selected"] == 3 and part.path != full.path
    assert len(part) == 3 - part.report["unreadable"]["count"]  # limit picks samples before framing
    assert set(part.sources) <= set(full.sources)
    assert run(utk_root, cache_dir, limit=3).sources.tolist() == part.sources.tolist()
    with pytest.raises(ValueError, match="limit"):
        run(utk_root, cache_dir, limit=0)

    # Groups of 40, 40 and 20 samples (by split and labels): 10 picks are 4, 4 and 2.
    rows = [(f"a{i}", "train", 1, None, None, None) for i in range(40)]
    rows += [(f"b{i}", "train", 2, None, None, None) for i in range(40)]
    rows += [(f"c{i}", "test", 1, None, None, None) for i in range(20)]
    table = samples_frame(rows)
    picked = subset_indices(table, 10)
    assert len(picked) == 10 and (np.diff(picked) > 0).all()
    assert [s[0] for s in table["source"].iloc[picked]].count("a") == 4
    assert [s[0] for s in table["source"].iloc[picked]].count("c") == 2
    np.testing.assert_array_equal(picked, subset_indices(table, 10))
    assert not np.array_equal(picked, subset_indices(table, 10, seed=1))
    np.testing.assert_array_equal(subset_indices(table, 500), np.arange(100))


def test_csv_rows_are_framed_from_their_pixels(tmp_path: Path, cache_dir: Path) -> None:
    lines = ["emotion,pixels,Usage"]
    for i in range(4):
        gray = cv2.cvtColor(face_image(i, side=48), cv2.COLOR_BGR2GRAY)
        usage = "Training" if i < 3 else "PublicTest"
        lines.append(f"{i},{' '.join(map(str, gray.ravel()))},{usage}")
    lines.append("3,1 2 3,Training")  # too few pixels: the reader skips it
    csv_path = tmp_path / "fer2013.csv"
    csv_path.write_text("\n".join(lines) + "\n")

    prepared = prepare("fer2013-csv", csv_path, cache_dir=cache_dir, workers=1)
    assert len(prepared) == 4
    assert prepared.sources.tolist() == [f"{csv_path}#{line}" for line in (2, 3, 4, 5)]
    assert prepared.splits.tolist() == ["train", "train", "train", "test"]
    emotion = TASK_NAMES.index("emotion")
    assert prepared.labels[:, emotion].tolist() == [
        TASKS["emotion"].index(e) for e in ("angry", "disgust", "fear", "happy")
    ]
    assert prepared.report["skipped"]["total"] == 1
    assert prepare("fer2013-csv", csv_path, cache_dir=cache_dir, workers=1).from_cache

    csv_path.write_text("\n".join(lines[:-2]) + "\n")  # the file changed: rebuilt
    assert len(prepare("fer2013-csv", csv_path, cache_dir=cache_dir, workers=1)) == 3


def test_default_cache_dir(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MTFER_CACHE", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("MTFER_CACHE")
    assert default_cache_dir() == Path("cache")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_text_progress_draws_rate_and_eta() -> None:
    log = io.StringIO()
    bar = TextProgress("fer2013", stream=log, log_interval=0.0)
    bar(0, 200)
    bar(50, 200)
    bar(200, 200)
    lines = log.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[1].startswith("fer2013 [") and "50/200" in lines[1] and "25%" in lines[1] and "ETA" in lines[1]
    assert "200/200" in lines[2] and "100%" in lines[2] and "done in 0:00" in lines[2]
    assert "/s" not in lines[2]  # the command's summary gives the speed: one figure, not two

    term = FakeTerminal()
    bar = TextProgress(stream=term, min_interval=3600)
    bar(0, 10)
    bar(5, 10)  # within min_interval: not drawn
    bar(10, 10)  # the end is always drawn
    out = term.getvalue()
    assert out.count("\r") == 2 and "5/10" not in out and out.endswith("\n")


def test_real_utkface_sample_is_framed(shared_data: Path, tmp_path: Path) -> None:
    prepared = prepare("utkface", shared_data / "utkface", cache_dir=tmp_path, workers=1, limit=30)
    assert len(prepared) == 30 and prepared.report["unreadable"]["count"] == 0
    assert prepared.report["framing"]["face_detected"] >= 0.7
    assert prepared.masks[:, TASK_NAMES.index("gender")].all()


# --- image content in the key, and preparing some splits only -----------------------------------------------


@pytest.fixture
def fer_root(tmp_path: Path) -> Path:
    """A FER2013-style image-folder tree: train/ and test/, two emotions each, two faces per folder."""
    root = tmp_path / "data" / "fer2013"
    seed = 0
    for split in ("train", "test"):
        for emotion in ("happy", "sad"):
            folder = root / split / emotion
            folder.mkdir(parents=True)
            for i in range(2):
                write_jpg(folder / f"{split}_{i}.jpg", face_image(seed))
                seed += 1
    return root


def prepare_fer(root: Path, cache_dir: Path, **kwargs) -> Prepared:
    kwargs.setdefault("workers", 1)
    return prepare("fer2013", root, cache_dir=cache_dir, **kwargs)


def face_of(prepared: Prepared, path: Path) -> np.ndarray:
    rows = np.flatnonzero(prepared.sources == str(path))
    assert len(rows) == 1, f"{path} is not in the prepared data set"
    return prepared.images[rows[0]]


def test_image_replaced_under_the_same_name_rebuilds(fer_root: Path, cache_dir: Path) -> None:
    first = prepare_fer(fer_root, cache_dir)
    assert not first.from_cache and len(first) == 8
    again = prepare_fer(fer_root, cache_dir)
    assert again.from_cache and again.path == first.path  # nothing changed: loaded

    replaced = fer_root / "train" / "happy" / "train_0.jpg"
    before = replaced.stat()
    write_jpg(replaced, face_image(1234, side=120))  # other content, same name (as a re-downloaded data set)
    assert replaced.stat().st_size != before.st_size
    second = prepare_fer(fer_root, cache_dir)
    assert not second.from_cache and second.path != first.path
    assert not np.array_equal(face_of(second, replaced), face_of(first, replaced))
    untouched = fer_root / "test" / "sad" / "test_1.jpg"
    np.testing.assert_array_equal(face_of(second, untouched), face_of(first, untouched))
    assert prepare_fer(fer_root, cache_dir).from_cache


def test_touched_image_rebuilds(fer_root: Path, cache_dir: Path) -> None:
    """Same size, another mtime (a copy written later): the key changes, since size + mtime stand for content."""
    first = prepare_fer(fer_root, cache_dir)
    touched = fer_root / "test" / "happy" / "test_0.jpg"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    second = prepare_fer(fer_root, cache_dir)
    assert not second.from_cache and second.path != first.path


def test_framing_version_is_part_of_the_key(fer_root: Path, cache_dir: Path, monkeypatch) -> None:
    # Version 2 keys cover the image files' size and mtime: caches of version 1 must not be used.
    assert cache_module.CACHE_VERSION >= 2
    assert cache_module.FRAMING_VERSION.startswith(f"{cache_module.CACHE_VERSION}.")
    monkeypatch.setattr(cache_module, "FRAMING_VERSION", "1.1")
    old = prepare_fer(fer_root, cache_dir)
    monkeypatch.undo()
    new = prepare_fer(fer_root, cache_dir)
    assert not new.from_cache and new.path != old.path


def test_signature_of_57k_files_is_fast(shared_data: Path) -> None:
    import time

    from mtfer.datasets.cache import _signature

    frames = [read_dataset("fer2013", shared_data / "fer2013")[0], read_dataset("utkface", shared_data / "utkface")[0]]
    df = pd.concat(frames, ignore_index=True)
    started = time.perf_counter()
    _signature(df)
    # One os.stat per file: about 0.2 s here; 5 s leaves room for a slow disk or a busy machine.
    assert time.perf_counter() - started < 5.0, f"signature of {len(df)} files is too slow"


def test_prepare_only_chosen_splits(fer_root: Path, cache_dir: Path) -> None:
    calls: list[tuple[int, int]] = []
    test_only = prepare_fer(fer_root, cache_dir, splits=("test",), progress=lambda d, t: calls.append((d, t)))
    assert not test_only.from_cache and len(test_only) == 4
    assert set(test_only.splits.tolist()) == {"test"}
    assert calls and calls[-1] == (4, 4)  # only the test faces were framed
    assert test_only.report["splits"] == ["test"] and test_only.report["listed"] == 8
    assert prepare_fer(fer_root, cache_dir, splits="test").from_cache  # one name as a string: the same key
    # A training image changed: the test-only cache is still valid.
    write_jpg(fer_root / "train" / "sad" / "train_0.jpg", face_image(4321, side=120))
    assert prepare_fer(fer_root, cache_dir, splits=("test",)).path == test_only.path

    # Every split named = the whole data set, one cache.
    everything = prepare_fer(fer_root, cache_dir, splits=("train", "test"))
    assert not everything.from_cache and len(everything) == 8 and everything.report["splits"] is None
    assert prepare_fer(fer_root, cache_dir).path == everything.path


def test_prepare_some_splits_uses_a_cache_of_every_split(fer_root: Path, cache_dir: Path, monkeypatch) -> None:
    full = prepare_fer(fer_root, cache_dir)

    def must_not_run(*args, **kwargs):
        raise RuntimeError("framed an image although a cache of every split holds it")

    monkeypatch.setattr(cache_module, "frame_sample", must_not_run)
    train = prepare_fer(fer_root, cache_dir, splits=["train"])
    assert train.from_cache and train.path == full.path
    keep = full.splits == "train"
    np.testing.assert_array_equal(train.images, full.images[keep])
    np.testing.assert_array_equal(train.labels, full.labels[keep])
    np.testing.assert_array_equal(train.sources, full.sources[keep])
    assert train.report["prepared"] == 4 and train.report["splits"] == ["train"]
    # With a limit the subset of every split is not the same subset: not reused.
    with pytest.raises(RuntimeError, match="cache of every split"):
        prepare_fer(fer_root, cache_dir, splits=["train"], limit=2)


@pytest.mark.parametrize(
    ("splits", "message"),
    [
        (("val",), r"no samples in split\(s\) \['val'\] \(splits present: \['test', 'train'\]\)"),
        (("tset",), r"unknown split\(s\) \['tset'\]"),
        ((), "at least one of"),
    ],
)
def test_bad_splits_get_a_clear_message(fer_root: Path, cache_dir: Path, splits, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        prepare_fer(fer_root, cache_dir, splits=splits)
