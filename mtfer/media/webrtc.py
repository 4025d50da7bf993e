"""The browser's camera over WebRTC: STUN/TURN servers from the environment, and frames converted between
PyAV and OpenCV without FFmpeg's scaler."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

ENV_ICE_SERVERS = "MTFER_ICE_SERVERS"
ENV_TURN_USERNAME = "MTFER_TURN_USERNAME"
ENV_TURN_CREDENTIAL = "MTFER_TURN_CREDENTIAL"
ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")


def ice_servers(env: Mapping[str, str] | None = None) -> list[dict]:
    """The STUN/TURN servers the live camera's WebRTC connection may use; none by default, so that nothing outside
    this machine is contacted (the browser and the app, on one machine or one network, connect directly).

    $MTFER_ICE_SERVERS: comma-separated URLs (``stun:stun.example.org:3478,turn:turn.example.org:3478``); TURN URLs
    get $MTFER_TURN_USERNAME and $MTFER_TURN_CREDENTIAL. Or a JSON list of RTCIceServer objects
    (``[{"urls": ["turn:..."], "username": "...", "credential": "..."}]``). Anything else: ValueError."""
    env = os.environ if env is None else env
    text = env.get(ENV_ICE_SERVERS, "").strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            servers = json.loads(text)
        except ValueError as e:
            raise ValueError(f"{ENV_ICE_SERVERS} is not valid JSON: {e}") from None
        if not isinstance(servers, list) or not all(isinstance(s, dict) and s.get("urls") for s in servers):
            raise ValueError(f'{ENV_ICE_SERVERS}: a JSON value must be a list of {{"urls": ..., ...}} objects')
        for server in servers:
            urls = server["urls"] if isinstance(server["urls"], list) else [server["urls"]]
            _check_ice_urls(urls)
            for key in ("username", "credential"):
                if key in server and not isinstance(server[key], str):
                    raise ValueError(f"{ENV_ICE_SERVERS}: {key} must be text, got {json.dumps(server[key])[:40]}")
        return servers
    urls = [u.strip() for u in text.split(",") if u.strip()]
    _check_ice_urls(urls)
    username, credential = env.get(ENV_TURN_USERNAME, ""), env.get(ENV_TURN_CREDENTIAL, "")
    stun = [u for u in urls if u.startswith(("stun:", "stuns:"))]
    turn = [u for u in urls if u.startswith(("turn:", "turns:"))]
    if turn and not (username and credential):
        raise ValueError(f"TURN servers need {ENV_TURN_USERNAME} and {ENV_TURN_CREDENTIAL} to be set")
    servers: list[dict] = [{"urls": stun}] if stun else []
    if turn:
        servers.append({"urls": turn, "username": username, "credential": credential})
    return servers


def _check_ice_urls(urls: Sequence[object]) -> None:
    for url in urls:
        spaced = isinstance(url, str) and any(c.isspace() or ord(c) < 32 for c in url)  # a line break inside one
        if not isinstance(url, str) or spaced or not url.startswith(ICE_SCHEMES) or len(url.split(":", 1)[1]) < 1:
            raise ValueError(
                f"{ENV_ICE_SERVERS}: {url!r} is not a STUN/TURN URL; expected e.g. stun:stun.example.org:3478 or "
                "turn:turn.example.org:3478?transport=tcp"
            )


def rtc_configuration(env: Mapping[str, str] | None = None) -> dict:
    """The WebRTC configuration of the browser and of the server: {"iceServers": ice_servers(env)} (an explicit
    empty list: streamlit-webrtc would otherwise fill in public STUN servers)."""
    return {"iceServers": ice_servers(env)}


def frame_to_bgr(frame: Any) -> np.ndarray:
    """An av.VideoFrame as a BGR image (H,W,3) uint8. Browsers send VP8 decoded to yuv420p: that is converted by
    OpenCV, not by PyAV's reformat, so that no FFmpeg scaler runs in this process while aiortc encodes in its own
    thread (concurrent swscale conversions have crashed the process: a segmentation fault in VideoFrame.reformat).
    Other formats (rare) go through PyAV."""
    if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2BGR_I420)
    return frame.to_ndarray(format="bgr24")


def bgr_to_frame(image: np.ndarray) -> Any:
    """A BGR image as an av.VideoFrame in yuv420p, the format aiortc's VP8 encoder takes as it is (no reformat in
    its thread; see frame_to_bgr). Odd sizes, which yuv420p cannot hold exactly, stay bgr24."""
    import av

    h, w = image.shape[:2]
    if h % 2 or w % 2:
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
    return av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), format="yuv420p")


def prepare_webrtc_import() -> None:
    """Call before importing streamlit_webrtc or aiortc in a process that may already have imported TensorFlow.

    aiortc's SRTP library (pylibsrtp) calls OpenSSL functions; TensorFlow loads its own BoringSSL with global symbols,
    and pylibsrtp imported after it binds to those and crashes the process (a segmentation fault in srtp_init).
    Imported here with RTLD_DEEPBIND (glibc), it keeps its own; imported before TensorFlow, nothing is needed. Once
    per process; a no-op where the flag does not exist (macOS, Windows)."""
    if "pylibsrtp" in sys.modules:
        return
    deepbind = getattr(os, "RTLD_DEEPBIND", 0)
    flags = sys.getdlopenflags() if deepbind and hasattr(sys, "getdlopenflags") else None
    if flags is not None:
        sys.setdlopenflags(flags | deepbind)
    try:
        import pylibsrtp  # noqa: F401
    finally:
        if flags is not None:
            sys.setdlopenflags(flags)
