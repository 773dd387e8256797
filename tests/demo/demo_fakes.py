"""A small stand-in for `cat_tts.inference.CatTTS` so the demo's handlers and page can be tested fast.

It honours the contract of `CatTTS` the demo relies on: `n_vq` (the model's number of layers), `sample_rate`,
`frame_rate`, `limits`, an `engine` with `config.max_slots` and `stats()`; `stream_request` yields float32 pieces whose
concatenation is what `synthesize_request` returns, the output depends on text, depth and seed only (same seed = same
audio), a reference clip is read and checked as `CatTTS` reads it (the same `FieldError`s), `encode_reference` gives
codes [N, L], and closing a stream early is recorded (the real service cancels its engine request then). Every
request is recorded.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from cat_tts.inference import Limits, SpeechRequest, SynthesisConfig
from cat_tts.inference.voice import load_reference

FRAME = 1920  # samples per codec frame of the fake codec


@dataclasses.dataclass
class FakeStats:
    active_requests: int
    max_slots: int


@dataclasses.dataclass
class FakeEngineConfig:
    max_slots: int


class FakeEngine:
    def __init__(self, max_slots: int) -> None:
        self.config = FakeEngineConfig(max_slots)
        self.active_requests = 0

    def stats(self) -> FakeStats:
        return FakeStats(self.active_requests, self.config.max_slots)


class FakeStream:
    """A `SpeechStream` stand-in: iterates pieces, knows its depths, closes."""

    def __init__(self, pieces: Iterator[np.ndarray], depths: list[int]) -> None:
        self._pieces = pieces
        self.depths = depths

    def __iter__(self) -> FakeStream:
        return self

    def __next__(self) -> np.ndarray:
        return next(self._pieces)

    def close(self) -> None:
        self._pieces.close()


class FakeService:
    sample_rate = 24000
    frame_rate = sample_rate / FRAME

    def __init__(
        self,
        frames_per_piece: int = 3,
        fail_with: BaseException | None = None,
        n_vq: int = 32,
        max_slots: int | None = 4,
    ) -> None:
        self.frames_per_piece = frames_per_piece
        self.fail_with = fail_with
        self.n_vq = n_vq
        self.limits = Limits(n_vq=n_vq, frame_rate=self.frame_rate, max_frames=2000)
        if max_slots is not None:
            self.engine = FakeEngine(max_slots)
        self.calls: list[SpeechRequest] = []
        self.encoded = 0  # encode_reference calls
        self.closed_early = 0  # streams closed before their last piece

    def _depth(self, request: SpeechRequest) -> int:
        return request.generation.depth_range(self.n_vq)[1]

    def _audio(self, request: SpeechRequest) -> np.ndarray:
        depth, seed = self._depth(request), request.generation.seed
        frames = 4 + len(request.text) % 5
        t = np.arange(frames * FRAME) / self.sample_rate
        rng = np.random.default_rng([seed or 0, depth, len(request.text)])
        # More layers = more harmonics: the clip depends on the depth, as real audio does.
        audio = sum(np.sin(2 * np.pi * 110 * (k + 1) * t) / (k + 1) for k in range(depth))
        audio = 0.3 * audio / np.abs(audio).max() + 0.01 * rng.standard_normal(t.size)
        return audio.astype(np.float32)

    def _pieces(self, request: SpeechRequest) -> Iterator[np.ndarray]:
        if not isinstance(request.reference_audio, torch.Tensor):
            load_reference(request.reference_audio, self.sample_rate, SynthesisConfig())  # the service's checks
        self.calls.append(request)
        if self.fail_with is not None:
            raise self.fail_with
        audio = self._audio(request)
        step = self.frames_per_piece * FRAME
        finished = False
        try:
            for start in range(0, audio.size, step):
                yield audio[start : start + step]
            finished = True
        finally:
            self.closed_early += not finished

    def stream_request(self, request: SpeechRequest, *args: Any, **kwargs: Any) -> FakeStream:
        return FakeStream(self._pieces(request), [self._depth(request)])

    def synthesize_request(self, request: SpeechRequest, *args: Any, **kwargs: Any) -> tuple[np.ndarray, int]:
        return np.concatenate(list(self._pieces(request))), self.sample_rate

    def encode_reference(self, reference: Any) -> torch.Tensor:
        wav = load_reference(reference, self.sample_rate, SynthesisConfig())
        self.encoded += 1
        return torch.zeros(self.n_vq, max(1, wav.size // FRAME), dtype=torch.long)


def page_values(service, **changes) -> dict:
    """What a freshly loaded page sends for `service` (every input at its starting value) once "Hello." is typed as
    the text, with `changes`."""
    from cat_tts.demo import PAGE_INPUTS

    values = dict(zip(PAGE_INPUTS, _starting_values(service.n_vq, service.limits.max_frames), strict=True))
    unknown = set(changes) - set(values)
    assert not unknown, unknown
    return {**values, "text": "Hello.", **changes}


@functools.lru_cache
def _starting_values(n_vq: int, max_frames: int | None) -> tuple:
    from cat_tts.demo import build_demo

    service = FakeService(n_vq=n_vq)
    service.limits = dataclasses.replace(service.limits, max_frames=max_frames)
    demo = build_demo(service, streaming=False)
    (fn,) = [fn for fn in demo.fns.values() if fn.name == "generate"]
    return tuple(component.value for component in fn.inputs)


def speechlike(seconds: float, sample_rate: int = 24000, channels: int = 1) -> np.ndarray:
    """A voiced, syllable-rate modulated tone: not speech, but not silence or a pure beep either."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    phase = 2 * np.pi * np.cumsum(140 + 20 * np.sin(2 * np.pi * 0.7 * t)) / sample_rate
    wav = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) ** 2
    wav = (0.3 * wav / np.abs(wav).max()).astype(np.float32)
    return np.stack([wav] * channels, axis=1) if channels > 1 else wav


def tiny_model_config(n_vq: int):
    """`CatTTSConfig.tiny()` with `n_vq` RVQ layers instead of the release's."""
    from cat_tts.model import CatTTSConfig

    fields = CatTTSConfig.tiny().to_dict()
    fields["n_vq"] = n_vq
    return CatTTSConfig(**fields)
