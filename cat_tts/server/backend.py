"""The one place where the server meets the inference pipeline and its engine.

Everything the HTTP layer needs from generation goes through `Backend`: loading a pipeline per device, starting
and stopping its engine, validating generation settings (with `GenerationConfig`, the one definition of them),
encoding a voice clip, opening a lazy audio stream, and reading the engine's load. `RoutedBackend` puts several
pipelines (one per device) behind the same interface and sends each request to the least-loaded one.

The pipeline contract (cat_tts.inference.CatTTS on the continuous-batching engine):

    tts.n_vq, tts.sample_rate, tts.start(), tts.close(grace_s), tts.engine.stats()
    tts.encode_reference((samples, sr)) -> codes [N, L]
    tts.stream(text, codes, reference_text=, instructions=, depth=, seed=, ...) -> lazy iterator of float32 pieces;
        the first next() raises InputError (bad input) or QueueFull (no room); close() cancels and frees the slot.

Shapes: N codec layers, L reference frames, S samples (24 kHz).
"""

from __future__ import annotations

import inspect
import itertools
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from cat_tts.errors import InputError
from cat_tts.generation.config import GenerationConfig

logger = logging.getLogger(__name__)

try:  # the engine's exceptions: a full queue, an engine that no longer admits requests
    from cat_tts.generation import EngineClosed, QueueFull
except ImportError:  # pragma: no cover - until the engine lands; the fake pipeline raises these

    class QueueFull(RuntimeError):  # noqa: N818 - the engine's name
        """The engine's queue is full; try again later."""

    class EngineClosed(RuntimeError):  # noqa: N818 - the engine's name
        """The engine is shutting down."""


# Generation settings a request may give (the rest of GenerationConfig keeps the model's defaults).
REQUEST_SETTINGS = (
    "seed",
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "min_new_frames",
    "max_new_frames",
)


class Busy(Exception):
    """Every slot and queue place is taken: answer 429 and let the client retry."""


class ShuttingDown(Exception):
    """The engine no longer admits requests: answer 503."""


