"""The codec's causal sliding-window transformer stage, with an explicit streaming state.

Shapes: B batch (rows of a streaming state), R rows advanced by one call, T time steps (of this stage's rate),
C channels, D model width, H heads, Dh head dim, P = window - 1 past steps kept per row.

A stage maps [B, C_in, T] -> [B, C_out, T]. Each block is pre-norm with LayerScale:
    h = x + s1 * Attn(LN1(x));   y = h + s2 * W2 GELU(W1 LN2(h))
Attention uses one fused bias-free QKV projection (rows [Q | K | V], head-major inside each), interleaved-pair
RoPE, and a causal sliding window: the query at step p sees keys p - window + 1 ... p. The window applies to
full-sequence calls too, so a streaming call that keeps the last `window - 1` keys of every layer sees
exactly what the full-sequence call sees, chunk size notwithstanding.

Streaming invariant (stated once, relied on everywhere): row b of a `StageState` has processed `offsets[b]` steps,
and slot j (0 <= j < P) of each layer's fixed-size KV buffer holds the rotated key/value of position
`offsets[b] - P + j`, oldest first; slots at negative positions (a row younger than the window) are masked out.
Rows are independent, so one call may advance any subset of rows, each from its own position and by its own
number of steps.
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
    """Rotated keys and values of the `P = window - 1` steps before each row's offset (see the module invariant)."""

    keys: torch.Tensor  # [B, H, P, Dh]
    values: torch.Tensor  # [B, H, P, Dh]


