"""The demo's handlers on the real pipeline and engine over tiny random checkpoints (random weights: noise).

Random tiny models tend to stop at once, so the requests pin the frame count with `min_new_frames`. The pipelines
here run their engine in a background thread, as app.py does, so handlers called from several threads (Gradio's
workers) are generated together in one batch.
"""

from __future__ import annotations

import io
import threading
import time

import gradio as gr
import numpy as np
import pytest
import soundfile as sf

from cat_tts.app import build_demo, default_depths
from cat_tts.app.handlers import DemoHandlers, DemoLimits, kbps, to_int16

FRAMES = 6  # generated frames per request
SAMPLING = (1.0, 0.95, 50, 1.1, 3)  # temperature, top-p, top-k, repetition penalty, seed


@pytest.fixture(scope="module")
def handlers(tiny_pipeline) -> DemoHandlers:
    return DemoHandlers(tiny_pipeline, DemoLimits(min_new_frames=FRAMES, max_new_frames=FRAMES))


def test_generate_streams_what_synthesize_returns(handlers, tiny_pipeline, clips):
    *streamed, (_, (sr, full), summary) = handlers.generate("Hello there.", str(clips["good"]), "", 8, *SAMPLING)
    assert sr == tiny_pipeline.sample_rate
    assert streamed, "no chunk was streamed before the full clip"
    chunks = [sf.read(io.BytesIO(stream), dtype="int16")[0] for stream, _, _ in streamed]
    np.testing.assert_array_equal(full, np.concatenate(chunks))
    assert full.size == FRAMES * tiny_pipeline.frame_size
    # Streaming and one-shot generation agree for the same request and seed
    request = handlers._request("Hello there.", str(clips["good"]), "", 8, *SAMPLING)
    one_shot, _ = tiny_pipeline.synthesize("Hello there.", (request.reference, sr), depth=8, config=request.config)
    # (up to float rounding: the codec's streaming decoder is not bit-identical, so allow 1 LSB of 16-bit audio)
    np.testing.assert_allclose(full.astype(np.int32), to_int16(one_shot).astype(np.int32), rtol=0, atol=1)
    seconds = FRAMES / tiny_pipeline.frame_rate
    assert summary.startswith(f"Depth 8 = 1 kbps · {seconds:.2f} s of audio · generated in ")


def test_compare_two_depths_on_the_real_pipeline(handlers, tiny_pipeline, clips):
    n = tiny_pipeline.n_vq
    (_, clip_a), report_a, (_, clip_b), report_b = handlers.compare(
        "Hello there.", str(clips["good"]), "", 2, n, *SAMPLING
    )
    assert clip_a.size == clip_b.size == FRAMES * tiny_pipeline.frame_size
    assert not np.array_equal(clip_a, clip_b)  # 2 layers and N layers decode to different audio
    assert report_a.startswith("Depth 2 = 0.25 kbps") and report_b.startswith(f"Depth {n} = {kbps(n):g} kbps")
    # The voice is encoded once and reused; that gives what a plain request at that depth gives.
    request = handlers._request("Hello there.", str(clips["good"]), "", 2, *SAMPLING)
    plain, _ = tiny_pipeline.synthesize("Hello there.", (request.reference, 24000), depth=n, config=request.config)
    np.testing.assert_array_equal(clip_b, to_int16(plain))
    # Same seed, same request: the comparison is reproducible.
    (_, again_a), _, _, _ = handlers.compare("Hello there.", str(clips["good"]), "", 2, n, *SAMPLING)
    np.testing.assert_array_equal(clip_a, again_a)


def test_transcript_switches_to_continuation(handlers, clips):
    plain = handlers.compare("Hello there.", str(clips["good"]), "", 4, 4, *SAMPLING)[0][1]
    continued = handlers.compare("Hello there.", str(clips["good"]), "A test tone.", 4, 4, *SAMPLING)[0][1]
    assert not np.array_equal(plain, continued)


def test_pipeline_errors_are_visible(handlers, clips):
    with pytest.raises(gr.Error, match="Please enter the text to speak"):
        list(handlers.generate(" ", str(clips["good"]), "", 8, *SAMPLING))
    with pytest.raises(gr.Error, match="cannot be used"):
        list(handlers.generate("Hello.", str(clips["silent"]), "", 8, *SAMPLING))


