"""The Blocks layout and queue settings, checked on the built (not launched) demo.

What the page shows is derived from the service (N layers, frame rate, engine slots) and from `GenerationConfig`
(sampling defaults); the tests build pages for models with different N and check they follow.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest
from demo_fakes import FakeService

from cat_tts.assets import default_voice
from cat_tts.demo import DemoLimits, Example, bitrate_info, build_demo, bundled_examples, default_depths
from cat_tts.demo.request import format_kbps
from cat_tts.errors import InputError
from cat_tts.generation import GenerationConfig


@pytest.fixture(scope="module")
def demo():
    limits = DemoLimits(max_text_chars=300, concurrency_limit=2, max_queue_size=5, time_limit_seconds=120)
    examples = bundled_examples(FakeService().n_vq)
    return build_demo(FakeService(), limits, examples=examples, streaming=True)


def components(demo, kind):
    return {b.label: b for b in demo.blocks.values() if isinstance(b, kind)}


def explanation_text(demo) -> str:
    """The slider explanation under the page, with its line breaks as spaces."""
    (block,) = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "explanation"]
    return " ".join(block.value.split())


def test_inputs_are_labelled_and_bounded(demo):
    texts = components(demo, gr.Textbox)
    assert texts["Text to speak"].max_length == 300
    assert texts["Reference transcript (optional)"].max_length == 300
    assert texts["Instructions"].max_length == 300 and texts["Language"].max_lines == 1
    audios = components(demo, gr.Audio)
    reference = audios["Reference audio"]
    assert reference.sources == ["upload", "microphone"] and reference.type == "filepath"
    assert audios["Streaming playback"].streaming and not audios["Full clip (WAV)"].streaming
    assert {"Generate", "Stop", "Compare bitrates"} <= {
        b.value for b in demo.blocks.values() if isinstance(b, gr.Button)
    }


@pytest.mark.parametrize("n_vq", [32, 12, 2])
def test_depth_sliders_run_over_the_layers_of_the_model(n_vq):
    page = build_demo(FakeService(n_vq=n_vq), streaming=False)
    sliders = components(page, gr.Slider)
    start, start_a, start_b = default_depths(n_vq)
    for label, value in (("Bitrate", start), ("Depth A", start_a), ("Depth B", start_b)):
        slider = sliders[label]
        assert (slider.minimum, slider.maximum, slider.step, slider.value) == (1, n_vq, 1, value), label
        assert slider.info == bitrate_info(value, n_vq)
    assert 1 <= start_a <= start <= start_b == n_vq
    explanation = explanation_text(page)
    assert f"up to {n_vq} stacked codebooks" in explanation and f"K = {n_vq} is {format_kbps(n_vq)}" in explanation


def test_a_model_with_one_layer_has_no_bitrate_to_choose():
    with pytest.raises(InputError, match="at least 2 RVQ layers"):
        build_demo(FakeService(n_vq=1), streaming=False)


def test_explanation_gives_the_frame_length_of_the_codec():
    service = FakeService()
    assert f"every {1000 / service.frame_rate:g} ms of sound" in explanation_text(build_demo(service, streaming=False))
    service.frame_rate = 25.0  # another codec: the page follows
    assert "every 40 ms of sound" in explanation_text(build_demo(service, streaming=False))


def test_sampling_settings_start_at_the_generation_defaults(demo):
    sliders = components(demo, gr.Slider)
    released = GenerationConfig()
    assert sliders["Temperature"].value == released.temperature
    assert sliders["Top-p"].value == released.top_p
    assert sliders["Top-k"].value == released.top_k
    assert sliders["Repetition penalty"].value == released.repetition_penalty
    assert sliders["End-of-speech temperature"].value == released.control_temperature
    assert sliders["End-of-speech top-p"].value == released.control_top_p
    assert sliders["End-of-speech top-k"].value == released.control_top_k
    radios = components(demo, gr.Radio)
    assert radios["End-of-speech tokens"].value == released.control_tokens and radios["Prompt mode"].value == "auto"
    assert components(demo, gr.Checkbox)["Sample"].value is released.do_sample


def test_streaming_player_is_hidden_without_streaming():
    audios = components(build_demo(FakeService(), streaming=False), gr.Audio)
    assert not audios["Streaming playback"].streaming and audios["Streaming playback"].visible is False


def _inside(accordion) -> set[str]:
    inside = set()
    stack = list(accordion.children)
    while stack:  # gradio wraps inputs in layout blocks (Form, Row): walk down to the components
        block = stack.pop()
        stack.extend(getattr(block, "children", []))
        if isinstance(block, gr.components.Component):
            inside.add(block.label)
    return inside


def test_sampling_and_rare_settings_sit_in_collapsed_accordions(demo):
    accordions = {b.label: b for b in demo.blocks.values() if isinstance(b, gr.Accordion)}
    assert set(accordions) == {"Sampling settings", "Advanced settings"}
    assert not any(a.open for a in accordions.values())
    assert _inside(accordions["Sampling settings"]) == {"Temperature", "Top-p", "Top-k", "Repetition penalty", "Seed"}
    assert _inside(accordions["Advanced settings"]) == {
        "Prompt mode", "Instructions", "Bitrate in kbps", "Lowest automatic depth", "Highest automatic depth",
        "Frame budget", "Frames before the end", "Sample", "End-of-speech temperature", "End-of-speech top-p",
        "End-of-speech top-k", "End-of-speech tokens",
    }  # fmt: skip


def test_language_box_and_duration_slider_with_auto(demo):
    assert components(demo, gr.Textbox)["Language"].value in (None, "")  # empty: the request's default
    duration = components(demo, gr.Slider)["Duration"]
    assert duration.minimum == 0 and duration.value == 0 and "0 = auto" in duration.info
    assert duration.maximum == 60  # the fake's frame limit (2000 frames = 160 s) is above the page's cap
    small = FakeService()
    small.limits = small.limits.__class__(n_vq=32, frame_rate=small.frame_rate, max_frames=250)
    assert components(build_demo(small, streaming=False), gr.Slider)["Duration"].maximum == 20  # 250 frames


def test_generation_is_queued_with_one_shared_concurrency_limit(demo):
    assert demo._queue.max_size == 5 and demo._queue.default_concurrency_limit == 2
    by_name = {fn.name: fn for fn in demo.fns.values()}
    for name in ("generate", "compare"):
        fn = by_name[name]
        assert fn.queue and fn.concurrency_id == "synthesis" and fn.time_limit == 120
    # The sliders' kbps lines update outside the queue, so a long generation never delays them.
    updates = [fn for fn in demo.fns.values() if fn.name == "bitrate_update"]
    assert len(updates) == 3 and not any(fn.queue for fn in updates)


@pytest.mark.parametrize("slots", [1, 3, 8])
def test_concurrency_defaults_to_the_engine_slots(slots):
    page = build_demo(FakeService(max_slots=slots), streaming=False)
    assert page._queue.default_concurrency_limit == slots


@pytest.mark.parametrize("n_vq", [32, 12])
def test_examples_use_the_bundled_voice_at_depths_of_the_model(n_vq):
    examples = bundled_examples(n_vq)
    voice = default_voice()
    assert examples and all(Path(e.reference_path) == voice.audio for e in examples)
    assert voice.text in [e.reference_text for e in examples] and all(1 <= e.depth <= n_vq for e in examples)
    assert max(e.depth for e in examples) == n_vq
    assert isinstance(examples[0], Example)


def test_examples_deeper_than_the_model_are_left_out():
    page = build_demo(FakeService(n_vq=12), examples=bundled_examples(32), streaming=False)
    (table,) = [b for b in page.blocks.values() if isinstance(b, gr.Dataset)]
    assert table.samples and all(row[-1] <= 12 for row in table.samples)
