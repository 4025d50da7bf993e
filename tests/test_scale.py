"""Photo collections on Ray Data (`mtfer predict DIR --csv OUT --engine ray`): the same rows as the one-process
folder path (broken files included), resume by output, Parquet, URIs, and the command's own errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("ray", reason="the Ray engine needs the 'scale' extra (pip install -e '.[scale]')")

from mtfer.core.inference import Predictor  # noqa: E402
from mtfer.media import video  # noqa: E402
from mtfer.media.folders import photos_to_csv  # noqa: E402
from mtfer.scale import ray_batch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def ray_here():
    """One local Ray runtime for the module (starting one takes seconds), shut down at the end."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def collection(shared_data: Path, tmp_path_factory) -> Path:
    """Eight UTKFace chips in two folders, a broken "photo", an empty one and a face-free picture."""
    root = tmp_path_factory.mktemp("collection")
    chips = sorted((shared_data / "utkface" / "UTKFace").glob("*.jpg"))[::997][:8]
    for i, chip in enumerate(chips):
        folder = root / ("people" if i % 2 else "more/people")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(chip, folder / chip.name)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (root / "empty.png").write_bytes(b"")
    import cv2

    cv2.imwrite(str(root / "wall.png"), np.full((240, 320, 3), 180, np.uint8))
    return root


@pytest.fixture(scope="module")
def local_table(collection: Path, tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("local") / "faces.csv"
    photos_to_csv(Predictor(), [collection], out)
    return pd.read_csv(out)


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    assert a["source"].tolist() == b["source"].tolist()
    numbers = a.select_dtypes("number").columns
    np.testing.assert_allclose(a[numbers].to_numpy(float), b[numbers].to_numpy(float), atol=1e-6)
    words = [c for c in a.columns if c not in numbers]
    assert (a[words].fillna("") == b[words].fillna("")).all().all()


def test_ray_writes_the_rows_of_the_one_process_path(collection, local_table, tmp_path):
    out = tmp_path / "faces.csv"
    result = ray_batch.photos_to_table([collection], out, actors=2)
    table = pd.read_csv(out)
    _same(table, local_table)
    assert result.photos == 11 and result.unreadable == 2 and result.without_face == 1 and result.faces == 8
    assert set(table.loc[table["error"].notna(), "source"]) == {
        str(collection / "broken.jpg"),
        str(collection / "empty.png"),
    }


def test_a_rerun_resumes_from_the_output_and_loses_no_finished_row(collection, local_table, tmp_path):
    out = tmp_path / "faces.csv"
    first = local_table["source"].drop_duplicates().head(4)  # an interrupted run: four photos written
    local_table[local_table["source"].isin(first)].to_csv(out, index=False)
    result = ray_batch.photos_to_table([collection], out)
    assert result.photos == 11 - 4
    _same(pd.read_csv(out), local_table)
    again = ray_batch.photos_to_table([collection], out)  # everything is there: nothing to do
    assert again.photos == 0
    _same(pd.read_csv(out), local_table)


def test_parquet_parts_and_uris(collection, local_table, tmp_path):
    out = tmp_path / "faces.parquet"
    ray_batch.photos_to_table([collection.as_uri()], out)
    parts = sorted(out.glob("part-*.parquet"))
    assert parts and not list(out.glob(".part-*"))
    table = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    assert sorted(table["source"].str.removeprefix("file://")) == sorted(local_table["source"])
    assert ray_batch.done_sources(out) == set(table["source"])


def test_the_command_line_engine_and_its_errors(collection, tmp_path):
    out = tmp_path / "faces.csv"

    def mtfer(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "mtfer.cli", "predict", *args]
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)

    done = mtfer(str(collection), "--csv", str(out), "--engine", "ray", "--actors", "1")
    assert done.returncode == 0, done.stderr
    assert "11 photos" in done.stdout and len(pd.read_csv(out)) == 11
    again = mtfer(str(collection), "--csv", str(out), "--engine", "ray")
    assert again.returncode == 0 and "11 photos already in" in again.stdout
    to_stdout = mtfer(str(collection), "--csv", "-", "--engine", "ray")
    assert to_stdout.returncode != 0 and "--engine ray appends to a file" in to_stdout.stderr
    missing = mtfer(str(tmp_path / "nowhere"), "--csv", str(out), "--engine", "ray")
    assert missing.returncode != 0 and "no such file or folder" in missing.stderr
    (tmp_path / "junk.csv").write_text("not,a\\ntable,we wrote\n")
    wrong = mtfer(str(collection), "--csv", str(tmp_path / "junk.csv"), "--engine", "ray")
    assert wrong.returncode != 0 and "cannot be resumed" in wrong.stderr


