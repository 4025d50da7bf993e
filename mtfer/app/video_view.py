"""What the Predict page shows for a video, as pure functions (no Streamlit): people's names for tracks, a summary
per person (dominant emotion, share of time per emotion, the other answers), the timeline of emotion probabilities,
a chosen frame with its labelled boxes, and a one-line account of the analysis.

They read the table of mtfer.media.video (VideoAnalysis.table, the CSV `mtfer predict VIDEO --csv` writes), so a saved
CSV gives the same figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mtfer.assess.abstain import verdict
from mtfer.core.tasks import UNTAUGHT_CLASSES, display_name
from mtfer.media.answers import abstain_name, answer, face_verdicts, shown_classes
from mtfer.media.draw import EMOTION_COLORS, NOW, Drawing, box_hex, draw_faces
from mtfer.media.tables import class_names
from mtfer.media.video import VideoFrame, format_time

TIMELINE_PEOPLE = 3  # people drawn on the timeline at first: those seen the longest


def person(track: int) -> str:
    """'Person 2': a track as people read it (tracks are numbered in the order the faces first appear)."""
    return f"Person {int(track)}"


def _faces(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of the table that are faces (frames without a face have an empty track)."""
    return table[table["track"].notna()]


def _classes(table: pd.DataFrame, task: str) -> list[str]:
    return class_names(list(table.columns), task)


def _tasks(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if f"{c}_confidence" in table.columns]


def people(table: pd.DataFrame) -> list[int]:
    """The tracks of a video table, those seen in the most frames first (ties: the first to appear)."""
    counts = _faces(table)["track"].astype(int).value_counts()
    return sorted(counts.index.tolist(), key=lambda t: (-counts[t], t))


def analysis_line(table: pd.DataFrame, fps: float, duration_s: float = 0.0) -> str:
    """'150 frames analysed, 5 per second, from 0:00.0 to 0:29.8 of a 0:30.0 video: 2 people followed; 4 frames
    without a face.'"""
    frames = table.drop_duplicates("frame")
    n, tracks = len(frames), table["track"].dropna().nunique()
    empty = int((table.groupby("frame")["track"].count() == 0).sum())
    text = f"{n:,} frame{'s' if n != 1 else ''} analysed, {fps:g} per second"
    if n:
        text += f", from {format_time(frames['time_s'].min())} to {format_time(frames['time_s'].max())}"
    if duration_s:
        text += f" of a {format_time(duration_s)} video"
    text += f": {tracks} {'person' if tracks == 1 else 'people'} followed"
    if empty:
        text += f"; {empty:,} frame{'s' if empty != 1 else ''} without a face"
    return text + "."


def emotion_shares(table: pd.DataFrame) -> pd.DataFrame:
    """Per person (rows, seen the longest first) and emotion (columns, model order): the share of their frames, in
    percent, in which that emotion is the one the model rated highest."""
    faces = _faces(table)
    emotions = shown_classes("emotion", _classes(table, "emotion"))
    tracks = people(table)
    counts = pd.crosstab(faces["track"].astype(int), faces["emotion"]).reindex(index=tracks, columns=emotions)
    counts = counts.fillna(0)
    return 100 * counts.div(counts.sum(axis=1).where(lambda n: n > 0, 1), axis=0)


def summary_table(table: pd.DataFrame, min_confidence: Mapping[str, float]) -> pd.DataFrame:
    """One row per person (seen the longest first): when they were seen, their share of the analysed frames, the
    dominant emotion (the one rated highest in the most of their frames; see emotion_shares) and, for the other
    tasks, the answer of their mean probabilities ('Not sure (...)' below the task's min_confidence, as for a
    photo)."""
    faces = _faces(table)
    analysed = max(1, table["frame"].nunique())
    shares = emotion_shares(table) if "emotion" in table else None
    rows = []
    for track in people(table):
        own = faces[faces["track"] == track]
        row: dict[str, Any] = {
            "Person": person(track),
            "Seen from": format_time(own["time_s"].min()),
            "Seen until": format_time(own["time_s"].max()),
            "On screen (%)": round(100 * own["frame"].nunique() / analysed, 1),
        }
        if shares is not None and len(shares.columns):
            row["Dominant emotion"] = display_name("emotion", str(shares.loc[track].idxmax()))
        for task in _tasks(table):
            if task == "emotion":
                continue
            mean = {c: float(own[f"{task}_{c}"].mean()) for c in _classes(table, task)}
            v = verdict(task, mean, float(min_confidence.get(task, 0.0)), UNTAUGHT_CLASSES.get(task, ()))
            row[display_name(task)] = answer(v)
        rows.append(row)
    return pd.DataFrame(rows)


def shares_figure(table: pd.DataFrame) -> go.Figure:
    """Per person, one bar split by emotion: the share of the time each emotion was the one rated highest."""
    shares = emotion_shares(table)
    names = [person(t) for t in shares.index]
    fig = go.Figure()
    for emotion in shares.columns:
        name = display_name("emotion", emotion)
        values = shares[emotion].to_numpy(float)
        fig.add_trace(
            go.Bar(
                x=values,
                y=names,
                orientation="h",
                name=name,
                marker_color=EMOTION_COLORS.get(emotion),
                text=[f"{v:.0f}%" if v >= 8 else "" for v in values],
                textposition="inside",
                insidetextanchor="middle",
                hovertemplate=f"%{{y}}: {name} %{{x:.0f}}% of the time<extra></extra>",
            )
        )
    fig.update_layout(
        barmode="stack",
        title={"text": "Share of time per emotion", "x": 0},
        xaxis={"range": [0, 100.5], "tickvals": [0, 20, 40, 60, 80, 100], "ticksuffix": "%", "fixedrange": True},
        yaxis={"autorange": "reversed", "fixedrange": True},
        height=130 + 40 * max(1, len(names)),
        margin={"l": 10, "r": 10, "t": 70, "b": 10},
        legend={"title": "", "traceorder": "normal", "orientation": "h", "x": 0, "y": 1.0, "yanchor": "bottom"},
    )
    return fig


