"""The demo's logic without its layout: input validation, streamed generation and the bitrate comparison.

Everything here takes the pipeline as an argument: any object with the `CatTTS` attributes `n_vq`,
`sample_rate`, `frame_rate` and methods `stream(...)` / `synthesize(...)` (see `SpeechPipeline`). The same code
therefore serves the released weights, the `make_tiny` checkpoints and a small fake in tests. The number of RVQ
layers N (the depth bound) always comes from the pipeline, i.e. from the model's config; the sampling defaults and
their validation from `GenerationConfig`.

Two parts:
- pure functions (`parse_request`, `stream_speech`, `synthesize_speech`) that raise `DemoInputError`
  for a request the demo refuses and know nothing about Gradio;
- `DemoHandlers`, the callbacks the Blocks UI wires to its buttons. They turn a `DemoInputError` (or a
  pipeline's own `ValueError`) into a visible `gr.Error`, and any other failure into a short `gr.Error`
  while the traceback goes to the server log, so one failing request never takes the server down.

Concurrency: the pipeline runs on the continuous-batching engine; with `CatTTS.start()` called, handlers running in
several Gradio worker threads at once put their requests into one engine batch. A handler that is stopped (the
Stop button, the time limit, a closed page) closes its stream, which cancels the engine request and frees its slot.

Shapes: S samples of mono float32 audio at the pipeline's sample rate (24 kHz for CAT).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cat_tts.audio import DEFAULT_SAMPLE_RATE  # the CAT codec's rate: the default for reading a reference clip
from cat_tts.codec.config import KBPS_PER_LAYER, bitrate_kbps
from cat_tts.errors import InputError
from cat_tts.generation import GenerationConfig

logger = logging.getLogger(__name__)

_DEFAULTS = GenerationConfig()  # the released model's sampling settings: the demo's defaults


class DemoInputError(InputError):
    """A request the demo refuses. The message is shown to the user as it is, so it says how to fix it."""


class EmptyOutputError(RuntimeError):
    """The pipeline ended without producing audio (the model chose to stop at once)."""


class SpeechPipeline(Protocol):
    """What the demo needs from `cat_tts.inference.CatTTS`."""

    n_vq: int  # N: RVQ layers of the model (from its config); depth K runs over 1..N
    sample_rate: int  # rate of the audio it returns (and of the reference arrays it is given), in Hz
    frame_rate: float  # codec frames per second

    def stream(
        self,
        text: str,
        reference_audio: Any,
        reference_text: str | None = None,
        *,
        depth: int | None = None,
        config: GenerationConfig | None = None,
    ) -> Iterator[np.ndarray]: ...

    def synthesize(
        self,
        text: str,
        reference_audio: Any,
        reference_text: str | None = None,
        *,
        depth: int | None = None,
        config: GenerationConfig | None = None,
    ) -> tuple[np.ndarray, int]: ...


kbps = bitrate_kbps  # the bitrate of depth K, as the demo shows it

# The sampling settings as the page labels them (error messages name what the user sees).
SETTING_LABELS = {
    "temperature": "Temperature",
    "top_p": "Top-p",
    "top_k": "Top-k",
    "repetition_penalty": "Repetition penalty",
    "seed": "Seed",
}


def format_kbps(depth: int) -> str:
    """`8` -> `"1 kbps"`, `3` -> `"0.375 kbps"`: exact, no trailing zeros."""
    return f"{kbps(depth):g} kbps"


def bitrate_info(depth: int, n_vq: int) -> str:
    """The bitrate slider's info line for `depth` of a model with `n_vq` layers,
    e.g. `"16 of 32 layers = 2 kbps (0.125 kbps per layer)"`."""
    return f"{depth} of {n_vq} layers = {format_kbps(depth)} ({KBPS_PER_LAYER:g} kbps per layer)"


@dataclasses.dataclass
class DemoLimits:
    """What one request may ask for, and how many run at once. Validation raises `InputError` naming the field."""

    max_text_chars: int = 500  # longest text to speak (and longest reference transcript), in characters
    min_reference_seconds: float = 1.0  # shortest usable reference clip, in seconds
    max_reference_seconds: float = 30.0  # longest accepted reference clip, in seconds
    concurrency_limit: int | None = None  # requests handled at once (Gradio workers); None = one per engine slot
    max_queue_size: int = 16  # requests waiting in Gradio's queue before new ones are turned away
    time_limit_seconds: int = 600  # a request running longer than this is stopped, in seconds
    max_new_frames: int | None = None  # frame cap per text chunk, in codec frames; None = the pipeline's own budget
    min_new_frames: int = 0  # frames before the model may end a chunk (random tiny checkpoints end at once)

    def __post_init__(self) -> None:
        if not 1 <= self.max_text_chars <= 100_000:
            raise InputError(f"max_text_chars must be in 1..100000, got {self.max_text_chars}")
        if not 0.0 < self.min_reference_seconds <= 600.0:
            raise InputError(f"min_reference_seconds must be in (0, 600], got {self.min_reference_seconds}")
        if not self.min_reference_seconds <= self.max_reference_seconds <= 600.0:
            raise InputError(
                f"max_reference_seconds must be in {self.min_reference_seconds:g}..600 (not below the shortest "
                f"accepted clip, min_reference_seconds), got {self.max_reference_seconds:g}"
            )
        if self.concurrency_limit is not None and not 1 <= self.concurrency_limit <= 1024:
            raise InputError(f"concurrency_limit must be in 1..1024, got {self.concurrency_limit}")
        if not 1 <= self.max_queue_size <= 10_000:
            raise InputError(f"max_queue_size must be in 1..10000, got {self.max_queue_size}")
        if not 1 <= self.time_limit_seconds <= 86_400:
            raise InputError(f"time_limit_seconds must be in 1..86400, got {self.time_limit_seconds}")
        self.frame_limits(_DEFAULTS)  # the frame limits are generation settings: GenerationConfig checks them

    def frame_limits(self, config: GenerationConfig) -> GenerationConfig:
        """`config` with this demo's frame limits (InputError naming `min_new_frames` / `max_new_frames`)."""
        return dataclasses.replace(config, min_new_frames=self.min_new_frames, max_new_frames=self.max_new_frames)

    def concurrency(self, pipeline: Any) -> int:
        """Requests handled at once: the configured limit, else one per engine slot of `pipeline` (1 without one).

        More than the slots is allowed: the extra requests wait in the engine's queue for a free slot.
        """
        if self.concurrency_limit is not None:
            return self.concurrency_limit
        engine = getattr(pipeline, "engine", None)
        return int(getattr(engine, "max_slots", 1))


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    """Sampling of the audio layers (the settings in the demo's collapsed accordion).

    The defaults and the allowed ranges are `GenerationConfig`'s (the released model's settings); an out-of-range
    value raises `DemoInputError` naming the setting as the page labels it.
    """

    temperature: float = _DEFAULTS.temperature  # softmax temperature; 0 = greedy (always the most likely code)
    top_p: float = _DEFAULTS.top_p  # nucleus sampling: keep the smallest set of codes reaching this mass; 1 = off
    top_k: int = _DEFAULTS.top_k  # keep only the k most likely codes; 0 = no limit
    repetition_penalty: float = _DEFAULTS.repetition_penalty  # > 1 discourages repeating recent codes; 1 = off
    seed: int = 0  # random seed (the demo's own default: fixed, so the same inputs give the same audio)

    def __post_init__(self) -> None:
        self.generation_config()

    def generation_config(self, limits: DemoLimits | None = None) -> GenerationConfig:
        """These settings (and the frame limits of `limits`, if given) as the pipeline's `GenerationConfig`."""
        try:
            config = GenerationConfig(
                temperature=self.temperature,
                top_p=self.top_p,
                top_k=self.top_k,
                repetition_penalty=self.repetition_penalty,
                seed=self.seed,
            )
        except InputError as e:
            message = str(e)
            for field, label in SETTING_LABELS.items():
                message = re.sub(rf"\b{field}\b", label, message)
            raise DemoInputError(f"Sampling settings: {message}.") from None
        return config if limits is None else limits.frame_limits(config)

    @classmethod
    def from_ui(cls, temperature: Any, top_p: Any, top_k: Any, repetition_penalty: Any, seed: Any) -> SamplingSettings:
        """Builds the settings from raw widget values (numbers may arrive as floats or None)."""
        try:
            return cls(
                temperature=float(temperature),
                top_p=float(top_p),
                top_k=_as_int("top_k", top_k),
                repetition_penalty=float(repetition_penalty),
                seed=_as_int("seed", seed),
            )
        except (TypeError, ValueError) as e:
            if isinstance(e, DemoInputError):
                raise
            raise DemoInputError(f"Sampling settings must be numbers: {e}.") from None


