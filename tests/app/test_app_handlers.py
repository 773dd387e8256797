"""The demo's handlers on a fake pipeline: validation, streaming then the full clip, the comparison, errors."""

from __future__ import annotations

import io
import re

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
from app_fakes import FakePipeline

from cat_tts.app.handlers import (
    DemoHandlers,
    DemoInputError,
    DemoLimits,
    GenerationStats,
    SamplingSettings,
    bitrate_info,
    kbps,
    load_reference,
    to_int16,
    validate_depth,
    validate_text,
)

SAMPLING = (1.0, 0.95, 50, 1.1, 7)  # temperature, top-p, top-k, repetition penalty, seed as the widgets send them


def run_generate(handlers: DemoHandlers, text: str, reference, depth=8, transcript="", sampling=SAMPLING):
    return list(handlers.generate(text, None if reference is None else str(reference), transcript, depth, *sampling))


def test_bitrate_is_an_eighth_kbps_per_layer_and_the_slider_says_so():
    assert [kbps(k) for k in (1, 8, 16, 32)] == [0.125, 1.0, 2.0, 4.0]
    assert bitrate_info(32) == "32 of 32 layers = 4 kbps (0.125 kbps per layer)"
    for depth in range(1, 33):
        number = re.search(r"= ([0-9.]+) kbps \(", bitrate_info(depth)).group(1)
        assert float(number) == 0.125 * depth


def test_slider_info_follows_the_value(fake):
    handlers = DemoHandlers(fake)
    assert handlers.bitrate_update(3)["info"] == "3 of 32 layers = 0.375 kbps (0.125 kbps per layer)"
    assert handlers.bitrate_update(8.0)["info"].startswith("8 of 32 layers = 1 kbps")
    assert isinstance(handlers.bitrate_update(40), type(gr.skip()))  # out of range: leave the line alone


@pytest.mark.parametrize("depth", [0, 33, 2.5, "x", None, float("nan")])
def test_depth_outside_1_to_32_is_refused(depth):
    with pytest.raises(DemoInputError, match="1..32"):
        validate_depth(depth)


def test_text_validation():
    limits = DemoLimits(max_text_chars=20)
    assert validate_text("  Hello.  ", limits) == "Hello."
    assert validate_text("a" * 20, limits) == "a" * 20
    with pytest.raises(DemoInputError, match="enter the text"):
        validate_text("   \n", limits)
    with pytest.raises(DemoInputError, match="enter the text"):
        validate_text(None, limits)
    with pytest.raises(DemoInputError, match="21 characters long; the limit is 20"):
        validate_text("a" * 21, limits)
    with pytest.raises(DemoInputError, match="no letters or digits"):
        validate_text("?!... --", limits)


def test_reference_is_loaded_as_mono_24khz(clips):
    limits = DemoLimits()
    wav = load_reference(clips["good"], limits)
    assert wav.dtype == np.float32 and wav.shape == (3 * 24000,)
    resampled = load_reference(clips["stereo16k"], limits)
    assert resampled.ndim == 1 and abs(resampled.size - 2 * 24000) <= 2


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (None, "upload or record a reference clip"),
        ("missing", "cannot be used"),
        ("garbage", "cannot be used"),
        ("silent", "cannot be used"),
        ("long", "cannot be used"),
        ("short", r"0\.30 s long; give at least 1 s"),
    ],
)
def test_unusable_reference_is_refused_with_a_reason(clips, name, message):
    with pytest.raises(DemoInputError, match=message):
        load_reference(None if name is None else clips[name], DemoLimits())


def test_sampling_settings_are_validated_by_name():
    settings = SamplingSettings.from_ui(0.7, 0.9, 20.0, 1.0, 3.0)
    assert settings == SamplingSettings(temperature=0.7, top_p=0.9, top_k=20, repetition_penalty=1.0, seed=3)
    assert settings.pipeline_kwargs() == {
        "seed": 3,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 20,
        "repetition_penalty": 1.0,
    }
    with pytest.raises(DemoInputError, match="top_p must be in 0.0..1.0"):
        SamplingSettings.from_ui(1.0, 1.5, 50, 1.1, 0)
    with pytest.raises(DemoInputError, match="seed is empty"):
        SamplingSettings.from_ui(1.0, 0.9, 50, 1.1, None)
    with pytest.raises(DemoInputError, match="top_k must be a whole number"):
        SamplingSettings.from_ui(1.0, 0.9, 2.5, 1.1, 0)
    with pytest.raises(DemoInputError, match="temperature must be in"):
        SamplingSettings.from_ui(float("nan"), 0.9, 50, 1.1, 0)


def test_limits_are_validated_by_name():
    with pytest.raises(ValueError, match="max_text_chars must be in 1..100000, got 0"):
        DemoLimits(max_text_chars=0)
    with pytest.raises(ValueError, match="concurrency_limit"):
        DemoLimits(concurrency_limit=0)
    with pytest.raises(ValueError, match="min_reference_seconds"):
        DemoLimits(min_reference_seconds=40.0, max_reference_seconds=30.0)


def test_summary_line_has_depth_kbps_seconds_time_and_rtf():
    stats = GenerationStats(depth=8, audio_seconds=2.0, generation_seconds=1.0, first_audio_seconds=0.25)
    assert stats.rtf == 0.5 and stats.kbps == 1.0
    assert stats.summary() == (
        "Depth 8 = 1 kbps · 2.00 s of audio · generated in 1.00 s · first audio after 0.25 s · RTF 0.50"
    )
    assert "first audio" not in GenerationStats(32, 1.0, 2.0).summary()


