"""The demo in a real browser: headless Debian Chromium driven by Playwright, against a served page.

Set CAT_TTS_SCREENSHOT=docs/screenshot.png to refresh the README's screenshot from this test.
Skips only when Chromium is not installed (`apt-get install chromium`) or Playwright is missing. Slow tier
(`-m slow`): it starts app.py and a browser (a minute or more on 2 busy cores).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import cat_tts.assets
from cat_tts.assets import default_voice
from cat_tts.demo import bitrate_info, default_depths
from cat_tts.weights import read_config_json

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
FRAMES = 8  # frames per request: random tiny checkpoints would stop at once or run to the text's frame budget
START_TIMEOUT = 240  # seconds for the server to come up (imports + tiny checkpoints on 2 busy cores)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).is_file(), reason=f"chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    ),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the demo exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the demo did not come up within {START_TIMEOUT} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_dirs: dict[str, Path]) -> Iterator[str]:
    """Starts `python app.py` on the make_tiny checkpoints on 127.0.0.1 and yields its URL."""
    tmp = tmp_path_factory.mktemp("browser")
    port = free_port()
    env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(tmp / "gradio"),
        "OMP_NUM_THREADS": "1",  # tiny tensors: one thread is faster on a busy 2-core machine
    }
    command = [
        sys.executable,
        str(ROOT / "app.py"),
        *("--model", str(tiny_dirs["model"]), "--codec", str(tiny_dirs["codec"]), "--device", "cpu"),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--min-new-frames", str(FRAMES), "--max-new-frames", str(FRAMES)),
    ]
    log = tmp / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_up(process, url, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield instance
        instance.close()


def test_server_serves_no_file_outside_uploads(server):
    # the bundled voice's clip is allowed (the examples use it); its package beside it is not
    for path in (ROOT / "app.py", Path("/etc/passwd"), Path(cat_tts.assets.__file__)):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{server}gradio_api/file={path}", timeout=10)
        assert info.value.code in (403, 404)


def test_page_generates_playable_audio_and_shows_errors(server, browser, tmp_path, tiny_dirs):
    from cat_tts.codec.config import CodecConfig

    n = int(read_config_json(tiny_dirs["model"])["n_vq"])  # N, as the page takes it from the model
    frame_rate = CodecConfig.from_json(tiny_dirs["codec"] / "config.json").frame_rate
    start, depth_a, depth_b = default_depths(n)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    outside = []  # requests the page makes to anything but the demo server (fonts, analytics, CDNs)
    page.on(
        "request",
        lambda request: None if request.url.startswith((server, "blob:", "data:")) else outside.append(request.url),
    )
    page.goto(server)

    # The bitrate slider: 1..N layers, its info line shows kbps and follows the slider.
    slider = page.locator("#bitrate input[type=range]")
    assert (slider.get_attribute("min"), slider.get_attribute("max"), slider.get_attribute("step")) == (
        "1",
        str(n),
        "1",
    )
    assert page.locator("#bitrate [data-testid=block-info]").inner_text() == "Bitrate"
    assert page.locator("#bitrate .info-text").inner_text() == bitrate_info(start, n)
    slider.fill("8")
    page.wait_for_function(f"() => document.querySelector('#bitrate .info-text').innerText === '{bitrate_info(8, n)}'")

    # Empty text: a visible error, and the page stays usable.
    page.locator("#generate").click()
    toast = page.locator(".toast-body", has_text="Text to speak is required")
    toast.wait_for(state="visible", timeout=30_000)
    page.locator(".toast-close").first.click()  # dismissed, so it does not cover the screenshot
    toast.wait_for(state="detached", timeout=30_000)

    # A real request: upload a clip, type text, generate.
    page.locator("#reference input[type=file]").set_input_files(str(default_voice().audio))
    page.locator("#reference [data-testid='waveform-Reference audio']").wait_for(timeout=30_000)  # upload done
    page.locator("#text textarea").fill("Hello from the browser test.")
    page.locator("#generate").click()
    page.wait_for_function("() => document.querySelector('#report textarea').value.includes('RTF')", timeout=120_000)
    report = page.locator("#report textarea").input_value()
    assert report.startswith(f"Depth 8 = 1 kbps · {FRAMES / frame_rate:.2f} s of audio · generated in ")
    assert page.locator("#notice").inner_text().count("random tiny checkpoints") == 1

    # The full clip is a real <audio> element the browser can load and play.
    audio = page.locator("#full_audio audio")
    assert audio.get_attribute("src")
    page.wait_for_function(
        "() => { const a = document.querySelector('#full_audio audio'); return a.readyState >= 1 && a.duration > 0; }",
        timeout=30_000,
    )
    assert page.evaluate("() => document.querySelector('#full_audio audio').error") is None

    page.wait_for_function("() => document.querySelectorAll('.pending, .generating').length === 0", timeout=30_000)
    screenshot = tmp_path / "screenshot.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("CAT_TTS_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["CAT_TTS_SCREENSHOT"])

    page.evaluate("() => document.querySelector('#full_audio audio').play()")
    page.wait_for_function("() => document.querySelector('#full_audio audio').currentTime > 0", timeout=30_000)
    if shutil.which("ffmpeg"):  # gradio encodes the stream with ffmpeg; without it the page plays the full clip only
        assert page.locator("#stream_audio audio").get_attribute("src")  # the pieces reached the streaming player
    else:
        assert not page.locator("#stream_audio").is_visible()

    # Compare bitrates: two players, two reports, same request at the two sliders' starting depths.
    page.get_by_role("tab", name="Compare bitrates").click()
    page.locator("#compare").click()
    page.wait_for_function("() => document.querySelector('#report_b textarea').value.includes('RTF')", timeout=120_000)
    assert page.locator("#report_a textarea").input_value().startswith(f"Depth {depth_a} = ")
    assert page.locator("#report_b textarea").input_value().startswith(f"Depth {depth_b} = ")
    assert page.locator("#audio_a audio").get_attribute("src") and page.locator("#audio_b audio").get_attribute("src")

    # An example row fills the inputs, bundled reference clip included (served from the app's cache).
    page.get_by_text("Hello! This voice was cloned from a few seconds of audio.").click()
    page.wait_for_function("() => document.querySelector('#text textarea').value.startsWith('Hello! This voice')")
    page.wait_for_function(
        f"() => document.querySelector('#bitrate .info-text').innerText === '{bitrate_info(start, n)}'"
    )
    assert "reference.wav" in page.locator("#reference").inner_html()

    assert outside == []
    page.close()
