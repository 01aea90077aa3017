"""The browser page (runtime/serve/static) in a real browser: headless Chromium from the
system packages (Debian's ``chromium`` and ``chromium-driver``; ``.ci/run`` installs them)
driven by Selenium, against a real server on 127.0.0.1 (conftest's ``serve``: the app under
uvicorn) with tiny weights.

The page gets a short DAVIS clip as image files; masks are drawn with real pointer events
(a GrabCut box, brush, a second object, eraser); the masks that come back (the page's
downloaded zip) must equal ``stmae-segment`` on the same frames from the drawn mask, and
the canvas must show the overlay (its pixels read back). A screenshot is saved (also to
$STMAE_BROWSER_SCREENSHOT when set). Selenium Manager is never asked for a driver or a
browser (nothing is downloaded).
"""

from __future__ import annotations

import io
import os
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import offline_masks

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
TOKEN = "browser-test-token"
SIZE = (128, 72)  # the DAVIS 240p frames (427x240) made small: (width, height)


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.is_file():
            return f"{path} is absent: apt-get install chromium chromium-driver (.ci/run does) to run the browser test"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[dev]'"
    try:
        import runtime.serve.app  # noqa: F401
    except ImportError as exc:
        return f"runtime.serve's app is not importable yet ({exc})"
    return None


MISSING = _missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


# ---- the clip, the browser ---------------------------------------------------------------

def _clip(davis: Path, folder: Path, frames: int) -> tuple[Path, tuple[int, int, int, int]]:
    """The first ``frames`` bear frames at SIZE as PNG (lossless: the page and stmae-segment
    read the same pixels); returns (folder, the bear's box x0, y0, x1, y1 in frame 0)."""
    folder.mkdir()
    images = sorted((davis / "JPEGImages" / "240p" / "bear").glob("*.jpg"))[:frames]
    for path in images:
        Image.open(path).convert("RGB").resize(SIZE, Image.BILINEAR).save(folder / f"{path.stem}.png")
    truth = np.array(Image.open(davis / "Annotations" / "240p" / "bear" / "00000.png").convert("L")
                     .resize(SIZE, Image.NEAREST)) > 0
    ys, xs = np.nonzero(truth)
    return folder, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


@pytest.fixture()
def browser(tmp_path, monkeypatch):
    """Headless Chromium (the system's browser and driver; Selenium Manager must not run)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def no_downloads(*_args, **_kwargs):
        raise AssertionError("Selenium Manager was asked for a driver or browser (it would download one)")

    monkeypatch.setenv("SE_OFFLINE", "true")
    monkeypatch.setattr(SeleniumManager, "binary_paths", no_downloads)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,1100", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(30)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


# ---- driving the page --------------------------------------------------------------------

def wait_for(driver, condition, what: str, timeout: float = 60.0, refused_if_ready: bool = False):
    """Poll ``condition`` until it is true; fail at once when the page stopped ('failed'), or
    (``refused_if_ready``) fell back to 'ready' with a message: the server refused."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        state, message = driver.execute_script(
            "return [document.body.dataset.state, document.getElementById('message').textContent]")
        if state == "failed" or (refused_if_ready and state == "ready" and message) or time.monotonic() > deadline:
            value = condition()  # the page may have reached it between the two reads
            if value:
                return value
            raise AssertionError(f"gave up waiting for {what} (page state {state!r}, message {message!r})")
        time.sleep(0.05)


def page_state(driver) -> str:
    return driver.execute_script("return document.body.dataset.state")


