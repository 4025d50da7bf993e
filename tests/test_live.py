"""Live camera (mtfer.media.live): real faces boxed and labelled frame by frame, frames that queue up dropped, steady labels,
the recording as a video timeline, the live chart; the STUN/TURN setting; the Predict page with Live mode on
(AppTest). The real browser with a fake camera is tests/test_live_camera.py."""

from __future__ import annotations

import asyncio
import dataclasses
import fractions
import io
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mtfer.app import live_view
from mtfer.assess import abstain
from mtfer.core import backends, bundles, faces
from mtfer.core.inference import Predictor
from mtfer.media import draw, live, webrtc
from mtfer.media.tables import table_columns

REPO = Path(__file__).resolve().parents[1]
FPS = 30.0


# --- fixtures: the shipped model (or a tiny one) and a real face ------------------------------------------------


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    """The shipped models/default when complete, else a tiny run trained here in seconds."""
    default = Path(bundles.DEFAULT_BUNDLE)
    default = default if default.is_absolute() else REPO / default
    if (default / bundles.METADATA_FILE).is_file() and (default / bundles.MODEL_FILE).is_file():
        return Predictor(default)
    from helpers import tiny_run

    return Predictor(tiny_run(tmp_path_factory.mktemp("model") / "tiny"))


@pytest.fixture(scope="module")
def face_photo(shared_data: Path, predictor: Predictor) -> np.ndarray:
    """A real UTKFace chip (BGR) in which the model's detector finds exactly one face once it sits in a 640x480
    clip frame: the first of a fixed sample."""
    chips = sorted((shared_data / "utkface" / "UTKFace").glob("*.jpg"))
    if not chips:
        pytest.skip(f"no UTKFace chips under {shared_data / 'utkface' / 'UTKFace'}")
    for chip in chips[:: max(1, len(chips) // 40)][:40]:
        image = cv2.imread(str(chip))
        if image is not None and len(faces.find_faces(live.moving_face_clip(image, 1)[0], predictor.config)) == 1:
            return image
    pytest.fail("the detector found no face in 40 UTKFace chips placed in a clip frame")


@pytest.fixture(scope="module")
def clip(face_photo: np.ndarray) -> list[np.ndarray]:
    return live.moving_face_clip(face_photo, frames=30)


def _av_frame(image: np.ndarray, index: int):
    import av

    frame = av.VideoFrame.from_ndarray(image, format="bgr24")
    frame.pts, frame.time_base = index * 3000, fractions.Fraction(1, 90000)  # 30 frames per second
    return frame


class CountingNetwork:
    """The predictor's own network, counting its calls and the faces it was given."""

    def __init__(self, predictor: Predictor):
        self.predictor, self.calls, self.faces = predictor, 0, 0

    def __call__(self, aligned: np.ndarray) -> dict[str, np.ndarray]:
        self.calls += 1
        self.faces += len(aligned)
        return self.predictor.predict_faces(aligned)


class FlickerNetwork:
    """Emotion flips between two answers every call (happy .70 / sad .30, then happy .40 / sad .60): a face whose
    raw top emotion flickers frame to frame while happy is the likelier on average. Other tasks: fixed."""

    def __init__(self, predictor: Predictor):
        self.classes = predictor.classes
        self.calls = 0

    def __call__(self, aligned: np.ndarray) -> dict[str, np.ndarray]:
        n = len(aligned)
        out = {}
        for task, names in self.classes.items():
            p = np.full(len(names), 0.0, np.float32)
            if task == "emotion":
                p[names.index("happy")], p[names.index("sad")] = (0.7, 0.3) if self.calls % 2 == 0 else (0.4, 0.6)
            else:
                p[0] = 1.0
            out[task] = np.tile(p, (n, 1))
        self.calls += 1
        return out


def _color_pixels(image: np.ndarray, bgr: tuple[int, int, int], tolerance: int = 0) -> np.ndarray:
    return np.all(np.abs(image.astype(int) - np.array(bgr)) <= tolerance, axis=-1)


# --- frames -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mirror", [False, True])
def test_a_real_face_gets_its_box_and_four_labels_drawn(predictor, clip, mirror):
    minimum = abstain.min_confidences(predictor.bundle.metadata, predictor.tasks)
    processor = live.LiveProcessor(predictor, minimum, mirror=mirror)
    frame = clip[0]
    out = processor.process(frame, 0.0)

    assert out.shape == frame.shape and out.dtype == np.uint8
    status = processor.status()
    assert (status.received, status.processed, status.dropped) == (1, 1, 0)
    (face,) = status.faces
    assert face.number == 1 and set(face.verdicts) == set(predictor.tasks)
    x, y, w, h = face.box
    assert 60 < w < 400 and x >= 0 and x + w <= 640  # a face-sized box inside the frame
    if mirror:
        x = frame.shape[1] - x - w
        assert not np.array_equal(out[:, ::-1], frame), "mirrored, and drawn on"
    color = draw.box_color(1)
    # the box: its colour along the left and right edges of the face, where the photo had none
    edges = np.concatenate([out[y + 5 : y + h - 5, x - 1 : x + 2], out[y + 5 : y + h - 5, x + w - 1 : x + w + 2]], 1)
    assert _color_pixels(edges, color, 8).mean() > 0.25
    # the label: a block of the face's colour with white text, outside the box
    drawn = _color_pixels(out, color) & ~_color_pixels(frame[:, ::-1] if mirror else frame, color)
    drawn[y - 3 : y + h + 4, x - 3 : x + w + 4] = False
    assert drawn.sum() > 5000, "a filled label block beside the face"
    rows, cols = np.nonzero(drawn)
    block = out[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    assert _color_pixels(block, (255, 255, 255), 30).sum() > 300, "white text in the label"
    # the frames per second badge in the top-left corner (dark, with a red dot)
    assert _color_pixels(out[:40, :40], (60, 60, 235), 10).any()
    assert "1 face" in live_view.live_caption(status)


def test_a_frame_without_a_face_is_returned_as_it_was_with_the_badge(predictor):
    blank = np.full((480, 640, 3), 170, np.uint8)
    processor = live.LiveProcessor(predictor)
    out = processor.process(blank, 0.0)
    assert processor.status().faces == ()
    assert np.array_equal(out[100:], blank[100:])  # only the corner badge is drawn
    assert "no face in view" in live_view.live_caption(processor.status())


def test_the_small_face_look_runs_once_a_second_until_small_faces_are_in_view(predictor, monkeypatch):
    looks: list[tuple[float, bool]] = []
    small_face = faces.Face(box=(300, 200, 60, 60), eyes=None, rotation=0.0, aligned=np.zeros((50, 50), np.uint8))
    in_view = {"small": False}

    def find(image, config):
        looks.append((clock["t"], config.small_faces))
        return [small_face] if in_view["small"] else []

    clock = {"t": 0.0}
    monkeypatch.setattr(live.faces, "find_faces", find)
    processor = live.LiveProcessor(predictor)
    frame = np.full((480, 640, 3), 170, np.uint8)
    for i in range(25):  # 2.5 s at 10 frames a second, nobody small in view: a look at 0, 1 and 2 s
        clock["t"] = i / 10
        processor.process(frame, clock["t"])
    assert [t for t, small in looks if small] == [0.0, 1.0, 2.0]
    looks.clear()
    in_view["small"] = True  # a frame finds a small face: from the next one on, every frame looks
    for i in range(25, 40):
        clock["t"] = i / 10
        processor.process(frame, clock["t"])
    assert [small for _, small in looks] == [False] + [True] * 14
    monkeypatch.setattr(predictor, "config", dataclasses.replace(predictor.config, small_faces=False))
    looks.clear()
    processor.process(frame, 5.0)
    assert looks == [(clock["t"], False)]  # switched off in the model's settings: never


def test_frames_that_queue_up_are_dropped_not_queued(predictor, clip):
    """streamlit-webrtc hands recv_queued every frame that arrived while the last one was processed: only the
    newest goes through the detector and the network, so the picture never lags behind."""
    network = CountingNetwork(predictor)
    processor = live.LiveProcessor(predictor, network=network, show_fps=False)
    backlog = [_av_frame(clip[i], i) for i in range(5)]
    backlog[-1] = _av_frame(cv2.rectangle(clip[4].copy(), (600, 440), (639, 479), (0, 255, 0), -1), 4)

    returned = asyncio.run(processor.recv_queued(backlog))

    assert len(returned) == 1 and network.calls == 1 and network.faces == 1
    status = processor.status()
    assert (status.received, status.processed, status.dropped) == (5, 1, 4)
    image = webrtc.frame_to_bgr(returned[0])
    assert image.shape == (480, 640, 3)
    green = np.full((30, 30, 3), (0, 255, 0), np.uint8)
    assert np.abs(image[450:, 610:].astype(int) - green).max() <= 4, "the newest frame"
    assert returned[0].pts == backlog[-1].pts and returned[0].time_base == backlog[-1].time_base
    # a backlog ten times longer costs the same one pass: the delay does not grow with the queue
    asyncio.run(processor.recv_queued([_av_frame(clip[i % 30], 5 + i) for i in range(50)]))
    assert network.calls == 2
    assert processor.status().dropped == 4 + 49
    assert processor.record()["frame"].tolist() == [4, 54]  # frames are numbered as received, dropped included


def test_recv_processes_one_frame(predictor, clip):
    processor = live.LiveProcessor(predictor)
    out = processor.recv(_av_frame(clip[3], 3))
    assert webrtc.frame_to_bgr(out).shape == (480, 640, 3) and out.pts == 9000
    assert len(processor.status().faces) == 1


def test_a_failing_frame_does_not_end_the_stream(predictor, clip):
    def broken(aligned):
        raise RuntimeError("network unavailable")

    processor = live.LiveProcessor(predictor, network=broken)
    (out,) = asyncio.run(processor.recv_queued([_av_frame(clip[0], 0)]))
    assert np.array_equal(webrtc.frame_to_bgr(out), webrtc.frame_to_bgr(webrtc.bgr_to_frame(clip[0])))  # unlabelled
    assert "network unavailable" in processor.status().error
    processor.network = predictor.predict_faces
    asyncio.run(processor.recv_queued([_av_frame(clip[1], 1)]))
    assert processor.status().error is None


def test_frames_convert_without_ffmpeg_scaler_in_the_usual_format():
    """Browsers' frames (yuv420p) and the frames handed back to aiortc's encoder are converted by OpenCV, the same
    BT.601 colours as PyAV's: no FFmpeg scaler runs beside the encoder's thread (see live.frame_to_bgr)."""
    import av

    image = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (480, 640, 3), np.uint8), (9, 9), 3)
    frame = webrtc.bgr_to_frame(image)
    assert frame.format.name == "yuv420p" and (frame.width, frame.height) == (640, 480)
    back = webrtc.frame_to_bgr(frame)
    assert np.abs(back.astype(int) - image).mean() < 3  # chroma subsampling only
    assert np.abs(back.astype(int) - frame.to_ndarray(format="bgr24")).max() <= 4  # PyAV agrees
    # what PyAV makes of a bgr24 frame reads back the same way
    converted = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
    assert np.abs(webrtc.frame_to_bgr(converted).astype(int) - image).mean() < 3
    # other formats and odd sizes still work, through PyAV
    rgb = av.VideoFrame.from_ndarray(image[:, :, ::-1].copy(), format="rgb24")
    assert np.array_equal(webrtc.frame_to_bgr(rgb), image)
    odd = webrtc.bgr_to_frame(image[:479, :639])
    assert odd.format.name == "bgr24" and np.array_equal(webrtc.frame_to_bgr(odd), image[:479, :639])


def test_bad_frames_and_settings_say_what_is_wrong(predictor):
    processor = live.LiveProcessor(predictor)
    with pytest.raises(ValueError, match="uint8 BGR array"):
        processor.process(np.zeros((48, 64), np.uint8), 0.0)
    with pytest.raises(ValueError, match="uint8 BGR array"):
        processor.process(np.zeros((48, 64, 3), np.float32), 0.0)
    with pytest.raises(ValueError, match="finite"):
        processor.process(np.zeros((48, 64, 3), np.uint8), math.nan)
    with pytest.raises(ValueError, match="at least one"):
        processor.process_latest([])
    with pytest.raises(ValueError, match="max_faces"):
        live.LiveProcessor(predictor, max_faces=0)
    with pytest.raises(ValueError, match="positive"):
        live.LiveProcessor(predictor, record_s=0)
    with pytest.raises(ValueError, match="positive"):
        processor.record(-1)


# --- steady labels, the chart, frames per second ----------------------------------------------------------------


def test_smoothing_keeps_a_flickering_answer_steady(predictor, clip):
    """The raw answer flips every frame (happy, sad, happy, ...); the label drawn stays 'happy', the average."""
    steady = live.LiveProcessor(predictor, network=FlickerNetwork(predictor))
    raw = live.LiveProcessor(predictor, network=FlickerNetwork(predictor), smoothing_s=0)
    steady_labels, raw_labels, happy = [], [], []
    for i, frame in enumerate(clip * 2):  # 2 s at 30 frames per second, the face moving
        for processor, labels in ((steady, steady_labels), (raw, raw_labels)):
            processor.process(frame, i / FPS)
            (face,) = processor.status().faces
            labels.append(face.verdicts["emotion"].label)
        happy.append(steady.status().faces[0].probabilities["emotion"]["happy"])
    assert raw_labels[:4] == ["happy", "sad", "happy", "sad"]  # the flicker is real
    assert set(steady_labels[15:]) == {"happy"}  # from half a second on, the label holds
    assert np.abs(np.diff(happy[15:])).max() < 0.02  # and its probability barely moves (raw: by 0.3 each frame)
    assert np.ptp(happy[30:]) < 0.03
    assert steady.status().faces[0].track == 1 and len({f.track for f in steady.status().faces}) == 1
    # the recording keeps each frame's own values, not the smoothed ones
    assert steady.record()["emotion_happy"].head(4).round(2).tolist() == [0.7, 0.4, 0.7, 0.4]


def test_emotion_history_covers_the_last_ten_seconds_with_gaps_where_no_face_was(predictor, clip):
    processor = live.LiveProcessor(predictor, show_fps=False)
    blank = np.full((480, 640, 3), 170, np.uint8)
    for i in range(30):  # 15 s at 2 frames per second; no face from 9 s to 11 s
        t = i / 2
        processor.process(blank if 9 <= t < 11 else clip[i % 30], t)
    history = processor.emotion_history()
    assert list(history.columns) == ["seconds", *predictor.classes["emotion"]]
    assert history["seconds"].iloc[-1] == 0 and history["seconds"].min() >= -live.HISTORY_S
    gap = history[history[predictor.classes["emotion"]].isna().all(axis=1)]
    assert sorted(gap["seconds"].tolist()) == [-5.5, -5.0, -4.5, -4.0]
    faced = history.dropna()
    np.testing.assert_allclose(faced[predictor.classes["emotion"]].sum(axis=1), 1.0, atol=1e-4)

    chart = live.emotion_chart(history)
    assert chart.shape == (340, 600, 3) and chart.dtype == np.uint8
    top = faced.iloc[-1][predictor.classes["emotion"]].astype(float).idxmax()
    rgb = tuple(int(draw.EMOTION_COLORS[top][i : i + 2], 16) for i in (1, 3, 5))
    assert _color_pixels(chart, rgb, 10).sum() > 200, "the likeliest emotion's line and legend"
    with pytest.raises(ValueError, match="at least 400x200"):
        live.emotion_chart(history, size=(100, 100))
    live.emotion_chart(history.iloc[:0])  # no history yet: axes only


def test_frames_per_second_are_those_processed(predictor, clip):
    processor = live.LiveProcessor(predictor)
    for i in range(40):
        processor.process(clip[i % 30], i / 20)  # 20 processed frames per second
    assert processor.status().fps == pytest.approx(20, rel=0.01)
    slow = live.LiveProcessor(predictor)
    slow.process(clip[0], 0.0)
    slow.process(clip[1], 2.5)  # a very busy machine: one frame every 2.5 s
    assert slow.status().fps == pytest.approx(0.4)
    assert live.format_fps(0.4) == "0.4" and live.format_fps(18.4) == "18"


def test_a_new_stream_starts_afresh(predictor, clip):
    processor = live.LiveProcessor(predictor)
    for i in range(5):
        processor.process(clip[i], 100 + i / FPS)
    processor.process(clip[5], 3.0)  # the frame clock went back: another stream
    status = processor.status()
    assert (status.received, status.processed, status.time_s) == (1, 1, 0.0)
    assert len(processor.record()) == 1


def test_face_numbers_follow_the_faces_in_view(predictor, face_photo):
    """Two faces are 1 and 2 (larger first on arrival); when one leaves, the other keeps its number; a face
    arriving alone is 1."""
    processor = live.LiveProcessor(predictor)
    small = cv2.resize(face_photo, (150, 150))
    both = np.full((480, 640, 3), 170, np.uint8)
    both[60:210, 40:190] = small
    both[260:410, 430:580] = small
    right_only = np.full((480, 640, 3), 170, np.uint8)
    right_only[260:410, 430:580] = small
    processor.process(both, 0.0)
    first = {f.box[0] > 320: f.number for f in processor.status().faces}
    if len(first) != 2:
        pytest.skip("the detector did not find both small faces")
    processor.process(right_only, 0.1)
    (face,) = processor.status().faces
    assert face.number == first[True]
    processor.process(np.full((480, 640, 3), 170, np.uint8), 0.2)
    processor.process(both[:, ::-1].copy(), 3.0)  # both again, much later: new tracks, numbered 1 and 2
    assert sorted(f.number for f in processor.status().faces) == [1, 2]


# --- Record -----------------------------------------------------------------------------------------------------


def test_record_keeps_the_last_seconds_as_a_video_timeline(predictor, clip):
    processor = live.LiveProcessor(predictor, record_s=2.0, source="camera")
    blank = np.full((480, 640, 3), 170, np.uint8)
    for i in range(0, 90, 2):  # 3 s at 30 frames per second, every other frame dropped; no face at 1.0-1.2 s
        t = i / FPS
        frame = blank if 1.0 <= t < 1.2 else clip[(i + 1) % 30]
        processor.process_latest([(clip[i % 30], t), (frame, (i + 1) / FPS)])

    everything = processor.record()
    assert list(everything.columns) == table_columns(predictor.classes, video=True)
    assert everything["time_s"].min() >= everything["time_s"].max() - 2.0 - 1e-6  # record_s keeps 2 s
    last = processor.record(1.0)
    assert list(last.columns) == table_columns(predictor.classes, video=True)
    assert last["time_s"].max() - last["time_s"].min() == pytest.approx(1.0, abs=0.07)
    assert (last["source"] == "camera").all()
    assert last["frame"].tolist() == list(range(89 - 2 * (len(last) - 1), 90, 2))  # received frames, drops counted
    assert last["track"].nunique() == 1 and last["face"].eq(1).all()
    for task, names in predictor.classes.items():
        probs = last[[f"{task}_{c}" for c in names]].to_numpy(float)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-3)
        assert last[task].isin(names).all() and last[f"{task}_confidence"].between(0, 1).all()
    # frames without a face: one row each, face columns empty (as a video's timeline has them)
    empty = everything[everything["face"].isna()]
    assert len(empty) == 3 and empty["x"].isna().all() and empty["emotion"].isna().all()
    # the CSV reads back with the same columns
    back = pd.read_csv(io.StringIO(last.to_csv(index=False)))
    assert list(back.columns) == list(last.columns) and len(back) == len(last)


