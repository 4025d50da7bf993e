"""Load: many concurrent browser sessions against one `streamlit run` server, each uploading several photos.

    python benchmarks/load_sessions.py [--data ../shared/data] [--sessions 10] [--photos 3] [--rounds 1]

Starts the app on a free port (runs, data roots and cache in a temporary folder), opens --sessions browser contexts
at once in one headless Chromium (/usr/bin/chromium), and in each one uploads --photos photos one after another on
the Predict page, waiting for every photo's "Face 1:" line. The photos are made at run time from UTKFace chips
(padded onto a larger canvas); by default every session gets its own variants (another background shade, so other
bytes) so that no session is served from another's prediction cache. --rounds repeats the whole wave with fresh
sessions and fresh photos: a server whose memory is bounded peaks at about the same RSS in every round.

Prints, per session: seconds to open the page, seconds per upload, total seconds, faces found and errors (page
exceptions, Streamlit exception boxes, timeouts); then the server's RSS (its process and children, polled
every 0.2 s) at start, its peak per round and at the end. Exits with status 1 when any session failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' helpers: tiny models, waiting for the server

from helpers import wait_healthy  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
UPLOAD_INPUT = '[data-testid="stFileUploaderDropzoneInput"]'


# --- photos ---------------------------------------------------------------------------------------------------


def pick_chips(data_root: Path, count: int, tries: int = 60) -> list[Path]:
    """`count` UTKFace chips (spread over the sorted listing) in which the app's detector finds a face once the
    chip is padded onto a larger canvas, on the darkest, a middle and the lightest background shade used."""
    from mtfer.core import faces

    chips = sorted((data_root / "utkface" / "UTKFace").glob("*.jpg"))
    if not chips:
        raise SystemExit(f"no UTKFace chips under {data_root / 'utkface' / 'UTKFace'} (give --data)")
    picked = []
    for chip in chips[:: max(1, len(chips) // tries)]:
        image = cv2.imread(str(chip))
        if image is not None and all(faces.find_faces(pad(image, shade)) for shade in (120, 170, 219)):
            picked.append(chip)
            if len(picked) == count:
                return picked
    raise SystemExit(f"only {len(picked)} of {count} padded UTKFace chips had a face the detector finds")


def pad(chip, shade: int):
    """A 200x200 chip on a larger plain canvas: a 'photo' with background around the face."""
    return cv2.copyMakeBorder(chip, 120, 160, 220, 260, cv2.BORDER_CONSTANT, value=(shade, shade + 5, shade + 10))


def make_photos(chips: list[Path], folder: Path, variant: int) -> list[Path]:
    """JPEG photos of the chips; `variant` picks the background shade, so each variant has other bytes."""
    paths = []
    for k, chip in enumerate(chips):
        path = folder / f"v{variant}-photo{k + 1}.jpg"
        cv2.imwrite(str(path), pad(cv2.imread(str(chip)), 120 + variant % 100), [cv2.IMWRITE_JPEG_QUALITY, 92])
        paths.append(path)
    return paths


# --- the server and its memory --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_model() -> Path:
    """$MTFER_MODEL, else models/default when complete, else a tiny model trained now on random faces."""
    from mtfer.core import bundles

    if os.environ.get("MTFER_MODEL"):
        return Path(os.environ["MTFER_MODEL"])
    bundle = Path(bundles.DEFAULT_BUNDLE)
    if (bundle / bundles.MODEL_FILE).is_file() and (bundle / bundles.METADATA_FILE).is_file():
        return bundle
    print("models/default has no bundle yet: training a tiny model on random faces (tests/helpers.py) ...")
    from helpers import tiny_run

    return tiny_run(Path(tempfile.mkdtemp(prefix="mtfer-load-")) / "tiny")


def start_server(model: Path, tmp: Path, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "MTFER_RUNS": str(tmp / "runs"),
        "MTFER_DATA_ROOTS": str(tmp / "data"),
        "MTFER_CACHE": str(tmp / "cache"),
        "MTFER_MODEL": str(model),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)]
    command += ["--server.headless", "true", "--browser.gatherUsageStats", "false"]
    log = open(tmp / "streamlit.log", "wb")  # noqa: SIM115 (kept open for the server's lifetime)
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants (VmRSS), in MiB."""
    total_kib = 0
    for p in _descendants(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
        except OSError:
            pass
    return total_kib / 1024


class RssMonitor:
    """Polls a process tree's RSS every `interval` s in a thread; `peak()` is the highest since the last `reset()`."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval, self._peak = pid, interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, rss_mib(self.pid))

    def reset(self) -> None:
        self._peak = rss_mib(self.pid)

    def peak(self) -> float:
        return max(self._peak, rss_mib(self.pid))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# --- sessions -------------------------------------------------------------------------------------------------


@dataclass
class SessionResult:
    name: str
    open_s: float = float("nan")
    upload_s: list[float] = field(default_factory=list)
    total_s: float = float("nan")
    faces: int = 0
    errors: list[str] = field(default_factory=list)


async def wait_idle(page, timeout_ms: float) -> None:
    """Connected, script run finished, nothing stale, no widget still loading (Streamlit's own test states)."""
    from playwright.async_api import expect

    app = page.get_by_test_id("stApp")
    await expect(app).to_have_attribute("data-test-connection-state", "CONNECTED", timeout=timeout_ms)
    await expect(app).to_have_attribute("data-test-script-state", "notRunning", timeout=timeout_ms)
    await expect(page.locator('[data-stale="true"]')).to_have_count(0, timeout=timeout_ms)
    await expect(page.get_by_test_id("stSkeleton")).to_have_count(0, timeout=timeout_ms)


async def run_session(browser, url: str, name: str, photos: list[Path], timeout_s: float) -> SessionResult:
    from playwright.async_api import expect

    result = SessionResult(name)
    timeout_ms = timeout_s * 1000
    context = await browser.new_context(viewport={"width": 1280, "height": 1600})
    page = await context.new_page()
    page.on("pageerror", lambda error: result.errors.append(f"page error: {error}"))
    start = time.perf_counter()
    try:
        await page.goto(f"{url}/predict", wait_until="domcontentloaded", timeout=timeout_ms)
        heading = page.get_by_role("heading", level=1, name="Predict", exact=True)
        await expect(heading).to_be_visible(timeout=timeout_ms)
        await wait_idle(page, timeout_ms)
        result.open_s = time.perf_counter() - start
        face_lines = page.locator("p", has_text="Face 1:")
        exceptions = page.get_by_test_id("stException")
        no_face = page.get_by_text("No face was found in this photo")
        for k, photo in enumerate(photos, start=1):
            t = time.perf_counter()
            await page.locator(UPLOAD_INPUT).set_input_files(str(photo))  # adds to the files uploaded so far
            done = face_lines.nth(k - 1).or_(exceptions.first).or_(no_face.first)
            await expect(done).to_be_visible(timeout=timeout_ms)
            await wait_idle(page, timeout_ms)
            result.upload_s.append(time.perf_counter() - t)
            if await exceptions.count() or await no_face.count():
                break
        result.faces = await face_lines.count()
        if await exceptions.count():
            result.errors.append(f"Streamlit exception: {(await exceptions.first.inner_text())[:300]}")
        elif await no_face.count():
            result.errors.append("a photo was shown with 'No face was found'")
        elif result.faces != len(photos):
            result.errors.append(f"{result.faces} 'Face 1:' lines for {len(photos)} photos")
    except Exception as error:  # a timeout or a closed page: recorded, the other sessions go on
        result.errors.append(f"{type(error).__name__}: {str(error).splitlines()[0][:300]}")
    result.total_s = time.perf_counter() - start
    await context.close()
    return result


async def run_round(url: str, photos: list[list[Path]], timeout_s: float, round_no: int) -> list[SessionResult]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            sessions = [
                run_session(browser, url, f"r{round_no}s{i + 1}", session_photos, timeout_s)
                for i, session_photos in enumerate(photos)
            ]
            return list(await asyncio.gather(*sessions))
        finally:
            await browser.close()


# --- report ---------------------------------------------------------------------------------------------------


def print_round(results: list[SessionResult], wall_s: float, peak: float) -> None:
    print(f"{'session':>8} {'open s':>7} {'uploads s':>24} {'total s':>8} {'faces':>5}  errors")
    for r in results:
        uploads = " ".join(f"{s:.1f}" for s in r.upload_s)
        errors = "; ".join(r.errors) or "-"
        print(f"{r.name:>8} {r.open_s:7.1f} {uploads:>24} {r.total_s:8.1f} {r.faces:5d}  {errors}")
    totals = [r.total_s for r in results]
    uploads = [s for r in results for s in r.upload_s]
    failed = sum(bool(r.errors) for r in results)
    print(
        f"round: {len(results)} sessions in {wall_s:.1f} s wall; session total median {statistics.median(totals):.1f} s,"
        f" max {max(totals):.1f} s; upload median {statistics.median(uploads) if uploads else float('nan'):.1f} s,"
        f" max {max(uploads, default=float('nan')):.1f} s; failed sessions {failed}; server peak RSS {peak:.0f} MiB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="data root with utkface/")
    parser.add_argument("--sessions", type=int, default=10, help="concurrent browser sessions per round")
    parser.add_argument("--photos", type=int, default=3, help="photos each session uploads, one after another")
    parser.add_argument("--rounds", type=int, default=1, help="waves of fresh sessions with fresh photos")
    parser.add_argument("--same-photos", action="store_true", help="every session uploads the same photo bytes")
    parser.add_argument("--timeout", type=float, default=600, help="seconds one step of a session may take")
    parser.add_argument("--model", type=Path, help="model bundle (default: $MTFER_MODEL, models/default, tiny)")
    args = parser.parse_args()
    if not Path(CHROMIUM).is_file():
        raise SystemExit(f"{CHROMIUM} not found (apt-get install chromium)")

    chips = pick_chips(args.data, args.photos)
    model = args.model or default_model()
    tmp = Path(tempfile.mkdtemp(prefix="mtfer-load-"))
    port = free_port()
    url = f"http://localhost:{port}"
    server = start_server(model, tmp, port)
    monitor = None
    failed = 0
    try:
        wait_healthy(url, server, 180)
        monitor = RssMonitor(server.pid)
        print(f"server pid {server.pid} at {url}, model {model}, log {tmp / 'streamlit.log'}")
        print(f"server RSS after start: {rss_mib(server.pid):.0f} MiB")
        for round_no in range(1, args.rounds + 1):
            photos = []
            for i in range(args.sessions):
                variant = 0 if args.same_photos else (round_no - 1) * args.sessions + i
                folder = tmp / "photos" / f"v{variant}"
                folder.mkdir(parents=True, exist_ok=True)
                photos.append(make_photos(chips, folder, variant))
            monitor.reset()
            print(f"\nround {round_no}: {args.sessions} sessions x {args.photos} photos")
            start = time.perf_counter()
            results = asyncio.run(run_round(url, photos, args.timeout, round_no))
            print_round(results, time.perf_counter() - start, monitor.peak())
            failed += sum(bool(r.errors) for r in results)
        print(f"\nserver RSS at the end: {rss_mib(server.pid):.0f} MiB")
        if server.poll() is not None:
            print(f"the server died (exit code {server.returncode})")
            failed += 1
    finally:
        if monitor is not None:
            monitor.stop()
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if failed:
        print(f"kept for a look: {tmp} (server log: {tmp / 'streamlit.log'})")
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    if model.name == "tiny" and model.parent.name.startswith("mtfer-load-"):
        shutil.rmtree(model.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
