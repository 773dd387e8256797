"""The codec's causal sliding-window transformer stage, with an explicit streaming state.

Shapes: B batch, T time steps (of this stage's rate), C channels, D model width, H heads, Dh head dim,
P past steps kept in a streaming cache.

A stage maps [B, C_in, T] -> [B, C_out, T]. Each block is pre-norm with LayerScale:
    h = x + s1 * Attn(LN1(x));   y = h + s2 * W2 GELU(W1 LN2(h))
Attention uses one fused bias-free QKV projection (rows [Q | K | V], head-major inside each), interleaved-pair
RoPE, and a causal sliding window: the query at step p sees keys p - window + 1 ... p. The window applies to
full-sequence calls too, so a streaming call that keeps the last `window - 1` keys of every layer sees
exactly what the full-sequence call sees, chunk size notwithstanding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from cat_tts.codec.config import TransformerConfig


@dataclass
class KVCache:
    """Rotated keys and values of the last steps one attention layer has seen (at most `window - 1`)."""

    keys: torch.Tensor  # [B, H, P, Dh]
    values: torch.Tensor  # [B, H, P, Dh]


@dataclass
class StageState:
    """Streaming state of one transformer stage: the step count so far and a KV cache per layer."""

    offset: int = 0  # steps already processed (the absolute position of the next step)
    layers: list[KVCache | None] = field(default_factory=list)  # one entry per block; None before the first call


def rope_rotate(x: torch.Tensor, offset: int, max_period: float) -> torch.Tensor:
    """Rotate pairs (2i, 2i+1) of every head vector by angle `position * max_period ** (-2i / Dh)`.

    Args:
        x: [B, H, T, Dh], Dh even.
        offset: absolute position of step 0.
        max_period: RoPE base period.

    Returns:
        [B, H, T, Dh] in x's dtype (the rotation itself is computed in float32).
    """
    b, h, t, dh = x.shape
    freqs = torch.exp(torch.arange(dh // 2, device=x.device, dtype=torch.float32) * (-math.log(max_period) * 2 / dh))
    positions = offset + torch.arange(t, device=x.device, dtype=torch.float32)
    angles = positions.view(t, 1) * freqs  # [T, Dh/2]
    cos, sin = torch.cos(angles), torch.sin(angles)
    pairs = x.reshape(b, h, t, dh // 2, 2)
    real, imag = pairs[..., 0].float(), pairs[..., 1].float()  # [B, H, T, Dh/2]
    out = torch.stack([(real * cos - imag * sin).to(x.dtype), (real * sin + imag * cos).to(x.dtype)], dim=-1)
    return out.reshape(b, h, t, dh)


def window_mask(q_start: int, t: int, k_start: int, k: int, window: int, device: torch.device) -> torch.Tensor:
    """Boolean [T, K] mask: query at q_start + i may see key at k_start + j iff 0 <= q - k < window."""
    q_pos = q_start + torch.arange(t, device=device).view(t, 1)
    k_pos = k_start + torch.arange(k, device=device).view(1, k)
    delta = q_pos - k_pos
    return (delta >= 0) & (delta < window)


class SelfAttention(nn.Module):
    """Causal sliding-window multi-head self-attention with interleaved-pair RoPE."""

    def __init__(self, config: TransformerConfig, window: int) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.max_period = config.max_period
        self.window = window  # steps each query sees, itself included
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.out = nn.Linear(config.d_model, config.d_model, bias=False)

    def forward(self, x: torch.Tensor, offset: int = 0, cache: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        """Attend over the cached past and the new steps.

        Args:
            x: [B, T, D] new steps, the first at absolute position `offset`.
            offset: absolute position of x's first step (0 for a full-sequence call).
            cache: keys/values of the steps just before `offset` (None: no past).

        Returns:
            ([B, T, D] output, the cache to use for the next call: the last `window - 1` steps).
        """
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x [B,H,T,Dh]
        q = rope_rotate(q, offset, self.max_period)
        k = rope_rotate(k, offset, self.max_period)
        if cache is not None:
            k = torch.cat([cache.keys, k], dim=2)  # [B, H, P+T, Dh]
            v = torch.cat([cache.values, v], dim=2)
        past = k.shape[2] - t
        mask = window_mask(offset, t, offset - past, k.shape[2], self.window, x.device)  # [T, P+T]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, T, Dh]
        y = self.out(y.transpose(1, 2).reshape(b, t, d))  # [B, T, D]
        keep = max(self.window - 1, 0)
        new_cache = KVCache(k[:, :, -keep:], v[:, :, -keep:]) if keep else KVCache(k[:, :, :0], v[:, :, :0])
        return y, new_cache


class TransformerBlock(nn.Module):
    """Pre-norm block: LayerNorm -> attention -> LayerScale residual; LayerNorm -> GELU MLP -> LayerScale residual."""

    def __init__(self, config: TransformerConfig, window: int) -> None:
        super().__init__()
        d = config.d_model
        self.norm1 = nn.LayerNorm(d, eps=1e-5)
        self.attn = SelfAttention(config, window)
        self.layer_scale_1 = nn.Parameter(torch.full((d,), config.layer_scale))
        self.norm2 = nn.LayerNorm(d, eps=1e-5)
        self.linear1 = nn.Linear(d, config.dim_feedforward, bias=False)
        self.linear2 = nn.Linear(config.dim_feedforward, d, bias=False)
        self.layer_scale_2 = nn.Parameter(torch.full((d,), config.layer_scale))

    def forward(self, x: torch.Tensor, offset: int = 0, cache: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        """x: [B, T, D] -> ([B, T, D], new cache); see `SelfAttention.forward`."""
        update, cache = self.attn(self.norm1(x), offset, cache)
        x = x + self.layer_scale_1 * update
        x = x + self.layer_scale_2 * self.linear2(F.gelu(self.linear1(self.norm2(x))))  # exact (erf) GELU
        return x, cache


class CodecTransformer(nn.Module):
    """One transformer stage of the codec: [B, C_in, T] -> [B, C_out, T], causal with a sliding window.

    Args:
        config: the stage's configuration.
        window: attention window in steps of this stage (see `CodecConfig.contexts`).
    """

    def __init__(self, config: TransformerConfig, window: int) -> None:
        super().__init__()
        self.config = config
        self.window = window
        d = config.d_model
        # Projections exist only when the width changes (as in the checkpoint: no key otherwise).
        self.input_proj = nn.Linear(config.input_dimension, d, bias=False) if config.input_dimension != d else None
        self.layers = nn.ModuleList(TransformerBlock(config, window) for _ in range(config.num_layers))
        self.output_proj = nn.Linear(d, config.output_dimension, bias=False) if config.output_dimension != d else None

    def new_state(self) -> StageState:
        """An empty streaming state for this stage."""
        return StageState(offset=0, layers=[None] * len(self.layers))

    def forward(self, x: torch.Tensor, state: StageState | None = None) -> torch.Tensor:
        """Run the stage on the next steps.

        Args:
            x: [B, C_in, T].
            state: streaming state (updated in place): x continues the steps it has seen. None for a
                full-sequence call starting at step 0.

        Returns:
            [B, C_out, T].
        """
        h = x.transpose(1, 2)  # [B, T, C_in]
        h = h.to(self.layers[0].linear1.weight.dtype)
        if self.input_proj is not None:
            h = self.input_proj(h)  # [B, T, D]
        offset = 0 if state is None else state.offset
        for i, layer in enumerate(self.layers):
            h, cache = layer(h, offset, None if state is None else state.layers[i])
            if state is not None:
                state.layers[i] = cache
        if state is not None:
            state.offset += h.shape[1]
        if self.output_proj is not None:
            h = self.output_proj(h)  # [B, T, C_out]
        return h.transpose(1, 2)  # [B, C_out, T]