@dataclass
class StageState:
    """Streaming state of one transformer stage for B rows: steps processed per row and a KV buffer per layer."""

    offsets: torch.Tensor  # [B] int64 on the stage's device: steps processed per row (position of its next step)
    layers: list[KVCache | None] = field(default_factory=list)  # one per block; None until the first call

    @property
    def batch_size(self) -> int:
        return self.offsets.shape[0]

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only `rows` ([R] int64 indices, in that order): the state of R rows (copies the buffers)."""
        rows = rows.to(self.offsets.device)
        self.offsets = self.offsets.index_select(0, rows)
        self.layers = [
            None if c is None else KVCache(c.keys.index_select(0, rows), c.values.index_select(0, rows))
            for c in self.layers
        ]

    def add_rows(self, n: int) -> None:
        """Append `n` fresh rows (offset 0, empty past) after the existing ones (copies the buffers)."""
        self.offsets = torch.cat([self.offsets, self.offsets.new_zeros(n)])
        self.layers = [
            None if c is None else KVCache(_pad_rows(c.keys, n), _pad_rows(c.values, n)) for c in self.layers
        ]


def _pad_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    return torch.cat([x, x.new_zeros(n, *x.shape[1:])])  # [B + n, ...]


def rope_rotate(x: torch.Tensor, offset: int | torch.Tensor, max_period: float) -> torch.Tensor:
    """Rotate pairs (2i, 2i+1) of every head vector by angle `position * max_period ** (-2i / Dh)`.

    Args:
        x: [B, H, T, Dh], Dh even.
        offset: absolute position of step 0: one int for every row, or [B] int64 per row.
        max_period: RoPE base period.

    Returns:
        [B, H, T, Dh] in x's dtype (the rotation itself is computed in float32).
    """
    b, h, t, dh = x.shape
    freqs = torch.exp(torch.arange(dh // 2, device=x.device, dtype=torch.float32) * (-math.log(max_period) * 2 / dh))
    if isinstance(offset, torch.Tensor):
        # Integer positions are exact in float32 (below 2**24 steps), so per-row angles equal the scalar path's.
        positions = (offset.view(b, 1) + torch.arange(t, device=x.device)).float()  # [B, T]
        angles = positions.view(b, 1, t, 1) * freqs  # [B, 1, T, Dh/2]
    else:
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


def stream_mask(offsets: torch.Tensor, t: int, past: int, window: int) -> torch.Tensor:
    """Boolean [R, 1, T, P+T] mask of a streaming call: row r's query at offsets[r] + i may see the key in slot j
    (position offsets[r] - P + j) iff that position is >= 0 and 0 <= query - key < window."""
    steps = torch.arange(past + t, device=offsets.device)
    k_pos = offsets.view(-1, 1) - past + steps  # [R, P+T]
    q_pos = offsets.view(-1, 1) + steps[:t]  # [R, T]
    delta = q_pos.unsqueeze(2) - k_pos.unsqueeze(1)  # [R, T, P+T]
    return ((delta >= 0) & (delta < window) & (k_pos >= 0).unsqueeze(1)).unsqueeze(1)


def _slide(x: torch.Tensor, lengths: torch.Tensor | None, past: int) -> torch.Tensor:
    """The last P steps of each row of [R, H, P+T, Dh] after it advanced by lengths[r] (None: by T) -> [R, H, P, Dh]."""
    t = x.shape[2] - past
    if lengths is None:
        return x[:, :, t:]
    r, h, _, dh = x.shape
    index = (lengths.view(r, 1) + torch.arange(past, device=x.device)).view(r, 1, past, 1)  # [R, 1, P, 1]
    return x.gather(2, index.expand(r, h, past, dh))


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

    def forward(
        self,
        x: torch.Tensor,
        offsets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        mask: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KVCache | None]:
        """Attend over the cached past and the new steps.

        Args:
            x: [R, T, D] new steps; row r's first step is at absolute position offsets[r].
            offsets: [R] int64 positions of x's first steps; None for a full-sequence call from step 0.
            cache: the rows' keys/values of the P steps before their offsets (required with `offsets`).
            mask: `stream_mask(offsets, T, P, window)`, shared by the stage's layers (required with `offsets`).
            lengths: [R] valid steps per row (the rest is right padding: never seen by a valid step, not cached);
                None = all T.

        Returns:
            ([R, T, D] output, the rows' cache for their next call; None for a full-sequence call).
        """
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x [R,H,T,Dh]
        if offsets is None:
            q = rope_rotate(q, 0, self.max_period)
            k = rope_rotate(k, 0, self.max_period)
            mask = window_mask(0, t, 0, t, self.window, x.device)  # [T, T]
            new_cache = None
        else:
            assert cache is not None and mask is not None, "a streaming call needs the rows' cache and mask"
            q = rope_rotate(q, offsets, self.max_period)
            k = rope_rotate(k, offsets, self.max_period)
            past = cache.keys.shape[2]
            k = torch.cat([cache.keys, k], dim=2)  # [R, H, P+T, Dh]
            v = torch.cat([cache.values, v], dim=2)
            new_cache = KVCache(_slide(k, lengths, past), _slide(v, lengths, past))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [R, H, T, Dh]
        return self.out(y.transpose(1, 2).reshape(b, t, d)), new_cache  # [R, T, D]


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

    def forward(
        self,
        x: torch.Tensor,
        offsets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        mask: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KVCache | None]:
        """x: [R, T, D] -> ([R, T, D], new cache); see `SelfAttention.forward`."""
        update, cache = self.attn(self.norm1(x), offsets, cache, mask, lengths)
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

    def new_state(self, batch_size: int = 1) -> StageState:
        """An empty streaming state for `batch_size` rows (the KV buffers are allocated by the first call)."""
        offsets = torch.zeros(batch_size, dtype=torch.long, device=self.layers[0].linear1.weight.device)
        return StageState(offsets=offsets, layers=[None] * len(self.layers))

    def forward(
        self,
        x: torch.Tensor,
        state: StageState | None = None,
        rows: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the stage on the next steps.

        Args:
            x: [R, C_in, T].
            state: streaming state (updated in place): each row of x continues the steps its row has seen. None
                for a full-sequence call starting at step 0.
            rows: [R] int64 distinct rows of `state` that x continues; None = all rows, in order (R = B).
            lengths: [R] valid steps per row of x (right padding after them is not seen by valid steps and leaves
                the state as if it had not been sent); None = all T.

        Returns:
            [R, C_out, T] (past a row's length: values of no meaning).
        """
        h = x.transpose(1, 2)  # [R, T, C_in]
        h = h.to(self.layers[0].linear1.weight.dtype)
        if self.input_proj is not None:
            h = self.input_proj(h)  # [R, T, D]
        if state is None:
            for layer in self.layers:
                h, _ = layer(h)
        else:
            h = self._stream(h, state, rows, lengths)
        if self.output_proj is not None:
            h = self.output_proj(h)  # [R, T, C_out]
        return h.transpose(1, 2)  # [R, C_out, T]

    def _stream(
        self, h: torch.Tensor, state: StageState, rows: torch.Tensor | None, lengths: torch.Tensor | None
    ) -> torch.Tensor:
        """The blocks over [R, T, D] continuing `rows` of `state` (updated in place) -> [R, T, D]."""
        r, t, _ = h.shape
        past = max(self.window - 1, 0)
        offsets = state.offsets if rows is None else state.offsets.index_select(0, rows)  # [R]
        assert offsets.shape == (r,), f"{r} rows of input for state rows {tuple(offsets.shape)}"
        mask = stream_mask(offsets, t, past, self.window)  # [R, 1, T, P+T]
        for i, layer in enumerate(self.layers):
            cache = state.layers[i]
            if cache is None:  # first call: P empty steps per row (masked out until real ones replace them)
                empty = h.new_zeros(state.batch_size, self.config.num_heads, past, self.config.head_dim)
                cache = state.layers[i] = KVCache(empty, empty.clone())  # [B, H, P, Dh]
            if rows is None:
                h, state.layers[i] = layer(h, offsets, cache, mask, lengths)
            else:
                picked = KVCache(cache.keys.index_select(0, rows), cache.values.index_select(0, rows))  # [R, H, P, Dh]
                h, new = layer(h, offsets, picked, mask, lengths)
                cache.keys.index_copy_(0, rows, new.keys)
                cache.values.index_copy_(0, rows, new.values)
        advance = torch.full_like(offsets, t) if lengths is None else lengths.to(offsets)
        state.offsets = offsets + advance if rows is None else state.offsets.index_add(0, rows, advance)
        return h
