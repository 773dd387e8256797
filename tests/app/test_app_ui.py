"""The Blocks layout and queue settings, checked on the built (not launched) demo, and app.py's argument errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gradio as gr
import pytest
from app_fakes import FakePipeline

from cat_tts.app import DemoLimits, Example, build_demo, bundled_examples

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo():
    limits = DemoLimits(max_text_chars=300, concurrency_limit=2, max_queue_size=5, time_limit_seconds=120)
    examples = bundled_examples(ROOT)
    return build_demo(FakePipeline(), limits, examples=examples, streaming=True)


def components(demo, kind):
    return {b.label: b for b in demo.blocks.values() if isinstance(b, kind)}


def test_inputs_are_labelled_and_bounded(demo):
    texts = components(demo, gr.Textbox)
    assert texts["Text to speak"].max_length == 300
    assert texts["Reference transcript (optional)"].max_length == 300
    audios = components(demo, gr.Audio)
    reference = audios["Reference audio"]
    assert reference.sources == ["upload", "microphone"] and reference.type == "filepath"
    sliders = components(demo, gr.Slider)
    bitrate = sliders["Bitrate"]
    assert (bitrate.minimum, bitrate.maximum, bitrate.step, bitrate.value) == (1, 32, 1, 16)
    assert bitrate.info == "16 of 32 layers = 2 kbps (0.125 kbps per layer)"
    assert (sliders["Depth A"].value, sliders["Depth B"].value) == (8, 32)
    assert sliders["Depth B"].info.startswith("32 of 32 layers = 4 kbps")
    assert audios["Streaming playback"].streaming and not audios["Full clip (WAV)"].streaming
    assert {"Generate", "Stop", "Compare bitrates"} <= {
        b.value for b in demo.blocks.values() if isinstance(b, gr.Button)
    }


def test_streaming_player_is_hidden_without_streaming():
    audios = components(build_demo(FakePipeline(), streaming=False), gr.Audio)
    assert not audios["Streaming playback"].streaming and audios["Streaming playback"].visible is False


def test_sampling_settings_sit_in_a_collapsed_accordion(demo):
    (accordion,) = [b for b in demo.blocks.values() if isinstance(b, gr.Accordion)]
    assert accordion.label == "Sampling settings" and accordion.open is False
    inside = set()
    stack = list(accordion.children)
    while stack:  # gradio wraps inputs in layout blocks (Form): walk down to the components
        block = stack.pop()
        stack.extend(getattr(block, "children", []))
        if isinstance(block, gr.components.Component):
            inside.add(block.label)
    assert inside == {"Temperature", "Top-p", "Top-k (0 = off)", "Repetition penalty", "Seed"}


def test_generation_is_queued_with_one_shared_concurrency_limit(demo):
    assert demo._queue.max_size == 5 and demo._queue.default_concurrency_limit == 2
    by_name = {fn.name: fn for fn in demo.fns.values()}
    for name in ("generate", "compare"):
        fn = by_name[name]
        assert fn.queue and fn.concurrency_id == "synthesis" and fn.time_limit == 120
    # The sliders' kbps lines update outside the queue, so a long generation never delays them.
    updates = [fn for fn in demo.fns.values() if fn.name == "bitrate_update"]
    assert len(updates) == 3 and not any(fn.queue for fn in updates)


def test_examples_use_the_bundled_reference_clip():
    examples = bundled_examples(ROOT)
    assert examples and all(Path(e.reference_path) == ROOT / "docs/assets/reference.wav" for e in examples)
    assert any(e.reference_text for e in examples) and all(1 <= e.depth <= 32 for e in examples)
    assert isinstance(examples[0], Example)
    assert bundled_examples(ROOT / "nowhere") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "/nonexistent/model", "--codec", "/nonexistent/codec"], "does not exist"),
        (["--min-new-frames", "9", "--max-new-frames", "2"], "min_new_frames must be in 0..max_new_frames"),
        (["--port", "70000"], "--port must be in 1..65535"),
    ],
)
def test_app_cli_fails_with_one_line(args, message):
    result = subprocess.run([sys.executable, str(ROOT / "app.py"), *args], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
