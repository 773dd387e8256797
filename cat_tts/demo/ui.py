"""The demo's Gradio Blocks layout: inputs, the bitrate slider, streaming playback and the side-by-side comparison.

`build_demo(service)` returns the Blocks (queue configured); `launch_demo` serves it with the safe defaults
(no analytics, no file access beyond uploads, the page's own cache and the bundled voice). The callbacks live in
`handlers.py`; the page's labels for the request's fields in `request.py` (`DEMO_LABELS`): every field of the
request has a widget, the rarely used ones in the collapsed "Advanced settings" accordion.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from typing import Any

from cat_tts.assets import default_voice
from cat_tts.codec.config import KBPS_PER_LAYER
from cat_tts.demo.handlers import DemoHandlers, SpeechService
from cat_tts.demo.request import AUTO_DEPTH, DEMO_LABELS, PAGE_INPUTS, DemoLimits, bitrate_info, format_kbps
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
    reference_path: str  # the bundled voice's clip (made for this project: no third-party recording)
    reference_text: str | None  # its transcript (continuation mode), or None for plain cloning
    depth: int  # bitrate slider position, 1..N (the model's number of layers)


def _gradio() -> Any:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError as e:
        raise ImportError("The demo needs gradio: pip install 'cat-tts[app]'") from e
    return gradio


def request_inputs(gr: Any, n_vq: int, limits: DemoLimits, max_seconds: float) -> dict[str, Any]:
    """The widgets of the request's fields (and the automatic-bitrate box), created in the current Blocks context.

    Returns:
        page input name (`PAGE_INPUTS`) -> component.
    """
    labels, start = DEMO_LABELS, limits.generation()
    w: dict[str, Any] = {}
    w["text"] = gr.Textbox(
        label=labels["text"],
        lines=3,
        max_length=limits.max_text_chars,
        placeholder=f"Up to {limits.max_text_chars} characters.",
        elem_id="text",
    )
    w["reference_audio"] = gr.Audio(
        label=labels["reference_audio"],
        sources=["upload", "microphone"],
        type="filepath",
        elem_id="reference",
    )
    w["reference_text"] = gr.Textbox(
        label=f"{labels['reference_text']} (optional)",
        lines=2,
        max_length=limits.max_text_chars,
        info="What the reference clip says. When given, the model continues the clip (often closer to the voice); "
        "when empty, it clones the voice from the audio alone. Without a clip the bundled voice speaks.",
        elem_id="reference_text",
    )
    with gr.Row():
        w["language"] = gr.Textbox(
            label=labels["language"],
            placeholder="auto (e.g. English, Chinese)",
            max_lines=1,
            elem_id="language",
        )
        w["duration"] = gr.Slider(
            0,
            max_seconds,
            value=0,
            step=0.5,
            label=labels["duration"],
            elem_id="duration",
            info="seconds of speech to aim for; 0 = auto (as long as the text needs)",
        )
    start_depth = default_depths(n_vq)[0]
    w["depth"] = gr.Slider(
        minimum=1,
        maximum=n_vq,
        step=1,
        value=start_depth,
        label=labels["depth"],
        info=bitrate_info(start_depth, n_vq),
        elem_id="bitrate",
    )
    w[AUTO_DEPTH] = gr.Checkbox(
        value=False,
        label="Automatic bitrate",
        elem_id="auto_depth",
        info="the engine chooses the depth from its load: as high as keeps every stream in real time",
    )
    with gr.Accordion("Sampling settings", open=False):
        w["temperature"] = gr.Slider(0.0, 2.0, value=start.temperature, step=0.05, label=labels["temperature"])
        w["top_p"] = gr.Slider(0.05, 1.0, value=start.top_p, step=0.01, label=labels["top_p"])
        w["top_k"] = gr.Slider(0, 200, value=start.top_k, step=1, label=labels["top_k"], info="0 = off")
        w["repetition_penalty"] = gr.Slider(
            1.0, 2.0, value=start.repetition_penalty, step=0.05, label=labels["repetition_penalty"]
        )
        w["seed"] = gr.Number(
            value=0, precision=0, minimum=0, label=labels["seed"], info="the same seed gives the same audio"
        )
    with gr.Accordion("Advanced settings", open=False, elem_id="advanced"):
        w["mode"] = gr.Radio(
            ["auto", "continuation", "clone"],
            value="auto",
            label=labels["mode"],
            info="continuation needs the transcript; auto = continuation when a transcript is given",
        )
        w["instructions"] = gr.Textbox(
            label=labels["instructions"],
            max_lines=2,
            max_length=limits.max_text_chars,
            placeholder="a style instruction (chat-layout models)",
        )
        w["bitrate_kbps"] = gr.Number(
            value=None,
            label=labels["bitrate_kbps"],
            minimum=0,
            step=0.125,
            info="0.125 kbps per layer; when filled, it replaces the Bitrate slider",
        )
        with gr.Row():
            w["min_depth"] = gr.Slider(1, n_vq, value=1, step=1, label=labels["min_depth"])
            w["max_depth"] = gr.Slider(1, n_vq, value=n_vq, step=1, label=labels["max_depth"])
        with gr.Row():
            w["max_new_frames"] = gr.Number(
                value=start.max_new_frames,
                precision=0,
                minimum=1,
                label=labels["max_new_frames"],
                info="frames per text segment at most (80 ms each); empty = from the text length",
            )
            w["min_new_frames"] = gr.Number(
                value=start.min_new_frames,
                precision=0,
                minimum=0,
                label=labels["min_new_frames"],
                info="frames generated before the model may end a segment",
            )
        w["do_sample"] = gr.Checkbox(value=start.do_sample, label=labels["do_sample"], info="off = greedy decoding")
        with gr.Row():
            w["control_temperature"] = gr.Slider(
                0.0, 3.0, value=start.control_temperature, step=0.05, label=labels["control_temperature"]
            )
            w["control_top_p"] = gr.Slider(0.05, 1.0, value=start.control_top_p, step=0.01,
                                           label=labels["control_top_p"])  # fmt: skip
            w["control_top_k"] = gr.Slider(0, 200, value=start.control_top_k, step=1, label=labels["control_top_k"])
        w["control_tokens"] = gr.Radio(
            ["audio", "full"],
            value=start.control_tokens,
            label=labels["control_tokens"],
            info="audio: continue or end only; full: the whole text vocabulary, as the released code samples",
        )
    return w


def build_demo(
    service: SpeechService,
    limits: DemoLimits | None = None,
    examples: Sequence[Example] = (),
    notice: str | None = None,
    streaming: bool | None = None,
) -> Any:
    """Builds the demo page.

    The depth sliders run over 1..N with N the service's `n_vq` (the model's number of RVQ layers). Generate and
    Compare share one Gradio concurrency limit, by default the engine's number of slots (`DemoLimits.concurrency`):
    that many requests are generated together in one engine batch (once `service.start()` runs the engine in the
    background); further requests wait in Gradio's queue, and any beyond the slots in the engine's queue.

    Args:
        service: a loaded `CatTTS` (or anything with its `n_vq`, `sample_rate`, `frame_rate`, `limits`,
            `stream_request`, `synthesize_request` and `encode_reference`).
        limits: the demo's limits (text length, concurrency, queue size, starting frame settings).
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
    handlers = DemoHandlers(service, limits, streaming=streaming)
    n_vq = handlers.n_vq
    if n_vq < 2:  # nothing to choose (and a Gradio slider needs two ends)
        raise InputError(f"the demo needs a model with at least 2 RVQ layers to choose from, got n_vq = {n_vq}")
    frame_rate = float(service.frame_rate)
    max_frames = service.limits.max_frames
    max_seconds = min(60.0, max_frames / frame_rate) if max_frames else 60.0
    _, start_a, start_b = default_depths(n_vq)
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
                inputs = request_inputs(gr, n_vq, limits, max_seconds)
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
                        compared = [_depth_column(gr, name, depth, n_vq, player) for name, depth in
                                    (("A", start_a), ("B", start_b))]  # fmt: skip
                    compare = gr.Button("Compare bitrates", variant="secondary", elem_id="compare")
        gr.Markdown(slider_explanation(n_vq, frame_rate), elem_id="explanation")
        if usable:
            gr.Examples(
                examples=[[e.text, e.reference_path, e.reference_text or "", e.depth] for e in usable],
                inputs=[inputs[name] for name in ("text", "reference_audio", "reference_text", "depth")],
                label="Examples (the bundled voice, a synthetic one made for this project)",
                cache_examples=False,
            )

        # The layers/kbps line follows the slider without a trip through the generation queue.
        for slider in (inputs["depth"], compared[0][0], compared[1][0]):
            slider.change(
                handlers.bitrate_update,
                inputs=slider,
                outputs=slider,
                queue=False,
                show_progress="hidden",
                trigger_mode="always_last",
                api_visibility="private",
            )
        page = [inputs[name] for name in PAGE_INPUTS]
        generation = generate.click(
            _generator(handlers.generate),
            inputs=page,
            outputs=[stream_audio, full_audio, report],
            concurrency_id="synthesis",
            time_limit=limits.time_limit_seconds,
            api_name="generate",
        )
        (depth_a, audio_a, report_a), (depth_b, audio_b, report_b) = compared
        compare.click(
            handlers.compare,
            inputs=[depth_a, depth_b, *page],
            outputs=[audio_a, report_a, audio_b, report_b],
            concurrency_id="synthesis",
            time_limit=limits.time_limit_seconds,
            api_name="compare",
        )
        # Stops a running generation between two streamed pieces; the clip so far stays in the stream player.
        stop.click(lambda: "Stopped.", outputs=report, cancels=[generation], queue=False, api_visibility="private")
    # Generate and Compare share one concurrency limit: their requests go to the same engine.
    demo.queue(max_size=limits.max_queue_size, default_concurrency_limit=limits.concurrency(service))
    return demo


