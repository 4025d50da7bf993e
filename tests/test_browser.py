"""The app in a real headless Chromium (Playwright, sync API): a `streamlit run` server started here, a real face
photo uploaded on Predict, a file that is not a photo, and the Evaluate and Train pages. Screenshots are saved to
$MTFER_SCREENSHOTS (default: tmp_path/screenshots).

Needs Debian's /usr/bin/chromium (never `playwright install`): without it the tests skip, or fail when
MTFER_REQUIRE_BROWSER=1 (CI)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import wait_healthy

from mtfer.core import bundles, faces, preprocess

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 2400}  # tall: Streamlit scrolls inside its own container, not the page
SERVER_START_S = 120  # import of streamlit + first page on a busy 2-core machine
PAGE_S = 60  # a page's h1 after navigation
PREDICT_S = 120  # first prediction: TensorFlow import + Predictor load + Haar detection
TITLES = {
    "": "Reading faces: emotion, gender, race and age",
    "predict": "Predict",
    "evaluate": "Evaluate",
    "train": "Train",
}
UPLOAD_INPUT = '[data-testid="stFileUploaderDropzoneInput"]'
# An answer is "Happy (87%)" or "not sure (Sad 28% or Angry 21%)" (race: "other / not sure (...)").
ANSWER = r"(?:\w[\w +-]* \(\d+%\)|(?:other / )?not sure \(.+ \d+% or .+ \d+%\))"
FACE_LINE = re.compile(rf"Face 1:\s*Emotion: {ANSWER} · Gender: {ANSWER} · Race: {ANSWER} · Age group: {ANSWER}")


def _require_browser() -> None:
    reason = ""
    if not CHROMIUM.is_file():
        reason = f"{CHROMIUM} not found (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "the playwright package is not installed (pip install -e '.[test]')"
    if reason:
        if os.environ.get("MTFER_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test required (MTFER_REQUIRE_BROWSER=1) but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module", autouse=True)
def _browser_available() -> None:
    _require_browser()


# --- data made here -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def face_photo(shared_data: Path, model_path: Path, tmp_path_factory) -> Path:
    """A 'photo' made from a real UTKFace chip: the 200x200 chip padded onto a larger grey canvas, saved as JPEG in
    tmp. The first of a fixed set of chips in which the app's own detector finds a face is used."""
    chips = sorted((shared_data / "utkface" / "UTKFace").glob("*.jpg"))
    if not chips:
        pytest.skip(f"no UTKFace chips under {shared_data / 'utkface' / 'UTKFace'}")
    out = tmp_path_factory.mktemp("photos") / "face.jpg"
    for chip in chips[:: max(1, len(chips) // 40)][:40]:
        image = cv2.imread(str(chip))
        if image is None:
            continue
        photo = cv2.copyMakeBorder(image, 120, 160, 220, 260, cv2.BORDER_CONSTANT, value=(190, 195, 200))
        if faces.find_faces(photo, _model_config(model_path)):  # the detector settings of the model the app uses
            cv2.imwrite(str(out), photo, [cv2.IMWRITE_JPEG_QUALITY, 92])
            return out
    pytest.fail("the face detector found no face in 40 padded UTKFace chips")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """The shipped models/default when it is complete, else a tiny run trained here in seconds."""
    default = Path(bundles.DEFAULT_BUNDLE)
    default = default if default.is_absolute() else REPO / default
    if (default / bundles.METADATA_FILE).is_file() and (default / bundles.MODEL_FILE).is_file():
        return default
    from helpers import tiny_run

    return tiny_run(tmp_path_factory.mktemp("model") / "tiny")


def _model_config(model_path: Path) -> preprocess.PreprocessConfig:
    return preprocess.PreprocessConfig.from_dict(
        json.loads((model_path / bundles.METADATA_FILE).read_text())["preprocessing"]
    )


@pytest.fixture(scope="module")
def demo_photos(shared_data: Path, model_path: Path, tmp_path_factory) -> dict[str, Path]:
    """Two demo photos made from real UTKFace chips, in which the model's own detector finds every face:
    'big-face' (one face enlarged to fill a 900x900 photo) and 'group' (four small faces, 120 px, on a 1000x600
    gradient)."""
    config = _model_config(model_path)
    chips = sorted((shared_data / "utkface" / "UTKFace").glob("*.jpg"))
    if not chips:
        pytest.skip(f"no UTKFace chips under {shared_data / 'utkface' / 'UTKFace'}")
    folder = tmp_path_factory.mktemp("demo-photos")
    out = {"big-face": folder / "big-face.jpg", "group": folder / "group.jpg"}
    sample = chips[:: max(1, len(chips) // 300)][:300]
    for chip in sample:
        image = cv2.imread(str(chip))
        big = None if image is None else cv2.resize(image, (900, 900), interpolation=cv2.INTER_CUBIC)
        found = [] if big is None else faces.find_faces(big, config)
        if len(found) == 1 and found[0].box[2] > 600:
            cv2.imwrite(str(out["big-face"]), big, [cv2.IMWRITE_JPEG_QUALITY, 92])
            break
    else:
        pytest.fail("no UTKFace chip gave a face filling a 900x900 photo")
    group = np.empty((600, 1000, 3), np.uint8)
    group[:] = np.linspace(140, 210, 1000, dtype=np.uint8)[None, :, None]
    placed = 0
    for chip in reversed(sample):
        image = cv2.imread(str(chip))
        if image is None:
            continue
        small = cv2.resize(image, (120, 120), interpolation=cv2.INTER_AREA)
        alone = cv2.copyMakeBorder(small, 80, 80, 80, 80, cv2.BORDER_CONSTANT, value=(180, 180, 180))
        if len(faces.find_faces(alone, config)) == 1:
            x, y = 70 + placed * 230, 220 + (placed % 2) * 50
            group[y : y + 120, x : x + 120] = small
            placed += 1
            if placed == 4:
                break
    if placed < 4 or len(faces.find_faces(group, config)) != 4:
        pytest.fail("could not make a photo of four small faces that the detector finds")
    cv2.imwrite(str(out["group"]), group, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return out


# --- the server -----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self, tail: int = 8000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:] if self.log_path.exists() else ""

    @contextlib.contextmanager
    def log_on_failure(self) -> Iterator[None]:
        """Prints the server's log when the block fails (pytest shows captured output of failed tests only)."""
        try:
            yield
        except Exception:
            print(f"--- streamlit server log ({self.log_path}) ---\n{self.log()}")
            raise


@pytest.fixture(scope="module")
def server(model_path: Path, tmp_path_factory) -> Iterator[Server]:
    """`streamlit run app.py` on a free port, with runs, data roots and cache in tmp; terminated at the end."""
    from helpers import write_utkface_tree

    tmp = tmp_path_factory.mktemp("server")
    data = write_utkface_tree(tmp / "data", n=24)  # so the Train page has a data set to offer
    env = {
        **os.environ,
        "MTFER_RUNS": str(tmp / "runs"),
        "MTFER_DATA_ROOTS": str(data),
        "MTFER_CACHE": str(tmp / "cache"),
        "MTFER_MODEL": str(model_path),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    port = free_port()
    log_path = tmp / "streamlit.log"
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)]
    command += ["--server.headless", "true", "--browser.gatherUsageStats", "false"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(f"http://localhost:{port}", process, log_path)
    try:
        with server.log_on_failure():
            wait_healthy(server.url, process, SERVER_START_S)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


# --- the browser ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(server: Server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("MTFER_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Tab:
    """A page in a fresh browser context, with the errors it raised."""

    page: object
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)


@pytest.fixture()
def tab(browser, server: Server) -> Iterator[Tab]:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    tab = Tab(page)
    page.on("pageerror", lambda error: tab.page_errors.append(str(error)))

    def on_console(message) -> None:
        # A deep link makes Streamlit ask /<page>/_stcore/health first and get a 404: harmless.
        if message.type == "error" and "Failed to load resource" not in message.text:
            tab.console_errors.append(message.text)

    page.on("console", on_console)
    yield tab
    context.close()


def open_page(tab: Tab, server: Server, path: str) -> None:
    """Opens /<path> and waits for its h1 and for the script run to finish."""
    from playwright.sync_api import expect

    tab.page.goto(f"{server.url}/{path}", wait_until="domcontentloaded")
    expect(tab.page.get_by_role("heading", level=1, name=TITLES[path], exact=True)).to_be_visible(timeout=PAGE_S * 1000)
    wait_idle(tab)


def wait_idle(tab: Tab, timeout_s: float = PREDICT_S) -> None:
    """Waits until the app is connected, its script run has finished (the states Streamlit's root element
    publishes for its own end-to-end tests), no element is stale (greyed out) and no widget still shows its
    loading skeleton (the widget's code is fetched lazily)."""
    from playwright.sync_api import expect

    app = tab.page.get_by_test_id("stApp")
    expect(app).to_have_attribute("data-test-connection-state", "CONNECTED", timeout=timeout_s * 1000)
    expect(app).to_have_attribute("data-test-script-state", "notRunning", timeout=timeout_s * 1000)
    expect(tab.page.locator('[data-stale="true"]')).to_have_count(0, timeout=timeout_s * 1000)
    expect(tab.page.get_by_test_id("stSkeleton")).to_have_count(0, timeout=timeout_s * 1000)


def assert_healthy(tab: Tab) -> None:
    """No JavaScript exception in the page and no Streamlit exception box."""
    from playwright.sync_api import expect

    assert not tab.page_errors, f"page errors: {tab.page_errors}"
    expect(tab.page.get_by_test_id("stException")).to_have_count(0)
    if tab.console_errors:
        print("console errors (not failing the test):", *tab.console_errors, sep="\n  ")


def upload(tab: Tab, *paths: Path) -> None:
    tab.page.locator(UPLOAD_INPUT).set_input_files([str(p) for p in paths])


# --- tests ----------------------------------------------------------------------------------------------------


def test_predict_shows_all_four_labels_for_a_real_face(server, tab, face_photo, screenshots):
    from playwright.sync_api import expect

    with server.log_on_failure():
        open_page(tab, server, "predict")
        expect(tab.page.get_by_text(re.compile(r"^Upload photos \(jpg, png, "))).to_be_visible()
        upload(tab, face_photo)
        line = tab.page.locator("p", has_text="Face 1:")
        # an exception box ends the wait at once instead of after the timeout
        expect(line.or_(tab.page.get_by_test_id("stException")).first).to_be_visible(timeout=PREDICT_S * 1000)
        wait_idle(tab)
        assert_healthy(tab)
        text = line.first.inner_text()
        for label in ("Emotion:", "Gender:", "Race:", "Age group:"):
            assert label in text, f"{label!r} missing from {text!r}"
        assert FACE_LINE.search(text), text
        # the photo with its box, what the network saw, and one probability chart per task
        expect(tab.page.get_by_text("1 face found")).to_be_visible()
        expect(tab.page.get_by_test_id("stPlotlyChart")).to_have_count(4, timeout=PAGE_S * 1000)
        expect(tab.page.get_by_role("button", name="Download CSV")).to_be_visible()
        assert_healthy(tab)
        tab.page.screenshot(path=str(screenshots / "predict.png"))


@pytest.mark.parametrize(("photo", "count"), [("big-face", 1), ("group", 4)])
def test_predict_labels_sit_outside_the_faces_in_words_for_people(server, tab, demo_photos, screenshots, photo, count):
    """A face filling the photo and a group of four small faces: every face gets its answers in people's words, the
    page explains "not sure" and the three race groups, and no model identifier or log line reaches the page.
    Screenshots of the labelled photo and the whole page are saved for a person to look at."""
    from playwright.sync_api import expect

    with server.log_on_failure():
        open_page(tab, server, "predict")
        upload(tab, demo_photos[photo])
        last = tab.page.locator("p", has_text=f"Face {count}:")
        expect(last.or_(tab.page.get_by_test_id("stException")).first).to_be_visible(timeout=PREDICT_S * 1000)
        wait_idle(tab)
        assert_healthy(tab)
        expect(tab.page.get_by_text(f"{count} face{'s' if count > 1 else ''} found", exact=True)).to_be_visible()
        expect(tab.page.locator("p", has_text="Face 1:")).to_have_count(1)
        expect(tab.page.get_by_text("three groups only", exact=False)).to_be_visible()
        expect(tab.page.get_by_test_id("stPlotlyChart")).to_have_count(4 * count, timeout=PAGE_S * 1000)
        text = tab.page.get_by_test_id("stMain").inner_text()
        for raw in ("african_american", "Unsure", "WARNING", "Traceback", "tensorflow", "network saw"):
            assert raw not in text, f"{raw!r} shown on the page"
        tab.page.get_by_test_id("stImage").first.screenshot(path=str(screenshots / f"predict_{photo}_photo.png"))
        tab.page.screenshot(path=str(screenshots / f"predict_{photo}.png"), full_page=True)


def test_a_file_that_is_not_a_photo_gets_a_friendly_error_and_the_page_keeps_working(
    server, tab, face_photo, screenshots, tmp_path
):
    from playwright.sync_api import expect

    fake = tmp_path / "photo.jpg"
    fake.write_bytes(b"This is a text file with a .jpg name, not a photo.\n" * 20)
    with server.log_on_failure():
        open_page(tab, server, "predict")
        upload(tab, fake)
        error = tab.page.get_by_test_id("stAlert").filter(has_text="is not a photo this app can read")
        expect(error).to_be_visible(timeout=PREDICT_S * 1000)
        expect(error).to_contain_text("photo.jpg")
        wait_idle(tab)
        assert_healthy(tab)
        # The bad file loses nothing: a real photo uploaded next to it is read, and the error stays beside it.
        upload(tab, face_photo)
        expect(tab.page.locator("p", has_text="Face 1:")).to_be_visible(timeout=PREDICT_S * 1000)
        wait_idle(tab)
        expect(error).to_be_visible()
        assert_healthy(tab)
        tab.page.screenshot(path=str(screenshots / "predict-not-a-photo.png"))


@pytest.mark.parametrize(
    ("path", "landmark"),
    [
        ("", "The model in use"),
        ("evaluate", "Model or run"),
        ("train", "New training run"),
    ],
)
def test_other_pages_open_without_errors(server, tab, screenshots, path, landmark):
    from playwright.sync_api import expect

    with server.log_on_failure():
        open_page(tab, server, path)
        expect(tab.page.get_by_text(landmark).first).to_be_visible(timeout=PAGE_S * 1000)
        assert_healthy(tab)
        tab.page.screenshot(path=str(screenshots / f"{path or 'home'}.png"))
