"""The demo's handlers on a fake pipeline: validation, streaming then the full clip, the comparison, errors.

The depth bound is the pipeline's `n_vq` (the model's config) and the sampling defaults are `GenerationConfig`'s:
the tests derive what they expect from those, and check a model with another number of layers too.
"""

from __future__ import annotations

import dataclasses
import io
import re

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
from app_fakes import FakePipeline

from cat_tts.app.handlers import (
    SETTING_LABELS,
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
from cat_tts.codec.config import KBPS_PER_LAYER
from cat_tts.errors import InputError
from cat_tts.generation import GenerationConfig

SAMPLING = (1.0, 0.95, 50, 1.1, 7)  # temperature, top-p, top-k, repetition penalty, seed as the widgets send them


def run_generate(handlers: DemoHandlers, text: str, reference, depth=8, transcript="", sampling=SAMPLING):
    return list(handlers.generate(text, None if reference is None else str(reference), transcript, depth, *sampling))


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
    handlers = DemoHandlers(FakePipeline(n_vq=n_vq))
    assert handlers.bitrate_update(3)["info"] == bitrate_info(3, n_vq)
    assert handlers.bitrate_update(8.0)["info"] == bitrate_info(8, n_vq)
    assert handlers.bitrate_update(n_vq)["info"] == bitrate_info(n_vq, n_vq)
    assert isinstance(handlers.bitrate_update(n_vq + 1), type(gr.skip()))  # out of range: leave the line alone


@pytest.mark.parametrize("n_vq", [32, 12])
def test_depth_outside_1_to_n_is_refused(n_vq):
    assert validate_depth(n_vq, n_vq) == n_vq and validate_depth(1.0, n_vq) == 1
    for depth in (0, n_vq + 1, 2.5, "x", None, float("nan")):
        with pytest.raises(DemoInputError, match=rf"in 1\.\.{n_vq}, got"):
            validate_depth(depth, n_vq)


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


def test_sampling_defaults_are_the_generation_defaults():
    released = GenerationConfig()
    settings = SamplingSettings()
    for field in ("temperature", "top_p", "top_k", "repetition_penalty"):
        assert getattr(settings, field) == getattr(released, field), field
    # The demo fixes the seed (the same inputs give the same audio); everything else is GenerationConfig's.
    assert settings.generation_config() == dataclasses.replace(released, seed=settings.seed)


def test_sampling_settings_become_the_pipeline_generation_config():
    settings = SamplingSettings.from_ui(0.7, 0.9, 20.0, 1.0, 3.0)
    assert settings == SamplingSettings(temperature=0.7, top_p=0.9, top_k=20, repetition_penalty=1.0, seed=3)
    limits = DemoLimits(min_new_frames=4, max_new_frames=9)
    assert settings.generation_config(limits) == GenerationConfig(
        temperature=0.7, top_p=0.9, top_k=20, repetition_penalty=1.0, seed=3, min_new_frames=4, max_new_frames=9
    )


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ((-0.5, 0.9, 50, 1.1, 0), "temperature"),
        ((float("nan"), 0.9, 50, 1.1, 0), "temperature"),
        ((1.0, 1.5, 50, 1.1, 0), "top_p"),
        ((1.0, 0.0, 50, 1.1, 0), "top_p"),
        ((1.0, 0.9, -1, 1.1, 0), "top_k"),
        ((1.0, 0.9, 50, 0.0, 0), "repetition_penalty"),
        ((1.0, 0.9, 50, 1.1, -3), "seed"),
    ],
)
def test_sampling_settings_are_checked_by_generation_config_and_named_as_on_the_page(values, field):
    with pytest.raises(InputError) as expected:  # what GenerationConfig says about the value
        GenerationConfig(
            **dict(zip(("temperature", "top_p", "top_k", "repetition_penalty", "seed"), values, strict=True))
        )
    with pytest.raises(DemoInputError) as info:
        SamplingSettings.from_ui(*values)
    message = str(info.value)
    assert message.startswith(f"Sampling settings: {SETTING_LABELS[field]} ") and field not in message
    assert message.endswith(str(expected.value).split(" ", 1)[1] + ".")  # the same range, as GenerationConfig says


def test_sampling_settings_that_are_not_numbers_are_refused():
    with pytest.raises(DemoInputError, match="Seed is empty"):
        SamplingSettings.from_ui(1.0, 0.9, 50, 1.1, None)
    with pytest.raises(DemoInputError, match="Top-k must be a whole number"):
        SamplingSettings.from_ui(1.0, 0.9, 2.5, 1.1, 0)
    with pytest.raises(DemoInputError, match="must be numbers"):
        SamplingSettings.from_ui("warm", 0.9, 50, 1.1, 0)


def test_limits_are_validated_by_name():
    with pytest.raises(InputError, match="max_text_chars must be in 1..100000, got 0"):
        DemoLimits(max_text_chars=0)
    with pytest.raises(InputError, match="concurrency_limit"):
        DemoLimits(concurrency_limit=0)
    with pytest.raises(InputError, match="max_reference_seconds must be in 40..600"):
        DemoLimits(min_reference_seconds=40.0, max_reference_seconds=30.0)
    with pytest.raises(InputError, match="min_new_frames .9. must not exceed max_new_frames .2."):
        DemoLimits(min_new_frames=9, max_new_frames=2)  # GenerationConfig's rule for the frame limits


