"""One frame of the engine as functions of (model, slot state, constants): the function that is compiled and
captured as one CUDA graph per (batch bucket, K_max bucket).

Shapes: b slots in the frame, C = 1 + N channels, V vocabulary, W = sync_every.

A frame is depth position 0 (`control_unit`: continue or audio_end), positions 1..K_max (`code_unit`: layer c of
every slot whose K >= c; the others keep the pad code), then `temporal_unit` (the frame appended to every slot's
temporal cache). The units are free functions so that torch.compile sees plain arguments: one compiled code unit serves
every layer, because the channel's modules and the position are arguments.

A frame is a transaction: until `temporal_unit` commits it (the repetition history, the cache length, the frame
counter), every write is recomputed identically by a rerun, so the engine can retry a frame that raised.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from cat_tts.generation.sampling import gumbel_noise, sample_rows
from cat_tts.generation.slots import FrameConstants, SlotState

if TYPE_CHECKING:  # pragma: no cover
    from cat_tts.model import CatTTSModel


def control_unit(model: CatTTSModel, s: SlotState, k: FrameConstants, position: torch.Tensor, full: bool) -> None:
    """Depth position 0: samples channel 0 (continue or audio_end) of every slot, starts the frame."""
    x = model.to_depth(s.hidden)  # [b, Dd]
    h = model.depth_step(x, s.depth_cache, position)  # [b, Dd]
    forbid = (s.frame < s.min_frames)[:, None]  # [b, 1] audio_end not allowed yet
    logits = model.control_logits(h, k.candidates).float()  # [b, 2]
    logits = logits.masked_fill(forbid & k.end_column, float("-inf"))
    noise = gumbel_noise(s.keys, s.frame, position, k.control_tokens)
    args = (s.control_greedy, s.control_temperature, s.control_top_k, s.control_top_p)
    token = k.candidates[sample_rows(logits, *args, noise)]  # [b]
    if full:  # the released behaviour: channel 0 over the whole text vocabulary
        logits = model.control_logits(h).float()  # [b, V_text]
        is_end = torch.arange(logits.shape[-1], device=logits.device) == k.audio_end
        logits = logits.masked_fill(forbid & is_end, float("-inf"))
        noise = gumbel_noise(s.keys, s.frame, position, k.text_tokens)
        token = torch.where(s.control_full, sample_rows(logits, *args, noise), token)
    live = s.active & ~s.ended
    s.is_audio.copy_(live & (token != k.audio_end))
    s.tokens[:, 0] = token
    embedding = model.channel_modules(0).embedding(token)  # [b, D]
    s.row_embed.copy_(embedding)
    s.x.copy_(model.to_depth(embedding))


def code_unit(model: CatTTSModel, s: SlotState, k: FrameConstants, channel: Any, position: torch.Tensor) -> None:
    """Depth position c >= 1: samples layer c of every slot whose depth K >= c (others keep the pad code)."""
    h = model.depth_step(s.x, s.depth_cache, position)  # [b, Dd]
    logits = channel.logits(h).float().masked_fill(k.pad_column, float("-inf"))  # [b, V] pads never sampled
    index = position.view(1)
    seen = s.seen.index_select(1, index).squeeze(1)  # [b, V] this layer's history before this frame
    noise = gumbel_noise(s.keys, s.frame, position, k.audio_tokens)
    args = (s.audio_greedy, s.temperature, s.top_k, s.top_p)
    token = sample_rows(logits, *args, noise, seen, s.repetition_penalty)  # greedy rows: plain argmax
    on = s.active & (position <= s.depth)  # [b] the slot generates this layer
    token = torch.where(on, token, torch.full_like(token, k.pad_code))
    s.tokens.index_copy_(1, index, token[:, None])
    embedding = channel.embedding(token)  # [b, D]
    s.row_embed.add_(torch.where(on[:, None], embedding, torch.zeros_like(embedding)))
    s.x.copy_(model.to_depth(embedding))


def temporal_unit(model: CatTTSModel, s: SlotState, k: FrameConstants, cache: Any, window: torch.Tensor) -> None:
    """Appends the frame to every slot's temporal cache and commits it: the repetition history, the ended flags, the
    frame counters, and a copy into the read-back window at index `window` (a 0-dim device counter, advanced here)."""
    positions = s.lengths  # [b] each slot's next row = its next position and cache column
    visible = k.columns[None, :] <= positions[:, None]  # [b, R] the slot's rows so far and the new one
    hidden = model.temporal_step(s.row_embed[:, None], positions[:, None], visible[:, None, :], cache)
    s.hidden.copy_(hidden[:, 0])
    codes = s.tokens[:, 1:]  # [b, N] this frame's codes (pads above a slot's K)
    layers = torch.arange(1, codes.shape[1] + 1, device=codes.device)  # [N]
    on = s.active[:, None] & (layers[None, :] <= s.depth[:, None])  # [b, N]
    seen = s.seen[:, 1:]  # [b, N, V] a view
    seen.logical_or_(torch.zeros_like(seen).scatter_(2, codes[:, :, None], on[:, :, None]))
    s.ended.logical_or_(s.active & (s.tokens[:, 0] == k.audio_end))
    step = s.active.long()
    s.lengths.add_(step)
    s.frame.add_(step)
    s.history.index_copy_(1, window.view(1), s.tokens[:, None])
    s.history_audio.index_copy_(1, window.view(1), s.is_audio[:, None])
    window.copy_((window + 1) % s.history.shape[1])  # the host reads every W frames and restarts it at 0


def prefill_unit(
    model: CatTTSModel, s: SlotState, k: FrameConstants, cache: Any, rows: torch.Tensor, meta: torch.Tensor,
    columns: torch.Tensor,
) -> None:  # fmt: skip
    """One fixed-size chunk of a prompt into its slot (static shapes: compiled and captured like a frame).

    Args:
        s: the whole pool's state (the slot may be any index).
        cache: the temporal `SlotKVCache`, set to write at (`meta[0]`, `columns`) (`prefill_at`).
        rows: `[1, L, C]` the chunk's prompt rows; rows past the prompt are padding (their keys land in columns no
            real row sees before a frame overwrites them).
        meta: `[4]` int64: slot, real rows n, the request's depth K, 1 when the chunk completes the prompt.
        columns: `[L]` int64 positions of the rows (= their cache columns).
    """
    depth = meta[2]
    x = model.embeddings[0](rows[..., 0])  # [1, L, D]
    for c in range(1, rows.shape[-1]):  # layers above K add an exact zero (the same sum as the request's K layers)
        x = x + model.embeddings[c](rows[..., c]) * (depth >= c).to(x.dtype)
    visible = k.columns[None, :] <= columns[:, None]  # [L, R]
    hidden = model.temporal_step(x, columns[None], visible[None], cache)  # [1, L, D]
    slot, last = meta[0:1], (meta[1] - 1).view(1)
    done = meta[3].bool()
    s.lengths.index_copy_(0, slot, columns.index_select(0, last) + 1)
    s.hidden.index_copy_(0, slot, torch.where(done, hidden[0].index_select(0, last), s.hidden.index_select(0, slot)))
    s.active.index_copy_(0, slot, s.active.index_select(0, slot) | done)


Units = dict[str, Callable[..., None]]
UNITS: Units = {"control": control_unit, "code": code_unit, "temporal": temporal_unit, "prefill": prefill_unit}


def run_frame(
    model: CatTTSModel,
    s: SlotState,
    k: FrameConstants,
    cache: Any,
    channels: Sequence[Any],
    units: Units,
    k_max: int,
    full: bool,
    window: torch.Tensor,
) -> None:
    """The whole frame for the slots of `s`: depth positions 0..k_max with their sampling, then the temporal step.

    Static shapes for a given (b, k_max): this is the function captured as one CUDA graph.
    """
    units["control"](model, s, k, k.positions[0], full)
    for c in range(1, k_max + 1):
        units["code"](model, s, k, channels[c], k.positions[c])
    units["temporal"](model, s, k, cache, window)
