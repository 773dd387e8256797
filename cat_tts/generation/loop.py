"""The frame loop: temporal KV cache across frames, depth KV cache within a frame.

Shapes: B batch, T prompt rows, F generated frames, N audio layers of the grid (32), K generated layers
(the depth, 1..N), D temporal width, Dd depth width, V vocabulary of a channel.

One frame costs one temporal step (one new row against the transformers cache) plus K+1 depth steps,
each feeding ONE new position to the depth transformer against its own cache, and one output adapter +
head for the position being sampled. The released code instead re-runs the depth transformer over the
whole growing sequence at every depth step ((K+1)(K+2)/2 positions per frame).

Semantics follow the released generation code (facts in reference/upstream-checkpoints.md, B.5):
the temporal input of a row sums the embeddings of channels 0..K only; channel 0 of a frame is sampled
first, then layers 1..K, each conditioned on the previous ones; audio pads are never sampled; the
repetition penalty of an audio layer covers that layer's whole history (prompt included). Unlike the
released code, the frame on which `audio_end` is chosen is not returned as audio.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch

from cat_tts.generation.sampling import AUDIO_DEFAULTS, CONTROL_DEFAULTS, SamplingParams, draw, process_logits

if TYPE_CHECKING:  # pragma: no cover
    from cat_tts.model import CatTTSModel, DepthKVCache

logger = logging.getLogger(__name__)

ControlTokens = Literal["audio", "full"]

# Frame budget when nothing better is known: seconds of audio allowed per prompt text row, plus a floor.
_SECONDS_PER_TEXT_ROW = 1.0
_MIN_BUDGET_SECONDS = 5.0
FRAME_RATE = 12.5  # codec frames per second


@dataclass
class GenerationConfig:
    """What `generate` does. Sampling defaults are the released model's.

    Validation raises ValueError naming the field, value and allowed range.
    """

    depth: int = 32  # K: RVQ layers generated per frame, 1..n_vq (bitrate = 0.125 kbps * K)
    max_new_frames: int | None = None  # frame budget (80 ms each); None = derived from the prompt length
    min_new_frames: int = 0  # audio_end is forbidden before this many frames
    do_sample: bool = True  # False = greedy (argmax) for every channel
    audio: SamplingParams = field(default_factory=lambda: AUDIO_DEFAULTS)  # layers 1..K
    control: SamplingParams = field(default_factory=lambda: CONTROL_DEFAULTS)  # channel 0
    control_tokens: ControlTokens = "audio"  # "audio": channel 0 picks gen_slot vs audio_end only;
    # "full": channel 0 is sampled over the whole text vocabulary (exactly like the released code)
    seed: int | None = None  # seeds the sampler's own random generator; None = torch's global RNG

    def __post_init__(self) -> None:
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1:
            raise ValueError(f"depth must be an integer >= 1, got {self.depth!r}")
        if self.max_new_frames is not None and self.max_new_frames < 1:
            raise ValueError(f"max_new_frames must be >= 1 (or None for the default), got {self.max_new_frames}")
        if self.min_new_frames < 0:
            raise ValueError(f"min_new_frames must be >= 0, got {self.min_new_frames}")
        if self.control_tokens not in ("audio", "full"):
            raise ValueError(f"control_tokens must be 'audio' or 'full', got {self.control_tokens!r}")

    def check_model(self, n_vq: int) -> None:
        """Checks the depth against the model's number of layers."""
        if self.depth > n_vq:
            raise ValueError(f"depth must be in 1..{n_vq} for this model, got {self.depth}")


@dataclass
class FrameStep:
    """One generated frame for the whole batch (what the streaming iterator yields)."""

    tokens: torch.Tensor  # [B, 1+K] channel 0 = control token, then K codes
    is_audio: torch.Tensor  # [B] bool: True where this frame is audio (not audio_end, not already finished)
    index: int  # frame index, 0-based


