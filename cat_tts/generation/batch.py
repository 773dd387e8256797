"""`generate`: a batch of left-padded prompt grids through the engine, as `CatTTSModel.generate` returns it.

Shapes: B batch, T prompt rows, N layers of the grid, K the depth, F generated frames.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from cat_tts.errors import FieldError, InputError
from cat_tts.generation.admission import default_budget
from cat_tts.generation.config import EngineConfig, GenerationConfig
from cat_tts.generation.engine import Engine

if TYPE_CHECKING:  # pragma: no cover
    from cat_tts.model import CatTTSModel


@dataclass
class FrameStep:
    """Frames delivered to an `on_frame` callback of `generate` (one call per frame, in order)."""

    tokens: torch.Tensor  # [B, 1+K] channel 0 = control token, then K codes
    is_audio: torch.Tensor  # [B] bool: True where this frame is audio (not audio_end, not already finished)
    index: int  # frame index, 0-based


@dataclass
class GenerationOutput:
    """Result of `generate` (a batch of prompt grids)."""

    frames: torch.Tensor  # [B, F, 1+K] audio frames (channel 0 = control token, then K codes); rows >= lengths[b]
    # are padding (text pad id, audio pad code)
    lengths: torch.Tensor  # [B] number of audio frames of each sequence
    finished: torch.Tensor  # [B] bool: True if the sequence ended with audio_end (False: hit the budget)
    prefill_seconds: float  # from the first submission to the last request's first frame
    decode_seconds: float  # time of all frame steps
    steps: int  # frame steps run (including audio_end steps)

    @property
    def codes(self) -> torch.Tensor:
        """`[B, K, F]` codes in the codec layout."""
        return self.frames[:, :, 1:].transpose(1, 2)

    @property
    def frames_per_second(self) -> float:
        """Frame steps per second of decode time."""
        return self.steps / self.decode_seconds if self.decode_seconds > 0 else float("inf")


def _row_seed(config: GenerationConfig, b: int) -> GenerationConfig:
    return config if config.seed is None else config.with_overrides(seed=config.seed + b)


def generate(
    model: CatTTSModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    config: GenerationConfig | None = None,
    on_frame: Callable[[FrameStep], None] | None = None,
    engine: Engine | None = None,
    **settings: Any,
) -> GenerationOutput:
    """Generates audio frames at depth K for a batch of left-padded prompt grids (one engine request per row).

    Args:
        model: a `CatTTSModel`.
        input_ids: `[B, T, 1+N]` prompt grids, left-padded.
        attention_mask: `[B, T]` (1 = real row), or None for no padding.
        config: generation settings; keyword `settings` replace its fields. A seeded batch uses seed + b for row b
            (so row 0 of a batch equals the same prompt alone).
        on_frame: called with each frame of the batch, in order.
        engine: an engine to run on (default: a new one sized for this batch, eager).

    Returns:
        `GenerationOutput`.
    """
    config = (config or GenerationConfig()).with_overrides(**settings)
    n_vq = model.config.n_vq
    low, k = config.depth_range(n_vq)
    if low != k:
        raise FieldError(
            "depth", 'generate takes a fixed depth (depth "auto" is chosen per request by a served engine)'
        )
    if input_ids.dim() != 3 or input_ids.shape[-1] != 1 + n_vq:
        raise InputError(f"input_ids must be [B, T, 1+{n_vq}], got {tuple(input_ids.shape)}")
    b, t, _ = input_ids.shape
    if attention_mask is None:
        attention_mask = torch.ones(b, t, dtype=torch.bool)
    mask = attention_mask.bool().cpu()
    prompts = [input_ids[i].cpu()[mask[i]] for i in range(b)]
    longest = max(p.shape[0] for p in prompts)
    budget = config.max_new_frames or default_budget(longest)
    if engine is None:  # sized for this batch: every slot holds its prompt, the budget and one read-back window
        rows = longest + budget + EngineConfig().sync_every
        engine = Engine(model, EngineConfig(max_slots=max(b, 1), max_rows=rows, max_queue=b, compile=False))
    start = time.perf_counter()
    requests = [engine.submit(p, _row_seed(config, i), max_new_frames=budget) for i, p in enumerate(prompts)]
    for request in requests:
        request.result()
    elapsed = time.perf_counter() - start
    ids = model.config.token_ids
    lengths = torch.tensor([r.num_frames for r in requests], dtype=torch.long)
    f = int(lengths.max()) if b else 0
    frames = torch.full((b, f, 1 + k), model.config.audio_pad_code, dtype=torch.long)
    frames[:, :, 0] = ids.pad
    for i, request in enumerate(requests):
        frames[i, : request.num_frames] = request.frames
    steps = max((r.frames_run for r in requests), default=0)
    if on_frame is not None:
        for index in range(f):
            on_frame(FrameStep(tokens=frames[:, index], is_audio=index < lengths, index=index))
    first = [r.first_frame_at for r in requests if r.first_frame_at is not None]
    prefill = (min(first) - start) if first else 0.0
    return GenerationOutput(
        frames=frames,
        lengths=lengths,
        finished=torch.tensor([r.finish_reason == "audio_end" for r in requests]),
        prefill_seconds=prefill,
        decode_seconds=max(elapsed - prefill, 0.0),
        steps=steps,
    )