def open_page(driver, url: str, frames: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    files = sorted(frames.glob("*.png"), reverse=True)  # the page puts them in name order
    driver.find_element(By.ID, "image-files").send_keys("\n".join(str(p) for p in files))
    wait_for(driver, lambda: page_state(driver) == "ready", "the first frame")


def choose(driver, element_id: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, element_id).click()


def stroke(driver, points, size: int | None = None) -> None:
    """Press, move through ``points`` (frame pixels) and release: real pointer events."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    if size is not None:
        driver.execute_script("const s = document.getElementById('brush-size'); s.value = arguments[0];"
                              "s.dispatchEvent(new Event('input'));", size)
    canvas = driver.find_element(By.ID, "view")
    width, height, css_w, css_h = driver.execute_script(
        "const c = document.getElementById('view'), r = c.getBoundingClientRect();"
        "return [c.width, c.height, r.width, r.height];")

    def offset(point):  # Selenium offsets are CSS pixels from the element's centre
        return (round((point[0] + 0.5) * css_w / width - css_w / 2), round((point[1] + 0.5) * css_h / height - css_h / 2))

    chain = ActionChains(driver, duration=15).move_to_element_with_offset(canvas, *offset(points[0])).click_and_hold()
    for point in points[1:]:
        chain = chain.move_to_element_with_offset(canvas, *offset(point))
    chain.release().perform()


def labels_on_page(driver) -> np.ndarray:
    width, height, labels = driver.execute_script(
        "const s = window.stmaePage.state; return [s.frame.width, s.frame.height, Array.from(s.labels)];")
    return np.array(labels, dtype=np.uint8).reshape(height, width)


def draw_first_mask(driver, box) -> np.ndarray:
    """Object 1: a GrabCut box around the bear, then a brush stroke on it; object 2: a brush
    stroke on the ground, then an eraser dab. Returns the mask the page holds."""
    x0, y0, x1, y1 = box
    choose(driver, "tool-box")
    stroke(driver, [(x0 - 2, y0 - 2), ((x0 + x1) // 2, (y0 + y1) // 2), (x1 + 1, y1 + 1)])
    wait_for(driver, lambda: "GrabCut proposal" in driver.find_element("id", "state").text, "the GrabCut proposal")
    proposal = labels_on_page(driver)
    assert proposal[y0:y1, x0:x1].sum() > 0.3 * (x1 - x0) * (y1 - y0), "GrabCut proposed too little of the bear"
    outside = proposal.copy()
    outside[max(0, y0 - 3):y1 + 3, max(0, x0 - 3):x1 + 3] = 0
    assert not outside.any(), "GrabCut proposed pixels outside the box"
    choose(driver, "tool-brush")
    cy = (y0 + y1) // 2
    stroke(driver, [(x0 + 4, cy), ((x0 + x1) // 2, cy + 2), (x1 - 4, cy)], size=4)
    choose(driver, "add-object")
    stroke(driver, [(4, 64), (20, 66), (36, 64)], size=6)  # the ground, below-left of the bear
    choose(driver, "tool-eraser")
    stroke(driver, [(36, 64)], size=4)
    mask = labels_on_page(driver)
    assert set(np.unique(mask).tolist()) == {0, 1, 2}
    assert mask[cy, (x0 + x1) // 2] == 1 and mask[64, 12] == 2 and mask[64, 37] == 0  # eraser
    return mask


def run_to_end(driver, timeout: float = 180.0) -> None:
    choose(driver, "run")
    wait_for(driver, lambda: page_state(driver) == "done", "the run's end", timeout, refused_if_ready=True)


def downloaded_masks(driver) -> dict[str, np.ndarray]:
    """Click Download; the zip's PNGs as label maps (zipfile checks every CRC-32)."""
    from runtime.io.mask_io import decode_mask

    choose(driver, "download")
    archive = wait_for(driver, lambda: next(iter(driver.downloads.glob("masks*.zip")), None), "the zip", 30)
    time.sleep(0.2)
    with zipfile.ZipFile(archive) as zipped:
        assert zipped.testzip() is None  # every stored CRC-32 matches
        assert all(info.compress_type == zipfile.ZIP_STORED for info in zipped.infolist())
        return {name: decode_mask(io.BytesIO(zipped.read(name)), name)[0] for name in zipped.namelist()}


def canvas_pixels(driver) -> np.ndarray:
    width, height, data = driver.execute_script(
        "const c = document.getElementById('view');"
        "return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)];")
    return np.array(data, dtype=np.uint8).reshape(height, width, 4)


def assert_overlay(canvas: np.ndarray, frame_png: Path, labels: np.ndarray) -> None:
    """Object pixels are the frame blended half with the object's DAVIS colour; the rest is
    the frame itself."""
    from runtime.io.mask_io import davis_palette

    frame = np.array(Image.open(frame_png).convert("RGB")).astype(np.int32)
    colours = np.array(davis_palette(), dtype=np.int32).reshape(256, 3)[labels]
    objects = (labels > 0)[..., None]
    expected = np.where(objects, (frame + colours + 1) // 2, frame)
    assert canvas.shape[:2] == labels.shape and (canvas[..., 3] == 255).all()
    assert labels.any(), "the last frame has no object to overlay"
    np.testing.assert_array_equal(canvas[..., :3], expected)


def save_screenshot(driver, tmp_path: Path) -> None:
    shot = tmp_path / "browser.png"
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 1000
    if os.environ.get("STMAE_BROWSER_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["STMAE_BROWSER_SCREENSHOT"])


# ---- the tests ---------------------------------------------------------------------------

@pytest.fixture()
def page_server(serve):
    """The conftest's real server with a token, at most 2 frames in flight per session (the
    page sends no more than that ahead, so a pause lands early in a short clip)."""
    with serve(token=TOKEN, queue_depth=2) as running:
        yield running.url


def test_drawn_mask_runs_and_matches_offline(page_server, browser, davis, small_checkpoint, tmp_path):
    from runtime.io.mask_io import write_mask

    frames, box = _clip(davis, tmp_path / "frames", 5)
    open_page(browser, page_server, frames)
    first = draw_first_mask(browser, box)
    run_to_end(browser)

    assert float(browser.find_element("id", "fps").text) > 0
    assert float(browser.find_element("id", "latency").text) > 0
    served = downloaded_masks(browser)
    assert sorted(served) == [f"{i:05d}.png" for i in range(5)]
    write_mask(tmp_path / "first.png", first)
    offline = offline_masks(small_checkpoint, frames, tmp_path / "first.png", tmp_path / "offline")
    assert len(offline) == 5
    for i, labels in enumerate(offline):
        np.testing.assert_array_equal(served[f"{i:05d}.png"], labels, err_msg=f"frame {i}")
    np.testing.assert_array_equal(served["00000.png"], first)

    assert_overlay(canvas_pixels(browser), frames / "00004.png", served["00004.png"])
    save_screenshot(browser, tmp_path)


def test_pause_add_an_object_and_continue_matches_offline(page_server, browser, davis, small_checkpoint, tmp_path):
    """Pause mid-run, paint a new object on the paused frame, Continue: the page sends it as
    {"type": "mask"} + PNG before that frame; the masks equal stmae-segment given the same
    two masks (--masks-dir: the first frame's, and the new object's at the paused frame)."""
    from runtime.cli import segment_main
    from runtime.io.mask_io import read_mask, write_mask

    count = 8
    frames, (x0, y0, x1, y1) = _clip(davis, tmp_path / "frames", count)
    open_page(browser, page_server, frames)
    cy = (y0 + y1) // 2
    stroke(browser, [(x0 + 4, cy), ((x0 + x1) // 2, cy - 4), (x1 - 4, cy)], size=8)
    first = labels_on_page(browser)
    choose(browser, "run")
    wait_for(browser, lambda: page_state(browser) == "running", "the session to open", refused_if_ready=True)
    choose(browser, "pause")
    wait_for(browser, lambda: page_state(browser) == "paused", "the pause")
    paused_at = browser.execute_script("return window.stmaePage.state.index")
    assert 1 <= paused_at < count
    choose(browser, "add-object")
    stroke(browser, [(4, 64), (18, 62), (32, 64)], size=6)
    added = np.where(labels_on_page(browser) == 2, 2, 0).astype(np.uint8)
    assert added.any()
    choose(browser, "continue")
    wait_for(browser, lambda: page_state(browser) == "done", "the run's end", 180)

    served = downloaded_masks(browser)
    assert sorted(served) == [f"{i:05d}.png" for i in range(count)]
    masks, out = tmp_path / "masks", tmp_path / "offline"
    masks.mkdir()
    write_mask(masks / "00000.png", first)
    write_mask(masks / f"{paused_at:05d}.png", added)
    assert segment_main(["--checkpoint", str(small_checkpoint), "--backend", "torch", "--device", "cpu",
                         "--size", "-1", "--input", str(frames), "--masks-dir", str(masks), "--out", str(out),
                         "--quiet"]) == 0
    for name, labels in served.items():
        np.testing.assert_array_equal(labels, read_mask(out / name)[0], err_msg=name)
    assert not any((served[f"{i:05d}.png"] == 2).any() for i in range(paused_at))
    assert (served[f"{paused_at:05d}.png"] == 2).any()


def test_a_refused_frame_stops_the_run_with_the_servers_reason(page_server, browser, davis, tmp_path):
    """A frame of another size is refused by the server (400); the page stops with the
    server's one-line reason instead of waiting for it forever, and keeps what came back."""
    frames, (x0, y0, x1, y1) = _clip(davis, tmp_path / "frames", 4)
    Image.open(frames / "00002.png").resize((SIZE[0] + 16, SIZE[1])).save(frames / "00002.png")
    open_page(browser, page_server, frames)
    stroke(browser, [(x0 + 4, (y0 + y1) // 2), (x1 - 4, (y0 + y1) // 2)], size=8)
    choose(browser, "run")
    wait_for(browser, lambda: page_state(browser) in ("failed", "done"), "the refusal", 120, refused_if_ready=True)
    assert page_state(browser) == "failed"
    message = browser.find_element("id", "message").text
    assert "refused frame 2:" in message and "same size" in message, message  # which frame: its sequence
    assert browser.find_element("id", "download").is_enabled()
