"""What the HTTP layer needs from speech generation: the `Backend` protocol, one engine (`PipelineBackend`) and
several behind one interface (`RoutedBackend`).

The protocol is small on purpose: the server parses a request into one `SpeechRequest` and hands it to
`Backend.stream`; everything else (validation against the model, planning, the engine) is the pipeline's. Tests of
the HTTP layer implement the same protocol with a fake (`tests/server/fakes.py`).

Shapes: N layers, L reference frames, S samples (24 kHz).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterator
from dataclasses import astuple, dataclass, fields
from typing import Protocol

import numpy as np
import torch

from cat_tts.generation import EngineConfig
from cat_tts.inference import CatTTS, SynthesisConfig
from cat_tts.inference.request import Limits, SpeechRequest
from cat_tts.server.identity import codec_identity
from cat_tts.weights import dtype_name, resolve_checkpoint

logger = logging.getLogger(__name__)

FIRST_PIECE_FRAMES = 1  # the first audio leaves after one frame (time to first audio)
PIECE_FRAMES = 4  # then every 4 frames (320 ms): fewer, larger writes


@dataclass(frozen=True)
class Load:
    """One engine's (or the sum of several engines') occupancy."""

    active_requests: int = 0  # requests holding a slot
    queued_requests: int = 0  # requests waiting for a slot
    max_slots: int = 0  # slots in total
    frames_generated: int = 0  # frames generated since start (cumulative)

    def __add__(self, other: Load) -> Load:
        return Load(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class AudioStream(Protocol):
    """One request's audio while it is generated (`cat_tts.inference.SpeechStream` is one)."""

    def __iter__(self) -> Iterator[np.ndarray]: ...

    def __next__(self) -> np.ndarray:
        """The next float32 piece `[S]`. The first call raises `QueueFull` when the engine has no room and
        `FieldError` / `InputError` for input the pipeline cannot use; audio cut short raises `EngineError` or
        `EngineClosed` instead of ending."""
        ...

    @property
    def depths(self) -> list[int]:
        """The depth of each segment admitted so far (depth "auto" is chosen at admission)."""
        ...

    def cancel(self) -> None:
        """Stops the generation from any thread; queued and running engine slots are freed at once."""
        ...


class Backend(Protocol):
    """What the HTTP layer uses; implemented by `PipelineBackend` and `RoutedBackend` (and the tests' fake)."""

    limits: Limits  # the model's and engine's limits (layers, frame rate, frames per request)
    sample_rate: int  # Hz of the audio pieces
    codec_id: str  # the codec's identity (`cat_tts.server.identity`): stored voices are kept per codec
    devices: list[str]  # one entry per engine
    max_reference_seconds: float  # the longest voice clip the pipeline encodes

    def start(self) -> None:
        """Warms the engines up (compilation, CUDA graphs) and starts them (blocking)."""
        ...

    def close(self, grace_s: float) -> None:
        """Stops admitting; requests in flight may finish for `grace_s` seconds, then are cut short."""
        ...

    def loads(self) -> list[Load]:
        """Each engine's occupancy."""
        ...

    def encode_reference(self, audio: tuple[np.ndarray, int]) -> torch.Tensor:
        """Codes `[N, L]` of a clip `(samples [S] or [channels, S], rate)`; raises `FieldError` on
        `reference_audio` for unusable audio."""
        ...

    def stream(self, request: SpeechRequest) -> AudioStream:
        """The request's audio, lazily: nothing runs before the first `next()`."""
        ...


