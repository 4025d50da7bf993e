"""Video -> per-face timeline (mtfer.media.video), folder -> CSV (mtfer.media.folders), their CLI (`mtfer predict VIDEO|DIR
--csv`), the Predict page's video mode and its figures (mtfer.app.video_view). Videos are written here with
cv2.VideoWriter from real UTKFace faces and from blank frames; the network is the shipped model."""

from __future__ import annotations

import csv
import gc
import io
import json
import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from mtfer import cli
from mtfer.app import video_view
from mtfer.core import bundles
from mtfer.core.inference import Predictor
from mtfer.core.tasks import TASK_NAMES, TASKS
from mtfer.media import draw, folders, video, video_limits
from mtfer.media.answers import thresholds
from mtfer.media.folders import photo_files, photos_to_csv
from mtfer.media.tables import predictions_table
from mtfer.media.video import VideoAnalysis, VideoError, VideoLimits

REPO = Path(__file__).resolve().parents[1]
SIZE = (640, 360)  # width, height of the test videos
FACE_FPS = 10.0
BLANK = 200  # grey of the background


def expected_columns(video_table: bool, error: bool = False) -> list[str]:
    """The CSV columns docs/live.md documents, written out from the task definitions (not from the code under test)."""
    head = ["source", "time_s", "frame", "track", "face"] if video_table else ["source", "face"]
    tops = [name for t in TASK_NAMES for name in (t, f"{t}_confidence", f"{t}_answer")]
    probabilities = [f"{t}_{c}" for t in TASK_NAMES for c in TASKS[t].classes]
    return [*head, "x", "y", "w", "h", *tops, *probabilities, *(["error"] if error else [])]