def timeline_figure(
    table: pd.DataFrame, tracks: Sequence[int], at_s: float | None = None, title: str = ""
) -> go.Figure:
    """Each chosen person's emotion probabilities over the video, one panel per person (shared time axis), one line
    per emotion in fixed colours; the line breaks where the person is not in view. A dotted line marks `at_s`."""
    emotions = shown_classes("emotion", _classes(table, "emotion"))
    times = np.sort(table["time_s"].unique())
    tracks = list(tracks)
    fig = make_subplots(
        rows=max(1, len(tracks)),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=min(0.08, 0.3 / max(1, len(tracks))),
    )
    faces = _faces(table)
    for row, track in enumerate(tracks, start=1):
        # The first face of the track in each frame (a track has one face per frame), on every analysed time.
        own = faces[faces["track"] == track].drop_duplicates("time_s").set_index("time_s").reindex(times)
        for emotion in emotions:
            name = display_name("emotion", emotion)
            fig.add_trace(
                go.Scatter(
                    x=times,
                    y=own[f"emotion_{emotion}"].astype(float),
                    mode="lines+markers",  # markers (invisible) make the points clickable: a click picks the time
                    marker={"size": 8, "opacity": 0},
                    name=name,
                    legendgroup=emotion,
                    showlegend=row == 1,
                    connectgaps=False,
                    line={"color": EMOTION_COLORS.get(emotion), "width": 2},
                    customdata=[format_time(t) for t in times],
                    hovertemplate=f"{person(track)} at %{{customdata}}: {name} %{{y:.0%}}<extra></extra>",
                ),
                row=row,
                col=1,
            )
        fig.update_yaxes(
            range=[0, 1.02],
            tickformat=".0%",
            title={"text": f"<b>{person(track)}</b>", "font": {"color": box_hex(track), "size": 15}},
            row=row,
            col=1,
        )
    if at_s is not None:
        fig.add_vline(x=float(at_s), line_dash="dot", line_color=NOW)
    tick_values = _time_ticks(float(times.max()) if len(times) else 0.0)
    fig.update_xaxes(tickvals=tick_values, ticktext=[format_time(t) for t in tick_values])
    fig.update_xaxes(title_text="time in the video (minutes:seconds)", row=max(1, len(tracks)), col=1)
    fig.update_layout(
        title={"text": title, "x": 0} if title else None,
        height=90 + 200 * max(1, len(tracks)),
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        legend={"title": {"text": "Emotion"}, "traceorder": "normal"},
        hovermode="closest",
        clickmode="event+select",
    )
    return fig


def _time_ticks(end_s: float) -> list[float]:
    """About 6 to 12 round tick times from 0 to end_s."""
    for step in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600):
        if end_s / step <= 10:
            break
    return [float(t) for t in np.arange(0, end_s + 1e-9, step)]


def nearest_frame(frames: Sequence[VideoFrame], time_s: float) -> VideoFrame:
    """The analysed frame closest to `time_s`."""
    if not frames:
        raise ValueError("no frame was analysed")
    times = np.array([f.time_s for f in frames])
    return frames[int(np.abs(times - time_s).argmin())]


def frame_lines(face: Any, min_confidence: Mapping[str, float]) -> list[str]:
    """The label drawn beside a face of a video frame: 'Person 2', then one line per task ('Happy 80%', or
    'Age group: not sure')."""
    lines = [person(face.track)]
    for task, v in face_verdicts(face, min_confidence).items():
        if v.sure:
            lines.append(f"{display_name(task, v.label)} {v.confidence:.0%}")
        else:
            lines.append(f"{display_name(task)}: {abstain_name(task).lower()}")
    return lines


def frame_picture(image_bgr: np.ndarray, frame: VideoFrame, min_confidence: Mapping[str, float]) -> Drawing:
    """The frame with each face boxed in its person's colour (the same in every frame) and labelled with its
    answers, or numbered with its person's number when the labels cannot all be placed cleanly."""
    return draw_faces(
        image_bgr,
        [f.box for f in frame.faces],
        [frame_lines(f, min_confidence) for f in frame.faces],
        numbers=[int(f.track) for f in frame.faces],
    )


def frame_caption(frame: VideoFrame) -> str:
    """'At 0:04.2: Person 1 and Person 2' / 'At 0:04.2: no face found'."""
    names = [person(f.track) for f in frame.faces]
    if not names:
        return f"At {format_time(frame.time_s)}: no face found"
    return f"At {format_time(frame.time_s)}: " + (", ".join(names[:-1]) + " and " if len(names) > 1 else "") + names[-1]


def progress_text(analysis: Any) -> str:
    """'Analysing the video: 0:12.4 of 0:30.0' while a VideoAnalysis runs."""
    return f"Analysing the video: {format_time(analysis.analysed_s)} of {format_time(analysis.span_s)}"
