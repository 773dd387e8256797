"""The demo parses what its page sends into one `SpeechRequest`: every field of the request has a widget on the page,
reaches the request, and a bad value is shown under the widget's label."""

from __future__ import annotations

import gradio as gr
import pytest
from demo_fakes import FakeService, page_values

from cat_tts.assets import default_voice
from cat_tts.demo import DEMO_LABELS, PAGE_INPUTS, DemoHandlers, build_demo, page_request
from cat_tts.demo.request import AUTO_DEPTH
from cat_tts.generation import GenerationConfig
from cat_tts.inference import SpeechRequest


def test_every_request_field_has_a_labelled_widget_on_the_page():
    assert set(DEMO_LABELS) == set(SpeechRequest.field_names())
    assert len(set(DEMO_LABELS.values())) == len(DEMO_LABELS)  # one label per field
    demo = build_demo(FakeService(), streaming=False)
    (fn,) = [fn for fn in demo.fns.values() if fn.name == "generate"]
    assert len(fn.inputs) == len(PAGE_INPUTS)
    for name, component in zip(PAGE_INPUTS, fn.inputs, strict=True):
        if name != AUTO_DEPTH:
            assert component.label.startswith(DEMO_LABELS[name]), (name, component.label)


# A value of every field as its widget sends it, and what the request holds then.
SENT = {
    "text": ("Hi there.", "Hi there."),
    "reference_audio": ("GOOD", "GOOD"),
    "reference_text": (" A tone. ", "A tone."),
    "mode": ("clone", "clone"),
    "instructions": ("Calm.", "Calm."),
    "language": (" English ", "English"),
    "duration": (2.5, 2.5),
    "depth": (8.0, 8),
    "bitrate_kbps": (1.0, 8),  # the kbps box gives the depth
    "min_depth": (2.0, 2),
    "max_depth": (6.0, 6),
    "max_new_frames": (40.0, 40),
    "min_new_frames": (3.0, 3),
    "do_sample": (False, False),
    "temperature": (0.7, 0.7),
    "top_p": (0.5, 0.5),
    "top_k": (7.0, 7),
    "repetition_penalty": (1.3, 1.3),
    "control_temperature": (0.9, 0.9),
    "control_top_p": (0.8, 0.8),
    "control_top_k": (9.0, 9),
    "control_tokens": ("full", "full"),
    "seed": (123, 123),
}
WITH = {  # what a field needs beside it on the page
    "reference_text": {"reference_audio": "GOOD"},
    "min_depth": {AUTO_DEPTH: True},
    "max_depth": {AUTO_DEPTH: True},
}


@pytest.mark.parametrize("field", sorted(SENT))
def test_every_field_sent_by_the_page_reaches_the_request(field, clips):
    sent, expected = SENT[field]
    service = FakeService()
    values = {**WITH.get(field, {}), field: sent}
    values = {k: str(clips["good"]) if v == "GOOD" else v for k, v in values.items()}
    request = page_request(page_values(service, **values), service.limits)
    name = "depth" if field == "bitrate_kbps" else field
    holder = request.generation if name in GenerationConfig.field_names() else request
    got = getattr(holder, name)
    assert got == (str(clips["good"]) if expected == "GOOD" else expected), (field, got)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"text": "   "}, "Text to speak is empty"),
        ({"text": "x" * 501}, "Text to speak is 501 characters long; the limit is 500"),
        ({"language": "x" * 65}, "Language must be a name of 1-64"),
        ({"duration": -1.0}, "Duration must be a number of seconds > 0"),
        ({"duration": 200.0}, "Duration 200 s is 2500 frames; the frame limit"),
        ({"top_k": 2.5}, "Top-k must be an integer, got 2.5"),
        ({"top_p": 0.0}, "Top-p must be in (0, 1]"),
        ({"temperature": -1.0}, "Temperature must be in [0, 100]"),
        ({"seed": -3}, "Seed must be >= 0"),
        ({"bitrate_kbps": 0.01}, "Bitrate in kbps must be at least 0.125"),
        ({AUTO_DEPTH: True, "min_depth": 6.0, "max_depth": 2.0}, "Lowest automatic depth (6) must not exceed"),
        ({"min_new_frames": 9.0, "max_new_frames": 3.0}, "Frames before the end (9) must not exceed"),
        ({"control_top_k": -1.0}, "End-of-speech top-k must be >= 0"),
        ({"control_temperature": 1e-45}, "End-of-speech temperature must be 0 or at least"),
        ({"reference_text": "What it says."}, "Reference transcript is the transcript of your clip: upload the clip"),
        ({"mode": "continuation", "reference_audio": "GOOD"}, "Reference transcript"),
        ({"reference_audio": "SILENT"}, "Reference audio: audio"),
    ],
)
def test_a_bad_value_is_shown_under_its_label_and_never_reaches_the_model(fake, clips, changes, message):
    changes = {k: str(clips[v.lower()]) if v in ("GOOD", "SILENT") else v for k, v in changes.items()}
    handlers = DemoHandlers(fake)
    with pytest.raises(gr.Error) as info:
        list(handlers.generate_from(page_values(fake, **changes)))
    assert info.value.message.startswith(message), info.value.message
    assert fake.calls == []


def test_the_automatic_bitrate_box_asks_for_depth_auto_within_its_range(clips):
    service = FakeService(n_vq=12)
    auto = page_request(page_values(service, **{AUTO_DEPTH: True, "min_depth": 3.0}), service.limits)
    assert (auto.generation.depth, auto.generation.min_depth, auto.generation.max_depth) == ("auto", 3, 12)
    fixed = page_request(page_values(service, min_depth=3.0), service.limits)  # the range is for "auto" only
    assert fixed.generation.depth == 6 and fixed.generation.min_depth is None


def test_without_a_clip_the_bundled_voice_speaks():
    service = FakeService()
    voice = default_voice()
    request = page_request(page_values(service), service.limits)
    assert request.reference_audio == str(voice.audio) and request.reference_text == voice.text
    clone = page_request(page_values(service, mode="clone"), service.limits)
    assert clone.reference_audio == str(voice.audio) and clone.reference_text is None and clone.mode == "clone"


def test_empty_boxes_keep_the_request_defaults():
    service = FakeService()
    request = page_request(page_values(service), service.limits)
    assert request.language is None and request.duration is None and request.instructions in (None, "")
    assert request.mode is None
    released = GenerationConfig()
    for name in ("temperature", "top_p", "top_k", "repetition_penalty", "control_temperature", "control_top_p",
                 "control_top_k", "control_tokens", "do_sample", "min_new_frames", "max_new_frames"):  # fmt: skip
        assert getattr(request.generation, name) == getattr(released, name), name
