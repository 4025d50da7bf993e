"""Predict: upload photos or take one with the camera; every face with all four heads' probabilities."""

from collections.abc import Callable
from typing import TypeVar

import numpy as np
import streamlit as st

from mtfer import abstain, charts, explain, faces, predict_view, runs, settings
from mtfer.inference import FacePrediction, Predictor, predictions_table
from mtfer.uploads import UploadResult, analyse_upload
from pages.common.setup import setup_page

setup_page(__file__)

IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif"]
PHOTO_MAX_UPLOAD_MB = 50  # per photo; videos may be larger (mtfer.video.MAX_UPLOAD_MB, .streamlit/config.toml)
NO_FACE_TIPS = """No face was found in this photo. Some tips:

- use a well-lit photo, without strong shadows or back light;
- the face should look roughly towards the camera (not in profile), eyes visible;
- the face should be at least about 40 pixels wide: zoom in or crop a photo of a crowd or a distant person;
- sunglasses, masks or hands over the face make faces hard to find."""


@st.cache_resource(show_spinner="Loading the model ...", max_entries=4)
def load_predictor(path: str, modified: int) -> Predictor:
    """One Predictor per model folder (and version of its files), shared by every session."""
    return Predictor(path)


@st.cache_data(show_spinner=False, max_entries=64)
def analyse(path: str, modified: int, name: str, data: bytes, largest_only: bool) -> UploadResult:
    """Faces or a one-line error for one upload (mtfer.uploads.analyse_upload), cached by content."""
    return analyse_upload(load_predictor(path, modified), name, data, largest_only)


@st.cache_data(show_spinner="Finding which parts of the face mattered ...", max_entries=256)
def why_image(path: str, modified: int, face: np.ndarray) -> tuple[np.ndarray, str]:
    """The top emotion's heatmap over one aligned face, enlarged, and its one-line caption (mtfer.explain)."""
    explanation = explain.explain_face(load_predictor(path, modified), face, task="emotion")
    return explain.highlight(face, explanation.heatmap), explain.why_caption(explanation)


def show_why(path: str, modified: int, prediction: FacePrediction, key: str) -> None:
    """Per face: a "Why this emotion?" toggle; the heatmap is worked out only once it is switched on (cached)."""
    if "emotion" not in prediction.probabilities:
        return
    help_text = "Shows which parts of the face most made the model give its emotion answer."
    if st.toggle("Why this emotion?", key=key, help=help_text):
        image, caption = why_image(path, modified, prediction.aligned)
        st.image(image, caption=caption)  # as wide as the face above it


def modified_ns(path) -> int:
    """When the bundle's files last changed: a replaced model gets a fresh Predictor."""
    files = [path / runs.MODEL_FILE, path / runs.METADATA_FILE]
    return max((f.stat().st_mtime_ns for f in files if f.is_file()), default=0)


T = TypeVar("T")


def read_setting(read: Callable[[], T], what: str) -> T | None:
    """An environment setting read by `read`, or None after saying on the page what is wrong with it (`what`)."""
    try:
        return read()
    except ValueError as error:
        st.error(f"{what}: {error}", icon=":material/error:")
        return None


def loaded_predictor(model) -> tuple[Predictor, int] | None:
    """The shared Predictor of `model` and its files' version, or None after saying why it could not be loaded."""
    try:
        modified = modified_ns(model.path)
        return load_predictor(str(model.path), modified), modified
    except (ValueError, OSError) as error:  # runs.RunError is a ValueError
        st.error(f"The model {model.path.name} could not be loaded: {error}")
        return None


# --- Live camera (issue 14): the browser's camera streamed over WebRTC, every face labelled in real time ----------
# All of it is in live_camera(); the page calls it, then stops, when the "Live camera" toggle is on.