def _as_int(name: str, value: Any) -> int:
    label = SETTING_LABELS[name]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DemoInputError(f"Sampling settings: {label} is empty; enter a whole number.")
    number = float(value)
    if not math.isfinite(number) or number != int(number):
        raise DemoInputError(f"Sampling settings: {label} must be a whole number, got {value!r}.")
    return int(number)


@dataclasses.dataclass(frozen=True)
class SpeechRequest:
    """One validated request."""

    text: str  # what to say (stripped, non-empty)
    reference: np.ndarray  # [S] float32 mono reference clip at `sample_rate`
    sample_rate: int  # rate of `reference` and of the generated audio, in Hz
    reference_text: str | None  # transcript of the reference (continuation mode) or None
    depth: int  # K: RVQ layers generated and decoded, 1..N
    config: GenerationConfig  # sampling, seed and frame limits (the depth travels apart: a comparison changes it)
    voice: Any = None  # the reference as the pipeline's pre-encoded codes ([N, L]), reused across depths; or None

    def pipeline_args(self, depth: int | None = None) -> dict[str, Any]:
        """Keyword arguments for `CatTTS.stream/synthesize`, optionally at another depth."""
        return {
            "text": self.text,
            "reference_audio": (self.reference, self.sample_rate) if self.voice is None else self.voice,
            "reference_text": self.reference_text,
            "depth": self.depth if depth is None else depth,
            "config": self.config,
        }


