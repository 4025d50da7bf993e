"""How much of a video is analysed: the length and frame caps, from the environment or the defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from mtfer.media.video import DEFAULT_MAX_FRAMES, DEFAULT_MAX_SECONDS, VideoLimits

if TYPE_CHECKING:
    from mtfer.media.video import VideoLimits

ENV_VIDEO_MAX_SECONDS = "MTFER_VIDEO_MAX_SECONDS"
ENV_VIDEO_MAX_FRAMES = "MTFER_VIDEO_MAX_FRAMES"


def video_limits(env: Mapping[str, str] | None = None) -> VideoLimits:
    """The caps on one video's analysis (mtfer.media.video.VideoLimits): $MTFER_VIDEO_MAX_SECONDS seconds from its start
    (default 600) and $MTFER_VIDEO_MAX_FRAMES analysed frames (default 3000). A value that is not a positive number:
    ValueError naming the variable."""

    env = os.environ if env is None else env
    values: dict[str, float] = {}
    for name, default, key in (
        (ENV_VIDEO_MAX_SECONDS, DEFAULT_MAX_SECONDS, "max_seconds"),
        (ENV_VIDEO_MAX_FRAMES, DEFAULT_MAX_FRAMES, "max_frames"),
    ):
        text = env.get(name, "").strip()
        try:
            value = float(text) if text else float(default)
        except ValueError:
            value = float("nan")
        if not value > 0 or not value < float("inf") or (key == "max_frames" and value != int(value)):
            raise ValueError(f"{name} must be a positive {'whole ' if key == 'max_frames' else ''}number, got {text!r}")
        values[key] = value
    return VideoLimits(max_seconds=values["max_seconds"], max_frames=int(values["max_frames"]))
