"""The Predict page's video mode: every face of an uploaded video followed over time, its emotion as a timeline.
All of it is in video_file(); the page calls it, then stops, when the "Video file" toggle is on. The work is done by
mtfer.media.video (VideoAnalysis, kept in the session so that a rerun resumes it) and drawn by mtfer.app.video_view."""

import streamlit as st

from mtfer.app import predict_view, wording
from mtfer.assess import abstain
from mtfer.media import answers, tables, video_limits
from mtfer.store import settings
from pages.predict_modes.shared import NO_FACE_TIPS, loaded_predictor, read_setting

VIDEO_ANALYSIS = "predict_video_analysis"  # (settings key, VideoAnalysis or the one-line error) of the latest upload
VIDEO_AT = "predict_video_at"  # the time chosen on the slider
VIDEO_PEOPLE = "predict_video_people"  # the people drawn on the timeline
VIDEO_CLICK = "predict_video_click"  # the last time clicked on the timeline, already applied to the slider
VIDEO_FPS_CHOICES = (1, 2, 5, 10, 15, 30)


def video_file(model: settings.ModelChoice) -> None:
    """The Video mode: upload, a progress bar with Stop while it runs, then a summary per person, the timeline of
    their emotion, the frame at a chosen time with its boxes, and the CSV."""
    from mtfer.media import video

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
    if (limits := read_setting(video_limits.video_limits, "The video limits are not set right")) is None:
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
        st.error(wording.escape_markdown(analysis), icon=":material/error:")
        return
    if not analysis.done and not analysis.stopped:
        run_video(analysis)
    video_results(analysis, abstain.min_confidences(predictor.bundle.metadata, predictor.tasks))


def run_video(analysis) -> None:
    """A progress bar and a Stop button while the video is analysed. A rerun (any click) resumes where it was;
    Stop keeps what was analysed."""
    from mtfer.app import video_view

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

    from mtfer.app import video_view
    from mtfer.media import video

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
        drawing = video_view.frame_picture(analysis.image(frame.frame), frame, min_confidence)
        if drawing.labelled:
            st.image(drawing.image, caption=video_view.frame_caption(frame))
        else:  # too many people for labels: their numbers on the frame, their answers in a table under it
            st.image(drawing.image, caption=video_view.frame_caption(frame))
            verdicts = [answers.face_verdicts(f, min_confidence) for f in frame.faces]
            numbers = [int(f.track) for f in frame.faces]
            st.dataframe(
                predict_view.answers_table(verdicts, numbers),
                hide_index=True,
                height=predict_view.table_height(len(verdicts)),
                column_config={"Face": st.column_config.NumberColumn(width="small")},
            )
    except video.VideoError as error:
        st.warning(f"This frame cannot be shown: {error}", icon=":material/warning:")
    notes = [predict_view.NOT_SURE_NOTE] + ([predict_view.RACE_NOTE] if "race" in table.columns else [])
    st.caption("  \n".join(notes))

    st.subheader("Download the results")
    st.download_button(
        "Download CSV",
        tables.csv_text(table),
        file_name=f"{Path(analysis.source).stem or 'video'}-timeline.csv",
        mime="text/csv",
        key="predict_video_download",
        on_click="ignore",
        icon=":material/download:",
        help="One row per face per analysed frame: the time, the person (track), where the face is, each answer "
        "and every probability. A frame without a face is a row with an empty person.",
    )