@dataclasses.dataclass(frozen=True)
class GenerationStats:
    """What the demo reports under a clip."""

    depth: int  # RVQ layers generated
    audio_seconds: float  # length of the generated clip
    generation_seconds: float  # wall time from the request to the last sample
    first_audio_seconds: float | None = None  # wall time to the first streamed chunk (None when not streamed)

    @property
    def kbps(self) -> float:
        return kbps(self.depth)

    @property
    def rtf(self) -> float:
        """Real-time factor: generation time / audio time (below 1 = faster than real time)."""
        return self.generation_seconds / self.audio_seconds if self.audio_seconds > 0 else math.inf

    def summary(self) -> str:
        """One line: depth, kbps, audio seconds, generation time, RTF (and time to first audio)."""
        parts = [
            f"Depth {self.depth} = {format_kbps(self.depth)}",
            f"{self.audio_seconds:.2f} s of audio",
            f"generated in {self.generation_seconds:.2f} s",
        ]
        if self.first_audio_seconds is not None:
            parts.append(f"first audio after {self.first_audio_seconds:.2f} s")
        parts.append(f"RTF {self.rtf:.2f}")
        return " · ".join(parts)


def validate_text(text: str | None, limits: DemoLimits) -> str:
    """The text to speak, stripped. Raises DemoInputError when empty, unspeakable or too long."""
    text = (text or "").strip()
    if not text:
        raise DemoInputError("Please enter the text to speak.")
    if len(text) > limits.max_text_chars:
        raise DemoInputError(
            f"The text is {len(text)} characters long; the limit is {limits.max_text_chars}. "
            "Shorten it or split it into several requests."
        )
    if not any(ch.isalnum() for ch in text):
        raise DemoInputError("The text has no letters or digits to speak.")
    return text