# --- WebRTC on this machine, no STUN/TURN ----------------------------------------------------------------------


def test_webrtc_on_localhost_needs_no_stun_server_and_survives_tensorflow(predictor, clip):
    """Two aiortc peers in this process (TensorFlow already loaded: see live.prepare_webrtc_import), no ICE servers:
    host candidates connect; the clip's frames go over DTLS/SRTP as VP8, then through streamlit-webrtc's
    asynchronous processing track and the LiveProcessor, which labels the face."""
    webrtc.prepare_webrtc_import()
    from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection
    from streamlit_webrtc.process import AsyncVideoProcessTrack

    class Clip(MediaStreamTrack):
        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self.sent = 0

        async def recv(self):
            frame = webrtc.bgr_to_frame(clip[self.sent % len(clip)])  # a browser's camera frames are yuv420p
            frame.pts, frame.time_base = self.sent * 3000, fractions.Fraction(1, 90000)
            self.sent += 1
            await asyncio.sleep(0)  # lets the connection run between frames (no waiting)
            return frame

    processor = live.LiveProcessor(predictor)

    async def session() -> tuple[int, np.ndarray]:
        browser, server = (RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(2))
        labelled: asyncio.Future = asyncio.get_running_loop().create_future()

        @server.on("track")
        def on_track(track) -> None:
            processed = AsyncVideoProcessTrack(track, processor)

            async def pull() -> None:
                while not labelled.done():
                    # The track hands back the newest processed frame, or the incoming one while none is ready
                    # (a busy machine): wait for one that carries the face's label.
                    image = webrtc.frame_to_bgr(await processed.recv())
                    faces = processor.status().faces
                    if faces and _color_pixels(image, draw.box_color(faces[0].number), 8).sum() > 2000:
                        labelled.set_result(image)
                processed.stop()

            asyncio.ensure_future(pull())

        browser.addTrack(Clip())
        await browser.setLocalDescription(await browser.createOffer())
        assert "typ host" in browser.localDescription.sdp and "typ srflx" not in browser.localDescription.sdp
        await server.setRemoteDescription(browser.localDescription)
        await server.setLocalDescription(await server.createAnswer())
        await browser.setRemoteDescription(server.localDescription)
        try:
            image = await asyncio.wait_for(labelled, timeout=120)
            return server.connectionState, image
        finally:
            await browser.close()
            await server.close()

    state, image = asyncio.run(session())
    assert state == "connected"
    assert image.shape == (480, 640, 3)
    (face,) = processor.status().faces
    assert _color_pixels(image, draw.box_color(face.number), 8).sum() > 2000  # the label block


