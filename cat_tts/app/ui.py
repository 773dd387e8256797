"""The demo's Gradio Blocks layout: inputs, the bitrate slider, streaming playback and the side-by-side comparison.

`build_demo(pipeline)` returns the Blocks (queue configured); `launch_demo` serves it with the safe defaults
(no analytics, no file access beyond uploads and the app's own cache). The callbacks live in `handlers.py`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cat_tts.app.handlers import (
    NUM_LAYERS,
    DemoHandlers,
    DemoLimits,
    SamplingSettings,
    SpeechPipeline,
    bitrate_info,
)

logger = logging.getLogger(__name__)

SLIDER_EXPLANATION = f"""\
**What the bitrate slider does.** CAT-TTS speaks through the CAT codec, which describes every 80 ms of sound
with up to {NUM_LAYERS} stacked codebooks (residual vector quantisation): layer 1 carries the coarse sound and each
further layer refines what the layers before it missed. The slider sets the depth K, how many layers the model
generates and the codec decodes. Each layer costs 0.125 kbps, so K = 8 is 1 kbps and K = {NUM_LAYERS} is 4 kbps.
One model serves every depth (it was trained with Progressive Sequence Dropout): fewer layers generate faster
and sound rougher. *Compare bitrates* plays the same sentence, voice and seed at two depths side by side."""


# The bitrate is the demo's point: its "K layers = x kbps" lines read as text, not as a faint hint.
DEMO_CSS = """
#bitrate .info-text, #depth_a .info-text, #depth_b .info-text {
    font-size: var(--text-md); color: var(--body-text-color); font-weight: 600;
}
"""


@dataclasses.dataclass(frozen=True)
class Example:
    """One row of the examples table."""

    text: str  # text to speak
    reference_path: str  # a reference clip shipped with the project (no third-party recordings)
    reference_text: str | None  # its transcript (continuation mode), or None for plain cloning
    depth: int  # bitrate slider position, 1..32


def _gradio() -> Any:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError as e:
        raise ImportError("The demo needs gradio: pip install 'cat-tts[app]'") from e
    return gradio


def build_demo(
    pipeline: SpeechPipeline,
    limits: DemoLimits | None = None,
    examples: Sequence[Example] = (),
    notice: str | None = None,
    streaming: bool | None = None,
) -> Any:
    """Builds the demo page.

    Args:
        pipeline: a loaded `CatTTS` (or anything with its `stream`/`synthesize` methods).
        limits: request limits (text length, reference length, concurrency, queue size).
        examples: rows for the examples table.
        notice: an optional warning shown at the top (e.g. that random tiny checkpoints make noise).
        streaming: play audio while it is generated. Gradio encodes the stream with ffmpeg, so the default
            is on when ffmpeg is installed; without it the page plays the full clip when it is ready.

    Returns:
        The `gr.Blocks`, queue configured, not launched.
    """
    gr = _gradio()
    limits = limits or DemoLimits()
    if streaming is None:
        streaming = shutil.which("ffmpeg") is not None
        if not streaming:
            logger.warning("ffmpeg not found: streaming playback is off (install ffmpeg to turn it on)")
    handlers = DemoHandlers(pipeline, limits, streaming=streaming)
    defaults = SamplingSettings()
    # Output clips play in the browser's own <audio> player (seekable, keyboard accessible, downloadable).
    player = gr.WaveformOptions(show_recording_waveform=False)

    with gr.Blocks(title="cat-tts: voice cloning at any bitrate", analytics_enabled=False) as demo:
        gr.Markdown(
            "# cat-tts: voice cloning at any bitrate\n"
            "Give a few seconds of a voice and some text; choose how many codec layers to spend on it."
        )
        if notice:
            gr.Markdown(f"> **Note:** {notice}", elem_id="notice")
        with gr.Row():
            with gr.Column(scale=1):
                text = gr.Textbox(
                    label="Text to speak",
                    lines=3,
                    max_length=limits.max_text_chars,
                    placeholder=f"Up to {limits.max_text_chars} characters.",
                    elem_id="text",
                )
                reference = gr.Audio(
                    label="Reference audio",
                    sources=["upload", "microphone"],
                    type="filepath",
                    elem_id="reference",
                )
                reference_text = gr.Textbox(
                    label="Reference transcript (optional)",
                    info="What the reference clip says. When given, the model continues the clip (often closer "
                    "to the voice); when empty, it clones the voice from the audio alone.",
                    lines=2,
                    max_length=limits.max_text_chars,
                    elem_id="reference_text",
                )
                depth = gr.Slider(
                    minimum=1,
                    maximum=NUM_LAYERS,
                    step=1,
                    value=16,
                    label="Bitrate",
                    info=bitrate_info(16),
                    elem_id="bitrate",
                )
                with gr.Accordion("Sampling settings", open=False):
                    temperature = gr.Slider(0.0, 2.0, value=defaults.temperature, step=0.05, label="Temperature")
                    top_p = gr.Slider(0.05, 1.0, value=defaults.top_p, step=0.01, label="Top-p")
                    top_k = gr.Slider(0, 200, value=defaults.top_k, step=1, label="Top-k (0 = off)")
                    repetition_penalty = gr.Slider(
                        1.0, 2.0, value=defaults.repetition_penalty, step=0.05, label="Repetition penalty"
                    )
                    seed = gr.Number(value=defaults.seed, precision=0, minimum=0, label="Seed")
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary", scale=3, elem_id="generate")
                    stop = gr.Button("Stop", variant="stop", scale=1, elem_id="stop")
            with gr.Column(scale=1):
                with gr.Tab("Generate"):
                    # Without streaming the player stays hidden and receives nothing.
                    stream_audio = gr.Audio(
                        label="Streaming playback",
                        streaming=streaming,
                        autoplay=True,
                        interactive=False,
                        visible=streaming,
                        elem_id="stream_audio",
                    )
                    full_audio = gr.Audio(
                        label="Full clip (WAV)",
                        type="numpy",
                        format="wav",
                        interactive=False,
                        waveform_options=player,
                        elem_id="full_audio",
                    )
                    report = gr.Textbox(label="Generation report", interactive=False, elem_id="report")
                with gr.Tab("Compare bitrates"):
                    gr.Markdown("The same text, reference voice and seed, generated at two depths.")
                    with gr.Row():
                        with gr.Column():
                            depth_a = gr.Slider(
                                1, NUM_LAYERS, value=8, step=1, label="Depth A", info=bitrate_info(8), elem_id="depth_a"
                            )
                            audio_a = gr.Audio(
                                label="Depth A",
                                interactive=False,
                                format="wav",
                                waveform_options=player,
                                elem_id="audio_a",
                            )
                            report_a = gr.Textbox(label="Report A", interactive=False, elem_id="report_a")
                        with gr.Column():
                            depth_b = gr.Slider(
                                1,
                                NUM_LAYERS,
                                value=NUM_LAYERS,
                                step=1,
                                label="Depth B",
                                info=bitrate_info(NUM_LAYERS),
                                elem_id="depth_b",
                            )
                            audio_b = gr.Audio(
                                label="Depth B",
                                interactive=False,
                                format="wav",
                                waveform_options=player,
                                elem_id="audio_b",
                            )
                            report_b = gr.Textbox(label="Report B", interactive=False, elem_id="report_b")
                    compare = gr.Button("Compare bitrates", variant="secondary", elem_id="compare")
        gr.Markdown(SLIDER_EXPLANATION, elem_id="explanation")
        if examples:
            gr.Examples(
                examples=[[e.text, e.reference_path, e.reference_text or "", e.depth] for e in examples],
                inputs=[text, reference, reference_text, depth],
                label="Examples (a synthetic reference voice made for this project)",
                cache_examples=False,
            )

        # The layers/kbps line follows the slider without a trip through the generation queue.
        for slider in (depth, depth_a, depth_b):
            slider.change(
                handlers.bitrate_update,
                inputs=slider,
                outputs=slider,
                queue=False,
                show_progress="hidden",
                trigger_mode="always_last",
                api_visibility="private",
            )
        sampling = [temperature, top_p, top_k, repetition_penalty, seed]
        generation = generate.click(
            handlers.generate,
            inputs=[text, reference, reference_text, depth, *sampling],
            outputs=[stream_audio, full_audio, report],
            concurrency_id="synthesis",
            time_limit=limits.time_limit_seconds,
            api_name="generate",
        )
        compare.click(
            handlers.compare,
            inputs=[text, reference, reference_text, depth_a, depth_b, *sampling],
            outputs=[audio_a, report_a, audio_b, report_b],
            concurrency_id="synthesis",
            time_limit=limits.time_limit_seconds,
            api_name="compare",
        )
        # Stops a running generation between two streamed chunks; the clip so far stays in the stream player.
        stop.click(lambda: "Stopped.", outputs=report, cancels=[generation], queue=False, api_visibility="private")
    # Generate and Compare share one concurrency slot pool: they run on the same model.
    demo.queue(max_size=limits.max_queue_size, default_concurrency_limit=limits.concurrency_limit)
    return demo


def launch_demo(
    demo: Any,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    max_upload_mb: int = 50,
) -> None:
    """Serves the demo (blocks until interrupted).

    Files: Gradio serves only what users uploaded and what the app wrote into its own cache (examples,
    generated clips); `allowed_paths` stays empty, so nothing else on the machine is reachable.

    Args:
        demo: the Blocks from `build_demo`.
        host: interface to listen on ("0.0.0.0" to accept other machines).
        port: TCP port (None: Gradio's default 7860, or the next free one).
        share: also open a public Gradio share link.
        max_upload_mb: largest accepted upload, in MB.
    """
    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        allowed_paths=[],
        max_file_size=f"{max_upload_mb}mb",
        show_error=False,
        ssr_mode=False,
        mcp_server=False,
        enable_monitoring=False,
        pwa=False,
        footer_links=["gradio"],
        inbrowser=False,
        css=DEMO_CSS,
    )


def bundled_examples(root: str | Path) -> list[Example]:
    """The examples that use the project's own reference clip, if `root/docs/assets/reference.wav` exists."""
    assets = Path(root) / "docs" / "assets"
    clip = assets / "reference.wav"
    if not clip.is_file():
        logger.warning("no bundled reference clip at %s: the demo starts without examples", clip)
        return []
    transcript_file = assets / "reference.txt"
    transcript = transcript_file.read_text(encoding="utf-8").strip() if transcript_file.is_file() else None
    return [
        Example("Hello! This voice was cloned from a few seconds of audio.", str(clip), None, 16),
        Example("One model, any bitrate: move the slider to trade quality for speed.", str(clip), transcript, 8),
        Example("At thirty-two layers the codec spends four kilobits per second.", str(clip), None, 32),
    ]
