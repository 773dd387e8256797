"""The demo's callbacks without its layout: streamed generation, the bitrate comparison, and visible errors.

Everything here takes the service as an argument: any object with the `CatTTS` attributes `n_vq`, `sample_rate`,
`limits`, `engine` and methods `stream_request`, `synthesize_request`, `encode_reference` (see `SpeechService`). The
same code serves the released weights, the `make_tiny` checkpoints and a small fake in tests. The page's values are
parsed into a `SpeechRequest` (`cat_tts.demo.request.page_request`), which is the only validation.

`DemoHandlers` holds the callbacks the Blocks UI wires to its buttons. A bad field becomes a visible `gr.Error` under
the widget's label (`DEMO_LABELS`); a busy or closing engine says so; any other failure becomes a short `gr.Error`
while the traceback goes to the server log, so one failing request never takes the server down.

Concurrency: with `CatTTS.start()` called, handlers running in several Gradio worker threads at once put their requests
into one engine batch. A handler that is stopped (the Stop button, the time limit, a closed page) closes its stream,
which cancels the engine request and frees its slot.

Shapes: S samples of mono float32 audio at the service's sample rate (24 kHz for CAT).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import time
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from cat_tts.demo.request import (
    AUTO_DEPTH,
    DEMO_LABELS,
    PAGE_INPUTS,
    DemoLimits,
    bitrate_info,
    format_kbps,
    page_request,
)
from cat_tts.errors import FieldError, InputError
from cat_tts.generation import EngineClosed, QueueFull
from cat_tts.inference import Limits, SpeechRequest

logger = logging.getLogger(__name__)


class EmptyOutputError(RuntimeError):
    """The service ended without producing audio (the model chose to stop at once)."""


class SpeechService(Protocol):
    """What the demo needs from `cat_tts.inference.CatTTS`."""

    n_vq: int  # N: RVQ layers of the model (from its config); depth K runs over 1..N
    sample_rate: int  # rate of the audio it returns, in Hz
    frame_rate: float  # codec frames per second
    limits: Limits  # what a request may ask of this model and engine

    def stream_request(self, request: SpeechRequest) -> Iterator[np.ndarray]: ...

    def synthesize_request(self, request: SpeechRequest) -> tuple[np.ndarray, int]: ...

    def encode_reference(self, reference_audio: Any) -> Any: ...


@dataclasses.dataclass(frozen=True)
class GenerationStats:
    """What the demo reports under a clip."""

    depths: tuple[int, ...]  # RVQ layers generated, per text segment (depth "auto" may choose several)
    audio_seconds: float  # length of the generated clip
    generation_seconds: float  # wall time from the request to the last sample
    first_audio_seconds: float | None = None  # wall time to the first streamed piece (None when not streamed)

    @property
    def rtf(self) -> float:
        """Real-time factor: generation time / audio time (below 1 = faster than real time)."""
        return self.generation_seconds / self.audio_seconds if self.audio_seconds > 0 else math.inf

    def summary(self) -> str:
        """One line: depth, kbps, audio seconds, generation time, RTF (and time to first audio)."""
        low, high = min(self.depths), max(self.depths)
        depth = f"Depth {low} = {format_kbps(low)}" if low == high else f"Depth {low}-{high} (automatic)"
        parts = [depth, f"{self.audio_seconds:.2f} s of audio", f"generated in {self.generation_seconds:.2f} s"]
        if self.first_audio_seconds is not None:
            parts.append(f"first audio after {self.first_audio_seconds:.2f} s")
        parts.append(f"RTF {self.rtf:.2f}")
        return " · ".join(parts)


def to_int16(audio: np.ndarray) -> np.ndarray:
    """[S] float audio in [-1, 1] -> int16, clipped. (Gradio would rescale float audio by its peak, which
    would change the loudness from one streamed piece to the next.)"""
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype(np.int16)


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """[S] float audio -> a 16-bit PCM WAV file in memory (one streamed piece)."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, to_int16(audio), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def gradio() -> Any:
    """The gradio module (an optional dependency: the `app` extra)."""
    try:
        import gradio
    except ImportError as e:
        raise ImportError("The demo needs gradio: pip install 'cat-tts[app]'") from e
    return gradio