LIVE_STREAM_KEY = "predict_live_stream"
LIVE_PROCESSOR = "predict_live_processor"  # the latest stream's mtfer.live.LiveProcessor (kept after Stop)
LIVE_RECORDING = "predict_live_recording"  # the last "Save" of the recording: (seconds, table)
LIVE_RECORD_CHOICES = (10, 30, 60)  # seconds
# How often the answers and the chart beside the video are refreshed: each refresh is a script run, which Streamlit
# ends with two full garbage collections (~0.4 s on a busy 2-core machine with TensorFlow loaded, holding the GIL),
# so more often would slow the video down.
LIVE_REFRESH_S = 2.0
LIVE_VIDEO = {"width": {"ideal": 640}, "height": {"ideal": 480}, "frameRate": {"ideal": 30}}
LIVE_TRANSLATIONS = {  # streamlit-webrtc's own buttons and notices, in the page's words
    "start": "Start",
    "stop": "Stop",
    "select_device": "Choose camera",
    "select_camera": "Choose camera",
    "turn_camera_on": "Turn camera on",
    "turn_camera_off": "Turn camera off",
    "media_api_not_available": (
        "This browser does not offer a camera to this page: cameras work on https:// pages and on localhost. "
        "Take a snapshot instead (switch Live camera off)."
    ),
    "device_ask_permission": "Allow the camera when the browser asks.",
    "device_not_available": "No camera was found, or another program is using it.",
    "device_access_denied": (
        "The browser blocked the camera. Allow it (the camera icon in the address bar), then press Start again."
    ),
}
LIVE_HELP = """**Live or snapshot?** Live sends your camera's video to this app over WebRTC, a direct connection between
the browser and the app: it works when both run on this computer or on the same network. If the video never starts
or stays black (a company firewall or VPN blocking WebRTC), switch **Live camera** off and use **Use the camera** to
take a snapshot, which works everywhere; an administrator can also set a STUN/TURN server (`MTFER_ICE_SERVERS`,
see the README). Snapshots also show the face as the model saw it and every probability."""


@st.cache_resource(show_spinner="Getting the model ready for live video (once per model) ...", max_entries=4)
def live_network(path: str, modified: int) -> tuple[object | None, str | None]:
    """Once per model, before any stream starts: the network converted for LiteRT (mtfer.live.LiteNetwork: immune to
    the clear_session() that ends every script run, and faster), and the Keras model warmed up (mtfer.live.warm_up)
    as the fallback. Returns (network or None, why there is none)."""
    from mtfer import live

    predictor = load_predictor(path, modified)
    live.warm_up(predictor)
    try:
        return live.LiteNetwork(predictor), None
    except (ImportError, ValueError) as error:  # no LiteRT wheel (Windows), or a model it cannot convert
        return None, str(error)


def live_camera(model: settings.ModelChoice) -> None:
    """The Live mode: the camera's video with every face boxed and labelled, the largest face's answers and its
    emotion over the last 10 seconds beside it, and "Save" of the last seconds as a timeline CSV (mtfer.live)."""
    from mtfer import live

    live.prepare_webrtc_import()  # TensorFlow may be loaded already (a photo was labelled): see its docstring
    from streamlit_webrtc import WebRtcMode, webrtc_streamer

    st.markdown(
        "Look into the camera: every face gets a box with its four answers, which follow it as it moves and change "
        "with the expression. Press **Start** and allow the camera when the browser asks."
    )
    if (rtc_configuration := read_setting(settings.rtc_configuration, "The STUN/TURN setting is not valid")) is None:
        return
    if (loaded := loaded_predictor(model)) is None:
        return
    predictor, modified = loaded
    try:
        network, no_network = live_network(str(model.path), modified)
    except (ValueError, OSError) as error:
        st.error(f"The model {model.path.name} could not be loaded: {error}")
        return
    min_confidence = abstain.min_confidences(predictor.bundle.metadata, predictor.tasks)

    options = st.columns(3)
    mirror = options[0].toggle(
        "Mirror view", value=True, key="predict_live_mirror", help="Show the picture as a mirror would."
    )
    largest = options[1].toggle("Largest face only", key="predict_live_largest")
    record_s = options[2].select_slider(
        "Keep for recording",
        LIVE_RECORD_CHOICES,
        value=30,
        format_func=lambda s: f"last {s} s",
        key="predict_live_record_s",
        help="How many of the latest seconds Save puts in the CSV.",
    )

    video_column, panel_column = st.columns([3, 2], gap="medium")
    with video_column:
        ctx = webrtc_streamer(
            key=LIVE_STREAM_KEY,
            mode=WebRtcMode.SENDRECV,
            rtc_configuration=rtc_configuration,  # no STUN/TURN unless configured: nothing outside is contacted
            media_stream_constraints={"video": LIVE_VIDEO, "audio": False},
            video_processor_factory=lambda: live.LiveProcessor(
                predictor,
                min_confidence,
                network=network,
                mirror=mirror,
                max_faces=1 if largest else None,
                record_s=max(LIVE_RECORD_CHOICES),
            ),
            async_processing=True,  # the newest frame only: frames that arrive meanwhile are dropped, not queued
            video_html_attrs={
                "autoPlay": True,
                "muted": True,
                "playsInline": True,
                "controls": False,
                "style": {"width": "100%", "borderRadius": "0.5rem"},
            },
            translations=LIVE_TRANSLATIONS,
        )
        st.caption(
            "If the browser says Permission denied, or nothing happens after Start, it has blocked the camera: allow "
            "it from the camera icon in the address bar, then press Start again. Choose camera picks another camera."
        )
    if no_network:
        st.caption(f"Live video runs the model through TensorFlow, which is slower here: {no_network}")
    processor = ctx.video_processor
    if processor is not None:
        processor.mirror, processor.max_faces = mirror, 1 if largest else None  # settings apply at once
        st.session_state[LIVE_PROCESSOR] = processor
    with panel_column:
        live_panel(ctx.state.playing)

    live_recording(record_s)
    st.caption(predict_view.NOT_SURE_NOTE + ("  \n" + predict_view.RACE_NOTE if "race" in predictor.tasks else ""))
    st.info(LIVE_HELP, icon=":material/info:")


