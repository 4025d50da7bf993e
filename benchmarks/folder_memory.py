"""Peak memory and photos/s of `mtfer predict DIR --csv` on a small and a large folder: memory must stay flat.

    python benchmarks/folder_memory.py [--data ../shared/data/utkface] [--sizes 1000 10000]

Each size is a folder of that many real photos (symbolic links to UTKFace images in a temporary folder), run in its
own process through mtfer.media.folders.photos_to_csv with the shipped model; the script prints each run's peak resident
memory (the child's ru_maxrss) and photos/s, then the large run's peak memory over the small run's (1.0 = flat).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from mtfer.media.folders import photos_to_csv
from mtfer.core.inference import Predictor
result = photos_to_csv(Predictor(), [sys.argv[1]], sys.argv[2])
print(json.dumps({"photos": result.photos, "photos_per_s": result.photos_per_s}))
"""


def run(folder: Path, out: Path) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), str(out)], capture_output=True, text=True, check=True
    )
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # max over children so far: run small first
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["peak_mib"] = max(peak_kib, before) / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/utkface"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()
    photos = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if len(photos) < max(args.sizes):
        raise SystemExit(f"{args.data} holds {len(photos)} photos; --sizes asks for up to {max(args.sizes)}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sorted(args.sizes):  # ascending: ru_maxrss of children is a running maximum
            folder = Path(tmp) / f"photos-{size}"
            folder.mkdir()
            for k, photo in enumerate(photos[:size]):
                os.symlink(photo.resolve(), folder / f"{k:05d}{photo.suffix}")
            result = run(folder, Path(tmp) / f"faces-{size}.csv")
            results.append((size, result))
            print(f"{size:>6} photos: peak {result['peak_mib']:.0f} MiB, {result['photos_per_s']:.1f} photos/s")
    (small, first), (large, last) = results[0], results[-1]
    print(f"peak memory, {large} over {small} photos: {last['peak_mib'] / first['peak_mib']:.2f}x (1.00 = flat)")


if __name__ == "__main__":
    main()
