"""Sampling as tensor operations: per-row settings, no host synchronisation, counter-based noise.

Shapes: M rows being sampled (one per slot), V vocabulary of the channel.

Every setting is a tensor with one value per row, so requests with different settings share one batch and the
code runs unchanged inside a compiled graph or a CUDA graph. The processors follow the Hugging Face semantics the
released generation code uses, in its order: repetition penalty -> temperature -> top-k -> top-p -> draw.

The draw is an exponential-noise argmax (the Gumbel-max trick: `argmax(z + g)` with standard Gumbel noise `g` picks
token v with probability softmax(z)_v). The noise is not taken from a stateful generator: it is a hash of
(request seed, frame index, channel, token index), so a request's draws depend only on its own seed and progress,
never on its batch neighbours, its slot, or how many other requests ran before it.
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF
# Odd multiplier of a well-mixing 32-bit integer hash (two multiply-xorshift rounds). It is below 2**31, so products
# of 32-bit values stay below 2**63 and int64 arithmetic is exact on every backend (no reliance on overflow).
_MIX = 0x045D9F3B
# Salts that separate the fields of the key (arbitrary 32-bit constants).
_SALT_SEED_HIGH = 0x68E31DA4
_SALT_FRAME = 0xB5297A4D
_SALT_CHANNEL = 0x1B56C4E9
_SALT_TOKEN = 0x7F4A7C15


def mix32(x: torch.Tensor | int) -> torch.Tensor | int:
    """A 32-bit integer hash (works on Python ints and on int64 tensors holding values in [0, 2**32))."""
    x = ((x ^ (x >> 16)) * _MIX) & _MASK32
    x = ((x ^ (x >> 16)) * _MIX) & _MASK32
    return x ^ (x >> 16)


def seed_key(seed: int) -> int:
    """The 32-bit key of a request's 64-bit seed (computed once on the host, at admission)."""
    seed &= 2**64 - 1
    return mix32(mix32(seed & _MASK32) ^ mix32((seed >> 32) ^ _SALT_SEED_HIGH))


def token_hashes(vocab: int, device: torch.device | str) -> torch.Tensor:
    """`[V]` int64: the per-token part of the noise key (precomputed once per vocabulary size)."""
    return mix32(torch.arange(vocab, dtype=torch.int64, device=device) ^ _SALT_TOKEN)


def gumbel_noise(keys: torch.Tensor, frames: torch.Tensor, channel: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise keyed by (request, frame, channel, token).

    Args:
        keys: `[M]` int64 seed keys (`seed_key`).
        frames: `[M]` int64 frame index of each request (0 = its first generated frame).
        channel: 0-dim int64 tensor (or `[M]`), the channel being sampled (0 = control, 1..N = layers).
        tokens: `[V]` int64 token hashes (`token_hashes`).

    Returns:
        `[M, V]` float32.
    """
    key = mix32(keys ^ mix32((frames & _MASK32) ^ _SALT_FRAME))
    key = mix32(key ^ mix32((channel & _MASK32) ^ _SALT_CHANNEL))  # [M]
    bits = mix32(key[:, None] ^ tokens[None, :])  # [M, V] in [0, 2**32)
    uniform = ((bits >> 8).to(torch.float32) + 0.5) * (1.0 / 2**24)  # (0, 1), 24 bits: exact in float32
    return -torch.log(-torch.log(uniform))


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """Penalises the tokens of each row's history (HF semantics: positive logits divided, negative multiplied).

    Args:
        logits: `[M, V]` float.
        seen: `[M, V]` bool, True where the token occurs in that row's history.
        penalty: `[M]` float (1 = no change).

    Returns:
        New `[M, V]` logits.
    """
    p = penalty[:, None]
    penalised = torch.where(logits < 0, logits * p, logits / p)
    return torch.where(seen, penalised, logits)


def filter_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Top-k then nucleus (top-p) filtering with per-row settings; removed tokens become -inf.

    Top-k keeps the logits >= the k-th largest (ties kept; k = 0 keeps all). Top-p then drops, from the top-k
    survivors, the least likely tokens whose total probability is <= 1 - top_p (the most likely token is always
    kept; top_p = 1 keeps all), as the Hugging Face warpers do.

    Args:
        logits: `[M, V]` float32 (already divided by the temperature).
        top_k: `[M]` int64, 0 disables.
        top_p: `[M]` float32 in (0, 1].

    Returns:
        `[M, V]`.
    """
    vocab = logits.shape[-1]
    ordered, _ = torch.sort(logits, dim=-1, descending=True)  # [M, V]
    k = torch.where(top_k > 0, top_k.clamp(max=vocab), torch.full_like(top_k, vocab))  # [M]
    kth = ordered.gather(1, (k - 1)[:, None])  # [M, 1]
    ranks = torch.arange(vocab, device=logits.device)
    survivors = ordered.masked_fill(ranks[None, :] >= k[:, None], float("-inf"))  # top-k, descending
    probs = survivors.softmax(dim=-1)
    above = probs.cumsum(dim=-1) - probs  # [M, V] probability mass strictly above each rank
    kept = (above < top_p[:, None]).sum(dim=-1).clamp(min=1)  # [M] number of tokens top-p keeps
    kept = torch.where(top_p >= 1.0, k, torch.minimum(kept, k))
    cutoff = ordered.gather(1, (kept - 1)[:, None])  # [M, 1] smallest kept logit
    return logits.masked_fill(logits < torch.maximum(kth, cutoff), float("-inf"))


def sample_rows(
    logits: torch.Tensor,
    greedy: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    noise: torch.Tensor,
    seen: torch.Tensor | None = None,
    repetition_penalty: torch.Tensor | None = None,
) -> torch.Tensor:
    """Picks one token per row: argmax where `greedy`, else a Gumbel-max draw from the processed distribution.

    Greedy rows take the argmax of `logits` as given (no processor applies), exactly like `logits.argmax(-1)`.

    Args:
        logits: `[M, V]` (any float dtype; -inf = forbidden).
        greedy: `[M]` bool.
        temperature: `[M]` float32 (> 0 where not greedy).
        top_k: `[M]` int64.
        top_p: `[M]` float32.
        noise: `[M, V]` float32 Gumbel noise (`gumbel_noise`).
        seen, repetition_penalty: optional `[M, V]` history and `[M]` penalties (applied first).

    Returns:
        `[M]` int64 token ids.
    """
    argmax = logits.argmax(dim=-1)
    z = logits.float()
    if seen is not None and repetition_penalty is not None:
        z = apply_repetition_penalty(z, seen, repetition_penalty)
    z = z / torch.where(greedy, torch.ones_like(temperature), temperature)[:, None]
    z = filter_top_k_top_p(z, top_k, top_p)
    drawn = (z + noise).argmax(dim=-1)
    return torch.where(greedy, argmax, drawn)
