"""Seconds from nothing to four labels, in a fresh process each time: `mtfer predict PHOTO`, and the app (server up,
Predict page shown, photo uploaded -> labelled photo) driven by a headless Chromium.

    python benchmarks/cold_start.py PHOTO [--repeat 3] [--port 8599]

Run it on a quiet machine: the figures are wall-clock times and a busy machine stretches them. Needs Debian's
chromium (/usr/bin/chromium) for the app part; --cli-only skips it.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cli_seconds(photo: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "mtfer.cli", "predict", str(photo)], cwd=REPO, check=True, capture_output=True
    )
    return time.perf_counter() - start


def wait_until(check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError("gave up waiting")


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def app_seconds(photo: Path, port: int) -> tuple[float, float, float]:
    """(server up, Predict page ready, upload -> labelled photo) in seconds, from `streamlit run`."""
    from playwright.sync_api import sync_playwright

    url = f"http://localhost:{port}"
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "app.py",
        "--server.headless",
        "true",
        "--server.port",
        str(port),
    ]
    with sync_playwright() as p:  # the browser is started first: its own start-up is not the app's
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        start = time.perf_counter()
        server = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: healthy(url), 120)
            up = time.perf_counter() - start
            page.goto(f"{url}/predict")
            uploader = '[data-testid="stFileUploaderDropzoneInput"]'
            page.wait_for_selector(uploader, state="attached", timeout=120_000)
            shown = time.perf_counter() - start
            page.set_input_files(uploader, str(photo))
            page.get_by_text(re.compile(r"\d+ faces? found")).first.wait_for(timeout=120_000)  # the labelled photo
            labelled = time.perf_counter() - start
        finally:
            server.terminate()
            server.wait(30)
            browser.close()
    return up, shown - up, labelled - shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--port", type=int, default=8599)
    parser.add_argument("--cli-only", action="store_true")
    args = parser.parse_args()
    photo = args.photo.resolve()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    cli = [cli_seconds(photo) for _ in range(args.repeat)]
    print(f"mtfer predict {photo.name}, cold process: {statistics.median(cli):.2f} s median of {len(cli)}")
    if args.cli_only:
        return
    runs = [app_seconds(photo, args.port) for _ in range(args.repeat)]
    up, page, labels = (statistics.median(part) for part in zip(*runs, strict=True))
    print(f"app: server up {up:.1f} s + Predict page {page:.1f} s + upload to labels {labels:.1f} s")
    print(f"     = {up + page + labels:.1f} s from `streamlit run` to the first labelled photo (median of {len(runs)})")


if __name__ == "__main__":
    main()
