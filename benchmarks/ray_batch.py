"""Photos per second and peak memory of the Ray engine (1 and 2 actors) beside the one-process folder path.

    python benchmarks/ray_batch.py [--data ../shared/data] [--photos 400]
    python benchmarks/ray_batch.py --videos 8      # a folder of videos instead: one video per actor call

The photos are UTKFace test-split chips (200x200, one face each) in a temporary folder; the videos (10 s of 640x360
at 10 frames/s, one of those faces moving across a grey room, analysed at 5 frames/s) are written there too. Ray starts once (its start
is printed apart); each run writes a fresh table. Peak memory is the largest sum of resident memory of this process
and every Ray process (sampled every 0.2 s from /proc).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import threading
import time
from pathlib import Path

from mtfer.core.inference import Predictor
from mtfer.datasets.base import hash_split
from mtfer.media.folders import photos_to_csv
from mtfer.media.video import VideoAnalysis
from mtfer.scale import ray_batch

REPO = Path(__file__).resolve().parents[1]


def resident_mb() -> float:
    """Resident memory of this process and every Ray process, in MB."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if int(pid) != os.getpid() and b"ray" not in cmdline:
                continue
            fields = Path(f"/proc/{pid}/statm").read_text().split()
            total += int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    return total / 2**20


class Peak:
    def __init__(self):
        self.peak, self.stop = 0.0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.peak = max(self.peak, resident_mb())

    def __enter__(self) -> Peak:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


def write_videos(chips: list[Path], folder: Path) -> list[Path]:
    import cv2
    import numpy as np

    paths = []
    for k, chip in enumerate(chips):
        path = folder / f"video{k:03d}.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (640, 360))
        face = cv2.resize(cv2.imread(str(chip)), (160, 160))
        for i in range(100):
            frame = np.full((360, 640, 3), 200, np.uint8)
            x = 20 + 4 * i
            frame[100:260, x : x + 160] = face
            writer.write(frame)
        writer.release()
        paths.append(path)
    return paths


def main() -> None:
    import ray

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--photos", type=int, default=400)
    parser.add_argument("--videos", type=int, default=0, help="benchmark this many videos instead of photos")
    args = parser.parse_args()
    chips = [p for p in sorted((args.data / "utkface" / "UTKFace").glob("*.jpg")) if hash_split(p.name) == "test"]
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        platform.processor(),
    )
    unit = "videos" if args.videos else "photos"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / unit
        folder.mkdir()
        if args.videos:
            files = write_videos(chips[: args.videos], folder)
            print(
                f"{args.videos} videos (10 s, 640x360, one face, analysed at 5 frames/s); {cpu}, {os.cpu_count()} cores\n"
            )
        else:
            for chip in chips[: args.photos]:
                shutil.copy(chip, folder / chip.name)
            print(f"{args.photos} photos (200x200, one face); {cpu}, {os.cpu_count()} cores\n")
        print(f"| engine | {unit}/s | seconds | peak memory |")
        print("| --- | --- | --- | --- |")
        with Peak() as peak:
            start = time.perf_counter()
            if args.videos:
                predictor = Predictor()
                for path in files:
                    VideoAnalysis(path, predictor, fps=5).complete()
                count = len(files)
            else:
                count = photos_to_csv(Predictor(), [folder], Path(tmp) / "local.csv").photos
            seconds = time.perf_counter() - start
        print(f"| one process (`--engine local`) | {count / seconds:.2f} | {seconds:.1f} | {peak.peak:.0f} MB |")
        start = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        started = time.perf_counter() - start
        for actors in (1, 2):
            out = Path(tmp) / f"ray{actors}.csv"
            with Peak() as peak:
                if args.videos:
                    result = ray_batch.videos_to_table([folder], out, fps=5, actors=actors)
                    count, seconds = result.videos, result.seconds
                else:
                    done = ray_batch.photos_to_table([folder], out, actors=actors)
                    count, seconds = done.photos, done.seconds
            print(
                f"| Ray, {actors} actor{'s' if actors > 1 else ''} | {count / seconds:.2f} | {seconds:.1f} | {peak.peak:.0f} MB |",
                flush=True,
            )
        ray.shutdown()
        print(f"\n(Ray's own start on this machine: {started:.1f} s, not in the rows above.)")


if __name__ == "__main__":
    main()
