"""A fake CatTTS pipeline implementing the engine contract the server relies on (see cat_tts/server/backend.py).

Deterministic audio (a tone set by seed, depth and frame index), a controllable frame time, real slot/queue
accounting (QueueFull when the queue is full, like the engine) and a record of every call and cancellation, so the
HTTP layer can be tested quickly and exactly without a model.
"""

from __future__ import annotations

import threading
import time
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch

from cat_tts.errors import InputError
from cat_tts.server.backend import QueueFull

SAMPLE_RATE = 24000
FRAME_SAMPLES = 1920  # 80 ms
N_VQ = 32


@dataclass
class FakeStats:
    active_requests: int = 0
    queued_requests: int = 0
    busy_slots: int = 0
    max_slots: int = 4
    frames_generated: int = 0


@dataclass
class FakeCall:
    """What one `stream` call was asked for, and what became of it."""

    text: str
    depth: int | None
    kwargs: dict
    codes: torch.Tensor | None = None  # the reference codes given
    frames_done: int = 0
    cancelled: bool = False
    finished: bool = False
    admitted_at: float | None = None
    released_at: float | None = None


class FakeEngine:
    """Slots and a bounded queue, like the engine: `acquire` waits for a slot or raises QueueFull."""

    def __init__(self, max_slots: int, max_queue: int) -> None:
        self.max_slots = max_slots
        self.max_queue = max_queue
        self._cv = threading.Condition()
        self._active = 0
        self._queued = 0
        self.frames_generated = 0
        self.accepting = True

    def stats(self) -> FakeStats:
        with self._cv:
            return FakeStats(self._active, self._queued, self._active, self.max_slots, self.frames_generated)

    def acquire(self, wait: bool) -> None:
        """Takes a slot, waiting in the queue if there is room; raises QueueFull when the queue is full."""
        with self._cv:
            if not self.accepting:
                raise QueueFull("the engine is closed")
            if self._active < self.max_slots:
                self._active += 1
                return
            if self._queued >= self.max_queue:  # (the engine with wait=True would wait for queue room instead)
                raise QueueFull(f"all {self.max_slots} slots busy and {self._queued} requests queued")
            self._queued += 1
            try:
                while self._active >= self.max_slots:
                    self._cv.wait()
            finally:
                self._queued -= 1
            self._active += 1

    def release(self) -> None:
        with self._cv:
            self._active -= 1
            self._cv.notify()

    def count_frame(self) -> None:
        with self._cv:
            self.frames_generated += 1

    def active(self) -> int:
        with self._cv:
            return self._active


class FakeTTS:
    """Implements the pipeline contract: n_vq, sample_rate, start, close, engine.stats, encode_reference, stream.

    Args:
        frame_time: seconds per generated frame (sleep).
        max_slots, max_queue: engine sizing.
        default_frames: frames generated when the request gives no max_new_frames.
    """

    def __init__(self, frame_time: float = 0.002, max_slots: int = 4, max_queue: int = 8, default_frames: int = 12):
        self.n_vq = N_VQ
        self.sample_rate = SAMPLE_RATE
        self.frame_rate = SAMPLE_RATE / FRAME_SAMPLES
        self.frame_time = frame_time
        self.default_frames = default_frames
        self.engine = FakeEngine(max_slots, max_queue)
        self.calls: list[FakeCall] = []
        self.started = False
        self.closed_with: float | None = None
        self.fail_next: Exception | None = None  # raised by the next stream's first next()
        self._cancel_all = threading.Event()
        self.warm = threading.Event()  # warmup() blocks until set (tests of the "starting" state clear it)
        self.warm.set()

    # ------------------------------------------------------------------ lifecycle

    def warmup(self) -> None:
        self.warm.wait(timeout=60)

    def start(self) -> None:
        self.started = True

    def close(self, grace_s: float = 0.0) -> None:
        self.closed_with = grace_s
        self.engine.accepting = False
        deadline = time.monotonic() + grace_s
        while self.engine.active() and time.monotonic() < deadline:
            time.sleep(0.01)
        self._cancel_all.set()

    # ------------------------------------------------------------------ audio

    def encode_reference(self, audio) -> torch.Tensor:
        if not isinstance(audio, tuple) or len(audio) != 2:
            raise InputError("reference_audio must be a (samples, sample_rate) tuple here")
        samples, rate = audio
        wav = np.asarray(samples, dtype=np.float32)
        if wav.ndim == 2:
            wav = wav.mean(axis=0)
        seconds = wav.size / rate
        if seconds < 0.5:
            raise InputError(f"reference audio is too short ({seconds:.2f} s); give at least 0.5 s")
        if float(np.abs(wav).max()) < 1e-4:
            raise InputError("reference audio is silent")
        frames = int(np.ceil(seconds * 12.5))
        seed = zlib.crc32(wav[:2400].tobytes())
        gen = torch.Generator().manual_seed(seed)
        return torch.randint(0, 1024, (N_VQ, frames), generator=gen)

    def stream(self, text, reference_audio, reference_text=None, depth=None, seed=None, max_new_frames=None,
               instructions=None, wait=True, **settings):  # fmt: skip
        kwargs = dict(reference_text=reference_text, seed=seed, max_new_frames=max_new_frames,
                      instructions=instructions, wait=wait, **settings)  # fmt: skip
        call = FakeCall(text, depth, kwargs, reference_audio)
        self.calls.append(call)
        return self._generate(call, reference_audio)

    def _generate(self, call: FakeCall, codes):
        if self.fail_next is not None:
            err, self.fail_next = self.fail_next, None
            raise err
        if not isinstance(codes, torch.Tensor) or codes.shape[0] != N_VQ:
            raise InputError("reference codes must be [32, L]")
        if not call.text.strip():
            raise InputError("text is empty")
        kw = call.kwargs
        frames = kw.get("max_new_frames") or self.default_frames
        frames = max(frames, kw.get("min_new_frames") or 0)
        self.engine.acquire(kw["wait"])
        call.admitted_at = time.monotonic()
        depth = call.depth or N_VQ
        freq = 200.0 + 10.0 * depth + 7.0 * ((kw.get("seed") or 0) % 50)
        try:
            pending = []
            for i in range(frames):
                if self._cancel_all.is_set():
                    call.cancelled = True
                    return
                time.sleep(self.frame_time)
                t = (np.arange(FRAME_SAMPLES) + i * FRAME_SAMPLES) / SAMPLE_RATE
                pending.append((0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32))
                call.frames_done += 1
                self.engine.count_frame()
                if i == 0 or len(pending) == 4:  # first audio after one frame, then every 4 frames (as the pipeline)
                    yield np.concatenate(pending)
                    pending = []
            if pending:
                yield np.concatenate(pending)
            call.finished = True
        except GeneratorExit:
            call.cancelled = True
            raise
        finally:
            call.released_at = time.monotonic()
            self.engine.release()


def expected_audio(frames: int, depth: int, seed: int | None) -> np.ndarray:
    """The samples `FakeTTS` produces for a request."""
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