def live_panel(playing: bool) -> None:
    """Beside the video: what the stream shows now (faces, the largest face's answers, frames per second) and the
    largest face's emotion over the last 10 seconds; refreshed every LIVE_REFRESH_S while the camera runs."""
    from mtfer import live
    from mtfer.tasks import display_name

    @st.fragment(run_every=LIVE_REFRESH_S if playing else None)
    def panel() -> None:
        processor = st.session_state.get(LIVE_PROCESSOR)
        status = processor.status() if processor is not None else None
        if not playing and (status is None or not status.started):
            st.info("Press **Start**: the answers for the largest face and a chart of its emotion appear here.")
            return
        if status is None or not status.started:
            st.markdown("Connecting to the camera ...")
            return
        if status.error:
            st.warning(f"A frame could not be labelled: {status.error}", icon=":material/warning:")
        if status.faces:
            face = status.faces[0]
            st.markdown("**Largest face**" if len(status.faces) > 1 else "**The face in view**")
            for task, v in face.verdicts.items():
                likeliest = f"{display_name(task, v.label)} {v.confidence:.0%}"
                if v.runner_up is not None and v.runner_up_confidence is not None:
                    likeliest += f" or {display_name(task, v.runner_up)} {v.runner_up_confidence:.0%}"
                st.metric(
                    display_name(task),
                    display_name(task, v.label) if v.sure else predict_view.abstain_name(task),
                    delta=f"{v.confidence:.0%} sure" if v.sure else likeliest,
                    delta_color="off",
                    delta_arrow="off",
                )
        else:
            st.markdown("No face in view: look towards the camera, in good light.")
        st.markdown(f"**Emotion over the last {live.HISTORY_S:.0f} seconds**")
        st.image(live.emotion_chart(processor.emotion_history()), width="stretch")
        state = "" if playing else "Stopped. Last seen: "
        st.caption(f"{state}{live.live_caption(status)}", help="Frames per second: how many frames are labelled.")

    panel()


def live_recording(record_s: int) -> None:
    """Save: the last `record_s` seconds as the per-track timeline CSV of a video file (mtfer.video's columns)."""
    processor = st.session_state.get(LIVE_PROCESSOR)
    st.subheader("Record")
    if st.button(
        f"Save the last {record_s} seconds",
        key="predict_live_save",
        icon=":material/save:",
        disabled=processor is None,
        help="One row per face and labelled frame: where the face was and every probability, as for a video file.",
    ):
        st.session_state[LIVE_RECORDING] = (record_s, processor.record(record_s))
    saved = st.session_state.get(LIVE_RECORDING)
    if processor is None:
        st.caption("Start the camera first: Save then keeps the latest seconds of what it saw.")
    if saved is None:
        return
    seconds, table = saved
    faces_seen = int(table["face"].notna().sum()) if "face" in table else 0
    if not faces_seen:
        st.warning("No face was seen in the saved seconds.", icon=":material/sentiment_neutral:")
        return
    tracks = table["track"].nunique()
    span = table["time_s"].max() - table["time_s"].min()
    st.caption(
        f"Saved: {table['frame'].nunique()} labelled frames over {span:.1f} s, {faces_seen} face rows, "
        f"{tracks} {'person' if tracks == 1 else 'people'} followed."
    )
    st.download_button(
        "Download the timeline (CSV)",
        table.to_csv(index=False),
        file_name=f"mtfer-live-last-{seconds}s.csv",
        mime="text/csv",
        key="predict_live_download",
        on_click="ignore",
        icon=":material/download:",
    )