class PipelineBackend:
    """One `CatTTS` pipeline and its engine, on one device.

    Args:
        tts: the pipeline.
        codec_id: the codec's identity.
        device: the device name, for /health.
    """

    def __init__(self, tts: CatTTS, codec_id: str, device: str = "cpu") -> None:
        self.tts = tts
        self.codec_id = codec_id
        self.devices = [device]
        self.limits = tts.limits
        self.sample_rate = int(tts.sample_rate)
        self.max_reference_seconds = float(tts.config.max_reference_seconds)
        self._started = False
        self._encode_lock = threading.Lock()  # one reference encode at a time (the codec on the device)

    @classmethod
    def from_pretrained(cls, model: str, codec: str, device: str, dtype: str, engine: EngineConfig,
                        synthesis: SynthesisConfig | None = None) -> PipelineBackend:  # fmt: skip
        """Loads the pipeline on `device` with an engine configured by `engine` (and pipeline settings `synthesis`:
        the server's frame cap for requests that set none).

        Raises:
            cat_tts.errors.UserError: missing or damaged checkpoints, a bad device or dtype.
        """
        codec_dir = resolve_checkpoint(codec, "codec")
        tts = CatTTS.from_pretrained(model=model, codec=codec_dir, device=device,
                                     dtype=None if dtype == "auto" else dtype, config=synthesis,
                                     engine=engine)  # fmt: skip
        runner = tts.engine.runner
        logger.info("%s: model in %s, codec in %s, %d slots, CUDA graphs %s, torch.compile %s", device,
                    dtype_name(tts.model.dtype), dtype_name(tts.codec.dtype), engine.max_slots,
                    runner.uses_cuda_graphs, runner.uses_compile)  # fmt: skip
        return cls(tts, codec_identity(codec_dir), device)

    def start(self) -> None:
        if not self._started:
            self.tts.warmup()
            self.tts.start()
            self._started = True

    def close(self, grace_s: float) -> None:
        if self._started:
            self._started = False
            self.tts.close(grace_s)

    def loads(self) -> list[Load]:
        stats = self.tts.engine.stats()
        return [Load(stats.active_requests, stats.queued_requests, stats.max_slots, stats.frames_generated)]

    def encode_reference(self, audio: tuple[np.ndarray, int]) -> torch.Tensor:
        with self._encode_lock:
            return self.tts.encode_reference(audio).long().cpu()

    def stream(self, request: SpeechRequest) -> AudioStream:
        # wait=False: a full queue is the client's 429 (with Retry-After), not a wait inside the server
        return self.tts.stream_request(request, FIRST_PIECE_FRAMES, PIECE_FRAMES, wait=False)


class RoutedBackend:
    """Several backends (one per device) behind one interface; each request goes to the least-loaded one.

    Load is counted here (streams opened and not yet ended per backend, over its slots), so requests arriving
    together spread out before any engine has seen them.
    """

    def __init__(self, backends: list[Backend]) -> None:
        if not backends:
            raise ValueError("RoutedBackend needs at least one backend")
        first = backends[0]
        for b in backends[1:]:
            if (b.limits.n_vq, b.sample_rate, b.codec_id) != (first.limits.n_vq, first.sample_rate, first.codec_id):
                raise ValueError("all backends must serve the same model and codec")
        self.backends = backends
        self.devices = [d for b in backends for d in b.devices]
        self.limits = first.limits
        self.sample_rate = first.sample_rate
        self.codec_id = first.codec_id
        self.max_reference_seconds = first.max_reference_seconds
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

    def loads(self) -> list[Load]:
        return [load for b in self.backends for load in b.loads()]

    def encode_reference(self, audio: tuple[np.ndarray, int]) -> torch.Tensor:
        with self._lock:
            index = self._pick()
        return self.backends[index].encode_reference(audio)

    def stream(self, request: SpeechRequest) -> AudioStream:
        with self._lock:
            index = self._pick()
            self._open[index] += 1
        try:
            inner = self.backends[index].stream(request)
        except BaseException:
            self._release(index)
            raise
        return _CountedStream(inner, lambda: self._release(index))

    def open_streams(self) -> list[int]:
        """Streams in flight per backend."""
        with self._lock:
            return list(self._open)

    def _pick(self) -> int:
        turn = next(self._turn)
        n = len(self.backends)
        order = [(turn + i) % n for i in range(n)]
        slots = [sum(load.max_slots for load in b.loads()) for b in self.backends]
        return min(order, key=lambda i: self._open[i] / max(slots[i], 1))

    def _release(self, index: int) -> None:
        with self._lock:
            self._open[index] -= 1


class _CountedStream:
    """A backend's stream that calls `on_end` once when it ends, fails or is cancelled."""

    def __init__(self, inner: AudioStream, on_end) -> None:
        self._inner = inner
        self._on_end = on_end
        self._lock = threading.Lock()
        self._ended = False

    def __iter__(self) -> _CountedStream:
        return self

    def __next__(self) -> np.ndarray:
        try:
            return next(self._inner)
        except BaseException:
            self._end()
            raise

    @property
    def depths(self) -> list[int]:
        return self._inner.depths

    def cancel(self) -> None:
        self._inner.cancel()
        self._end()

    def _end(self) -> None:
        with self._lock:
            ended, self._ended = self._ended, True
        if not ended:
            self._on_end()


def load_backend(model: str, codec: str, devices: list[str], dtype: str, engine: EngineConfig,
                 synthesis: SynthesisConfig | None = None) -> Backend:  # fmt: skip
    """One pipeline per device (a `RoutedBackend` over them when there are several).

    Raises:
        cat_tts.errors.UserError: missing checkpoints, bad device or dtype.
    """
    backends: list[Backend] = [PipelineBackend.from_pretrained(model, codec, d, dtype, engine, synthesis)
                               for d in devices]  # fmt: skip
    return backends[0] if len(backends) == 1 else RoutedBackend(backends)