@dataclass
class GenerationOutput:
    """Result of `generate`."""

    frames: torch.Tensor  # [B, F, 1+K] generated audio frames (channel 0 = control token, then K codes);
    # rows >= lengths[b] are padding (text pad id, audio pad code)
    lengths: torch.Tensor  # [B] number of audio frames of each sequence
    finished: torch.Tensor  # [B] bool: True if the sequence ended with audio_end (False: hit the budget)
    prefill_seconds: float  # prompt forward time
    decode_seconds: float  # time of all frame steps
    steps: int  # frame steps run (including the audio_end step)

    @property
    def codes(self) -> torch.Tensor:
        """`[B, K, F]` codes in the codec layout."""
        return self.frames[:, :, 1:].transpose(1, 2)

    @property
    def frames_per_second(self) -> float:
        """Frame steps per second of decode time."""
        return self.steps / self.decode_seconds if self.decode_seconds > 0 else float("inf")


def default_max_new_frames(attention_mask: torch.Tensor) -> int:
    """A frame budget from the prompt length so a runaway generation ends.

    Args:
        attention_mask: `[B, T]` prompt mask.

    Returns:
        Frames: 12.5 x (floor + 1 s per prompt row of the longest prompt).
    """
    rows = int(attention_mask.sum(dim=1).max())
    return int(FRAME_RATE * (_MIN_BUDGET_SECONDS + _SECONDS_PER_TEXT_ROW * rows))