# --- Video file (issue 12): every face of an uploaded video followed over time, its emotion as a timeline ----------
# All of it is in video_file(); the page calls it, then stops, when the "Video file" toggle is on. The work is done
# by mtfer.video (VideoAnalysis, kept in the session so that a rerun resumes it) and drawn by mtfer.video_view.

VIDEO_ANALYSIS = "predict_video_analysis"  # (settings key, VideoAnalysis or the one-line error) of the latest upload
VIDEO_AT = "predict_video_at"  # the time chosen on the slider
VIDEO_PEOPLE = "predict_video_people"  # the people drawn on the timeline
VIDEO_CLICK = "predict_video_click"  # the last time clicked on the timeline, already applied to the slider
VIDEO_FPS_CHOICES = (1, 2, 5, 10, 15, 30)


def video_file(model: settings.ModelChoice) -> None:
    """The Video mode: upload, a progress bar with Stop while it runs, then a summary per person, the timeline of
    their emotion, the frame at a chosen time with its boxes, and the CSV."""
    from mtfer import video

    st.markdown(
        "Upload a video: the model looks for faces several times a second, follows each person from frame to frame "
        "and shows how the emotion on their face changes over time, with their gender, race group and age group."
    )
    upload = st.file_uploader(
        f"Upload a video ({', '.join(video.VIDEO_TYPES)}; up to {video.MAX_UPLOAD_MB} MB)",
        type=list(video.VIDEO_TYPES),
        key="predict_video_upload",
        max_upload_size=video.MAX_UPLOAD_MB,
    )
    options = st.columns(2)
    fps = options[0].select_slider(
        "Frames looked at per second",
        VIDEO_FPS_CHOICES,
        value=5,
        key="predict_video_fps",
        help="More frames give a finer timeline but take longer.",
    )
    largest_only = options[1].toggle("Largest face only", key="predict_video_largest")
    if upload is None:
        st.info("Upload a video to see how the emotion of each face in it changes over time.")
        return
    if (limits := read_setting(settings.video_limits, "The video limits are not set right")) is None:
        return
    if (loaded := loaded_predictor(model)) is None:
        return
    predictor, modified = loaded

    key = (upload.file_id, fps, largest_only, str(model.path), modified, limits)
    saved = st.session_state.get(VIDEO_ANALYSIS)
    if saved is None or saved[0] != key:
        for name in (VIDEO_AT, VIDEO_PEOPLE, VIDEO_CLICK):  # they belonged to the previous video
            st.session_state.pop(name, None)
        with st.spinner("Opening the video ..."):
            try:
                made: video.VideoAnalysis | str = video.VideoAnalysis.from_bytes(
                    upload.getvalue(), upload.name, predictor, fps=fps, limits=limits, largest_only=largest_only
                )
            except video.VideoError as error:
                made = str(error)
        saved = (key, made)
        st.session_state[VIDEO_ANALYSIS] = saved
    analysis = saved[1]
    if isinstance(analysis, str):
        st.error(charts.escape_markdown(analysis), icon=":material/error:")
        return
    if not analysis.done and not analysis.stopped:
        run_video(analysis)
    video_results(analysis, abstain.min_confidences(predictor.bundle.metadata, predictor.tasks))


def run_video(analysis) -> None:
    """A progress bar and a Stop button while the video is analysed. A rerun (any click) resumes where it was;
    Stop keeps what was analysed."""
    from mtfer import video_view

    running = st.empty()
    with running.container():
        st.button(
            "Stop",
            key="predict_video_stop",
            on_click=analysis.stop,
            icon=":material/stop_circle:",
            help="Stop here and see the results for the part of the video analysed so far.",
        )
        bar = st.progress(analysis.progress, text=video_view.progress_text(analysis))
        shown = None
        for _ in analysis.run():
            now = (round(100 * analysis.progress), round(analysis.analysed_s, 1))
            if now != shown:
                bar.progress(analysis.progress, text=video_view.progress_text(analysis))
                shown = now
    running.empty()


