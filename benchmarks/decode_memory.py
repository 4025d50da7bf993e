"""Peak memory (RSS) of `mtfer predict PHOTO` in a fresh process for the costliest photos accepted: each kind at the
largest size the decoding budget lets through (mtfer.core.decoding: MAX_PIXELS and MAX_DECODED_BYTES).

    python benchmarks/decode_memory.py [--folder /tmp/mtfer-decode]

The photos are made first (plain grey, so the files are small: the cost is in the decoded pixels, which is the
point) and kept in --folder. Goal: every accepted photo under 1.5 GB peak. Linux (ru_maxrss in KB).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from mtfer.core import decoding

REPO = Path(__file__).resolve().parents[1]
GOAL_GB = 1.5

# name, file, dtype, channels, bytes per pixel as decoded
KINDS = [
    ("16-bit RGBA PNG", "rgba16.png", np.uint16, 4, 8),
    ("8-bit RGBA PNG", "rgba8.png", np.uint8, 4, 4),
    ("float TIFF (RGB)", "float.tif", np.float32, 3, 12),
    ("16-bit gray PNG", "gray16.png", np.uint16, 1, 2),
]


def side(bytes_per_pixel: int, compressed: bool) -> int:
    """The largest square that the caps let through (an uncompressed file also within MAX_FILE_BYTES)."""
    pixels = min(decoding.MAX_PIXELS, decoding.MAX_DECODED_BYTES // bytes_per_pixel)
    if not compressed:
        pixels = min(pixels, decoding.MAX_FILE_BYTES // bytes_per_pixel)
    return math.isqrt(pixels) - 2


def make(path: Path, dtype, channels: int, n: int) -> None:
    if path.exists():
        return
    value = 0.5 if dtype == np.float32 else np.iinfo(dtype).max // 2
    image = np.full((n, n, channels) if channels > 1 else (n, n), value, dtype)
    if not cv2.imwrite(str(path), image):
        raise SystemExit(f"OpenCV could not write {path}")


# Run in its own small parent, whose only child is `mtfer predict`: ru_maxrss of the children is then that one's.
_MEASURE = (
    "import resource, subprocess, sys; "
    "done = subprocess.run([sys.executable, '-m', 'mtfer.cli', 'predict', sys.argv[1]], capture_output=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, done.returncode)"
)


def peak_rss_gb(photo: Path) -> tuple[float, float, int]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(photo)], cwd=REPO, capture_output=True, text=True)
    kb, code = (int(v) for v in out.stdout.split())
    return kb / 1e6, time.perf_counter() - start, code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/mtfer-decode"))
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    print(f"caps: {decoding.MAX_PIXELS:,} pixels, {decoding.MAX_DECODED_BYTES / 1e6:,.0f} MB decoded")
    rows = []
    for name, file, dtype, channels, bpp in sorted(KINDS, key=lambda k: k[4]):
        n = side(bpp, compressed=file.endswith(".png"))
        path = args.folder / file
        make(path, dtype, channels, n)
        gb, seconds, code = peak_rss_gb(path)
        rows.append((name, n, path.stat().st_size / 1e6, gb, seconds, code))
        print(f"{name:18} {n}x{n}, file {rows[-1][2]:6.1f} MB: peak RSS {gb:4.2f} GB, {seconds:5.1f} s, exit {code}")
    worst = max(r[3] for r in rows)
    print(f"goal: every accepted photo under {GOAL_GB} GB: {'met' if worst < GOAL_GB else 'NOT met'} ({worst:.2f} GB)")


if __name__ == "__main__":
    main()
