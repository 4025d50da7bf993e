"""Live camera in a real headless Chromium: the browser's fake camera plays a clip made from a real UTKFace photo
(--use-fake-device-for-media-stream --use-file-for-fake-video-capture=clip.y4m, permission granted), the Predict
page's Live mode streams it over WebRTC to the `streamlit run` server (no STUN server: host candidates on
localhost), and the video that comes back shows the face boxed and labelled; the page's caption names the face's
answers; Save gives the timeline CSV. A browser that blocks the camera gets the page's notice. Screenshots go to
$MTFER_SCREENSHOTS (default: tmp).

Needs Debian's /usr/bin/chromium and the real data sets (../shared/data/utkface); skips otherwise (see
tests/test_browser.py, whose server, browser checks and helpers are reused)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import cv2
import pytest
from test_browser import (  # noqa: F401  (fixtures: the server, the model, the browser check, screenshots)
    CHROMIUM,
    LAUNCH_ARGS,
    PAGE_S,
    VIEWPORT,
    Tab,
    _browser_available,
    _model_config,
    assert_healthy,
    model_path,
    open_page,
    screenshots,
    server,
)

from mtfer.core import bundles, faces
from mtfer.media import draw, live
from mtfer.media.tables import table_columns

pytestmark = pytest.mark.browser

LIVE_S = 240  # the model converted for live video, the WebRTC connection and the first labelled frames, busy machine
FAKE_CAMERA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
LABEL_RGB = tuple(reversed(draw.box_color(1)))  # the first face's box and label colour, as the video shows it
# "Live · 1 face · Happy 87% · Male 80% · Caucasian 70% · 70+ years 98% · 12 frames/s" (the emotion may be unsure)
CAPTION = re.compile(r"Live · 1 face · (?:(\w+) \d+%|Emotion: (not sure)) · .+ · [\d.]+ frames/s")
EMOTIONS = {"Surprise", "Fear", "Disgust", "Happy", "Sad", "Angry", "Neutral", "not sure"}

# The <video> inside the component's iframe drawn into a canvas: how many pixels have the label's colour.
COUNT_LABEL_PIXELS = """([r, g, b, tolerance, needed]) => {
    const video = document.querySelector('video');
    if (!video || video.readyState < 2 || !video.videoWidth) return null;
    const canvas = document.createElement('canvas');
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    const context = canvas.getContext('2d');
    context.drawImage(video, 0, 0);
    const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
    let count = 0;
    for (let i = 0; i < data.length; i += 4) {
        if (Math.abs(data[i] - r) < tolerance && Math.abs(data[i + 1] - g) < tolerance
            && Math.abs(data[i + 2] - b) < tolerance) count++;
    }
    return count >= needed ? {width: canvas.width, height: canvas.height, count: count} : null;
}"""


@pytest.fixture(scope="module")
def camera_clip(shared_data: Path, model_path: Path, tmp_path_factory) -> Path:  # noqa: F811
    """A 2-second 640x480 Y4M clip at 15 frames per second: a real UTKFace face drifting left and right, the first
    of a fixed sample of chips in which the model's detector finds exactly one face in the clip's frames."""
    chips = sorted((shared_data / "utkface" / "UTKFace").glob("*.jpg"))
    if not chips:
        pytest.skip(f"no UTKFace chips under {shared_data / 'utkface' / 'UTKFace'}: the fake camera needs a real face")
    config = _model_config(model_path)
    for chip in chips[:: max(1, len(chips) // 40)][:40]:
        image = cv2.imread(str(chip))
        if image is None:
            continue
        frames = live.moving_face_clip(image, frames=30)
        if all(len(faces.find_faces(frames[i], config)) == 1 for i in (0, 8, 15, 23)):
            path = tmp_path_factory.mktemp("camera") / "face.y4m"
            live.write_y4m(path, frames, fps=15)
            return path
    pytest.fail("the face detector did not find one face in every sampled frame of 40 UTKFace clips")


@pytest.fixture(scope="module")
def chromium(server):  # noqa: F811
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p.chromium
        # browsers launched by the tests are closed by them


START = re.compile(r"\bStart$")  # the page's own buttons (in the app's style; the icon's name comes first)
STOP = re.compile(r"\bStop$")


def _open_live(tab: Tab, server) -> object:  # noqa: F811
    """Opens Predict, switches Live camera on; returns the WebRTC component's iframe once the page's Start is shown
    (the component's own all-capitals buttons are not: the page drives it)."""
    from playwright.sync_api import expect

    open_page(tab, server, "predict")
    tab.page.get_by_text("Live camera", exact=True).click()
    expect(tab.page.get_by_role("button", name=START)).to_be_visible(timeout=LIVE_S * 1000)
    expect(tab.page.locator('iframe[title*="webrtc"]')).to_be_attached(timeout=LIVE_S * 1000)
    component = tab.page.frame_locator('iframe[title*="webrtc"]')
    expect(component.get_by_role("button", name=re.compile("^start$", re.IGNORECASE))).to_have_count(0)
    expect(tab.page.get_by_text("Live or snapshot?")).to_be_visible()
    return component


def test_live_camera_labels_a_real_face_in_the_returned_stream(
    server,  # noqa: F811
    model_path,  # noqa: F811
    chromium,
    camera_clip,
    screenshots,  # noqa: F811
    tmp_path,
):
    from playwright.sync_api import expect

    browser = chromium.launch(
        executable_path=str(CHROMIUM),
        headless=True,
        args=[*LAUNCH_ARGS, *FAKE_CAMERA, f"--use-file-for-fake-video-capture={camera_clip}"],
    )
    context = browser.new_context(viewport=VIEWPORT, permissions=["camera"], accept_downloads=True)
    page = context.new_page()
    tab = Tab(page)
    page.on("pageerror", lambda error: tab.page_errors.append(str(error)))
    try:
        with server.log_on_failure():
            _open_live(tab, server)
            page.screenshot(path=str(screenshots / "live-before-start.png"))
            page.get_by_role("button", name=START).click()

            # the page's live caption: one face and its answers, refreshed while the stream runs
            caption = page.get_by_text(CAPTION)
            expect(caption.or_(page.get_by_test_id("stException")).first).to_be_visible(timeout=LIVE_S * 1000)
            assert_healthy(tab)
            found = CAPTION.search(caption.inner_text())
            assert (found.group(1) or found.group(2)) in EMOTIONS, found.group(0)

            # the stream that comes back from the server: the face's box and label block, in the label's colour
            frame = page.locator('iframe[title*="webrtc"]').element_handle().content_frame()
            drawn = frame.wait_for_function(
                COUNT_LABEL_PIXELS, arg=[*LABEL_RGB, 45, 1500], polling=500, timeout=LIVE_S * 1000
            ).json_value()
            assert (drawn["width"], drawn["height"]) == (640, 480), drawn
            expect(page.get_by_text("The face in view")).to_be_visible()
            expect(page.get_by_test_id("stMetric")).to_have_count(4)
            page.screenshot(path=str(screenshots / "live.png"))
            assert tab.page_errors == [], tab.page_errors

            # Record: the last seconds as the video timeline's CSV
            page.get_by_role("button", name="Save the last 30 seconds").click()
            download_button = page.get_by_role("button", name="Download the timeline (CSV)")
            expect(download_button).to_be_visible(timeout=PAGE_S * 1000)
            expect(page.get_by_text(re.compile(r"^Saved: \d+ labelled frames over"))).to_be_visible()
            with page.expect_download() as download:
                download_button.click()
            path = tmp_path / "live.csv"
            download.value.save_as(path)
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            classes = json.loads((model_path / bundles.METADATA_FILE).read_text())["tasks"]
            assert rows and list(rows[0]) == table_columns(classes, video=True)
            assert {r["source"] for r in rows} == {"camera"} and any(r["track"] for r in rows)

            # Stop: the stream ends, Start comes back, the last answers stay on the page
            page.get_by_role("button", name=STOP).click()
            expect(page.get_by_role("button", name=START)).to_be_visible(timeout=PAGE_S * 1000)
            expect(page.get_by_text(re.compile(r"^Stopped\. Last seen: Live · 1 face"))).to_be_visible(
                timeout=PAGE_S * 1000
            )
            assert_healthy(tab)
    finally:
        context.close()
        browser.close()


def test_live_camera_blocked_by_the_browser_says_what_to_do(server, chromium, screenshots):  # noqa: F811
    """No permission for the camera (a person who clicked Block): the page says how to allow it."""
    from playwright.sync_api import expect

    browser = chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=[*LAUNCH_ARGS, "--use-fake-device-for-media-stream"]
    )
    context = browser.new_context(viewport=VIEWPORT)  # camera permission not granted: the request is denied
    page = context.new_page()
    tab = Tab(page)
    page.on("pageerror", lambda error: tab.page_errors.append(str(error)))
    try:
        with server.log_on_failure():
            component = _open_live(tab, server)
            page.get_by_role("button", name=START).click()
            # the component shows the browser's own error; the page, right under it, says what to do
            expect(component.get_by_text(re.compile("NotAllowedError|Permission denied"))).to_be_visible(
                timeout=PAGE_S * 1000
            )
            expect(
                page.get_by_text(
                    re.compile(
                        r"^If the browser says Permission denied, or nothing happens after Start, it has blocked the camera"
                    )
                )
            ).to_be_visible()
            expect(page.get_by_role("button", name=STOP)).to_be_visible()  # Stop, then Start, tries again
            page.screenshot(path=str(screenshots / "live-blocked.png"))
            assert_healthy(tab)
    finally:
        context.close()
        browser.close()