def video_results(analysis, min_confidence: dict[str, float]) -> None:
    """What the analysis found: notes, a summary per person, the emotion timeline, a chosen frame, the CSV."""
    from pathlib import Path

    from mtfer import video, video_view

    for note in analysis.notes:
        st.warning(note, icon=":material/info:")
    table = analysis.table()
    st.markdown(video_view.analysis_line(table, analysis.fps, analysis.info.duration_s))
    order = video_view.people(table)
    if not order:
        st.warning(NO_FACE_TIPS.replace("in this photo", "in this video"), icon=":material/sentiment_neutral:")
    else:
        st.subheader("People in the video")
        st.dataframe(
            video_view.summary_table(table, min_confidence),
            hide_index=True,
            column_config={
                "On screen (%)": st.column_config.ProgressColumn(
                    "On screen", format="%.0f%%", min_value=0, max_value=100, help="Share of the analysed frames"
                )
            },
        )
        if "emotion" in table:
            st.plotly_chart(
                video_view.shares_figure(table), key="predict_video_shares", config={"displayModeBar": False}
            )
        st.caption(
            "Dominant emotion: the one the model rated highest in most of the frames where the person is seen. "
            "Gender, race and age group: from all those frames together."
        )

    times = [f.time_s for f in analysis.frames]
    at = st.session_state.get(VIDEO_AT, times[0])
    if order:
        st.subheader("Emotion over time")
        shown = st.multiselect(
            "People shown",
            order,
            default=order[: video_view.TIMELINE_PEOPLE],
            format_func=video_view.person,
            key=VIDEO_PEOPLE,
        )
        event = st.plotly_chart(
            video_view.timeline_figure(table, shown, at),
            key="predict_video_timeline",
            on_select="rerun",
            selection_mode="points",
            config={"displayModeBar": False},
        )
        points = event.selection.points if event else []
        if points and points[0].get("x") is not None and st.session_state.get(VIDEO_CLICK) != points[0]["x"]:
            st.session_state[VIDEO_CLICK] = points[0]["x"]  # a click on the chart moves the slider below
            st.session_state[VIDEO_AT] = video_view.nearest_frame(analysis.frames, float(points[0]["x"])).time_s
            st.rerun()
        st.caption("Click the chart, or move the slider below, to see the video at that moment.")

    st.subheader("The video at a chosen moment")
    if len(times) > 1:
        at = st.select_slider("Time in the video", times, key=VIDEO_AT, format_func=video.format_time)
    frame = video_view.nearest_frame(analysis.frames, at)
    try:
        picture = video_view.frame_picture(analysis.image(frame.frame), frame, min_confidence)
        st.image(picture, caption=video_view.frame_caption(frame))
    except video.VideoError as error:
        st.warning(f"This frame cannot be shown: {error}", icon=":material/warning:")
    notes = [predict_view.NOT_SURE_NOTE] + ([predict_view.RACE_NOTE] if "race" in table.columns else [])
    st.caption("  \n".join(notes))

    st.subheader("Download the results")
    st.download_button(
        "Download CSV",
        table.to_csv(index=False),
        file_name=f"{Path(analysis.source).stem or 'video'}-timeline.csv",
        mime="text/csv",
        key="predict_video_download",
        on_click="ignore",
        icon=":material/download:",
        help="One row per face per analysed frame: the time, the person (track), where the face is, each answer "
        "and every probability. A frame without a face is a row with an empty person.",
    )


st.title("Predict")
st.markdown(
    "Upload a photo (or take one with the camera): for every face in it, the model guesses the emotion shown, "
    "gender, race group and age group, and shows how sure it is of each."
)

choices = settings.model_choices()
if not choices:
    st.error("No trained model was found. Train one on the Train page first.")
    st.stop()
labels = [c.label for c in choices]
with st.sidebar:
    chosen = st.selectbox(
        "Model", labels, key="predict_model", help="The active model is used unless you pick another."
    )
model = choices[labels.index(chosen)]

if st.toggle(
    "Live camera",
    key="predict_live",
    help="Stream your camera: the labels follow each face in real time. Off: photos, or a snapshot from the camera.",
):
    live_camera(model)
    st.stop()