# --- the network for live video ---------------------------------------------------------------------------------


def test_lite_network_gives_the_keras_probabilities(predictor, clip):
    pytest.importorskip("ai_edge_litert")
    found = faces.find_faces(clip[0], predictor.config)
    aligned = np.stack([f.aligned for f in found] + [np.zeros_like(found[0].aligned)])
    network = backends.LiteNetwork(predictor)
    got, expected = network(aligned), predictor.predict_faces(aligned)
    for task in predictor.tasks:
        np.testing.assert_allclose(got[task], expected[task], atol=0.02)
    assert {t: v.shape for t, v in network(aligned[:0]).items()} == {
        t: (0, len(c)) for t, c in predictor.classes.items()
    }
    processor = live.LiveProcessor(predictor, network=network)
    processor.process(clip[0], 0.0)
    assert len(processor.status().faces) == 1


def test_warm_up_takes_a_blank_frame_through(predictor):
    assert live.warm_up(predictor) >= 0


# --- the clip and the fake camera file ------------------------------------------------------------------------


def test_moving_face_clip_and_y4m(face_photo, tmp_path):
    frames = live.moving_face_clip(
        [face_photo, face_photo[:, ::-1]], frames=8, size=(320, 240), face_side=100, travel=60
    )
    assert len(frames) == 8 and all(f.shape == (240, 320, 3) for f in frames)
    assert not np.array_equal(frames[0], frames[1])  # the face moves
    path = tmp_path / "clip.y4m"
    live.write_y4m(path, frames, fps=15)
    data = path.read_bytes()
    header = b"YUV4MPEG2 W320 H240 F15:1 Ip A1:1 C420jpeg\n"
    assert data.startswith(header)
    assert len(data) == len(header) + 8 * (len(b"FRAME\n") + 320 * 240 * 3 // 2)
    first = np.frombuffer(data[len(header) + 6 : len(header) + 6 + 320 * 240 * 3 // 2], np.uint8)
    back = cv2.cvtColor(first.reshape(360, 320), cv2.COLOR_YUV2BGR_I420)
    assert np.abs(back.astype(int) - frames[0].astype(int)).mean() < 6
    with pytest.raises(ValueError, match="even width and height"):
        live.write_y4m(path, [np.zeros((9, 10, 3), np.uint8)])
    with pytest.raises(ValueError, match="does not fit"):
        live.moving_face_clip(face_photo, size=(200, 200))


# --- the STUN/TURN setting --------------------------------------------------------------------------------------


def test_no_stun_or_turn_server_unless_set():
    assert webrtc.ice_servers({}) == []
    assert webrtc.rtc_configuration({}) == {"iceServers": []}  # explicit: no public STUN server filled in


def test_stun_and_turn_servers_from_the_environment():
    env = {
        webrtc.ENV_ICE_SERVERS: "stun:stun.example.org:3478, turn:turn.example.org:3478?transport=tcp",
        webrtc.ENV_TURN_USERNAME: "demo",
        webrtc.ENV_TURN_CREDENTIAL: "secret",
    }
    assert webrtc.ice_servers(env) == [
        {"urls": ["stun:stun.example.org:3478"]},
        {"urls": ["turn:turn.example.org:3478?transport=tcp"], "username": "demo", "credential": "secret"},
    ]
    servers = [{"urls": ["turns:t.example.org:443"], "username": "u", "credential": "c"}]
    assert webrtc.ice_servers({webrtc.ENV_ICE_SERVERS: json.dumps(servers)}) == servers


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("http://stun.example.org", "not a STUN/TURN URL"),
        ("turn:turn.example.org:3478", "MTFER_TURN_USERNAME"),
        ("[not json", "not valid JSON"),
        ('[{"username": "u"}]', "list of"),
        ('[{"urls": "ftp://x"}]', "not a STUN/TURN URL"),
    ],
)
def test_a_wrong_stun_turn_setting_says_what_is_wrong(value, message):
    with pytest.raises(ValueError, match=message):
        webrtc.ice_servers({webrtc.ENV_ICE_SERVERS: value})


# --- the Predict page with Live mode on (AppTest) ---------------------------------------------------------------


@pytest.fixture()
def live_app(tmp_path, monkeypatch):
    """AppTest of the app on a tiny model, runs and data in tmp. streamlit-webrtc looks its session up in the
    running server, which AppTest only mocks: the lookup answers 'no session', as outside a server."""
    from helpers import tiny_run

    webrtc.prepare_webrtc_import()  # TensorFlow is loaded in this process already
    import streamlit_webrtc.component
    from streamlit.testing.v1 import AppTest

    model = tiny_run(tmp_path / "tiny")
    monkeypatch.setenv("MTFER_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("MTFER_MODEL", str(model))
    monkeypatch.setenv("MTFER_DATA_ROOTS", str(tmp_path / "data"))
    monkeypatch.setenv("MTFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(webrtc.ENV_ICE_SERVERS, raising=False)
    monkeypatch.setattr(streamlit_webrtc.component, "get_this_session_info", lambda: None)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    at.switch_page("pages/predict.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for e in (*at.error, *at.warning, *at.info, *at.success)]
    return "\n".join(parts)


def test_predict_page_renders_with_live_mode_on(live_app):
    at = live_app
    assert at.toggle(key="predict_live").value is False
    at.toggle(key="predict_live").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]

    text = _texts(at)
    assert "Look into the camera" in text and "Press **Start**" in text
    assert "Live or snapshot?" in text and "Use the camera" in text  # when to use the snapshot mode
    assert "it has blocked the camera: allow it" in text  # what to do when the browser blocks it
    assert at.toggle(key="predict_live_mirror").value is True
    assert at.toggle(key="predict_live_largest").value is False
    assert at.select_slider(key="predict_live_record_s").value == 30
    save = at.button(key="predict_live_save")
    assert save.label == "Save the last 30 seconds" and save.disabled  # nothing to save before the camera ran
    # the photo mode's widgets are gone while Live is on
    assert not [u for u in at.get("file_uploader")]
    # the WebRTC component is there, told to use no STUN/TURN server and the page's words for its buttons
    (component,) = [e for e in at.main if type(e).__name__ == "UnknownElement" and e.type == "component_instance"]
    args = json.loads(component.proto.json_args)
    assert args["rtc_configuration"] == {"iceServers": []}
    assert args["media_stream_constraints"] == {
        "video": {"width": {"ideal": 640}, "height": {"ideal": 480}, "frameRate": {"ideal": 30}},
        "audio": False,
    }
    assert (
        args["translations"]["start"] == "Start"
        and "blocked the camera" in args["translations"]["device_access_denied"]
    )

    at.toggle(key="predict_live").set_value(False).run()
    assert not at.exception
    assert at.get("file_uploader"), "Live off: the photo mode is back"


def test_predict_page_says_when_the_stun_turn_setting_is_wrong(live_app, monkeypatch):
    monkeypatch.setenv(webrtc.ENV_ICE_SERVERS, "http://not-a-stun-server")
    at = live_app
    at.toggle(key="predict_live").set_value(True).run()
    assert not at.exception
    assert any("STUN/TURN setting is not valid" in e.value for e in at.error)


def test_the_panels_refresh_never_forces_a_full_garbage_collection():
    # Every refresh of the live panel is a script run; Streamlit ends each with gc.collect(2) unless this option is
    # off, and with TensorFlow loaded that stalled the video for up to a second (benchmarks/live_fps.py measures it).
    import tomllib

    from streamlit import config

    settings = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert settings["runner"]["postScriptGC"] is False
    assert config.get_option("runner.postScriptGC") in (True, False)  # an option Streamlit knows, not ignored