@contextlib.contextmanager
def visible_errors(action: str, labels: dict[str, str] = DEMO_LABELS) -> Iterator[None]:
    """Turns what goes wrong inside into a `gr.Error` the page shows.

    A bad field is shown under its widget's label; other input problems as they are; a busy or closing engine says
    so; anything else is logged with its traceback and shown as a short failure, and the server keeps serving.
    """
    gr = gradio()
    try:
        yield
    except gr.Error:
        raise
    except FieldError as e:
        raise gr.Error(" ".join(e.labelled(labels).split()), title="Invalid input", print_exception=False) from None
    except ValueError as e:  # InputError, AudioError
        title = "Invalid input" if isinstance(e, InputError) else "Request refused"
        raise gr.Error(str(e), title=title, print_exception=False) from None
    except QueueFull:
        raise gr.Error(
            "Every generation slot and the waiting queue are taken. Try again in a moment.",
            title="Busy",
            print_exception=False,
        ) from None
    except EngineClosed:
        raise gr.Error("The server is shutting down.", title="Unavailable", print_exception=False) from None
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
    """The callbacks behind the demo's buttons, bound to one service.

    Args:
        service: a `CatTTS` (or anything with its `n_vq`, `sample_rate`, `limits`, `stream_request`, ...).
        limits: the demo's limits.
        streaming: send audio pieces to the streaming player as they come (Gradio needs ffmpeg for that);
            when False, only the progress line updates until the full clip is ready.
    """

    def __init__(self, service: SpeechService, limits: DemoLimits | None = None, streaming: bool = True) -> None:
        self.service = service
        self.limits = limits or DemoLimits()
        self.streaming = streaming
        self.n_vq = int(service.n_vq)  # N, from the model's config
        self.sample_rate = int(service.sample_rate)

    def request(self, values: dict[str, Any]) -> SpeechRequest:
        """The request of the page's values (field name -> widget value), checked against the service's limits.

        Raises:
            FieldError: naming the first bad field.
        """
        return page_request(values, self.limits.request_limits(self.service.limits))

    def bitrate_update(self, depth: Any) -> Any:
        """New info line (layers and kbps) for a depth slider that moved to `depth`."""
        gr = gradio()
        try:
            value = float(depth)
        except (TypeError, ValueError):
            return gr.skip()
        if not (math.isfinite(value) and value == int(value) and 1 <= value <= self.n_vq):
            return gr.skip()
        return gr.update(info=bitrate_info(int(value), self.n_vq))

    def _waiting_line(self) -> str | None:
        """A status line when every engine slot is busy (this request then waits in the engine's queue)."""
        engine = getattr(self.service, "engine", None)
        if engine is None:
            return None
        stats = engine.stats()
        if stats.active_requests < stats.max_slots:
            return None
        return f"Waiting for a free slot: all {stats.max_slots} are generating for other requests…"

    def generate(self, *values: Any) -> Iterator[tuple[Any, Any, str]]:
        """The "Generate" button, given the page's inputs in `PAGE_INPUTS` order (see `generate_from`)."""
        yield from self.generate_from(dict(zip(PAGE_INPUTS, values, strict=True)))

    def generate_from(self, values: dict[str, Any]) -> Iterator[tuple[Any, Any, str]]:
        """Streams the request of the page's values, then delivers the full clip.

        Yields:
            (stream piece as WAV bytes, full clip, status line): one tuple per streamed piece with the full clip
            skipped (and the piece skipped too when `streaming` is off), then a last one with the stream skipped,
            the full clip as (rate, int16 [S]) and the summary line (depth, kbps, audio seconds, generation time,
            time to first audio, RTF). When every engine slot is busy, a first tuple says the request waits for one.
        """
        gr = gradio()
        with visible_errors("Generation"):
            request = self.request(values)
            sr = self.sample_rate
            start = time.perf_counter()
            waiting = self._waiting_line()
            if waiting is not None:
                yield gr.skip(), gr.skip(), waiting
            first_audio = None
            pieces: list[np.ndarray] = []
            samples = 0
            stream = self.service.stream_request(request)
            # Closed when this generator is (Stop, the time limit): the engine request is cancelled at once.
            with contextlib.closing(stream):
                for piece in stream:
                    piece = np.asarray(piece, dtype=np.float32).reshape(-1)
                    if not piece.size:
                        continue
                    if first_audio is None:
                        first_audio = time.perf_counter() - start
                    pieces.append(piece)
                    samples += piece.size
                    yield (
                        wav_bytes(piece, sr) if self.streaming else gr.skip(),
                        gr.skip(),
                        f"Generating: {samples / sr:.2f} s so far…",
                    )
            elapsed = time.perf_counter() - start
            depths = tuple(getattr(stream, "depths", ()) or _fixed_depths(request, self.n_vq))
            if not pieces:
                raise EmptyOutputError(f"no audio at depth {depths[0]}")
            full = np.concatenate(pieces)
            stats = GenerationStats(depths, full.size / sr, elapsed, first_audio)
            logger.info("generated: %s", stats.summary())
            yield gr.skip(), (sr, to_int16(full)), stats.summary()

    def compare(self, depth_a: Any, depth_b: Any, *values: Any) -> tuple[Any, str, Any, str]:
        """The "Compare bitrates" button, given the two depths and the page's inputs (see `compare_from`)."""
        return self.compare_from(dict(zip(PAGE_INPUTS, values, strict=True)), depth_a, depth_b)

    def compare_from(self, values: dict[str, Any], depth_a: Any, depth_b: Any) -> tuple[Any, str, Any, str]:
        """The same text, voice and seed at two depths, one after the other (so each report times its own depth).

        Returns:
            (clip A as (rate, int16 [S]), summary A, clip B, summary B).
        """
        fixed = {**values, AUTO_DEPTH: False, "bitrate_kbps": None}
        with visible_errors("Comparison", {**DEMO_LABELS, "depth": "Depth A"}):
            request_a = self.request({**fixed, "depth": depth_a})
        with visible_errors("Comparison", {**DEMO_LABELS, "depth": "Depth B"}):
            request_b = self.request({**fixed, "depth": depth_b})
        with visible_errors("Comparison"):
            # One codec pass for both depths; the two reports then time the same work.
            voice = self.service.encode_reference(request_a.reference_audio)
            clips = []
            for request in (request_a, request_b):
                clips += self._synthesize(request.replace(reference_audio=voice))
            return tuple(clips)

    def _synthesize(self, request: SpeechRequest) -> tuple[Any, str]:
        depth = request.generation.depth
        start = time.perf_counter()
        audio, sample_rate = self.service.synthesize_request(request)
        seconds = time.perf_counter() - start
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if audio.size == 0:
            raise EmptyOutputError(f"no audio at depth {depth}")
        stats = GenerationStats((depth,), audio.size / sample_rate, seconds)
        return (sample_rate, to_int16(audio)), stats.summary()


def _fixed_depths(request: SpeechRequest, n_vq: int) -> tuple[int]:
    low, high = request.generation.depth_range(n_vq)
    return (high,)