def validate_reference_text(text: str | None, limits: DemoLimits) -> str | None:
    """The optional transcript of the reference clip, stripped; None when empty."""
    text = (text or "").strip()
    if not text:
        return None
    if len(text) > limits.max_text_chars:
        raise DemoInputError(
            f"The reference transcript is {len(text)} characters long; the limit is {limits.max_text_chars}. "
            "Use a shorter reference clip and its transcript, or leave the transcript empty."
        )
    return text


def validate_depth(depth: Any, n_vq: int, name: str = "Bitrate") -> int:
    """The depth K as an int in 1..n_vq (slider values may arrive as floats); n_vq is the model's N."""
    try:
        value = float(depth)
    except (TypeError, ValueError):
        raise DemoInputError(f"{name} must be a number of layers in 1..{n_vq}, got {depth!r}.") from None
    if not (math.isfinite(value) and value == int(value) and 1 <= value <= n_vq):
        raise DemoInputError(f"{name} must be a whole number of layers in 1..{n_vq}, got {depth!r}.")
    return int(value)


def load_reference(path: str | Path | None, limits: DemoLimits, sample_rate: int = DEFAULT_SAMPLE_RATE) -> np.ndarray:
    """Reads the uploaded or recorded reference clip.

    Args:
        path: the file Gradio stored the upload or recording in (None when the user gave none).
        limits: the reference length limits.
        sample_rate: rate to resample to, in Hz.

    Returns:
        [S] float32 mono audio at `sample_rate`.

    Raises:
        DemoInputError: no clip, or a clip that is unreadable, empty, silent, too short or too long.
    """
    from cat_tts.audio import AudioError, load_audio

    if path is None or not str(path).strip():
        raise DemoInputError("Please upload or record a reference clip: a few seconds of the voice to clone.")
    try:
        wav = load_audio(path, sample_rate=sample_rate, max_seconds=limits.max_reference_seconds)
    except AudioError as e:
        raise DemoInputError(f"The reference audio cannot be used: {e}") from None
    seconds = wav.shape[-1] / sample_rate
    if seconds < limits.min_reference_seconds:
        raise DemoInputError(
            f"The reference clip is {seconds:.2f} s long; give at least {limits.min_reference_seconds:g} s of speech "
            "(3 to 10 s works best)."
        )
    return np.asarray(wav, dtype=np.float32).reshape(-1)


def parse_request(
    text: str | None,
    reference_path: str | Path | None,
    reference_text: str | None,
    depth: Any,
    sampling: SamplingSettings,
    limits: DemoLimits,
    n_vq: int,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
) -> SpeechRequest:
    """Validates every input of a request (cheap checks first) for a model with `n_vq` layers.

    Raises:
        DemoInputError: naming the input that cannot be used.
    """
    text = validate_text(text, limits)
    reference_text = validate_reference_text(reference_text, limits)
    depth = validate_depth(depth, n_vq)
    reference = load_reference(reference_path, limits, sample_rate)
    config = sampling.generation_config(limits)
    return SpeechRequest(text, reference, sample_rate, reference_text, depth, config)


def stream_speech(pipeline: SpeechPipeline, request: SpeechRequest) -> Iterator[np.ndarray]:
    """Streams the request's audio: yields [s] float32 chunks as the pipeline produces them.

    Closing this generator (or dropping it) closes the pipeline's stream, which cancels its engine requests.
    """
    pieces = pipeline.stream(**request.pipeline_args())
    try:
        for chunk in pieces:
            chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
            if chunk.size:
                yield chunk
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()