@pytest.fixture(scope="module")
def videos(shared_data: Path, tmp_path_factory) -> Path:
    """Two short videos of a real face moving across a grey room (one in a subfolder) and a damaged "video"."""
    import cv2

    root = tmp_path_factory.mktemp("videos")
    chips = sorted((shared_data / "utkface" / "UTKFace").glob("3*_1_*.jpg"))[:2]
    for k, (chip, where) in enumerate(zip(chips, ["talk.mp4", "room/walk.avi"], strict=True)):
        path = root / where
        path.parent.mkdir(exist_ok=True)
        fourcc = "mp4v" if path.suffix == ".mp4" else "MJPG"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (480, 320))
        face = cv2.resize(cv2.imread(str(chip)), (140, 140))
        for i in range(12 + 8 * k):
            frame = np.full((320, 480, 3), 200, np.uint8)
            frame[90:230, 40 + 8 * i : 180 + 8 * i] = face
            writer.write(frame)
        writer.release()
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 cut short")
    return root


def test_video_collections_give_the_one_process_tables(videos, tmp_path):
    out = tmp_path / "frames.csv"
    result = ray_batch.videos_to_table([videos], out, fps=5, actors=2)
    table = pd.read_csv(out)
    predictor = Predictor()
    expected = pd.concat(
        [
            video.VideoAnalysis(path, predictor, source=str(path), fps=5).complete().table()
            for path in (videos / "talk.mp4", videos / "room" / "walk.avi")  # a folder before its subfolders
        ],
        ignore_index=True,
    )
    readable = table[table["error"].isna()].drop(columns="error").reset_index(drop=True)
    _same(readable, expected)
    assert expected["face"].notna().all() and expected["track"].nunique() == 1  # one person followed in each video
    broken = table[table["error"].notna()]
    assert broken["source"].tolist() == [str(videos / "broken.mp4")] and "damaged" in broken["error"].iloc[0]
    assert (result.videos, result.unreadable, result.frames) == (
        3,
        1,
        expected.groupby("source")["frame"].nunique().sum(),
    )
    again = ray_batch.videos_to_table([videos], out)  # resume by output: every video is there
    assert again.videos == 0 and len(pd.read_csv(out)) == len(table)
    by_uri = tmp_path / "frames.parquet"  # a URI: each video read by its actor through pyarrow.fs
    ray_batch.videos_to_table([(videos / "talk.mp4").as_uri()], by_uri, fps=5)
    parquet = pd.concat([pd.read_parquet(p) for p in sorted(by_uri.glob("part-*.parquet"))], ignore_index=True)
    talk = readable[readable["source"] == str(videos / "talk.mp4")]
    assert parquet["source"].unique().tolist() == [(videos / "talk.mp4").as_uri()]
    assert parquet["frame"].astype(int).tolist() == talk["frame"].astype(int).tolist()
    assert parquet["emotion"].tolist() == talk["emotion"].tolist()


def test_the_command_line_labels_a_folder_of_videos_and_refuses_photos_with_them(collection, videos, tmp_path):
    def mtfer(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "mtfer.cli", "predict", *args, "--engine", "ray"]
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)

    out = tmp_path / "frames.parquet"
    done = mtfer(str(videos), "--csv", str(out), "--fps", "2")
    assert done.returncode == 0, done.stderr
    assert "3 videos" in done.stdout and "1 unreadable file" in done.stdout
    assert ray_batch.done_sources(out) == {str(videos / n) for n in ("talk.mp4", "room/walk.avi", "broken.mp4")}
    mixed = mtfer(str(videos), str(collection), "--csv", str(tmp_path / "t.csv"))
    assert mixed.returncode != 0 and "their tables differ" in mixed.stderr
    assert not (tmp_path / "t.csv").exists()
