"""The Predict page's live mode: the browser's camera streamed over WebRTC, every face labelled in real time.
All of it is in live_camera(); the page calls it, then stops, when the "Live camera" toggle is on."""

import streamlit as st

from mtfer.app import predict_view
from mtfer.assess import abstain
from mtfer.media import answers, tables, webrtc
from mtfer.store import settings
from pages.predict_modes.shared import load_predictor, loaded_predictor, read_setting

LIVE_STREAM_KEY = "predict_live_stream"
# Whether the camera should run: the page's own Start and Stop buttons (in the app's style) set it, and the stream
# follows it (streamlit-webrtc's desired_playing_state; its own all-capitals buttons are then not shown).
LIVE_WANTED = "predict_live_wanted"
LIVE_PROCESSOR = "predict_live_processor"  # the latest stream's mtfer.media.live.LiveProcessor (kept after Stop)
LIVE_RECORDING = "predict_live_recording"  # the last "Save" of the recording: (seconds, table)
LIVE_RECORD_CHOICES = (10, 30, 60)  # seconds
# How often the answers and the chart beside the video are refreshed: each refresh is a script run, which Streamlit
# ends with two full garbage collections (~0.4 s on a busy 2-core machine with TensorFlow loaded, holding the GIL),
# so more often would slow the video down.
LIVE_REFRESH_S = 2.0
LIVE_VIDEO = {"width": {"ideal": 640}, "height": {"ideal": 480}, "frameRate": {"ideal": 30}}
LIVE_TRANSLATIONS = {  # streamlit-webrtc's own controls and notices, in the page's words
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
see docs/live.md). Snapshots also show the face as the model saw it and every probability."""


@st.cache_resource(show_spinner="Getting the model ready for live video (once per model) ...", max_entries=4)
def live_network(path: str, modified: int) -> tuple[object | None, str | None]:
    """Once per model, before any stream starts: the network converted for LiteRT (mtfer.core.backends.LiteNetwork: immune to
    the clear_session() that ends every script run, and faster), and the Keras model warmed up (mtfer.media.live.warm_up)
    as the fallback. Returns (network or None, why there is none)."""
    from mtfer.core import backends
    from mtfer.media import live

    predictor = load_predictor(path, modified)
    live.warm_up(predictor)
    try:
        return backends.LiteNetwork(predictor), None
    except (ImportError, ValueError) as error:  # no LiteRT wheel (Windows), or a model it cannot convert
        return None, str(error)


def live_camera(model: settings.ModelChoice) -> None:
    """The Live mode: the camera's video with every face boxed and labelled, the largest face's answers and its
    emotion over the last 10 seconds beside it, and "Save" of the last seconds as a timeline CSV (mtfer.media.live)."""
    from mtfer.media import live

    webrtc.prepare_webrtc_import()  # TensorFlow may be loaded already (a photo was labelled): see its docstring
    from streamlit_webrtc import WebRtcMode, webrtc_streamer

    st.markdown(
        "Look into the camera: every face gets a box with its four answers, which follow it as it moves and change "
        "with the expression. Press **Start** and allow the camera when the browser asks."
    )
    if (rtc_configuration := read_setting(webrtc.rtc_configuration, "The STUN/TURN setting is not valid")) is None:
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
        wanted = bool(st.session_state.get(LIVE_WANTED))
        if wanted:
            st.button(
                "Stop", key="predict_live_stop", icon=":material/stop_circle:", on_click=want_camera, args=(False,)
            )
        else:
            st.button(
                "Start",
                key="predict_live_start",
                type="primary",
                icon=":material/videocam:",
                on_click=want_camera,
                args=(True,),
            )
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
            desired_playing_state=wanted,
        )
        st.caption(
            "If the browser says Permission denied, or nothing happens after Start, it has blocked the camera: allow "
            "it from the camera icon in the address bar, then press Stop and Start again. While the camera runs, the "
            "camera button under the video picks another one."
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


def want_camera(on: bool) -> None:
    """Start or Stop: runs before the rerun, so the stream and the button change together."""
    st.session_state[LIVE_WANTED] = on


def live_panel(playing: bool) -> None:
    """Beside the video: what the stream shows now (faces, the largest face's answers, frames per second) and the
    largest face's emotion over the last 10 seconds; refreshed every LIVE_REFRESH_S while the camera runs."""
    from mtfer.app import live_view
    from mtfer.core.tasks import display_name
    from mtfer.media import live

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
                    display_name(task, v.label) if v.sure else answers.abstain_name(task),
                    delta=f"{v.confidence:.0%} sure" if v.sure else likeliest,
                    delta_color="off",
                    delta_arrow="off",
                )
        else:
            st.markdown("No face in view: look towards the camera, in good light.")
        st.markdown(f"**Emotion over the last {live.HISTORY_S:.0f} seconds**")
        st.image(live.emotion_chart(processor.emotion_history()), width="stretch")
        state = "" if playing else "Stopped. Last seen: "
        st.caption(f"{state}{live_view.live_caption(status)}", help="Frames per second: how many frames are labelled.")

    panel()


def live_recording(record_s: int) -> None:
    """Save: the last `record_s` seconds as the per-track timeline CSV of a video file (mtfer.media.video's columns)."""
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
        tables.csv_text(table),
        file_name=f"mtfer-live-last-{seconds}s.csv",
        mime="text/csv",
        key="predict_live_download",
        on_click="ignore",
        icon=":material/download:",
    )