def write_video(path: Path, frames: list[np.ndarray], fps: float, fourcc: str = "mp4v") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, SIZE)
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} videos here"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def blank_frames(n: int) -> list[np.ndarray]:
    return [np.full((SIZE[1], SIZE[0], 3), BLANK, np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    if not (bundles.DEFAULT_BUNDLE / bundles.METADATA_FILE).exists():
        pytest.skip("no shipped model in models/default")
    return Predictor(bundles.DEFAULT_BUNDLE)


@pytest.fixture(scope="module")
def chips(shared_data) -> list[np.ndarray]:
    """Two real faces (UTKFace chips, 200x200), the second shrunk to 160x160."""
    paths = sorted((shared_data / "utkface" / "UTKFace").glob("2*_0_0_*.jpg"))[:2]
    first, second = (cv2.imread(str(p)) for p in paths)
    return [first, cv2.resize(second, (160, 160))]


def face_frames(chips: list[np.ndarray]) -> list[np.ndarray]:
    """4 s at 10 frames/s: 0.5 s of nothing, then face A walking right 8 px a frame; face B still on the right
    from 2 s on."""
    frames = []
    for i in range(40):
        canvas = np.full((SIZE[1], SIZE[0], 3), BLANK, np.uint8)
        if i >= 5:
            x = 10 + 8 * (i - 5)
            canvas[60:260, x : x + 200] = chips[0]
        if i >= 20:
            canvas[150:310, 460:620] = chips[1]
        frames.append(canvas)
    return frames


@pytest.fixture(scope="module")
def face_video(chips, tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("videos") / "walk.mp4", face_frames(chips), FACE_FPS)


@pytest.fixture(scope="module")
def walk(face_video, predictor) -> VideoAnalysis:
    return VideoAnalysis(face_video, predictor, fps=5).complete()


@pytest.fixture(scope="module")
def blank_video(tmp_path_factory) -> Path:
    """4 s at 25 frames/s of an empty grey picture."""
    return write_video(tmp_path_factory.mktemp("videos") / "blank.avi", blank_frames(100), 25, "MJPG")


# --- the timeline ----------------------------------------------------------------------------------------------


def test_a_moving_face_keeps_its_track_and_a_new_face_gets_another(walk):
    assert walk.done and not walk.notes
    table = walk.table()
    faces = table[table["track"].notna()]
    left, right = faces[faces["x"] < 400], faces[faces["x"] >= 400]
    assert left["track"].nunique() == 1 and right["track"].nunique() == 1  # one track each, all along
    (a,), (b,) = left["track"].unique(), right["track"].unique()
    assert a != b
    # face A is followed while it walks: found in every sampled frame from 0.6 s on, its box moving right
    assert left["time_s"].tolist() == pytest.approx([0.6 + 0.2 * k for k in range(17)])
    assert left["x"].is_monotonic_increasing and left["x"].iloc[-1] - left["x"].iloc[0] > 200
    assert right["time_s"].min() == pytest.approx(2.0)  # B from 2 s on, in every sampled frame
    assert len(right) == 10
    # within a frame, faces are numbered from 1, largest first: A (200 px) before B (160 px)
    both = faces[faces["time_s"] >= 2.0]
    assert (both[both["track"] == a]["face"] == 1).all() and (both[both["track"] == b]["face"] == 2).all()


def test_a_frame_without_a_face_is_a_row_with_an_empty_track(walk, tmp_path):
    table = walk.table()
    empty = table[table["time_s"] < 0.5]
    assert empty["frame"].tolist() == [0, 2, 4] and empty["source"].eq("walk.mp4").all()
    assert empty.drop(columns=["source", "time_s", "frame"]).isna().all().all()
    assert table.groupby("frame").size().max() == 2  # otherwise one row per face per frame
    path = tmp_path / "walk.csv"
    table.to_csv(path, index=False)
    lines = path.read_text().splitlines()
    assert lines[1].startswith("walk.mp4,0.0,0,,,,,,,")  # nothing written where there is no face
    assert re.match(r"walk\.mp4,3\.8,38,2,2,\d+,\d+,\d+,\d+,[a-z]", lines[-1])  # integers, not 2.0


def test_the_csv_has_exactly_the_documented_columns_and_real_probabilities(walk):
    table = walk.table()
    assert list(table.columns) == expected_columns(video_table=True)
    faces = table[table["track"].notna()]
    for task in TASK_NAMES:
        probabilities = faces[[f"{task}_{c}" for c in TASKS[task].classes]].to_numpy(float)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
        top = np.array(TASKS[task].classes)[probabilities.argmax(axis=1)]
        assert (faces[task].to_numpy() == top).all()
        np.testing.assert_allclose(faces[f"{task}_confidence"], probabilities.max(axis=1), atol=1e-4)


def test_the_network_sees_the_same_face_as_for_a_photo(walk, face_video, predictor):
    """A frame's probabilities are those of the same picture analysed as a photo."""
    frame = next(f for f in walk.frames if len(f.faces) == 2)
    photo = predictor.predict_image(walk.image(frame.frame))
    assert [p.box for p in photo] == [f.box for f in frame.faces]
    for p, f in zip(photo, frame.faces, strict=True):
        for task in TASK_NAMES:
            assert f.probabilities[task] == pytest.approx(p.probabilities[task], abs=1e-5)


@pytest.mark.parametrize(("fps", "frames", "step"), [(5, 20, 5), (2, 8, 12.5), (1000, 100, 1)])
def test_frames_are_sampled_at_the_rate_asked(blank_video, predictor, fps, frames, step):
    analysis = VideoAnalysis(blank_video, predictor, fps=fps).complete()
    table = analysis.table()
    assert len(table) == frames and table["track"].isna().all()
    assert table["frame"].tolist() == [int(np.ceil(k * step - 1e-9)) for k in range(frames)]
    assert table["time_s"].tolist() == pytest.approx([f / 25 for f in table["frame"]], abs=1e-3)
    assert analysis.progress == 1.0 and analysis.expected_frames == frames


def test_the_duration_and_frame_limits_are_honoured_and_said(blank_video, predictor):
    short = VideoAnalysis(blank_video, predictor, fps=5, limits=VideoLimits(max_seconds=1.0)).complete()
    assert short.table()["time_s"].tolist() == pytest.approx([0, 0.2, 0.4, 0.6, 0.8])
    assert short.done and len(short.notes) == 1
    assert "Only the first 0:01.0 of 0:04.0 were analysed" in short.notes[0]
    few = VideoAnalysis(blank_video, predictor, fps=5, limits=VideoLimits(max_frames=3)).complete()
    assert len(few.frames) == 3 and "Only 3 frames (up to 0:00.4) of 0:04.0 were analysed" in few.notes[0]
    assert few.expected_frames == 3


def test_video_limits_come_from_settings_and_bad_values_are_named():
    assert video_limits.video_limits({}) == VideoLimits(600.0, 3000)
    limits = video_limits.video_limits({"MTFER_VIDEO_MAX_SECONDS": "90", "MTFER_VIDEO_MAX_FRAMES": "450"})
    assert limits == VideoLimits(90.0, 450)
    with pytest.raises(ValueError, match="MTFER_VIDEO_MAX_FRAMES must be a positive whole number"):
        video_limits.video_limits({"MTFER_VIDEO_MAX_FRAMES": "2.5"})
    with pytest.raises(ValueError, match="MTFER_VIDEO_MAX_SECONDS must be a positive number, got 'soon'"):
        video_limits.video_limits({"MTFER_VIDEO_MAX_SECONDS": "soon"})
    with pytest.raises(ValueError, match="sampling rate"):
        VideoAnalysis(Path("unused.mp4"), None, fps=0)  # type: ignore[arg-type]


def test_files_that_are_not_videos_get_a_clear_message(tmp_path, predictor):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all")
    photo = tmp_path / "photo.mp4"
    photo.write_bytes(cv2.imencode(".jpg", np.zeros((40, 40, 3), np.uint8))[1].tobytes())
    (tmp_path / "empty.webm").write_bytes(b"")
    cases = {
        text: r"^notes\.mp4 is not a video that can be read \(mp4, webm, avi, mov files are\): it is another kind "
        r"of file, or damaged or truncated$",
        photo: r"^photo\.mp4 is a photo \(JPEG\), not a video$",
        tmp_path / "empty.webm": r"^empty\.webm is empty \(0 bytes\): not a video$",
        tmp_path / "missing.mp4": r"^cannot read missing\.mp4: No such file or directory$",
    }
    for path, message in cases.items():
        with pytest.raises(VideoError, match=message):
            VideoAnalysis(path, predictor)
        assert not video.is_video(path)


def test_a_truncated_video_gives_a_clear_message(blank_video, face_video, predictor, tmp_path):
    # An mp4 cut in half loses its index (written at the end): nothing can be read.
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(face_video.read_bytes()[: face_video.stat().st_size // 2])
    with pytest.raises(VideoError, match=r"^cut\.mp4 is not a video that can be read .* damaged or truncated$"):
        VideoAnalysis(cut, predictor)
    # An AVI cut in half plays up to the cut: the frames before it are kept, and the note says what happened.
    half = tmp_path / "half.avi"
    half.write_bytes(blank_video.read_bytes()[: blank_video.stat().st_size // 2])
    analysis = VideoAnalysis(half, predictor, fps=5).complete()
    assert analysis.done and 5 <= len(analysis.frames) < 15
    (note,) = analysis.notes
    assert note.startswith("The video stops at 0:0") and "though its header announces 0:04.0" in note
    assert "looks truncated or damaged" in note


def test_an_interrupted_analysis_resumes_and_a_stopped_one_keeps_its_frames(face_video, predictor, walk):
    analysis = VideoAnalysis(face_video, predictor, fps=5, workers=2)
    for frame in analysis.run():  # the page's script is interrupted by a rerun: the loop ends early
        if frame.time_s >= 1.0:
            break
    assert 0 < len(analysis.frames) < 20 and not analysis.done
    assert 0 < analysis.progress < 1
    analysis.complete()  # the next run goes on where it was
    pd.testing.assert_frame_equal(analysis.table(), walk.table())

    stopped = VideoAnalysis(face_video, predictor, fps=5)
    for frame in stopped.run():
        if frame.time_s >= 1.0:
            stopped.stop()  # the Stop button
    assert stopped.frames[-1].time_s == pytest.approx(1.0) and not stopped.done and stopped.progress == 1.0
    assert stopped.notes == ["Stopped at 0:01.0: the results cover the video up to there."]
    assert list(stopped.run()) == []  # stays stopped


def test_an_uploaded_video_is_analysed_from_a_temporary_file_removed_with_it(face_video, predictor):
    analysis = VideoAnalysis.from_bytes(face_video.read_bytes(), "my clip.mp4", predictor, fps=1)
    folder = analysis.path.parent
    assert analysis.source == "my clip.mp4" and folder.is_dir()
    assert len(analysis.complete().frames) == 4
    del analysis
    gc.collect()
    assert not folder.exists()
    with pytest.raises(VideoError, match="^clip.mov is not a video"):
        VideoAnalysis.from_bytes(b"garbage" * 100, "clip.mov", predictor)


@pytest.mark.parametrize(("suffix", "fourcc"), [("webm", "VP80"), ("mov", "mp4v")])
def test_webm_and_mov_files_are_read(chips, predictor, tmp_path, suffix, fourcc):
    path = write_video(tmp_path / f"clip.{suffix}", face_frames(chips)[10:20], FACE_FPS, fourcc)
    table = VideoAnalysis(path, predictor, fps=5).complete().table()
    assert len(table) == 5 and table["track"].eq(1).all()


# --- the page's figures and tables -------------------------------------------------------------------------------


def test_summary_per_person_gives_the_dominant_emotion_and_the_share_of_time(walk):
    table = walk.table()
    summary = video_view.summary_table(table, {t: 0.0 for t in TASK_NAMES})
    assert list(summary.columns) == [
        "Person", "Seen from", "Seen until", "On screen (%)", "Dominant emotion", "Gender", "Race", "Age group"
    ]  # fmt: skip
    assert summary["Person"].tolist() == ["Person 1", "Person 2"]  # seen the longest first
    assert summary["Seen from"].tolist() == ["0:00.6", "0:02.0"]
    assert summary["On screen (%)"].tolist() == [85.0, 50.0]  # 17 and 10 of the 20 frames
    shares = video_view.emotion_shares(table)
    assert list(shares.index) == [1, 2] and list(shares.columns) == list(TASKS["emotion"].classes)
    np.testing.assert_allclose(shares.sum(axis=1), 100)
    for track, row in shares.iterrows():
        own = table[table["track"] == track]
        expected = own["emotion"].value_counts(normalize=True).reindex(shares.columns, fill_value=0) * 100
        np.testing.assert_allclose(row, expected)
        dominant = summary.loc[track - 1, "Dominant emotion"]
        assert dominant == video_view.display_name("emotion", expected.idxmax())
    figure = video_view.shares_figure(table)
    assert [t.name for t in figure.data] == ["Surprise", "Fear", "Disgust", "Happy", "Sad", "Angry", "Neutral"]
    assert list(figure.data[0].y) == ["Person 1", "Person 2"] and figure.layout.barmode == "stack"
    text = summary.to_csv()
    assert "african_american" not in text and "_" not in "".join(summary.columns)
    assert video_view.analysis_line(table, 5, 4.0) == (
        "20 frames analysed, 5 per second, from 0:00.0 to 0:03.8 of a 0:04.0 video: 2 people followed; "
        "3 frames without a face."
    )


def test_the_timeline_draws_each_persons_emotions_with_gaps_where_they_are_not_seen(walk):
    table = walk.table()
    fig = video_view.timeline_figure(table, [1, 2], at_s=2.4)
    names = [t.name for t in fig.data]
    assert len(fig.data) == 14 and names[:7] == ["Surprise", "Fear", "Disgust", "Happy", "Sad", "Angry", "Neutral"]
    happy_b = next(t for t in fig.data if t.name == "Happy" and t.yaxis == "y2")
    y = np.asarray(happy_b.y, float)
    assert len(happy_b.x) == 20 and np.isnan(y[:10]).all() and not np.isnan(y[10:]).any()
    assert fig.layout.yaxis.title.text == "<b>Person 1</b>" and fig.layout.yaxis2.title.text == "<b>Person 2</b>"
    assert fig.layout.yaxis.title.font.color == draw.box_hex(1)
    assert any(s.x0 == 2.4 for s in fig.layout.shapes)
    assert all(t.line.color == draw.EMOTION_COLORS[t.legendgroup] for t in fig.data)
    assert "0:02.0" in fig.layout.xaxis2.ticktext


def test_the_chosen_frame_is_drawn_with_each_persons_box_in_their_colour(walk):
    frame = video_view.nearest_frame(walk.frames, 2.45)
    assert frame.time_s == pytest.approx(2.4)
    drawing = video_view.frame_picture(walk.image(frame.frame), frame, {t: 0.0 for t in TASK_NAMES})
    picture = drawing.image
    assert drawing.labelled and picture.ndim == 3 and picture.shape[1] >= 800
    for face in frame.faces:  # the box's top-left corner, scaled as the picture is, in the person's colour (RGB)
        scale = picture.shape[1] / SIZE[0]
        x, y = round(face.box[0] * scale), round(face.box[1] * scale)
        b, g, r = draw.box_color(face.track)
        assert tuple(picture[y + 1, x + 1]) == (r, g, b)
    lines = video_view.frame_lines(frame.faces[1], {t: 0.0 for t in TASK_NAMES})
    assert lines[0] == "Person 2" and len(lines) == 5
    assert video_view.frame_caption(frame) == "At 0:02.4: Person 1 and Person 2"
    assert video_view.frame_caption(walk.frames[0]) == "At 0:00.0: no face found"


# --- folder -> CSV -----------------------------------------------------------------------------------------------


@pytest.fixture
def photo_tree(chips, tmp_path) -> Path:
    root = tmp_path / "photos"
    (root / "trip" / "day 2").mkdir(parents=True)
    (root / ".thumbnails").mkdir()
    canvas = np.full((360, 480, 3), BLANK, np.uint8)
    canvas[60:260, 40:240] = chips[0]
    canvas[150:310, 300:460] = chips[1]
    cv2.imwrite(str(root / "a.jpg"), canvas)
    cv2.imwrite(str(root / "trip" / "day 2" / "b.PNG"), cv2.copyMakeBorder(chips[1], 80, 80, 80, 80, 0))
    cv2.imwrite(str(root / "trip" / "empty.png"), np.full((200, 200, 3), BLANK, np.uint8))
    (root / "trip" / "broken.jpg").write_bytes((root / "a.jpg").read_bytes()[:300])
    cv2.imwrite(str(root / ".thumbnails" / "a.jpg"), canvas)  # hidden: left out
    (root / "notes.txt").write_text("not a photo")  # not a photo by its name: left out
    return root


def test_a_folder_is_walked_recursively_to_one_row_per_face(photo_tree, predictor, tmp_path):
    out = tmp_path / "faces.csv"
    calls = []
    result = photos_to_csv(predictor, [photo_tree], out, progress=lambda done, total: calls.append((done, total)))
    table = pd.read_csv(out)
    assert list(table.columns) == expected_columns(video_table=False, error=True)
    root = str(photo_tree)
    assert table["source"].tolist() == [
        f"{root}/a.jpg",
        f"{root}/a.jpg",
        f"{root}/trip/broken.jpg",
        f"{root}/trip/empty.png",
        f"{root}/trip/day 2/b.PNG",
    ]
    assert table["face"].fillna(0).tolist() == [1, 2, 0, 0, 1]
    broken = table.iloc[2]
    assert broken["error"].startswith("truncated or corrupt JPEG file") and pd.isna(broken["emotion"])
    assert pd.isna(table.iloc[3]["error"]) and pd.isna(table.iloc[3]["x"])  # read fine, no face
    assert table[table["face"].notna()]["error"].isna().all()
    assert (result.photos, result.faces, result.without_face, result.unreadable) == (4, 3, 1, 1)
    assert result.photos_per_s > 0 and "4 photos in " in result.summary() and "photos/s" in result.summary()
    assert calls[0] == (0, 4) and calls[-1] == (4, 4)


def test_csv_cells_that_would_run_as_formulas_are_text(photo_tree, predictor, tmp_path, monkeypatch):
    """A photo named like a spreadsheet formula is written as text (OWASP's rule: a leading quote), in the folder CSV
    and in every CSV made by csv_text; numbers, negative ones too, stay numbers."""
    from mtfer.media.tables import csv_text, safe_cell

    monkeypatch.chdir(photo_tree)
    names = ["=HYPERLINK(1).jpg", "+cmd.jpg", "@SUM(1).jpg", "-x.jpg"]
    for name in names:
        (photo_tree / name).write_bytes((photo_tree / "a.jpg").read_bytes())
    out = tmp_path / "faces.csv"
    photos_to_csv(predictor, names, out)
    table = pd.read_csv(out)
    assert set(table["source"]) == {"'" + n for n in names}
    assert safe_cell("\tx") == "'\tx" and safe_cell("a=b") == "a=b" and safe_cell(-3) == -3
    text = csv_text(pd.DataFrame({"source": ["=1+2", "ok"], "x": [-1, 2]}))
    assert text.splitlines() == ["source,x", "'=1+2,-1", "ok,2"]


def test_folder_rows_match_the_photo_tables_of_the_page(photo_tree, predictor, tmp_path):
    """The page's CSV for uploaded photos and the folder CSV: the same columns and the same numbers."""
    out = tmp_path / "faces.csv"
    photos_to_csv(predictor, [photo_tree / "a.jpg"], out)
    page = predictions_table(
        [(str(photo_tree / "a.jpg"), predictor.predict_image(photo_tree / "a.jpg"))],
        thresholds(predictor),
        predictor.classes,
        [("x.gif", "x.gif is not a photo this app can read: empty file")],
    )
    folder = pd.read_csv(out)
    assert list(page.columns) == list(folder.columns)
    pd.testing.assert_frame_equal(
        pd.read_csv(io.StringIO(page.to_csv(index=False))).iloc[:2], folder, check_dtype=False
    )
    assert page.iloc[2]["error"].endswith("empty file") and pd.isna(page.iloc[2]["face"])


def test_memory_stays_flat_as_the_folder_grows(photo_tree, predictor, tmp_path, monkeypatch):
    """Peak memory does not grow with the number of photos: rows are streamed, photos are not kept. (Batches of 8
    photos, so that both folders hold many batches.)"""
    monkeypatch.setattr(folders, "BATCH_FILES", 8)
    data = (photo_tree / "a.jpg").read_bytes()

    def peak(n: int) -> int:
        folder = tmp_path / f"many-{n}"
        folder.mkdir()
        for i in range(n):
            (folder / f"{i:05d}.jpg").write_bytes(data)
        photos_to_csv(predictor, [folder], tmp_path / f"many-{n}.csv", workers=2)  # warm
        # The file names stay referenced while measuring: listing a folder interns each name (pathlib), and when
        # names come and go CPython rebuilds its whole table of interned strings (~4 MB in this test process) at a
        # moment that depends on what ran before, which is not memory the folder path keeps.
        listed = list(photo_files(folder))
        tracemalloc.start()
        try:
            photos_to_csv(predictor, [folder], tmp_path / f"many-{n}.csv", workers=2)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            del listed

    small, large = peak(50), peak(200)
    assert large < 1.5 * small, (small, large)
    assert len(pd.read_csv(tmp_path / "many-200.csv")) == 400


def test_photo_files_skips_hidden_and_non_photos_and_refuses_a_missing_folder(photo_tree, tmp_path):
    names = [p.relative_to(photo_tree).as_posix() for p in photo_files(photo_tree)]
    assert names == ["a.jpg", "trip/broken.jpg", "trip/empty.png", "trip/day 2/b.PNG"]
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        list(photo_files(tmp_path / "nowhere"))


# --- the command line --------------------------------------------------------------------------------------------


def test_cli_writes_a_video_timeline_csv(face_video, tmp_path, capsys):
    out = tmp_path / "walk.csv"
    assert cli.main(["predict", str(face_video), "--csv", str(out), "--fps", "2", "--model", "default"]) == 0
    captured = capsys.readouterr()
    table = pd.read_csv(out)
    assert list(table.columns) == expected_columns(video_table=True)
    assert table.drop_duplicates("frame")["time_s"].tolist() == pytest.approx([0.5 * k for k in range(8)])
    assert captured.out.startswith("walk.mp4: 8 frames analysed (0:00.0 to 0:03.5, 2 per second): 2 faces followed")
    assert f"table in {out}" in captured.out
    assert "walk.mp4: frames [" in captured.err  # the progress bar


def test_cli_honours_the_video_limits(blank_video, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MTFER_VIDEO_MAX_SECONDS", "2")
    out = tmp_path / "blank.csv"
    assert cli.main(["predict", str(blank_video), "--csv", str(out), "--max-frames", "4", "--model", "default"]) == 0
    assert len(pd.read_csv(out)) == 4
    assert "mtfer: note: blank.avi: Only 4 frames (up to 0:00.6) of 0:04.0 were analysed" in capsys.readouterr().err
    assert cli.main(["predict", str(blank_video), "--csv", str(out), "--model", "default"]) == 0
    assert len(pd.read_csv(out)) == 10  # 2 s at 5 frames per second ($MTFER_VIDEO_MAX_SECONDS)


def test_cli_writes_a_folder_csv_and_prints_photos_per_second(photo_tree, tmp_path, capsys):
    out = tmp_path / "faces.csv"
    assert cli.main(["predict", str(photo_tree), "--csv", str(out), "--model", "default"]) == 0
    captured = capsys.readouterr()
    table = pd.read_csv(out)
    assert len(table) == 5 and table["error"].notna().sum() == 1
    assert captured.out.startswith("4 photos in ") and "photos/s): 3 faces, 1 photo without a face" in captured.out
    assert "photos [" in captured.err and "4/4" in captured.err


def test_cli_to_standard_output_keeps_the_csv_clean(photo_tree, capsys):
    assert cli.main(["predict", str(photo_tree / "a.jpg"), "--csv", "-", "--model", "default"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == ",".join(expected_columns(video_table=False, error=True))
    assert len(captured.out.splitlines()) == 3 and "1 photo in " in captured.err


def test_cli_refuses_unclear_requests_with_one_line(face_video, photo_tree, tmp_path, capsys):
    out = str(tmp_path / "x.csv")
    notes = tmp_path / "clip.mp4"
    notes.write_text("hello")
    cases = [
        (["predict", str(face_video), str(photo_tree), "--csv", out], 2, "is a video and"),
        (["predict", str(tmp_path / "gone"), "--csv", out], 2, "no such file or folder"),
        (["predict", str(face_video), "--csv", out, "--json"], 2, "--csv writes a table"),
        (["predict", str(face_video), "--csv", out, "--fps", "0"], 2, "sampling rate must be a positive number"),
        (["predict", str(photo_tree)], 1, "a folder: add --csv OUT.csv"),
        (["predict", str(face_video)], 1, "a video: add --csv OUT.csv"),
    ]
    for argv, code, message in cases:
        assert cli.main(argv) == code, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("mtfer: error: ") and message in err[0], err


def test_cli_says_a_text_file_named_mp4_is_not_a_readable_video_and_fails(tmp_path, capsys):
    notes = tmp_path / "clip.mp4"
    notes.write_text("hello")
    out = tmp_path / "x.csv"
    assert cli.main(["predict", str(notes), "--csv", str(out), "--model", "default"]) != 0
    err = capsys.readouterr().err
    assert "clip.mp4 is not a video that can be read" in err and "Traceback" not in err
    assert not out.exists()  # nothing half-written
    # A text file with a photo's name is still a photo that cannot be read: one row saying so, as before.
    notes.rename(tmp_path / "clip.jpg")
    assert cli.main(["predict", str(tmp_path / "clip.jpg"), "--csv", str(out), "--model", "default"]) == 0
    assert pd.read_csv(out)["error"].str.startswith("not an image").all()


def test_a_file_name_that_is_not_utf8_keeps_its_row(photo_tree, predictor, tmp_path):
    import os

    odd = os.path.join(os.fsencode(photo_tree), b"caf\xe9.jpg")  # Latin-1 bytes: not UTF-8
    with open(odd, "wb") as handle:
        handle.write((photo_tree / "a.jpg").read_bytes())
    out = tmp_path / "faces.csv"
    result = photos_to_csv(predictor, [photo_tree], out)
    table = pd.read_csv(out, encoding="utf-8")  # still a valid UTF-8 table
    assert result.photos == 5 and any(source.endswith("caf\\udce9.jpg") for source in table["source"])


def test_cli_never_writes_its_csv_over_an_input(face_video, photo_tree, tmp_path, capsys, monkeypatch):
    photo = photo_tree / "a.jpg"
    before = {p: p.read_bytes() for p in (photo, face_video)}
    monkeypatch.chdir(photo_tree)
    for args, why in (
        ([".", "--csv", "a.jpg"], "lies inside an input (.)"),  # a photo of the folder walked
        (["a.jpg", "--csv", "a.jpg"], "is an input (a.jpg)"),  # the photo itself
        ([str(photo_tree), "--csv", str(photo_tree / "trip" / "faces.csv")], "lies inside an input"),
        ([str(face_video), "--csv", str(face_video)], "is an input"),  # the video itself
    ):
        assert cli.main(["predict", *args, "--model", "default"]) == 2
        assert why in capsys.readouterr().err
    assert {p: p.read_bytes() for p in before} == before and not (photo_tree / "trip" / "faces.csv").exists()


def test_a_csv_is_replaced_whole_or_not_at_all(photo_tree, predictor, tmp_path, monkeypatch):
    out = tmp_path / "faces.csv"
    out.write_text("an earlier table\n")

    def broken(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("mtfer.media.folders._rows_csv", broken)
    with pytest.raises(OSError, match="disk full"):
        photos_to_csv(predictor, [photo_tree], out)
    assert out.read_text() == "an earlier table\n"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half-written temporary file


def test_cli_end_to_end_has_no_start_up_noise_and_json_for_photos_is_unchanged(face_video, photo_tree, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = tmp_path / "walk.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "mtfer.cli", "predict", str(face_video), "--csv", str(out), "--fps", "1", "--model",
         "default"],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    noise = [line for line in proc.stderr.splitlines() if "walk.mp4: frames [" not in line]
    assert not [line for line in noise if line.strip()], proc.stderr
    assert len(pd.read_csv(out)) == 4 + 2  # frames at 0..3 s; two faces at 2 and 3 s
    proc = subprocess.run(
        [sys.executable, "-m", "mtfer.cli", "predict", str(photo_tree / "a.jpg"), "--json", "--model", "default"],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    face = json.loads(proc.stdout)["faces"][0]
    assert set(TASK_NAMES) <= set(face) and set(face["emotion"]) == set(TASKS["emotion"].classes)


# --- the Predict page ------------------------------------------------------------------------------------------


@pytest.fixture
def page(tmp_path, monkeypatch) -> AppTest:
    """The Predict page with the shipped model, its Video file mode on."""
    if not (bundles.DEFAULT_BUNDLE / bundles.METADATA_FILE).exists():
        pytest.skip("no shipped model in models/default")
    monkeypatch.setenv("MTFER_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("MTFER_MODEL", str(bundles.DEFAULT_BUNDLE))
    monkeypatch.setenv("MTFER_DATA_ROOTS", str(tmp_path / "data"))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300).run()
    at.switch_page("pages/predict.py").run()
    at.toggle(key="predict_video").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _page_text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [s.value for s in at.subheader]
    return "\n".join(parts + [e.value for e in (*at.error, *at.warning, *at.info)])


def test_the_predict_page_analyses_an_uploaded_video(page, face_video):
    at = page
    assert "Upload a video to see how the emotion" in _page_text(at)
    at.file_uploader(key="predict_video_upload").set_value(("walk.mp4", face_video.read_bytes(), "video/mp4")).run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    text = _page_text(at)
    assert "20 frames analysed, 5 per second, from 0:00.0 to 0:03.8 of a 0:04.0 video: 2 people followed" in text
    assert [s.value for s in at.subheader] == [
        "People in the video",
        "Emotion over time",
        "The video at a chosen moment",
        "Download the results",
    ]
    summary = at.dataframe[0].value
    assert summary["Person"].tolist() == ["Person 1", "Person 2"] and "Dominant emotion" in summary
    shares, timeline = at.get("plotly_chart")
    assert json.loads(shares.proto.spec)["layout"]["title"]["text"] == "Share of time per emotion"
    assert len(json.loads(timeline.proto.spec)["data"]) == 14
    assert at.multiselect(key="predict_video_people").value == [1, 2]
    assert at.image[0].captions == ["At 0:00.0: no face found"]
    (download,) = at.get("download_button")
    assert download.proto.label == "Download CSV"
    # the slider picks the frame shown, with its boxes
    at.select_slider(key="predict_video_at").set_value(2.4).run()
    assert at.image[0].captions == ["At 0:02.4: Person 1 and Person 2"]
    # people's words: no identifiers, no file-system paths
    page_text = _page_text(at) + " ".join(summary.columns) + summary.to_csv()
    assert "african_american" not in page_text and "track" not in page_text.lower() and "/tmp" not in page_text


def test_the_predict_page_says_plainly_when_a_video_cannot_be_read(page):
    at = page
    at.file_uploader(key="predict_video_upload").set_value(("clip.mp4", b"not a video", "video/mp4")).run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "clip.mp4 is not a video that can be read (mp4, webm, avi, mov files are)\\: it is another kind of file, or "
        "damaged or truncated"
    ]


def test_the_predict_page_names_a_wrong_video_limit_and_analyses_nothing(page, face_video, monkeypatch):
    at = page
    monkeypatch.setenv("MTFER_VIDEO_MAX_SECONDS", "soon")
    at.file_uploader(key="predict_video_upload").set_value(("walk.mp4", face_video.read_bytes(), "video/mp4")).run()
    assert not at.exception
    (error,) = at.error
    assert error.value.startswith("The video limits are not set right")
    assert "MTFER_VIDEO_MAX_SECONDS must be a positive number, got 'soon'" in error.value
    assert not at.subheader and not at.get("plotly_chart"), "nothing analysed"


def test_frames_too_large_are_refused_from_the_header_before_any_is_decoded(tmp_path, monkeypatch):
    # A small file can hold huge frames (16000x12000 MJPEG: 6 GB): the cap is read from the container's header.
    big = cv2.VideoWriter(str(tmp_path / "big.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (2400, 1800))
    for _ in range(3):
        big.write(np.full((1800, 2400, 3), BLANK, np.uint8))
    big.release()
    monkeypatch.setattr(video, "MAX_FRAME_PIXELS", 2000 * 1500)
    decoded = []
    real_open = video._open

    def counting_open(path, name=None):
        capture = real_open(path, name)
        decoded.append(path)
        return capture

    monkeypatch.setattr(video, "_open", counting_open)
    with pytest.raises(VideoError, match=r"big\.avi has frames of 2400x1800 pixels: too large"):
        video.probe(tmp_path / "big.avi")
    assert decoded == []  # refused while opening: no capture handed out, no frame read
    # frames within the cap: read, and fewer of them held at once when they are big
    monkeypatch.setattr(video, "MAX_FRAME_PIXELS", 4000 * 3000)
    monkeypatch.setattr(video, "FRAMES_IN_FLIGHT_BYTES", 2 * 2400 * 1800 * 3)
    info = video.probe(tmp_path / "big.avi")
    assert (info.width, info.height) == (2400, 1800)


def test_a_carriage_return_in_a_file_name_never_splits_its_row(photo_tree, predictor, tmp_path):
    (photo_tree / "two\rlines.jpg").write_bytes((photo_tree / "a.jpg").read_bytes())
    out = tmp_path / "faces.csv"
    result = photos_to_csv(predictor, [photo_tree], out)
    with open(out, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))  # a reader that takes \r for a line break, as spreadsheets do
    named = [r for r in rows if r["source"].endswith("two\rlines.jpg")]
    assert len(named) == 2 and all(r["face"] in ("1", "2", "1.0", "2.0") for r in named)  # its two faces, whole
    assert len(rows) == len(pd.read_csv(out)) and result.photos == 5
