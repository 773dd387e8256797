"""A fake backend implementing `cat_tts.server.backend.Backend` (the protocol the real one implements), for tests of
the HTTP layer alone: deterministic audio (a tone set by seed, depth and frame index), a controllable frame time,
slot and queue accounting like the engine (`QueueFull` when the queue is full, a cancelled queued stream leaves the
queue at once) and a record of every request, so the HTTP layer is tested quickly and exactly without a model.
"""

from __future__ import annotations

import threading
import time
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch

from cat_tts.errors import FieldError
from cat_tts.generation import EngineClosed, QueueFull
from cat_tts.inference.request import Limits, SpeechRequest
from cat_tts.server.backend import AudioStream, Load

SAMPLE_RATE = 24000
FRAME_SAMPLES = 1920  # 80 ms
N_VQ = 32


@dataclass
class FakeCall:
    """One request the backend was asked for, and what became of it."""

    request: SpeechRequest
    depth: int | None = None  # chosen at admission
    frames_done: int = 0
    cancelled: bool = False
    finished: bool = False
    admitted_at: float | None = None
    released_at: float | None = None


class FakeStream:
    """`AudioStream`: a generator run by the server's pump thread, cancellable from any thread."""

    def __init__(self, backend: FakeBackend, call: FakeCall) -> None:
        self.backend = backend
        self.call = call
        self._cancel = threading.Event()
        self._gen = backend._generate(self, call)

    def __iter__(self) -> FakeStream:
        return self

    def __next__(self) -> np.ndarray:
        return next(self._gen)

    @property
    def depths(self) -> list[int]:
        return [] if self.call.depth is None else [self.call.depth]

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Like the engine: a queued stream leaves the queue and a running one frees its slot, at once."""
        self._cancel.set()
        if not self.call.finished:
            self.call.cancelled = True
        self.backend._release(self.call)


class FakeBackend:
    """A `Backend` without a model.

    Args:
        frame_time: seconds per generated frame (sleep).
        max_slots, max_queue: engine sizing.
        default_frames: frames generated when the request gives no max_new_frames.
        device: its name in /health.
    """

    def __init__(self, frame_time: float = 0.002, max_slots: int = 4, max_queue: int = 8, default_frames: int = 12,
                 device: str = "cpu") -> None:  # fmt: skip
        self.limits = Limits(n_vq=N_VQ, frame_rate=SAMPLE_RATE / FRAME_SAMPLES, max_frames=2000)
        self.sample_rate = SAMPLE_RATE
        self.codec_id = "codec-fake"
        self.devices = [device]
        self.max_reference_seconds = 30.0
        self.frame_time = frame_time
        self.default_frames = default_frames
        self.max_slots, self.max_queue = max_slots, max_queue
        self.calls: list[FakeCall] = []
        self.started = False
        self.closed_with: float | None = None
        self.fail_next: BaseException | None = None  # raised by the next stream's first next()
        self.fail_after: tuple[int, BaseException] | None = None  # (frames, error): the next stream fails mid-way
        self.warm = threading.Event()  # start() blocks until set (tests of the "starting" state clear it)
        self.warm.set()
        self._cv = threading.Condition()
        self._active = self._queued = self._frames = 0
        self._accepting = True
        self._closing = threading.Event()

    # ------------------------------------------------------------------ Backend
    def start(self) -> None:
        self.warm.wait(timeout=60)
        self.started = True

    def close(self, grace_s: float) -> None:
        self.closed_with = grace_s
        self._accepting = False
        deadline = time.monotonic() + grace_s
        while self.active() and time.monotonic() < deadline:
            time.sleep(0.01)
        self._closing.set()

    def loads(self) -> list[Load]:
        with self._cv:
            return [Load(self._active, self._queued, self.max_slots, self._frames)]

    def encode_reference(self, audio: tuple[np.ndarray, int]) -> torch.Tensor:
        samples, rate = audio
        wav = np.asarray(samples, dtype=np.float32)
        wav = wav.mean(axis=0) if wav.ndim == 2 else wav
        seconds = wav.size / rate
        if seconds < 0.5:
            raise FieldError("reference_audio", f"reference audio is too short ({seconds:.2f} s); give at least 0.5 s")
        if float(np.abs(wav).max()) < 1e-4:
            raise FieldError("reference_audio", "reference audio is silent")
        gen = torch.Generator().manual_seed(zlib.crc32(wav[:2400].tobytes()))
        return torch.randint(0, 1024, (N_VQ, int(np.ceil(seconds * 12.5))), generator=gen)

    def stream(self, request: SpeechRequest) -> AudioStream:
        call = FakeCall(request)
        self.calls.append(call)
        return FakeStream(self, call)

    # ------------------------------------------------------------------ helpers
    def active(self) -> int:
        with self._cv:
            return self._active

    def _release(self, call: FakeCall) -> None:
        with self._cv:
            if call.admitted_at is not None and call.released_at is None:
                call.released_at = time.monotonic()
                self._active -= 1
            self._cv.notify_all()

    def _admit(self, stream: FakeStream) -> bool:
        """Takes a slot, waiting in the queue while there is room (False: cancelled while queued); raises QueueFull
        when the queue is full."""
        with self._cv:
            if not self._accepting:
                raise EngineClosed("the engine no longer admits requests")
            if self._active >= self.max_slots:
                if self._queued >= self.max_queue:
                    raise QueueFull(f"all {self.max_slots} slots are busy and {self._queued} requests are waiting")
                self._queued += 1
                try:
                    while self._active >= self.max_slots and not stream.cancelled:
                        self._cv.wait()
                finally:
                    self._queued -= 1
                if stream.cancelled:
                    return False
            self._active += 1
            stream.call.admitted_at = time.monotonic()
            return True

    def _generate(self, stream: FakeStream, call: FakeCall):
        if self.fail_next is not None:
            err, self.fail_next = self.fail_next, None
            raise err
        fail_after, self.fail_after = self.fail_after, None
        g = call.request.generation
        if not self._admit(stream):
            call.cancelled = True
            return
        call.depth = (g.max_depth or N_VQ) if g.depth == "auto" else (g.depth or N_VQ)
        frames = max(g.max_new_frames or self.default_frames, g.min_new_frames)
        freq = 200.0 + 10.0 * call.depth + 7.0 * ((g.seed or 0) % 50)
        try:  # the slot is released in `finally`
            pending = []
            for i in range(frames):
                if stream.cancelled or self._closing.is_set():
                    call.cancelled = True
                    if self._closing.is_set():
                        raise EngineClosed(f"the engine shut down after {i} frames of this request")
                    return
                if fail_after is not None and i == fail_after[0]:
                    raise fail_after[1]
                time.sleep(self.frame_time)
                t = (np.arange(FRAME_SAMPLES) + i * FRAME_SAMPLES) / SAMPLE_RATE
                pending.append((0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32))
                call.frames_done += 1
                with self._cv:
                    self._frames += 1
                if i == 0 or len(pending) == 4:  # first audio after one frame, then every 4 frames (as the pipeline)
                    yield np.concatenate(pending)
                    pending = []
            if pending:
                yield np.concatenate(pending)
            call.finished = True
        finally:
            self._release(call)


def expected_audio(frames: int, depth: int, seed: int | None) -> np.ndarray:
    """The samples `FakeBackend` produces for a request."""
    freq = 200.0 + 10.0 * depth + 7.0 * ((seed or 0) % 50)
    t = np.arange(frames * FRAME_SAMPLES) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@dataclass
class Clip:
    """A short test clip as wav bytes."""

    seconds: float = 1.5
    rate: int = 16000
    data: bytes = field(init=False)

    def __post_init__(self) -> None:
        import io

        import soundfile as sf

        t = np.arange(int(self.seconds * self.rate)) / self.rate
        buf = io.BytesIO()
        sf.write(buf, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), self.rate, format="WAV")
        self.data = buf.getvalue()
