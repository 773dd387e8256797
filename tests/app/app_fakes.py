"""A small stand-in for `cat_tts.inference.CatTTS` so the demo's handlers and page can be tested fast.

It honours the contract of `CatTTS` the demo relies on: `n_vq` (the model's number of layers), `sample_rate`,
`frame_rate`, an `engine` with `max_slots` and `stats()`; `stream` yields float32 chunks whose concatenation is what
`synthesize` returns, the output depends on text, depth and seed only (same seed = same audio), the reference arrives
as (array, sample_rate), a depth outside 1..n_vq is refused as `CatTTS` refuses it, and closing a stream early is
recorded (the real pipeline cancels its engine request then). Every call is recorded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np

from cat_tts.errors import InputError
from cat_tts.generation import GenerationConfig

FRAME = 1920  # samples per codec frame of the fake codec


@dataclasses.dataclass
class FakeStats:
    busy_slots: int
    max_slots: int


class FakeEngine:
    def __init__(self, max_slots: int) -> None:
        self.max_slots = max_slots
        self.busy_slots = 0

    def stats(self) -> FakeStats:
        return FakeStats(self.busy_slots, self.max_slots)


class FakePipeline:
    sample_rate = 24000
    frame_rate = sample_rate / FRAME

    def __init__(
        self,
        frames_per_chunk: int = 3,
        fail_with: BaseException | None = None,
        n_vq: int = 32,
        max_slots: int | None = 4,
    ) -> None:
        self.frames_per_chunk = frames_per_chunk
        self.fail_with = fail_with
        self.n_vq = n_vq
        if max_slots is not None:
            self.engine = FakeEngine(max_slots)
        self.calls: list[dict[str, Any]] = []
        self.closed_early = 0  # streams closed before their last chunk

    def _audio(self, text: str, depth: int, seed: int | None) -> np.ndarray:
        frames = 4 + len(text) % 5
        t = np.arange(frames * FRAME) / self.sample_rate
        rng = np.random.default_rng([seed or 0, depth, len(text)])
        # More layers = more harmonics: the clip depends on the depth, as real audio does.
        audio = sum(np.sin(2 * np.pi * 110 * (k + 1) * t) / (k + 1) for k in range(depth))
        audio = 0.3 * audio / np.abs(audio).max() + 0.01 * rng.standard_normal(t.size)
        return audio.astype(np.float32)

    def stream(
        self,
        text: str,
        reference_audio: Any,
        reference_text: str | None = None,
        depth: int | None = None,
        config: GenerationConfig | None = None,
    ) -> Iterator[np.ndarray]:
        wav, sr = reference_audio
        assert isinstance(wav, np.ndarray) and wav.ndim == 1 and sr == self.sample_rate, (type(wav), sr)
        config = config or GenerationConfig()
        self.calls.append({"text": text, "reference_text": reference_text, "depth": depth, "config": config})
        if self.fail_with is not None:
            raise self.fail_with
        depth = self.n_vq if depth is None else depth
        if not 1 <= depth <= self.n_vq:
            raise InputError(f"depth must be in 1..{self.n_vq} for this model, got {depth}")
        audio = self._audio(text, depth, config.seed)
        step = self.frames_per_chunk * FRAME
        finished = False
        try:
            for start in range(0, audio.size, step):
                yield audio[start : start + step]
            finished = True
        finally:
            self.closed_early += not finished

    def synthesize(self, *args: Any, **kwargs: Any) -> tuple[np.ndarray, int]:
        return np.concatenate(list(self.stream(*args, **kwargs))), self.sample_rate


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