@dataclass(frozen=True)
class Load:
    """One engine's (or the sum of several engines') occupancy."""

    active_requests: int = 0  # requests holding a slot
    queued_requests: int = 0  # requests waiting for a slot
    busy_slots: int = 0  # slots in use
    max_slots: int = 0  # slots in total
    frames_generated: int = 0  # frames generated since start (cumulative)

    def __add__(self, other: Load) -> Load:
        return Load(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def as_tuple(self) -> tuple[int, ...]:
        return (self.active_requests, self.queued_requests, self.busy_slots, self.max_slots, self.frames_generated)

    def as_dict(self) -> dict[str, int]:
        return dict(zip(("active_requests", "queued_requests", "busy_slots", "max_slots", "frames_generated"),
                        self.as_tuple(), strict=True))  # fmt: skip


@dataclass(frozen=True)
class SpeechJob:
    """One request for audio, validated by the HTTP layer."""

    text: str  # what to say
    codes: torch.Tensor  # [N, L] the voice's reference codes
    depth: int  # K, 1..N
    reference_text: str | None = None  # transcript of the voice clip (continuation mode), or None
    instructions: str | None = None  # the prompt's instruction field, or None
    settings: dict[str, Any] = field(default_factory=dict)  # generation settings given (names in REQUEST_SETTINGS)


class Backend(Protocol):
    """What the HTTP layer uses; implemented by `PipelineBackend` and `RoutedBackend`."""

    n_vq: int  # N: layers of the codec (depth range 1..N)
    sample_rate: int  # Hz of the audio pieces
    frame_rate: float  # codec frames per second
    codec_id: str  # identifies the codec (stored voices record it)
    devices: list[str]  # one entry per engine

    def start(self) -> None: ...

    def close(self, grace_s: float) -> None: ...

    def load(self) -> Load: ...

    def loads(self) -> list[Load]: ...

    def encode_reference(self, audio: tuple[np.ndarray, int]) -> torch.Tensor: ...

    def stream(self, job: SpeechJob) -> PieceStream: ...


def check_settings(settings: dict[str, Any], n_vq: int, depth: int | None = None) -> None:
    """Validates request generation settings with `GenerationConfig`.

    Raises:
        SettingError: names the field at fault and says why.
    """
    unknown = sorted(set(settings) - set(REQUEST_SETTINGS))
    if unknown:
        raise SettingError(unknown[0], f"unknown generation settings {unknown}; allowed: {list(REQUEST_SETTINGS)}")
    for name, value in settings.items():  # one at a time, so the error names its field
        try:
            GenerationConfig(**{name: value})
        except InputError as err:
            raise SettingError(name, str(err)) from err
    try:
        GenerationConfig(**settings)
    except InputError as err:  # the only cross-field rule: min_new_frames <= max_new_frames
        raise SettingError("min_new_frames", str(err)) from err
    try:
        GenerationConfig(depth=depth).check_model(n_vq)
    except InputError as err:
        raise SettingError("depth", str(err)) from err


class SettingError(InputError):
    """A generation setting is out of range; `param` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class PipelineBackend:
    """One CatTTS pipeline and its engine, on one device.

    Args:
        tts: a `CatTTS` on the engine (or anything implementing the contract in the module docstring).
        device: the device name, for /health.
        codec_id: identifies the codec (voices made by another codec are not used).
    """

    def __init__(self, tts: Any, device: str = "cpu", codec_id: str = "codec") -> None:
        self.tts = tts
        self.devices = [device]
        self.codec_id = codec_id
        self.n_vq = int(tts.n_vq)
        self.sample_rate = int(tts.sample_rate)
        self.frame_rate = float(tts.frame_rate)
        self._started = False
        self._encode_lock = threading.Lock()  # one reference encode at a time per pipeline (codec on the device)
        # the engine waits for queue room unless told not to: the server answers 429 instead
        self._no_wait = {"wait": False} if "wait" in inspect.signature(tts.stream).parameters else {}

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        codec: str,
        device: str,
        dtype: str = "auto",
        max_slots: int = 8,
        max_queue: int = 32,
        compile: str | bool = "auto",
    ) -> PipelineBackend:
        """Loads the pipeline on `device` with an engine of `max_slots` slots and a queue of `max_queue`.

        Raises:
            cat_tts.errors.UserError: missing or damaged checkpoints, a bad device or dtype.
        """
        from cat_tts.generation import EngineConfig
        from cat_tts.inference import CatTTS

        engine = EngineConfig(max_slots=max_slots, max_queue=max_queue, compile=compile)
        dtype = None if dtype == "auto" else dtype  # the pipeline's default: bf16 on CUDA, fp32 on the CPU
        tts = CatTTS.from_pretrained(model=model, codec=codec, device=device, dtype=dtype, engine=engine)
        from cat_tts.weights import dtype_name

        logger.info(
            "%s: model in %s, codec in %s, %d slots, CUDA graphs %s, torch.compile %s",
            device,
            dtype_name(tts.model.dtype),
            dtype_name(tts.codec.dtype),
            max_slots,
            tts.engine.runner.uses_cuda_graphs,
            tts.engine.runner.uses_compile,
        )
        return cls(tts, device=device, codec_id=str(codec))

    def start(self) -> None:
        """Warms the engine up (CUDA graphs captured, units compiled), then starts its thread."""
        if not self._started:
            warmup = getattr(self.tts, "warmup", None)
            if warmup is not None:
                warmup()
            self.tts.start()
            self._started = True

    def close(self, grace_s: float) -> None:
        if self._started:
            self._started = False
            self.tts.close(grace_s)

    def load(self) -> Load:
        stats = self.tts.engine.stats()
        return Load(*(int(getattr(stats, name, 0) or 0) for name in Load.__dataclass_fields__))

    def loads(self) -> list[Load]:
        return [self.load()]

    def encode_reference(self, audio: tuple[np.ndarray, int]) -> torch.Tensor:
        """Validates and encodes a clip into `[N, L]` codes (raises `InputError` for unusable audio)."""
        with self._encode_lock, torch.inference_mode():
            return self.tts.encode_reference(audio).detach().long().cpu()

    def stream(self, job: SpeechJob) -> PieceStream:
        """A lazy iterator of float32 audio pieces; the first `next()` raises `InputError` or `Busy`."""
        kwargs = {name: job.settings[name] for name in REQUEST_SETTINGS if job.settings.get(name) is not None}
        if job.instructions is not None:
            kwargs["instructions"] = job.instructions
        gen = self.tts.stream(job.text, job.codes, reference_text=job.reference_text, depth=job.depth, **kwargs,
                              **self._no_wait)  # fmt: skip
        return PieceStream(gen)


class PieceStream:
    """The engine's audio iterator as the server uses it: float32 pieces, `Busy` for a full queue, and a `close`
    that always runs (also before the first piece) and runs `on_close` once."""

    def __init__(self, gen: Iterator[np.ndarray], on_close: Any = None) -> None:
        self._gen = gen
        self._on_close = on_close
        self._closed = False

    def __iter__(self) -> PieceStream:
        return self

    def __next__(self) -> np.ndarray:
        if self._closed:
            raise StopIteration
        try:
            piece = next(self._gen)
        except QueueFull as err:
            self.close()
            raise Busy(str(err) or "the queue is full") from err
        except EngineClosed as err:
            self.close()
            raise ShuttingDown(str(err) or "the engine is shutting down") from err
        except BaseException:
            self.close()
            raise
        return np.asarray(piece, dtype=np.float32)

    def close(self) -> None:
        """Cancels the generation (frees its engine slot) if it is still running."""
        if self._closed:
            return
        self._closed = True
        try:
            cancel = getattr(self._gen, "cancel", None)  # SpeechStream.cancel: thread-safe, frees queued slots too
            if cancel is not None:
                cancel()
            close = getattr(self._gen, "close", None)
            if close is not None:
                close()
        finally:
            if self._on_close is not None:
                self._on_close()


class RoutedBackend:
    """Several pipelines (one per device) behind one interface; each request goes to the least-loaded one.

    Load is counted here (streams opened and not yet finished per pipeline, over its slots), so requests arriving
    together spread out before any engine has seen them.
    """

    def __init__(self, backends: list[PipelineBackend]) -> None:
        if not backends:
            raise ValueError("RoutedBackend needs at least one backend")
        first = backends[0]
        for b in backends[1:]:
            if (b.n_vq, b.sample_rate, b.codec_id) != (first.n_vq, first.sample_rate, first.codec_id):
                raise ValueError("all backends must serve the same model and codec")
        self.backends = backends
        self.devices = [d for b in backends for d in b.devices]
        self.n_vq = first.n_vq
        self.sample_rate = first.sample_rate
        self.frame_rate = first.frame_rate
        self.codec_id = first.codec_id
        self._open = [0] * len(backends)  # streams in flight per backend
        self._lock = threading.Lock()
        self._turn = itertools.count()  # breaks ties round-robin

    def start(self) -> None:
        for b in self.backends:
            b.start()

    def close(self, grace_s: float) -> None:
        threads = [threading.Thread(target=b.close, args=(grace_s,)) for b in self.backends]  # drain in parallel
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def load(self) -> Load:
        return sum(self.loads(), Load())

    def loads(self) -> list[Load]:
        return [b.load() for b in self.backends]

    def encode_reference(self, audio: tuple[np.ndarray, int]) -> torch.Tensor:
        return self.backends[self._pick()].encode_reference(audio)

    def stream(self, job: SpeechJob) -> PieceStream:
        with self._lock:
            index = self._pick()
            self._open[index] += 1
        try:
            inner = self.backends[index].stream(job)
        except BaseException:
            self._release(index)
            raise
        return PieceStream(inner, on_close=lambda: self._release(index))

    def open_streams(self) -> list[int]:
        """Streams in flight per backend (for tests and /health)."""
        with self._lock:
            return list(self._open)

    def _pick(self) -> int:
        turn = next(self._turn)
        n = len(self.backends)
        order = [(turn + i) % n for i in range(n)]
        return min(order, key=lambda i: self._open[i] / max(self.backends[i].load().max_slots, 1))

    def _release(self, index: int) -> None:
        with self._lock:
            self._open[index] -= 1


def load_backend(
    model: str,
    codec: str,
    devices: list[str],
    dtype: str = "auto",
    max_slots: int = 8,
    max_queue: int = 32,
    compile: str | bool = "auto",
) -> Backend:
    """One pipeline per device (a `RoutedBackend` when there are several).

    Raises:
        cat_tts.errors.UserError: missing checkpoints, bad device or dtype.
    """
    backends = [PipelineBackend.from_pretrained(model, codec, d, dtype, max_slots, max_queue, compile) for d in devices]
    return backends[0] if len(backends) == 1 else RoutedBackend(backends)