def _position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding (pads get position 1, as transformers' generate does)."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


class _Sampler:
    """Per-frame sampling state: histories for the repetition penalty, the random generator."""

    def __init__(self, model: CatTTSModel, config: GenerationConfig, input_ids: torch.Tensor) -> None:
        ids = model.config.token_ids
        self.config = config
        self.depth = config.depth
        self.pad_code = model.config.audio_pad_code
        self.audio_vocab = model.config.audio_vocab_size + 1  # codes + pad
        self.gen_slot = ids.audio_assistant_gen_slot
        self.audio_end = ids.audio_end
        device = input_ids.device
        self.audio_params = config.audio if config.do_sample else SamplingParams(temperature=0.0)
        self.control_params = config.control if config.do_sample else SamplingParams(temperature=0.0)
        self.generator = None
        if config.seed is not None and not (self.audio_params.greedy and self.control_params.greedy):
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(int(config.seed))
        # seen[b, k, v]: code v occurred in layer k+1 of sequence b (prompt rows included, as upstream).
        self.seen = None
        if not self.audio_params.greedy and self.audio_params.repetition_penalty != 1.0:
            b = input_ids.shape[0]
            codes = input_ids[:, :, 1 : 1 + self.depth].clamp(0, self.audio_vocab - 1)  # [B, T, K]
            self.seen = torch.zeros(b, self.depth, self.audio_vocab, dtype=torch.bool, device=device)
            self.seen.scatter_(2, codes.transpose(1, 2), True)

    def control(self, model: CatTTSModel, h: torch.Tensor, frame: int) -> torch.Tensor:
        """Samples channel 0 from the depth output `h [B, Dd]`."""
        forbid_end = frame < self.config.min_new_frames
        if self.config.control_tokens == "audio":
            candidates = torch.tensor([self.gen_slot, self.audio_end], device=h.device)
            logits = _control_logits(model, h, candidates)  # [B, 2]
            if forbid_end:
                logits[:, 1] = float("-inf")
            choice = draw(process_logits(logits, self.control_params), self.control_params.greedy, self.generator)
            return candidates[choice]
        logits = model.channel_logits(0, h)  # [B, V_text]
        if forbid_end:
            logits[:, self.audio_end] = float("-inf")
        return draw(process_logits(logits, self.control_params), self.control_params.greedy, self.generator)

    def code(self, model: CatTTSModel, layer: int, h: torch.Tensor) -> torch.Tensor:
        """Samples audio layer `layer` (1-based) from the depth output `h [B, Dd]`."""
        logits = model.channel_logits(layer, h)  # [B, V_audio]
        logits[:, self.pad_code] = float("-inf")
        seen = None if self.seen is None else self.seen[:, layer - 1]
        tokens = draw(process_logits(logits, self.audio_params, seen), self.audio_params.greedy, self.generator)
        if self.seen is not None:
            self.seen[:, layer - 1].scatter_(1, tokens[:, None], True)
        return tokens


def _control_logits(model: CatTTSModel, h: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Channel-0 logits of only `candidates` (a few token ids) from depth outputs `h [B, Dd]` -> `[B, n]`.

    Runs channel 0's output adapter and norm, then only the `candidates` rows of the text head: the full
    text-vocabulary projection (155648 rows in the release) is never computed.
    """
    x = model.head_norms[0](model.depth_output[0](h))  # [B, D]
    return x @ model.heads[0].weight[candidates].t()  # [B, n]


def _depth_frame(
    model: CatTTSModel,
    sampler: _Sampler,
    cache: DepthKVCache,
    hidden: torch.Tensor,
    frame: int,
    unfinished: torch.Tensor,
) -> torch.Tensor:
    """Runs the depth transformer with its KV cache over one frame: K+1 single-position steps.

    Args:
        cache: the depth KV cache (reset here, preallocated for 1+N positions).
        hidden: `[B, D]` final temporal state of the last row.
        unfinished: `[B]` bool, sequences still generating audio.

    Returns:
        `[B, 1+K]` tokens (control, then K codes). When no sequence continues after the control token,
        the audio layers are not computed at all (pad codes): that frame is never audio.
    """
    b = hidden.shape[0]
    cache.reset()  # a new frame: forget the previous frame's positions, reuse the buffers
    x = model.depth_input(hidden)[:, None]  # [B, 1, Dd]
    tokens = []
    for c in range(sampler.depth + 1):
        h = model.depth(x, cache)[:, -1]  # [B, Dd]
        tok = sampler.control(model, h, frame) if c == 0 else sampler.code(model, c, h)  # [B]
        tokens.append(tok)
        if c == 0 and not bool((unfinished & (tok != sampler.audio_end)).any()):
            pads = tok.new_full((b, sampler.depth), sampler.pad_code)
            return torch.cat([tok[:, None], pads], dim=-1)  # [B, 1+K]
        if c < sampler.depth:
            x = model.depth_input(model.channel_embedding(c, tok))[:, None]  # [B, 1, Dd]
    return torch.stack(tokens, dim=-1)  # [B, 1+K]


@torch.inference_mode()
def iter_frames(
    model: CatTTSModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    config: GenerationConfig,
    timing: dict | None = None,
) -> Iterator[FrameStep]:
    """Generates frames one at a time (the streaming core of `generate`).

    Args:
        model: a `CatTTSModel`.
        input_ids: `[B, T, 1+N]` prompt grids (left-padded).
        attention_mask: `[B, T]` (1 = real row), or None for no padding.
        config: generation settings.
        timing: optional dict that receives `prefill_seconds` and `decode_seconds`.

    Yields:
        One `FrameStep` per frame step, until every sequence chose `audio_end` or the budget is spent.
        The step on which a sequence chooses `audio_end` is yielded with `is_audio` False for it.
    """
    from transformers import DynamicCache

    n_vq = model.config.n_vq
    config.check_model(n_vq)
    if input_ids.dim() != 3 or input_ids.shape[-1] != 1 + n_vq:
        raise ValueError(f"input_ids must be [B, T, 1+{n_vq}], got {tuple(input_ids.shape)}")
    b, t, _ = input_ids.shape
    device = input_ids.device
    if attention_mask is None:
        attention_mask = torch.ones(b, t, dtype=torch.long, device=device)
    attention_mask = attention_mask.to(device=device, dtype=torch.long)
    budget = config.max_new_frames or default_max_new_frames(attention_mask)
    k = config.depth
    ids = model.config.token_ids
    pad_code = model.config.audio_pad_code
    sampler = _Sampler(model, config, input_ids)
    timing = timing if timing is not None else {}
    timing.setdefault("decode_seconds", 0.0)

    start = time.perf_counter()
    cache = DynamicCache()
    embeds = model.embed_frames(input_ids, k)  # [B, T, D]
    out = model.temporal(
        inputs_embeds=embeds,
        attention_mask=attention_mask,
        position_ids=_position_ids(attention_mask),
        past_key_values=cache,
        use_cache=True,
    )
    hidden = out.last_hidden_state[:, -1]  # [B, D]
    timing["prefill_seconds"] = time.perf_counter() - start

    unfinished = torch.ones(b, dtype=torch.bool, device=device)
    depth_cache = model.depth.new_cache(b, hidden.dtype, hidden.device)
    for frame in range(budget):
        step_start = time.perf_counter()
        tokens = _depth_frame(model, sampler, depth_cache, hidden, frame, unfinished)  # [B, 1+K]
        is_audio = unfinished & (tokens[:, 0] != ids.audio_end)
        unfinished = is_audio
        done = not bool(unfinished.any()) or frame + 1 == budget
        if not done:
            # Next temporal row: the frame as sampled (finished rows: audio_end + pads, as upstream).
            row = torch.full((b, 1, 1 + n_vq), pad_code, dtype=torch.long, device=device)
            row[:, 0, : 1 + k] = tokens
            row[~unfinished, 0, 0] = ids.audio_end
            row[~unfinished, 0, 1:] = pad_code
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(b, 1)], dim=1)
            out = model.temporal(
                inputs_embeds=model.embed_frames(row, k),  # [B, 1, D]
                attention_mask=attention_mask,
                position_ids=_position_ids(attention_mask)[:, -1:],
                past_key_values=cache,
                use_cache=True,
            )
            hidden = out.last_hidden_state[:, -1]
        timing["decode_seconds"] += time.perf_counter() - step_start
        yield FrameStep(tokens=tokens, is_audio=is_audio, index=frame)
        if done:
            return


def generate(
    model: CatTTSModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    config: GenerationConfig | None = None,
    on_frame: Callable[[FrameStep], None] | None = None,
    **overrides,
) -> GenerationOutput:
    """Generates audio frames at depth K for a batch of prompt grids.

    Args:
        model: a `CatTTSModel`.
        input_ids: `[B, T, 1+N]` prompt grids (left-padded, see `PromptBuilder.pad_left`).
        attention_mask: `[B, T]`, or None.
        config: a `GenerationConfig`; keyword `overrides` replace its fields (e.g. `depth=8`).
        on_frame: called after every frame step (progress bars, streaming consumers).

    Returns:
        `GenerationOutput` with `.frames [B, F, 1+K]`, `.lengths [B]`, `.finished [B]`, timings.
    """
    config = _resolve_config(config, overrides)
    b = input_ids.shape[0]
    ids = model.config.token_ids
    timing: dict = {}
    steps: list[FrameStep] = []
    for step in iter_frames(model, input_ids, attention_mask, config, timing):
        steps.append(step)
        if on_frame is not None:
            on_frame(step)
    is_audio = torch.stack([s.is_audio for s in steps], dim=1)  # [B, S]
    lengths = is_audio.sum(dim=1)  # audio frames form a prefix of the steps
    tokens = torch.stack([s.tokens for s in steps], dim=1)  # [B, S, 1+K]
    ended = (tokens[:, :, 0] == ids.audio_end) & ~torch.cat(
        [torch.zeros_like(is_audio[:, :1]), ~is_audio[:, :-1]], dim=1
    )  # audio_end chosen while still unfinished
    f = int(lengths.max()) if b else 0
    frames = tokens[:, :f].clone()
    keep = torch.arange(f, device=frames.device)[None, :] < lengths[:, None]  # [B, F]
    frames[..., 0] = frames[..., 0].masked_fill(~keep, ids.pad)
    frames[..., 1:] = frames[..., 1:].masked_fill(~keep[..., None], model.config.audio_pad_code)
    return GenerationOutput(
        frames=frames,
        lengths=lengths,
        finished=ended.any(dim=1),
        prefill_seconds=timing.get("prefill_seconds", 0.0),
        decode_seconds=timing.get("decode_seconds", 0.0),
        steps=len(steps),
    )


def _resolve_config(config: GenerationConfig | None, overrides: dict) -> GenerationConfig:
    if config is None:
        config = GenerationConfig()
    if not overrides:
        return config
    from dataclasses import fields, replace

    names = {f.name for f in fields(GenerationConfig)}
    unknown = set(overrides) - names
    if unknown:
        raise TypeError(f"unknown generation arguments {sorted(unknown)}; allowed: {sorted(names)}")
    return replace(config, **overrides)
