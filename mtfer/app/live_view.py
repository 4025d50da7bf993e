"""The live camera in one line for people: how many faces, the largest face's answers and the frame rate."""

from __future__ import annotations

from mtfer.media.live import LiveStatus, answer_short, format_fps


def live_caption(status: LiveStatus) -> str:
    """One line for people: 'Live · 1 face · Happy 87% · Female 91% · Asian 64% · 20-39 years 70% · 18 frames/s'
    (the answers are the largest face's)."""
    if not status.started:
        return "Waiting for the first frame ..."
    count = len(status.faces)
    parts = ["Live", f"{count} face{'s' if count != 1 else ''}" if count else "no face in view"]
    if status.faces:
        parts += [answer_short(v) for v in status.faces[0].verdicts.values()]
    parts.append(f"{format_fps(status.fps)} frames/s")
    return " · ".join(parts)