if st.toggle(
    "Video file",
    key="predict_video",
    help="Upload a video: each face is followed through it, with its emotion over time. Off: photos.",
):
    video_file(model)
    st.stop()

uploads = st.file_uploader(
    "Upload photos (jpg, png, webp, bmp, tiff, gif)",
    type=IMAGE_TYPES,
    accept_multiple_files=True,
    key="predict_uploads",
    max_upload_size=PHOTO_MAX_UPLOAD_MB,
)
left, right = st.columns(2)
use_camera = left.toggle("Use the camera", key="predict_use_camera")
largest_only = right.toggle("Largest face only", key="predict_largest_only")
photo = st.camera_input("Take a photo", key="predict_camera") if use_camera else None


items = [(f.name, f.getvalue()) for f in uploads or []]
if photo is not None:
    items.append(("camera.jpg", photo.getvalue()))
if not items:
    st.info("Upload one or more photos, or switch on the camera, to see what the model makes of each face.")
    st.stop()

if (loaded := loaded_predictor(model)) is None:
    st.stop()
predictor, modified = loaded
# How sure the model must be to state an answer, per task: chosen on validation data (mtfer.abstain).
min_confidence = abstain.min_confidences(predictor.bundle.metadata, predictor.tasks)
notes = [predict_view.NOT_SURE_NOTE] + ([predict_view.RACE_NOTE] if "race" in predictor.tasks else [])
st.caption("  \n".join(notes))

results: list[tuple[str, list[FacePrediction]]] = []
refused: list[tuple[str, str]] = []  # (file, why it could not be read): rows of the CSV too
for i, (name, data) in enumerate(items):
    with st.container(border=True):
        st.subheader(charts.escape_markdown(name))
        predictions, error, found = analyse(str(model.path), modified, name, data, largest_only)
        if predictions is None:
            st.error(charts.escape_markdown(error or ""), icon=":material/error:")
            refused.append((name, error or ""))
            continue
        image = faces.decode_image(data)  # read fine just now; decoded again, as whole photos are not cached
        results.append((name, predictions))
        if not predictions:
            st.warning(NO_FACE_TIPS, icon=":material/sentiment_neutral:")
            st.image(predict_view.draw_faces(image, [], []), caption=charts.escape_markdown(name))
            continue
        verdicts = [predict_view.face_verdicts(p, min_confidence) for p in predictions]
        labels = [predict_view.photo_lines(k, v) for k, v in enumerate(verdicts, start=1)]
        st.image(
            predict_view.draw_faces(image, [p.box for p in predictions], labels),
            caption=predict_view.faces_found_caption(len(predictions), found),
        )
        for k, (p, face_verdicts) in enumerate(zip(predictions, verdicts, strict=True), start=1):
            st.markdown(predict_view.face_line(k, face_verdicts))
            face_column, chart_column = st.columns([1, 3])
            face_column.image(charts.enlarge(p.aligned), caption=predict_view.aligned_caption(p))
            with face_column:
                show_why(str(model.path), modified, p, key=f"why-{i}-{k}")
            with chart_column:
                chart_columns = st.columns(2)
                for j, (task, probabilities) in enumerate(p.probabilities.items()):
                    chart_columns[j % 2].plotly_chart(
                        predict_view.probability_figure(
                            task, probabilities, face_verdicts[task], min_confidence.get(task)
                        ),
                        key=f"probabilities-{i}-{k}-{task}",
                        config={"displayModeBar": False},
                    )

if any(preds for _, preds in results):
    st.subheader("Download the results")
    table = predict_view.people_table(results, min_confidence)
    with st.expander("All faces as a table"):
        st.dataframe(table, hide_index=True)
    left, right = st.columns(2)
    left.download_button(
        "Download CSV",
        predictions_table(results, predictor.classes, refused).to_csv(index=False),
        file_name="mtfer-predictions.csv",
        mime="text/csv",
        key="predict_download_csv",
        on_click="ignore",
        help="One row per face, the same columns as for a folder of photos (`mtfer predict DIR --csv`): where the "
        "face is, each answer and every probability; a file that could not be read is a row with the reason.",
    )
    right.download_button(
        "Download JSON",
        predict_view.people_json(results, min_confidence),
        file_name="mtfer-predictions.json",
        mime="application/json",
        key="predict_download_json",
        on_click="ignore",
    )
