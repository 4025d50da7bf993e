"""Processed frames per second of the live camera (mtfer.media.live.LiveProcessor) on a recorded 640x480 clip with one
face, made from a real face photo.

    python benchmarks/live_fps.py [--photo FACE.jpg] [--seconds 10] [--camera-fps 30] [--save-y4m clip.y4m]

Two measurements per network (the LiteRT conversion the Predict page uses, and the Keras model):
- back to back: every frame of the clip processed one after the other (detection, the network, tracking,
  smoothing, drawing): the most this machine can label;
- camera: a thread plays the clip in real time at --camera-fps, as a camera would, and the processor takes only the
  newest frame each time (as streamlit-webrtc's asynchronous processing does), dropping the rest: frames labelled
  per second, share dropped, and the delay from a frame's capture to its labelled picture (flat when frames are
  dropped rather than queued).
The load average is printed before and after: the figures are only comparable at a similar load.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from mtfer.assess import abstain
from mtfer.core import backends, faces
from mtfer.core.inference import Predictor  # noqa: E402
from mtfer.media import live  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
UTKFACE = REPO.parent / "shared" / "data" / "utkface" / "UTKFace"
TARGET_FPS = 15.0


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} (1 / 5 / 15 min) on {os.cpu_count()} CPUs"


def pick_photo(predictor: Predictor, photo: Path | None) -> tuple[Path, np.ndarray]:
    """The given photo, else the first of a fixed sample of UTKFace chips whose face the detector finds in a frame."""
    candidates = [photo] if photo else sorted(UTKFACE.glob("*.jpg"))[::500]
    for path in candidates:
        image = cv2.imread(str(path))
        if image is not None and len(faces.find_faces(live.moving_face_clip(image, 1)[0], predictor.config)) == 1:
            return path, image
    raise SystemExit(f"no face found in {photo or UTKFACE}: pass --photo with a photo of one face")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def back_to_back(processor: live.LiveProcessor, clip: list[np.ndarray], seconds: float) -> dict[str, float]:
    for i, frame in enumerate(clip[:5]):  # one-time set-up (thread-local interpreters) out of the figures
        processor.process(frame, i / 30)
    processor.reset()
    times, faces_seen, i = [], 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        processor.process(clip[i % len(clip)], t0)
        times.append(time.perf_counter() - t0)
        faces_seen += len(processor.status().faces) == 1
        i += 1
    wall = time.perf_counter() - start
    return {
        "fps": i / wall,
        "median_ms": 1000 * statistics.median(times),
        "p90_ms": 1000 * percentile(times, 90),
        "found": faces_seen / max(i, 1),
    }


def camera(
    processor: live.LiveProcessor,
    clip: list[np.ndarray],
    seconds: float,
    fps: float,
    refresh_s: float | None = None,
    collect: bool = False,
) -> dict[str, float]:
    """A camera thread publishes frames at `fps` in real time; this thread takes everything published since its
    last frame and processes only the newest (LiveProcessor.process_latest). With `refresh_s`, a third thread does
    what the page's panel does that often (reads the status, draws the emotion chart) and, with `collect`, what
    Streamlit does after every script run unless runner.postScriptGC is off: a full garbage collection."""
    processor.reset()
    lock, ready = threading.Lock(), threading.Condition()
    pending: list[tuple[np.ndarray, float]] = []
    done = threading.Event()

    def refresh() -> None:
        while not done.wait(refresh_s):
            processor.status()
            live.emotion_chart(processor.emotion_history())
            if collect:
                gc.collect(2)

    refresher = threading.Thread(target=refresh, daemon=True) if refresh_s else None
    if refresher is not None:
        refresher.start()

    def play() -> None:
        start = time.perf_counter()
        k = 0
        while not done.is_set():
            due = start + k / fps
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)  # a camera delivers frames at its own pace
            with ready:
                with lock:
                    pending.append((clip[k % len(clip)], time.perf_counter()))
                ready.notify()
            k += 1

    player = threading.Thread(target=play, daemon=True)
    player.start()
    delays, finished = [], []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        with ready:
            ready.wait_for(lambda: bool(pending), timeout=1.0)
            with lock:
                batch = pending[:]
                pending.clear()
        if not batch:
            continue
        processor.process_latest(batch)
        finished.append(time.perf_counter())
        delays.append(finished[-1] - batch[-1][1])
    done.set()
    player.join()
    if refresher is not None:
        refresher.join()
    gaps = np.diff(finished) if len(finished) > 1 else np.zeros(1)
    status = processor.status()
    wall = time.perf_counter() - start
    return {
        "fps": status.processed / wall,
        "dropped": status.dropped / max(status.received, 1),
        "delay_median_ms": 1000 * statistics.median(delays) if delays else float("nan"),
        "delay_p90_ms": 1000 * percentile(delays, 90),
        "delay_last_s_ms": 1000 * statistics.median(delays[-len(delays) // 5 :]) if delays else float("nan"),
        "gap_max_ms": 1000 * float(gaps.max()),
        "gap_median_ms": 1000 * float(np.median(gaps)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, help="a photo of one face (default: a UTKFace chip)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--camera-fps", type=float, default=30.0)
    parser.add_argument("--network", choices=["litert", "keras", "both"], default="both")
    parser.add_argument("--save-y4m", type=Path, help="also write the clip (e.g. for a browser's fake camera)")
    args = parser.parse_args()

    print(f"before: {load()}")
    predictor = Predictor()
    path, photo = pick_photo(predictor, args.photo)
    clip = live.moving_face_clip(photo, frames=60)  # 2 s at 30 frames per second, the face drifting
    if args.save_y4m:
        live.write_y4m(args.save_y4m, clip, fps=30)
    h, w = clip[0].shape[:2]
    print(f"clip: {w}x{h}, {len(clip)} frames, one face from {path.name}; model {predictor.path}")
    minimum = abstain.min_confidences(predictor.bundle.metadata, predictor.tasks)
    networks = {}
    if args.network in ("litert", "both"):
        start = time.perf_counter()
        networks["litert"] = backends.LiteNetwork(predictor)
        print(f"  LiteRT network ready (the bundle's own file, once per model): {time.perf_counter() - start:.1f} s")
    if args.network in ("keras", "both"):
        live.warm_up(predictor)
        networks["keras"] = predictor.predict_faces

    print(
        f"{'network':8} | {'back to back':>12} {'ms/frame':>9} {'p90':>6} {'face':>5} | "
        f"camera {args.camera_fps:.0f} fps: {'labelled/s':>10} {'dropped':>8} {'delay':>7} {'p90':>6} {'late':>6}"
    )
    results = {}
    for name, network in networks.items():
        processor = live.LiveProcessor(predictor, minimum, network=network, mirror=True)
        fast = back_to_back(processor, clip, args.seconds)
        real = camera(processor, clip, args.seconds, args.camera_fps)
        results[name] = fast["fps"]
        print(
            f"{name:8} | {fast['fps']:9.1f} fps {fast['median_ms']:6.1f} ms {fast['p90_ms']:5.1f} {fast['found']:5.0%} | "
            f"{'':>17}{real['fps']:10.1f} {real['dropped']:8.0%} {real['delay_median_ms']:5.0f} ms "
            f"{real['delay_p90_ms']:5.0f} {real['delay_last_s_ms']:5.0f}"
        )
    print("  (face: frames in which the one face was found; delay: capture -> labelled picture, median, 90th")
    print("   percentile, and median over the last fifth of the run: flat when frames are dropped, not queued)")
    # The page refreshes its panel every LIVE_REFRESH_S; each refresh is a script run, which Streamlit ends with a
    # full garbage collection unless runner.postScriptGC is off (.streamlit/config.toml). With TensorFlow in the
    # process (the Keras model loaded, as after a visit to Evaluate) that collection holds the GIL for long.
    print("longest gap between labelled frames, camera at the same rate, the panel refreshing every 2 s:")
    for collect in (True, False):
        processor = live.LiveProcessor(predictor, minimum, network=next(iter(networks.values())), mirror=True)
        real = camera(processor, clip, args.seconds, args.camera_fps, refresh_s=2.0, collect=collect)
        how = "full GC after each run (Streamlit's default)" if collect else "no post-run GC (this app's setting)"
        print(f"  {how:46} {real['gap_max_ms']:6.0f} ms longest, {real['gap_median_ms']:4.0f} ms median")
    best = max(results.values())
    verdict = "met" if best >= TARGET_FPS else "NOT met"
    print(f"target >= {TARGET_FPS:.0f} processed frames per second at {w}x{h}: {verdict} ({best:.1f})")
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