def test_concurrent_requests_share_engine_frame_steps(make_tiny_tts, clips, monkeypatch):
    """Two users at once (two Gradio workers) are generated in one batch: fewer frame steps than frames."""
    frames = 8
    tts = make_tiny_tts(n_vq=32, max_slots=4)
    handlers = DemoHandlers(tts, DemoLimits(min_new_frames=frames, max_new_frames=frames))
    # Both requests reach the engine before it runs (started here, as app.py starts it before serving), so the
    # test does not depend on thread timing: the second user arrives while the first one is being generated.
    both_submitted = threading.Barrier(2, action=tts.start, timeout=120)
    submit = tts.engine.submit

    def submit_then_wait(*args, **kwargs):
        request = submit(*args, **kwargs)
        both_submitted.wait()
        return request

    monkeypatch.setattr(tts.engine, "submit", submit_then_wait)
    texts = ["The first user speaks.", "A second user, at the same time."]
    results: dict[int, object] = {}

    def user(i: int) -> None:
        try:
            results[i] = list(handlers.generate(texts[i], str(clips["good"]), "", 8 * (i + 1), *SAMPLING))[-1]
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            results[i] = e

    before = tts.engine.stats()
    workers = [threading.Thread(target=user, args=(i,)) for i in range(2)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=300)
        after = tts.engine.stats()
        for i in range(2):
            assert not isinstance(results[i], BaseException), results[i]
            _, (_, full), summary = results[i]
            assert full.size == frames * tts.frame_size and summary.startswith(f"Depth {8 * (i + 1)} ")
        assert after.frames_generated - before.frames_generated == 2 * frames
        assert after.frame_steps - before.frame_steps < 2 * frames, after  # shared steps: one batch
        # A neighbour never changes a request's audio: the first user's clip alone is the same (up to 1 LSB: the
        # streamed decode's chunk boundaries follow the timing of the frames, and its float rounding with them).
        monkeypatch.setattr(tts.engine, "submit", submit)
        _, (_, alone), _ = list(handlers.generate(texts[0], str(clips["good"]), "", 8, *SAMPLING))[-1]
        together = results[0][1][1]
        np.testing.assert_allclose(together.astype(np.int32), alone.astype(np.int32), rtol=0, atol=1)
    finally:
        tts.close()


def test_stop_cancels_the_engine_request_and_frees_its_slot(tiny_pipeline, clips):
    engine = tiny_pipeline.engine
    long = DemoHandlers(tiny_pipeline, DemoLimits(min_new_frames=400, max_new_frames=400))
    before = engine.stats()
    updates = long.generate("A long generation that the user stops.", str(clips["good"]), "", 4, *SAMPLING)
    next(updates)  # the first chunk arrived: the request holds a slot
    assert engine.stats().active_requests == before.active_requests + 1
    updates.close()  # what Gradio does for the Stop button and at the time limit
    deadline = time.monotonic() + 5
    while engine.stats().active_requests > before.active_requests and time.monotonic() < deadline:
        time.sleep(0.01)
    after = engine.stats()
    assert after.active_requests == before.active_requests
    assert after.requests_cancelled == before.requests_cancelled + 1
    assert after.frames_generated - before.frames_generated < 400


def test_a_model_with_other_layers_sets_the_page_and_the_checks(make_tiny_tts, clips):
    n = 12
    tts = make_tiny_tts(n_vq=n, max_slots=2)
    try:
        page = build_demo(tts, streaming=False)
        sliders = {b.label: b for b in page.blocks.values() if isinstance(b, gr.Slider)}
        assert {sliders[k].maximum for k in ("Bitrate", "Depth A", "Depth B")} == {n}
        assert sliders["Depth B"].value == n and sliders["Bitrate"].value == default_depths(n)[0]
        assert page._queue.default_concurrency_limit == 2  # one request per engine slot
        handlers = DemoHandlers(tts, DemoLimits(min_new_frames=4, max_new_frames=4))
        *_, (_, (_, full), summary) = handlers.generate("Twelve layers.", str(clips["good"]), "", n, *SAMPLING)
        assert full.size == 4 * tts.frame_size and summary.startswith(f"Depth {n} = {kbps(n):g} kbps")
        with pytest.raises(gr.Error, match=rf"whole number of layers in 1\.\.{n}, got {n + 1}"):
            list(handlers.generate("Thirteen layers.", str(clips["good"]), "", n + 1, *SAMPLING))
    finally:
        tts.close()
