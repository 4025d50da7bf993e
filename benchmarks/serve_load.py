"""Requests per second and latency of `mtfer serve` on loopback, at several concurrencies, beside `mtfer predict`.

    python benchmarks/serve_load.py [--data ../shared/data] [--requests 64] [--concurrency 1 4 16]

Starts `mtfer serve` on a free loopback port with the shipped model (queue large enough for the highest
concurrency), sends `--requests` photos at each concurrency (bounded loops: each worker sends its share, waits for
each answer), and prints requests/s and p50/p95 latency; then the same photos through one `mtfer predict` process
(photos/s, including its start). Twice: with the faces of concurrent requests sharing network calls (the default)
and with one network call per request (`--no-batching`). Photos: UTKFace test-split chips (the name hash), each with a margin, 1 face.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from mtfer.datasets.base import hash_split

REPO = Path(__file__).resolve().parents[1]


def photos(root: Path, n: int) -> list[bytes]:
    chips = [p for p in sorted((root / "utkface" / "UTKFace").glob("*.jpg")) if hash_split(p.name) == "test"][:n]
    return [
        cv2.imencode(".jpg", cv2.copyMakeBorder(cv2.imread(str(p)), 140, 140, 220, 220, cv2.BORDER_REPLICATE))[
            1
        ].tobytes()
        for p in chips
    ]


def post(url: str, data: bytes) -> float:
    start = time.perf_counter()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "image/jpeg"}, method="POST")
    with urllib.request.urlopen(request, timeout=300) as response:
        json.loads(response.read())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    images = photos(args.data, 16)
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        platform.processor(),
    )
    print(f"{cpu}, {os.cpu_count()} cores; {args.requests} requests per level, 1 face each (640x480-ish JPEG)\n")
    print("| network calls | concurrency | requests/s | p50 ms | p95 ms |")
    print("| --- | --- | --- | --- | --- |")
    for mode, flags in (
        ("shared by concurrent requests", []),
        ("one per request (`--no-batching`)", ["--no-batching"]),
    ):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        command = [sys.executable, "-m", "mtfer.cli", "serve", "--model", "default", "--port", str(port), *flags]
        server = subprocess.Popen(
            [*command, "--max-queue", str(max(args.concurrency))], cwd=REPO, stderr=subprocess.DEVNULL
        )
        url = f"http://127.0.0.1:{port}"
        try:
            while True:
                try:
                    urllib.request.urlopen(f"{url}/healthz", timeout=2).read()
                    break
                except OSError:
                    time.sleep(0.2)
            post(f"{url}/v1/predict", images[0])  # warm up
            for workers in args.concurrency:
                jobs = [images[i % len(images)] for i in range(args.requests)]
                start = time.perf_counter()
                with ThreadPoolExecutor(workers) as pool:
                    latencies = list(pool.map(lambda d, u=url: post(f"{u}/v1/predict", d), jobs))
                wall = time.perf_counter() - start
                p50, p95 = np.percentile(latencies, [50, 95]) * 1000
                print(f"| {mode} | {workers} | {len(jobs) / wall:.1f} | {p50:.0f} | {p95:.0f} |", flush=True)
        finally:
            server.terminate()
            server.wait(30)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i, data in enumerate(images):
            paths.append(Path(folder) / f"{i}.jpg")
            paths[-1].write_bytes(data)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mtfer.cli", "predict", "--model", "default", "--json", *map(str, paths)],
                       cwd=REPO, check=True, capture_output=True)  # fmt: skip
        wall = time.perf_counter() - start
    print(f"\n`mtfer predict` on the {len(images)} photos, one process: {len(images) / wall:.1f} photos/s "
          f"({wall:.2f} s including its start; median photo {statistics.median([len(d) for d in images]) // 1024} KB)")  # fmt: skip


if __name__ == "__main__":
    main()
