"""The live page (`GET /live`) in a real browser: headless Debian Chromium driven by Playwright (as the demo's browser
test does), against a real server on the tiny checkpoints. Typed text is spoken while it is typed, through the
realtime WebSocket; the page plays the audio and shows the depth of every segment.

Slow tier (`-m slow`): a server and a browser start. Skips only when Chromium or Playwright is missing.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from cat_tts.generation.policy import FrameClock

from .conftest import serve_real

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--autoplay-policy=no-user-gesture-required"]  # fmt: skip
WAIT_MS = 120_000  # how long the page may take on 2 busy cores (a bound, not a measurement)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"chromium is not installed at {CHROMIUM}"),
]


@pytest.fixture(scope="module")
def server(tiny_dirs, tmp_path_factory):
    # segments of 6 frames: random weights would stop at once or run to the text's frame budget
    with serve_real(tiny_dirs, tmp_path_factory.mktemp("voices"), max_slots=2, min_new_frames=6,
                    max_new_frames=6) as running:  # fmt: skip
        yield running


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield instance
        instance.close()


def _open(server, browser):
    page = browser.new_page()
    outside = []  # requests to anything but this server
    page.on("request", lambda r: None if r.url.startswith((server.url, "ws://127.0.0.1")) else outside.append(r.url))
    page.goto(f"{server.url}/live")
    return page, outside


def test_typed_text_is_spoken_while_typed_with_the_depth_of_each_segment(server, browser):
    page, outside = _open(server, browser)
    page.select_option("#depth", "8")
    box = page.locator("#text")
    box.press_sequentially("Hello there, my friend. ", delay=20)
    page.wait_for_function("() => window.catLive.samples > 0", timeout=WAIT_MS)  # audio while the text goes on
    assert page.evaluate("window.catLive.done") is None
    box.press_sequentially("This is the live page. And it keeps talking.", delay=20)
    page.click("#done")
    page.wait_for_function("() => window.catLive.done !== undefined", timeout=WAIT_MS)
    page.wait_for_function("() => window.catLive.state.startsWith('closed (1000')", timeout=WAIT_MS)
    live = page.evaluate("window.catLive")
    texts = [s["text"] for s in live["segments"]]
    assert texts == ["Hello there,", "my friend.", "This is the live page.", "And it keeps talking."]
    assert [s["depth"] for s in live["segments"]] == [8, 8, 8, 8]
    assert [page.locator(f"#segment-{i} td.depth").inner_text() for i in range(4)] == ["8"] * 4
    assert abs(live["samples"] - live["done"]["usage"]["audio_seconds"] * 24000) <= 3  # all of it was scheduled
    assert live["samples"] >= 4 * 5 * 1920  # 6 frames per segment, less the cross-fades
    assert live["errors"] == [] and live["firstAudioMs"] > 0 and outside == []
    page.close()


def test_auto_depth_a_stop_and_the_key_from_the_page(server, browser):
    server.state.config, config = replace(server.state.config, api_key="secret"), server.state.config
    try:
        page, _ = _open(server, browser)
        page.locator("#text").press_sequentially("Without a key. ", delay=10)
        page.wait_for_function("() => window.catLive.state.startsWith('closed (1008')", timeout=WAIT_MS)
        assert page.evaluate("window.catLive.errors")[0]["code"] == "invalid_api_key"
        assert "missing API key" in page.locator("#errors").inner_text()

        page.click("#reset")
        page.fill("#key", "secret")
        page.fill("#max_depth", "20")  # depth stays "auto": alone, a session gets its ceiling ...
        server.backend.tts.engine.readback.clock = FrameClock()  # ... on a machine that measured no slow frame yet
        page.locator("#text").press_sequentially("With the key, we talk. ", delay=10)
        page.wait_for_function("() => window.catLive.segments.length > 0", timeout=WAIT_MS)
        assert page.evaluate("window.catLive.segments[0].depth") == 20
        page.click("#stop")  # barge-in: the page silences and the server answers response.cancelled
        page.locator("#text").press_sequentially("Again after the stop. ", delay=10)
        page.click("#done")
        page.wait_for_function("() => window.catLive.done !== undefined", timeout=WAIT_MS)
        live = page.evaluate("window.catLive")
        assert live["segments"][-1]["text"] == "Again after the stop." and live["errors"] == []
        page.close()
    finally:
        server.state.config = config