def test_generate_streams_chunks_then_the_full_clip(fake, clips):
    handlers = DemoHandlers(fake)
    updates = run_generate(handlers, "Hello there, general.", clips["good"], depth=8)
    *streamed, last = updates
    assert len(streamed) >= 2  # the fake yields several chunks: playback can start before the end
    chunks = []
    for stream, full, status in streamed:
        assert isinstance(full, type(gr.skip())) and "so far" in status
        audio, sr = sf.read(io.BytesIO(stream), dtype="int16")
        assert sr == 24000
        chunks.append(audio)
    stream, (sr, full), summary = last
    assert isinstance(stream, type(gr.skip()))
    assert sr == 24000 and full.dtype == np.int16
    # The full clip is exactly the streamed chunks, and exactly what synthesize gives for the same request.
    np.testing.assert_array_equal(full, np.concatenate(chunks))
    expected, _ = fake.synthesize("Hello there, general.", (np.zeros(10, np.float32), 24000), depth=8, seed=7)
    np.testing.assert_array_equal(full, to_int16(expected))
    assert summary.startswith(f"Depth 8 = 1 kbps · {full.size / 24000:.2f} s of audio · generated in ")
    assert "RTF" in summary
    call = fake.calls[0]
    assert call["depth"] == 8 and call["seed"] == 7 and call["reference_text"] is None
    assert call["sampling"] == {"temperature": 1.0, "top_p": 0.95, "top_k": 50, "repetition_penalty": 1.1}


def test_without_streaming_only_the_progress_line_moves(fake, clips):
    *streamed, (stream, (sr, full), summary) = run_generate(DemoHandlers(fake, streaming=False), "Hi.", clips["good"])
    assert streamed and all(isinstance(s, type(gr.skip())) and "so far" in status for s, _, status in streamed)
    expected, _ = fake.synthesize("Hi.", (np.zeros(10, np.float32), 24000), depth=8, seed=7)
    np.testing.assert_array_equal(full, to_int16(expected))


def test_transcript_is_passed_for_continuation(fake, clips):
    run_generate(DemoHandlers(fake), "Next sentence.", clips["good"], depth=32, transcript="  What the clip says. ")
    assert fake.calls[0]["reference_text"] == "What the clip says."
    assert fake.calls[0]["depth"] == 32


@pytest.mark.parametrize(
    ("text", "clip", "message"),
    [
        ("", "good", "Please enter the text to speak."),
        ("x" * 501, "good", "501 characters long; the limit is 500"),
        ("Hello.", None, "upload or record a reference clip"),
        ("Hello.", "silent", "cannot be used"),
        ("Hello.", "garbage", "cannot be used"),
    ],
)
def test_bad_input_is_a_visible_error_and_never_reaches_the_model(fake, clips, text, clip, message):
    with pytest.raises(gr.Error, match=message):
        run_generate(DemoHandlers(fake), text, None if clip is None else clips[clip])
    assert fake.calls == []


def test_a_failing_request_is_reported_and_the_next_one_works(clips):
    pipeline = FakePipeline(fail_with=RuntimeError("CUDA out of memory: secret internals"))
    handlers = DemoHandlers(pipeline)
    with pytest.raises(gr.Error, match=r"Generation failed \(RuntimeError\)") as info:
        run_generate(handlers, "Hello.", clips["good"])
    assert "secret internals" not in str(info.value)  # details go to the log, not to the page
    pipeline.fail_with = ValueError("text contains no pronounceable characters")  # the pipeline's input errors
    with pytest.raises(gr.Error, match="no pronounceable characters"):
        run_generate(handlers, "Hello.", clips["good"])
    pipeline.fail_with = None
    assert run_generate(handlers, "Hello.", clips["good"])[-1][2].startswith("Depth 8")


def test_compare_uses_the_same_text_voice_and_seed_at_two_depths(fake, clips):
    handlers = DemoHandlers(fake)
    (sr_a, clip_a), report_a, (sr_b, clip_b), report_b = handlers.compare(
        "Compare me.", str(clips["good"]), "", 8, 32, *SAMPLING
    )
    assert sr_a == sr_b == 24000
    first, second = fake.calls
    assert (first["depth"], second["depth"]) == (8, 32)
    for key in ("text", "seed", "sampling", "reference_text"):
        assert first[key] == second[key]
    reference = (np.zeros(10, np.float32), 24000)
    np.testing.assert_array_equal(clip_a, to_int16(fake.synthesize("Compare me.", reference, depth=8, seed=7)[0]))
    np.testing.assert_array_equal(clip_b, to_int16(fake.synthesize("Compare me.", reference, depth=32, seed=7)[0]))
    assert not np.array_equal(clip_a, clip_b)
    assert report_a.startswith("Depth 8 = 1 kbps") and report_b.startswith("Depth 32 = 4 kbps")


def test_compare_refuses_a_bad_second_depth(fake, clips):
    with pytest.raises(gr.Error, match="Depth B must be a whole number of layers in 1..32"):
        DemoHandlers(fake).compare("Hi.", str(clips["good"]), "", 8, 0, *SAMPLING)
    assert fake.calls == []