def synthesize_speech(
    pipeline: SpeechPipeline, request: SpeechRequest, depth: int | None = None
) -> tuple[np.ndarray, GenerationStats]:
    """Generates the whole clip (at `depth` instead of the request's, if given); returns it with its stats."""
    depth = request.depth if depth is None else depth
    start = time.perf_counter()
    audio, sample_rate = pipeline.synthesize(**request.pipeline_args(depth))
    seconds = time.perf_counter() - start
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if audio.size == 0:
        raise EmptyOutputError(f"no audio at depth {depth}")
    if sample_rate != request.sample_rate:
        raise RuntimeError(f"pipeline returned audio at {sample_rate} Hz, expected {request.sample_rate} Hz")
    return audio, GenerationStats(depth, audio.size / sample_rate, seconds)


def to_int16(audio: np.ndarray) -> np.ndarray:
    """[S] float audio in [-1, 1] -> int16, clipped. (Gradio would rescale float audio by its peak, which
    would change the loudness from one streamed chunk to the next.)"""
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype(np.int16)


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """[S] float audio -> a 16-bit PCM WAV file in memory (one streamed chunk)."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, to_int16(audio), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _gradio() -> Any:
    try:
        import gradio
    except ImportError as e:
        raise ImportError("The demo needs gradio: pip install 'cat-tts[app]'") from e
    return gradio


@contextlib.contextmanager
def visible_errors(action: str) -> Iterator[None]:
    """Turns what goes wrong inside into a `gr.Error` the page shows.

    Input problems (ours or the pipeline's `ValueError`s) are shown as they are; anything else is logged
    with its traceback and shown as a short failure, and the server keeps serving.
    """
    gr = _gradio()
    try:
        yield
    except gr.Error:
        raise
    except ValueError as e:  # InputError (ours and the pipeline's), EngineClosed while shutting down, AudioError
        title = "Invalid input" if isinstance(e, InputError) else "Request refused"
        raise gr.Error(str(e), title=title, print_exception=False) from None
    except EmptyOutputError as e:
        raise gr.Error(
            f"The model stopped before saying anything ({e}). Try another seed, rephrase the text, "
            "or give a transcript of the reference.",
            title="No audio",
            print_exception=False,
        ) from None
    except Exception as e:  # noqa: BLE001 - the boundary where one request's failure must stay in that request
        logger.exception("%s failed", action)
        raise gr.Error(
            f"{action} failed ({type(e).__name__}); the server log has the details. Try again, or try shorter text.",
            title="Generation failed",
            print_exception=False,
        ) from None


class DemoHandlers:
    """The callbacks behind the demo's buttons, bound to one pipeline.

    Args:
        pipeline: a `CatTTS` (or anything with its `n_vq`, `sample_rate`, `frame_rate`, `stream`, `synthesize`).
        limits: request limits.
        streaming: send audio chunks to the streaming player as they come (Gradio needs ffmpeg for that);
            when False, only the progress line updates until the full clip is ready.
    """

    def __init__(self, pipeline: SpeechPipeline, limits: DemoLimits | None = None, streaming: bool = True) -> None:
        self.pipeline = pipeline
        self.limits = limits or DemoLimits()
        self.streaming = streaming
        self.n_vq = int(pipeline.n_vq)  # N, from the model's config
        self.sample_rate = int(pipeline.sample_rate)

    def bitrate_update(self, depth: Any) -> Any:
        """New info line (layers and kbps) for a bitrate slider that moved to `depth`."""
        gr = _gradio()
        try:
            return gr.update(info=bitrate_info(validate_depth(depth, self.n_vq), self.n_vq))
        except DemoInputError:
            return gr.skip()

    def _request(
        self,
        text: str | None,
        reference: str | None,
        reference_text: str | None,
        depth: Any,
        temperature: Any,
        top_p: Any,
        top_k: Any,
        repetition_penalty: Any,
        seed: Any,
    ) -> SpeechRequest:
        sampling = SamplingSettings.from_ui(temperature, top_p, top_k, repetition_penalty, seed)
        return parse_request(text, reference, reference_text, depth, sampling, self.limits, self.n_vq, self.sample_rate)

    def _waiting_line(self) -> str | None:
        """A status line when every engine slot is busy (this request then waits in the engine's queue)."""
        engine = getattr(self.pipeline, "engine", None)
        if engine is None:
            return None
        stats = engine.stats()
        if stats.busy_slots < stats.max_slots:
            return None
        return f"Waiting for a free slot: all {stats.max_slots} are generating for other requests…"

    def generate(
        self,
        text: str | None,
        reference: str | None,
        reference_text: str | None,
        depth: Any,
        temperature: Any,
        top_p: Any,
        top_k: Any,
        repetition_penalty: Any,
        seed: Any,
    ) -> Iterator[tuple[Any, Any, str]]:
        """The "Generate" button: streams, then delivers the full clip.

        Yields:
            (stream chunk as WAV bytes, full clip, status line): one tuple per streamed chunk with the full
            clip skipped (and the chunk skipped too when `streaming` is off), then a last one with the stream
            skipped, the full clip as (rate, int16 [S]) and the summary line (depth, kbps, audio seconds,
            generation time, time to first audio, RTF). When every engine slot is busy, a first tuple says the
            request waits for one.
        """
        gr = _gradio()
        with visible_errors("Generation"):
            request = self._request(
                text, reference, reference_text, depth, temperature, top_p, top_k, repetition_penalty, seed
            )
            sr = request.sample_rate
            start = time.perf_counter()
            waiting = self._waiting_line()
            if waiting is not None:
                yield gr.skip(), gr.skip(), waiting
            first_audio = None
            chunks: list[np.ndarray] = []
            samples = 0
            # Closed when this generator is (Stop, the time limit): the engine request is cancelled at once.
            with contextlib.closing(stream_speech(self.pipeline, request)) as stream:
                for chunk in stream:
                    if first_audio is None:
                        first_audio = time.perf_counter() - start
                    chunks.append(chunk)
                    samples += chunk.size
                    yield (
                        wav_bytes(chunk, sr) if self.streaming else gr.skip(),
                        gr.skip(),
                        f"Generating at {format_kbps(request.depth)}: {samples / sr:.2f} s so far…",
                    )
            elapsed = time.perf_counter() - start
            if not chunks:
                raise EmptyOutputError(f"no audio at depth {request.depth}")
            full = np.concatenate(chunks)
            stats = GenerationStats(request.depth, full.size / sr, elapsed, first_audio)
            logger.info("generated: %s", stats.summary())
            yield gr.skip(), (sr, to_int16(full)), stats.summary()

    def compare(
        self,
        text: str | None,
        reference: str | None,
        reference_text: str | None,
        depth_a: Any,
        depth_b: Any,
        temperature: Any,
        top_p: Any,
        top_k: Any,
        repetition_penalty: Any,
        seed: Any,
    ) -> tuple[Any, str, Any, str]:
        """The "Compare bitrates" button: the same text, voice and seed at two depths, one after the other (so each
        report times its own depth).

        Returns:
            (clip A as (rate, int16 [S]), summary A, clip B, summary B).
        """
        with visible_errors("Comparison"):
            validate_depth(depth_a, self.n_vq, "Depth A")
            depth_b = validate_depth(depth_b, self.n_vq, "Depth B")
            request = self._request(
                text, reference, reference_text, depth_a, temperature, top_p, top_k, repetition_penalty, seed
            )
            encode = getattr(self.pipeline, "encode_reference", None)
            if callable(encode):  # one codec pass for both depths; the two reports then time the same work
                request = dataclasses.replace(request, voice=encode((request.reference, request.sample_rate)))
            audio_a, stats_a = synthesize_speech(self.pipeline, request)
            audio_b, stats_b = synthesize_speech(self.pipeline, request, depth=depth_b)
            sr = request.sample_rate
            return (sr, to_int16(audio_a)), stats_a.summary(), (sr, to_int16(audio_b)), stats_b.summary()