def _depth_column(gr: Any, name: str, depth: int, n_vq: int, player: Any) -> tuple[Any, Any, Any]:
    """One side of the comparison: its depth slider, player and report."""
    key = name.lower()
    with gr.Column():
        slider = gr.Slider(1, n_vq, value=depth, step=1, label=f"Depth {name}", info=bitrate_info(depth, n_vq),
                           elem_id=f"depth_{key}")  # fmt: skip
        audio = gr.Audio(label=f"Depth {name}", interactive=False, format="wav", waveform_options=player,
                         elem_id=f"audio_{key}")  # fmt: skip
        report = gr.Textbox(label=f"Report {name}", interactive=False, elem_id=f"report_{key}")
    return slider, audio, report


def _generator(method: Any) -> Any:
    """`method` as a plain generator function (Gradio streams the outputs of generator functions)."""

    def generate(*values: Any) -> Iterator[Any]:
        yield from method(*values)

    return generate


def launch_demo(
    demo: Any,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    max_upload_mb: int = 50,
    max_threads: int = 40,
) -> None:
    """Serves the demo (blocks until interrupted: Ctrl-C, or SIGTERM where `app.py` turns it into one).

    Files: Gradio serves only what users uploaded, what the page wrote into its own cache (generated clips) and the
    bundled voice's clip (the examples' reference); nothing else on the machine is reachable.

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
        allowed_paths=[str(default_voice().audio)],
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


def bundled_examples(n_vq: int) -> list[Example]:
    """The examples: the bundled voice at depths of a model with `n_vq` layers (half, a quarter, all of them)."""
    voice = default_voice()
    half, quarter, every = default_depths(n_vq)
    clip = str(voice.audio)
    return [
        Example("Hello! This voice was cloned from a few seconds of audio.", clip, None, half),
        Example("One model, any bitrate: move the slider to trade quality for speed.", clip, voice.text, quarter),
        Example("With every codec layer, the voice gets the highest bitrate.", clip, None, every),
    ]
