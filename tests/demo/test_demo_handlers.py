"""The demo's handlers on a fake service: streaming then the full clip, the comparison, the limits, errors.

The depth bound is the service's `n_vq` (the model's config) and the page's starting values are `GenerationConfig`'s:
the tests derive what they expect from those, and check a model with another number of layers too.
"""

from __future__ import annotations

import io
import re

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
from demo_fakes import FakeService, page_values

from cat_tts.codec.config import KBPS_PER_LAYER
from cat_tts.demo import DemoHandlers, DemoLimits, GenerationStats, bitrate_info, kbps, page_request
from cat_tts.demo.handlers import to_int16
from cat_tts.errors import FieldError
from cat_tts.generation import EngineClosed, QueueFull


def run_generate(handlers: DemoHandlers, **changes):
    return list(handlers.generate_from(page_values(handlers.service, **changes)))


@pytest.mark.parametrize("n_vq", [32, 12])
def test_slider_line_gives_the_layers_of_the_model_and_their_bitrate(n_vq):
    assert kbps(8) == 1.0  # the paper: 8 layers of the CAT codec = 1 kbps
    for depth in range(1, n_vq + 1):
        pattern = r"(\d+) of (\d+) layers = ([0-9.]+) kbps \(([0-9.]+) kbps per layer\)"
        match = re.fullmatch(pattern, bitrate_info(depth, n_vq))
        assert match, bitrate_info(depth, n_vq)
        assert (int(match[1]), int(match[2])) == (depth, n_vq)
        assert float(match[3]) == kbps(depth) == depth * KBPS_PER_LAYER and float(match[4]) == KBPS_PER_LAYER


@pytest.mark.parametrize("n_vq", [32, 12])
def test_slider_info_follows_the_value(n_vq):
    handlers = DemoHandlers(FakeService(n_vq=n_vq))
    assert handlers.bitrate_update(3)["info"] == bitrate_info(3, n_vq)
    assert handlers.bitrate_update(8.0)["info"] == bitrate_info(8, n_vq)
    assert handlers.bitrate_update(n_vq)["info"] == bitrate_info(n_vq, n_vq)
    for outside in (n_vq + 1, 0, 2.5, "x", None):
        assert isinstance(handlers.bitrate_update(outside), type(gr.skip()))  # leave the line alone


def test_limits_are_validated_by_name():
    cases = [
        (dict(max_text_chars=0), "max_text_chars", "max_text_chars must be an integer in 1..100000, got 0"),
        (dict(concurrency_limit=0), "concurrency_limit", "concurrency_limit must be in 1..1024, got 0"),
        (dict(max_reference_seconds=0.0), "max_reference_seconds", "max_reference_seconds must be in (0, 600]"),
        (dict(min_new_frames=9, max_new_frames=2), "min_new_frames", "min_new_frames (9) must not exceed"),
    ]
    for kwargs, field, message in cases:
        with pytest.raises(FieldError) as info:
            DemoLimits(**kwargs)
        assert info.value.field == field and str(info.value).startswith(message)


def test_concurrency_defaults_to_the_engine_slots():
    assert DemoLimits().concurrency(FakeService(max_slots=5)) == 5
    assert DemoLimits(concurrency_limit=3).concurrency(FakeService(max_slots=5)) == 3
    assert DemoLimits().concurrency(FakeService(max_slots=None)) == 1  # a service without an engine


def test_summary_line_has_depth_kbps_seconds_time_and_rtf():
    stats = GenerationStats(depths=(8,), audio_seconds=2.0, generation_seconds=1.0, first_audio_seconds=0.25)
    assert stats.rtf == 0.5
    assert stats.summary() == (
        "Depth 8 = 1 kbps · 2.00 s of audio · generated in 1.00 s · first audio after 0.25 s · RTF 0.50"
    )
    assert "first audio" not in GenerationStats((32,), 1.0, 2.0).summary()
    assert GenerationStats((12, 16, 14), 1.0, 0.5).summary().startswith("Depth 12-16 (automatic)")


def test_generate_streams_pieces_then_the_full_clip(fake, clips):
    handlers = DemoHandlers(fake)
    updates = run_generate(handlers, text="Hello there, general.", reference_audio=str(clips["good"]), depth=8.0)
    *streamed, last = updates
    assert len(streamed) >= 2  # the fake yields several pieces: playback can start before the end
    pieces = []
    for stream, full, status in streamed:
        assert isinstance(full, type(gr.skip())) and "so far" in status
        audio, sr = sf.read(io.BytesIO(stream), dtype="int16")
        assert sr == 24000
        pieces.append(audio)
    stream, (sr, full), summary = last
    assert isinstance(stream, type(gr.skip()))
    assert sr == 24000 and full.dtype == np.int16
    # The full clip is exactly the streamed pieces, and exactly what synthesize_request gives for the same request.
    np.testing.assert_array_equal(full, np.concatenate(pieces))
    (request,) = fake.calls
    expected, _ = FakeService().synthesize_request(request)
    np.testing.assert_array_equal(full, to_int16(expected))
    assert summary.startswith(f"Depth 8 = 1 kbps · {full.size / 24000:.2f} s of audio · generated in ")
    assert "RTF" in summary
    assert request.generation.depth == 8 and request.reference_text is None
    assert request == page_request(page_values(fake, text="Hello there, general.",
                                               reference_audio=str(clips["good"]), depth=8.0))  # fmt: skip


