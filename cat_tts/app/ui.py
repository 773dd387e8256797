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
    SETTING_LABELS,
    DemoHandlers,
    DemoLimits,
    SamplingSettings,
    SpeechPipeline,
    bitrate_info,
    format_kbps,
)
from cat_tts.codec.config import KBPS_PER_LAYER
from cat_tts.errors import InputError

logger = logging.getLogger(__name__)


def default_depths(n_vq: int) -> tuple[int, int, int]:
    """Starting positions of the Bitrate, Depth A and Depth B sliders for a model with `n_vq` layers:
    half of the layers, a quarter of them, all of them (16, 8, 32 for the released model)."""
    return max(1, n_vq // 2), max(1, n_vq // 4), n_vq


def slider_explanation(n_vq: int, frame_rate: float) -> str:
    """The text under the page that says what the bitrate slider does, for `n_vq` layers at `frame_rate` frames/s."""
    low = default_depths(n_vq)[1]
    examples = f"K = {low} is {format_kbps(low)} and " if low < n_vq else ""
    return f"""\
**What the bitrate slider does.** CAT-TTS speaks through the CAT codec, which describes every {1000 / frame_rate:g} ms
of sound with up to {n_vq} stacked codebooks (residual vector quantisation): layer 1 carries the coarse sound and
each further layer refines what the layers before it missed. The slider sets the depth K, how many layers the model
generates and the codec decodes. Each layer costs {KBPS_PER_LAYER:g} kbps, so {examples}K = {n_vq} is
{format_kbps(n_vq)}. One model serves every depth (it was trained with Progressive Sequence Dropout): fewer layers
generate faster and sound rougher. *Compare bitrates* plays the same sentence, voice and seed at two depths side by
side."""


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
    depth: int  # bitrate slider position, 1..N (the model's number of layers)


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

    The depth sliders run over 1..N with N the pipeline's `n_vq` (the model's number of RVQ layers). Generate and
    Compare share one Gradio concurrency limit, by default the engine's number of slots (`DemoLimits.concurrency`):
    that many requests are generated together in one engine batch (once `pipeline.start()` runs the engine in the
    background); further requests wait in Gradio's queue, and any beyond the slots in the engine's queue.

    Args:
        pipeline: a loaded `CatTTS` (or anything with its `n_vq`, `sample_rate`, `frame_rate`, `stream` and
            `synthesize`).
        limits: request limits (text length, reference length, concurrency, queue size).
        examples: rows for the examples table (rows whose depth exceeds N are left out).
        notice: an optional warning shown at the top (e.g. that random tiny checkpoints make noise).
        streaming: play audio while it is generated. Gradio encodes the stream with ffmpeg, so the default
            is on when ffmpeg is installed; without it the page plays the full clip when it is ready.

    Returns:
        The `gr.Blocks`, queue configured, not launched.

    Raises:
        InputError: a model with fewer than 2 layers (there is no bitrate to choose).
    """
    gr = _gradio()
    limits = limits or DemoLimits()
    if streaming is None:
        streaming = shutil.which("ffmpeg") is not None
        if not streaming:
            logger.warning("ffmpeg not found: streaming playback is off (install ffmpeg to turn it on)")
    handlers = DemoHandlers(pipeline, limits, streaming=streaming)
    n_vq = handlers.n_vq
    if n_vq < 2:  # nothing to choose (and a Gradio slider needs two ends)
        raise InputError(f"the demo needs a model with at least 2 RVQ layers to choose from, got n_vq = {n_vq}")
    start_depth, start_a, start_b = default_depths(n_vq)
    defaults = SamplingSettings()  # GenerationConfig's defaults
    usable = [e for e in examples if 1 <= e.depth <= n_vq]
    if len(usable) < len(examples):
        left_out = len(examples) - len(usable)
        logger.warning("left out %d examples whose depth exceeds this model's %d layers", left_out, n_vq)
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
                    maximum=n_vq,
                    step=1,
                    value=start_depth,
                    label="Bitrate",
                    info=bitrate_info(start_depth, n_vq),
                    elem_id="bitrate",
                )
                with gr.Accordion("Sampling settings", open=False):
                    labels = SETTING_LABELS
                    temperature = gr.Slider(
                        0.0, 2.0, value=defaults.temperature, step=0.05, label=labels["temperature"]
                    )
                    top_p = gr.Slider(0.05, 1.0, value=defaults.top_p, step=0.01, label=labels["top_p"])
                    top_k = gr.Slider(0, 200, value=defaults.top_k, step=1, label=f"{labels['top_k']} (0 = off)")
                    repetition_penalty = gr.Slider(
                        1.0, 2.0, value=defaults.repetition_penalty, step=0.05, label=labels["repetition_penalty"]
                    )
                    seed = gr.Number(value=defaults.seed, precision=0, minimum=0, label=labels["seed"])
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
                                1,
                                n_vq,
                                value=start_a,
                                step=1,
                                label="Depth A",
                                info=bitrate_info(start_a, n_vq),
                                elem_id="depth_a",
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
                                n_vq,
                                value=start_b,
                                step=1,
                                label="Depth B",
                                info=bitrate_info(start_b, n_vq),
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
        gr.Markdown(slider_explanation(n_vq, float(pipeline.frame_rate)), elem_id="explanation")
        if usable:
            gr.Examples(
                examples=[[e.text, e.reference_path, e.reference_text or "", e.depth] for e in usable],
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
    # Generate and Compare share one concurrency limit: their requests go to the same engine.
    demo.queue(max_size=limits.max_queue_size, default_concurrency_limit=limits.concurrency(pipeline))
    return demo


def launch_demo(
    demo: Any,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    max_upload_mb: int = 50,
    max_threads: int = 40,
) -> None:
    """Serves the demo (blocks until interrupted: Ctrl-C, or SIGTERM where `app.py` turns it into one).

    Files: Gradio serves only what users uploaded and what the app wrote into its own cache (examples,
    generated clips); `allowed_paths` stays empty, so nothing else on the machine is reachable.

    Args:
        demo: the Blocks from `build_demo`.
        host: interface to listen on ("0.0.0.0" to accept other machines).
        port: TCP port (None: Gradio's default 7860, or the next free one).
        share: also open a public Gradio share link.
        max_upload_mb: largest accepted upload, in MB.
        max_threads: Gradio's worker threads: at least the concurrency limit, plus a few for the slider updates
            that run outside the queue (Gradio's default is 40).
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
        max_threads=max_threads,
    )


def bundled_examples(root: str | Path, n_vq: int) -> list[Example]:
    """The examples that use the project's own reference clip, if `root/docs/assets/reference.wav` exists, at
    depths of a model with `n_vq` layers (half, a quarter, all of them)."""
    assets = Path(root) / "docs" / "assets"
    clip = assets / "reference.wav"
    if not clip.is_file():
        logger.warning("no bundled reference clip at %s: the demo starts without examples", clip)
        return []
    transcript_file = assets / "reference.txt"
    transcript = transcript_file.read_text(encoding="utf-8").strip() if transcript_file.is_file() else None
    half, quarter, every = default_depths(n_vq)
    return [
        Example("Hello! This voice was cloned from a few seconds of audio.", str(clip), None, half),
        Example("One model, any bitrate: move the slider to trade quality for speed.", str(clip), transcript, quarter),
        Example("With every codec layer, the voice gets the highest bitrate.", str(clip), None, every),
    ]
