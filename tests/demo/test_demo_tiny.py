"""The demo's handlers on the real service and engine over tiny random checkpoints (random weights: noise).

Random tiny models tend to stop at once, so the requests pin the frame count with the page's frame settings. The
services here run their engine in a background thread, as the demo's command does, so handlers called from several
threads (Gradio's workers) are generated together in one batch.
"""

from __future__ import annotations

import io
import threading
import time

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
from demo_fakes import page_values

from cat_tts.demo import DemoHandlers, build_demo, default_depths, kbps
from cat_tts.demo.handlers import to_int16

FRAMES = 6  # generated frames per request


def values(service, frames: int = FRAMES, **changes) -> dict:
    """The page's values with the frame count pinned and seed 3."""
    return page_values(service, min_new_frames=frames, max_new_frames=frames, seed=3, **changes)


def frame_size(service) -> int:
    return int(service.codec.frame_size)


def test_generate_streams_what_synthesize_returns(tiny_service, clips):
    handlers = DemoHandlers(tiny_service)
    page = values(tiny_service, text="Hello there.", reference_audio=str(clips["good"]), depth=8.0)
    *streamed, (_, (sr, full), summary) = handlers.generate_from(page)
    assert sr == tiny_service.sample_rate
    assert streamed, "no piece was streamed before the full clip"
    pieces = [sf.read(io.BytesIO(stream), dtype="int16")[0] for stream, _, _ in streamed]
    np.testing.assert_array_equal(full, np.concatenate(pieces))
    assert full.size == FRAMES * frame_size(tiny_service)
    # Streaming and one-shot generation agree for the same request and seed
    one_shot, _ = tiny_service.synthesize_request(handlers.request(page))
    # (up to float rounding: the codec's streaming decoder is not bit-identical, so allow 1 LSB of 16-bit audio)
    np.testing.assert_allclose(full.astype(np.int32), to_int16(one_shot).astype(np.int32), rtol=0, atol=1)
    seconds = FRAMES / tiny_service.frame_rate
    assert summary.startswith(f"Depth 8 = 1 kbps · {seconds:.2f} s of audio · generated in ")


def test_language_duration_and_automatic_bitrate_run_on_the_engine(tiny_service):
    handlers = DemoHandlers(tiny_service)
    page = values(tiny_service, text="Hello there.", language="English", duration=0.4, auto_depth=True)
    *_, (_, (_, full), summary) = handlers.generate_from(page)
    assert full.size == FRAMES * frame_size(tiny_service)  # the bundled voice, depth chosen by the engine
    assert summary.startswith("Depth ")
    request = handlers.request(page)
    assert (request.language, request.duration, request.generation.depth) == ("English", 0.4, "auto")


def test_compare_two_depths_on_the_real_service(tiny_service, clips):
    handlers = DemoHandlers(tiny_service)
    n = tiny_service.n_vq
    page = values(tiny_service, text="Hello there.", reference_audio=str(clips["good"]))
    (_, clip_a), report_a, (_, clip_b), report_b = handlers.compare_from(page, 2, n)
    assert clip_a.size == clip_b.size == FRAMES * frame_size(tiny_service)
    assert not np.array_equal(clip_a, clip_b)  # 2 layers and N layers decode to different audio
    assert report_a.startswith("Depth 2 = 0.25 kbps") and report_b.startswith(f"Depth {n} = {kbps(n):g} kbps")
    # The voice is encoded once and reused; that gives what a plain request at that depth gives.
    plain, _ = tiny_service.synthesize_request(handlers.request({**page, "depth": n}))
    np.testing.assert_array_equal(clip_b, to_int16(plain))
    # Same seed, same request: the comparison is reproducible.
    (_, again_a), _, _, _ = handlers.compare_from(page, 2, n)
    np.testing.assert_array_equal(clip_a, again_a)


def test_transcript_switches_to_continuation(tiny_service, clips):
    handlers = DemoHandlers(tiny_service)
    page = values(tiny_service, text="Hello there.", reference_audio=str(clips["good"]))
    plain = handlers.compare_from(page, 4, 4)[0][1]
    continued = handlers.compare_from({**page, "reference_text": "A test tone."}, 4, 4)[0][1]
    assert not np.array_equal(plain, continued)


def test_service_errors_are_visible_under_their_labels(tiny_service, clips):
    handlers = DemoHandlers(tiny_service)
    with pytest.raises(gr.Error, match="Text to speak is empty"):
        list(handlers.generate_from(values(tiny_service, text=" ")))
    with pytest.raises(gr.Error, match="Reference audio: .*silent"):
        list(handlers.generate_from(values(tiny_service, reference_audio=str(clips["silent"]))))


def test_concurrent_requests_share_engine_frame_steps(make_tiny_tts, clips, monkeypatch):
    """Two users at once (two Gradio workers) are generated in one batch: fewer frame steps than frames."""
    frames = 8
    tts = make_tiny_tts(n_vq=32, max_slots=4)
    handlers = DemoHandlers(tts)
    # Both requests reach the engine before it runs (started here, as the demo starts it before serving), so the
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

    def page(i: int) -> dict:
        return values(tts, frames, text=texts[i], reference_audio=str(clips["good"]), depth=8.0 * (i + 1))

    def user(i: int) -> None:
        try:
            results[i] = list(handlers.generate_from(page(i)))[-1]
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
            assert full.size == frames * frame_size(tts) and summary.startswith(f"Depth {8 * (i + 1)} ")
        assert after.frames_generated - before.frames_generated == 2 * frames
        assert after.frame_steps - before.frame_steps < 2 * frames, after  # shared steps: one batch
        # A neighbour never changes a request's audio: the first user's clip alone is the same (up to 1 LSB: the
        # streamed decode's piece boundaries follow the timing of the frames, and its float rounding with them).
        monkeypatch.setattr(tts.engine, "submit", submit)
        _, (_, alone), _ = list(handlers.generate_from(page(0)))[-1]
        together = results[0][1][1]
        np.testing.assert_allclose(together.astype(np.int32), alone.astype(np.int32), rtol=0, atol=1)
    finally:
        tts.close()


def test_stop_cancels_the_engine_request_and_frees_its_slot(tiny_service, clips):
    engine = tiny_service.engine
    before = engine.stats()
    page = values(tiny_service, 400, text="A long generation that the user stops.", depth=4.0)
    updates = DemoHandlers(tiny_service).generate_from(page)
    next(updates)  # the first piece arrived: the request holds a slot
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
        assert {sliders[k].maximum for k in ("Bitrate", "Depth A", "Depth B", "Highest automatic depth")} == {n}
        assert sliders["Depth B"].value == n and sliders["Bitrate"].value == default_depths(n)[0]
        assert page._queue.default_concurrency_limit == 2  # one request per engine slot
        handlers = DemoHandlers(tts)
        *_, (_, (_, full), summary) = handlers.generate_from(values(tts, 4, text="Twelve layers.", depth=float(n)))
        assert full.size == 4 * frame_size(tts) and summary.startswith(f"Depth {n} = {kbps(n):g} kbps")
        with pytest.raises(gr.Error, match=rf"Bitrate must be in 1\.\.{n} for this model, got {n + 1}"):
            list(handlers.generate_from(values(tts, 4, text="Thirteen layers.", depth=float(n + 1))))
    finally:
        tts.close()