def test_concurrency_defaults_to_the_engine_slots():
    assert DemoLimits().concurrency(FakePipeline(max_slots=5)) == 5
    assert DemoLimits(concurrency_limit=3).concurrency(FakePipeline(max_slots=5)) == 3
    assert DemoLimits().concurrency(FakePipeline(max_slots=None)) == 1  # a pipeline without an engine


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
    call = fake.calls[0]
    reference = (np.zeros(10, np.float32), 24000)
    expected, _ = fake.synthesize("Hello there, general.", reference, depth=8, config=call["config"])
    np.testing.assert_array_equal(full, to_int16(expected))
    assert summary.startswith(f"Depth 8 = 1 kbps · {full.size / 24000:.2f} s of audio · generated in ")
    assert "RTF" in summary
    assert call["depth"] == 8 and call["reference_text"] is None
    temperature, top_p, top_k, repetition_penalty, seed = SAMPLING  # what the widgets sent
    assert call["config"] == GenerationConfig(
        temperature=temperature, top_p=top_p, top_k=top_k, repetition_penalty=repetition_penalty, seed=seed
    )


def test_without_streaming_only_the_progress_line_moves(fake, clips):
    *streamed, (stream, (sr, full), summary) = run_generate(DemoHandlers(fake, streaming=False), "Hi.", clips["good"])
    assert streamed and all(isinstance(s, type(gr.skip())) and "so far" in status for s, _, status in streamed)
    expected, _ = fake.synthesize("Hi.", (np.zeros(10, np.float32), 24000), depth=8, config=fake.calls[0]["config"])
    np.testing.assert_array_equal(full, to_int16(expected))


def test_transcript_is_passed_for_continuation(fake, clips):
    run_generate(DemoHandlers(fake), "Next sentence.", clips["good"], depth=fake.n_vq, transcript=" What it says. ")
    assert fake.calls[0]["reference_text"] == "What it says."
    assert fake.calls[0]["depth"] == fake.n_vq


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
    n = fake.n_vq
    (sr_a, clip_a), report_a, (sr_b, clip_b), report_b = handlers.compare(
        "Compare me.", str(clips["good"]), "", 8, n, *SAMPLING
    )
    assert sr_a == sr_b == 24000
    first, second = fake.calls
    assert (first["depth"], second["depth"]) == (8, n)
    for key in ("text", "config", "reference_text"):
        assert first[key] == second[key]
    reference, config = (np.zeros(10, np.float32), 24000), first["config"]
    np.testing.assert_array_equal(
        clip_a, to_int16(fake.synthesize("Compare me.", reference, depth=8, config=config)[0])
    )
    np.testing.assert_array_equal(
        clip_b, to_int16(fake.synthesize("Compare me.", reference, depth=n, config=config)[0])
    )
    assert not np.array_equal(clip_a, clip_b)
    assert report_a.startswith("Depth 8 = 1 kbps") and report_b.startswith(f"Depth {n} = {kbps(n):g} kbps")


def test_compare_refuses_a_bad_second_depth(fake, clips):
    with pytest.raises(gr.Error, match=rf"Depth B must be a whole number of layers in 1\.\.{fake.n_vq}, got 0"):
        DemoHandlers(fake).compare("Hi.", str(clips["good"]), "", 8, 0, *SAMPLING)
    assert fake.calls == []


def test_a_model_with_fewer_layers_bounds_every_depth(clips):
    pipeline = FakePipeline(n_vq=12)
    handlers = DemoHandlers(pipeline)
    *_, (_, (_, full), summary) = run_generate(handlers, "Twelve layers.", clips["good"], depth=12)
    assert full.size and summary.startswith(f"Depth 12 = {kbps(12):g} kbps")
    with pytest.raises(gr.Error, match=r"Bitrate must be a whole number of layers in 1\.\.12, got 13"):
        run_generate(handlers, "Thirteen layers.", clips["good"], depth=13)
    with pytest.raises(gr.Error, match=r"Depth A must be a whole number of layers in 1\.\.12, got 32"):
        handlers.compare("Hi.", str(clips["good"]), "", 32, 12, *SAMPLING)
    assert [call["depth"] for call in pipeline.calls] == [12]  # the refused requests never reached the model


def test_stopping_a_generation_closes_the_pipeline_stream(clips):
    pipeline = FakePipeline(frames_per_chunk=1)
    updates = DemoHandlers(pipeline).generate("A long enough sentence.", str(clips["good"]), "", 8, *SAMPLING)
    next(updates)  # the first chunk is playing
    updates.close()  # what Gradio does on Stop or at the time limit
    assert pipeline.closed_early == 1


def test_a_full_engine_is_reported_while_the_request_waits(clips):
    pipeline = FakePipeline(max_slots=2)
    pipeline.engine.busy_slots = 2
    first = next(DemoHandlers(pipeline).generate("Hello.", str(clips["good"]), "", 8, *SAMPLING))
    assert first[2] == "Waiting for a free slot: all 2 are generating for other requests…"