def test_without_streaming_only_the_progress_line_moves(fake, clips):
    handlers = DemoHandlers(fake, streaming=False)
    *streamed, (stream, (sr, full), summary) = run_generate(handlers, reference_audio=str(clips["good"]))
    assert streamed and all(isinstance(s, type(gr.skip())) and "so far" in status for s, _, status in streamed)
    np.testing.assert_array_equal(full, to_int16(FakeService().synthesize_request(fake.calls[0])[0]))


def test_transcript_is_passed_for_continuation(fake, clips):
    run_generate(DemoHandlers(fake), reference_audio=str(clips["good"]), reference_text=" What it says. ")
    assert fake.calls[0].reference_text == "What it says." and fake.calls[0].mode is None


def test_a_failing_request_is_reported_and_the_next_one_works(clips):
    service = FakeService(fail_with=RuntimeError("CUDA out of memory: secret internals"))
    handlers = DemoHandlers(service)
    with pytest.raises(gr.Error, match=r"Generation failed \(RuntimeError\)") as info:
        run_generate(handlers)
    assert "secret internals" not in str(info.value)  # details go to the log, not to the page
    service.fail_with = QueueFull("queue full")
    with pytest.raises(gr.Error, match="Every generation slot and the waiting queue are taken") as info:
        run_generate(handlers)
    assert info.value.title == "Busy"
    service.fail_with = EngineClosed("closing")
    with pytest.raises(gr.Error, match="shutting down"):
        run_generate(handlers)
    service.fail_with = None
    assert run_generate(handlers)[-1][2].startswith("Depth 16")  # the page starts at half the layers


def test_compare_uses_the_same_text_voice_and_seed_at_two_depths(fake, clips):
    handlers = DemoHandlers(fake)
    n = fake.n_vq
    values = page_values(fake, text="Compare me.", reference_audio=str(clips["good"]))
    (sr_a, clip_a), report_a, (sr_b, clip_b), report_b = handlers.compare_from(values, 8.0, float(n))
    assert sr_a == sr_b == 24000
    assert fake.encoded == 1  # the voice is encoded once for both depths
    first, second = fake.calls
    assert (first.generation.depth, second.generation.depth) == (8, n)
    assert first.replace(depth=n) == second  # nothing else differs
    np.testing.assert_array_equal(clip_a, to_int16(FakeService().synthesize_request(first)[0]))
    np.testing.assert_array_equal(clip_b, to_int16(FakeService().synthesize_request(second)[0]))
    assert not np.array_equal(clip_a, clip_b)
    assert report_a.startswith("Depth 8 = 1 kbps") and report_b.startswith(f"Depth {n} = {kbps(n):g} kbps")


def test_compare_refuses_a_bad_depth_under_its_slider(fake, clips):
    values = page_values(fake, reference_audio=str(clips["good"]))
    with pytest.raises(gr.Error, match=r"Depth B must be >= 1, got 0"):
        DemoHandlers(fake).compare_from(values, 8, 0)
    with pytest.raises(gr.Error, match=rf"Depth A must be in 1\.\.{fake.n_vq} for this model, got 40"):
        DemoHandlers(fake).compare_from(values, 40, 8)
    assert fake.calls == [] and fake.encoded == 0


def test_a_model_with_fewer_layers_bounds_every_depth(clips):
    service = FakeService(n_vq=12)
    handlers = DemoHandlers(service)
    *_, (_, (_, full), summary) = run_generate(handlers, depth=12.0)
    assert full.size and summary.startswith(f"Depth 12 = {kbps(12):g} kbps")
    with pytest.raises(gr.Error, match=r"Bitrate must be in 1\.\.12 for this model, got 13"):
        run_generate(handlers, depth=13.0)
    with pytest.raises(gr.Error, match=r"Depth A must be in 1\.\.12 for this model, got 32"):
        handlers.compare_from(page_values(service), 32, 12)
    assert [call.generation.depth for call in service.calls] == [12]  # the refused requests never reached the model


def test_stopping_a_generation_closes_the_service_stream(clips):
    service = FakeService(frames_per_piece=1)
    updates = DemoHandlers(service).generate_from(page_values(service, text="A long enough sentence."))
    next(updates)  # the first piece is playing
    updates.close()  # what Gradio does on Stop or at the time limit
    assert service.closed_early == 1


def test_a_full_engine_is_reported_while_the_request_waits(clips):
    service = FakeService(max_slots=2)
    service.engine.active_requests = 2
    first = next(DemoHandlers(service).generate_from(page_values(service)))
    assert first[2] == "Waiting for a free slot: all 2 are generating for other requests…"


def test_the_page_calls_the_handlers_with_its_inputs_in_order(fake):
    """`generate(*values)` (what Gradio calls) is `generate_from` of the same values by name."""
    from cat_tts.demo import PAGE_INPUTS

    values = page_values(fake, text="In order.", top_k=9.0)
    *_, (_, (_, by_position), _) = list(DemoHandlers(fake).generate(*[values[name] for name in PAGE_INPUTS]))
    assert fake.calls[0].generation.top_k == 9 and fake.calls[0].text == "In order."
    *_, (_, (_, by_name), _) = list(DemoHandlers(fake).generate_from(values))
    np.testing.assert_array_equal(by_position, by_name)
