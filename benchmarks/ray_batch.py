"""Photos per second and peak memory of the Ray engine (1 and 2 actors) beside the one-process folder path.

    python benchmarks/ray_batch.py [--data ../shared/data] [--photos 400]

The photos are UTKFace test-split chips (200x200, one face each) in a temporary folder. Ray starts once (its start
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


def main() -> None:
    import ray

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--photos", type=int, default=400)
    args = parser.parse_args()
    chips = [p for p in sorted((args.data / "utkface" / "UTKFace").glob("*.jpg")) if hash_split(p.name) == "test"]
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        platform.processor(),
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for chip in chips[: args.photos]:
            shutil.copy(chip, folder / chip.name)
        print(f"{args.photos} photos (200x200, one face); {cpu}, {os.cpu_count()} cores\n")
        print("| engine | photos/s | seconds | peak memory |")
        print("| --- | --- | --- | --- |")
        with Peak() as peak:
            result = photos_to_csv(Predictor(), [folder], Path(tmp) / "local.csv")
        print(
            f"| one process (`--engine local`) | {result.photos_per_s:.1f} | {result.seconds:.1f} | {peak.peak:.0f} MB |"
        )
        start = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        started = time.perf_counter() - start
        for actors in (1, 2):
            with Peak() as peak:
                result = ray_batch.photos_to_table([folder], Path(tmp) / f"ray{actors}.csv", actors=actors)
            print(
                f"| Ray, {actors} actor{'s' if actors > 1 else ''} | {result.photos_per_s:.1f} | {result.seconds:.1f} | {peak.peak:.0f} MB |",
                flush=True,
            )
        ray.shutdown()
        print(f"\n(Ray's own start on this machine: {started:.1f} s, not in the rows above.)")


if __name__ == "__main__":
    main()
