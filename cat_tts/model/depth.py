"""The depth transformer: a small Qwen3-style decoder over the channels of one frame.

Shapes: M sequences (one per frame that needs it), L positions (1 + number of channels processed),
Dd depth width, H heads, Hk key/value heads, Dh head dim.

Position 0 of a sequence is the (adapted) temporal state of the frame, position i >= 1 the (adapted)
embedding of channel i-1's token. Output position c predicts channel c.

Blocks follow Qwen3's decoder layer math (pre-RMSNorm with float32 upcast, grouped-query attention with
per-head q/k RMSNorm, SwiGLU FFN, final RMSNorm) but with **no positional encoding** and attention that
is **always causal**, under every attention implementation (eager, sdpa, flash_attention_2): position i
never sees positions > i. Parameter names match the official `local_transformer.*` keys after the
prefix swap done in `cat_tts.model.checkpoint`.

For generation, `DepthTransformer.step` runs one new position whose index is a tensor: its keys/values are written
in place into a preallocated `DepthKVCache` and it attends over the whole capacity under a mask (fixed shapes and
addresses: compiled once, capturable as a CUDA graph, the same code for every position). With no positional encoding
and causal attention, positions fed one at a time give the outputs of one pass over the whole frame. The engine may
attach packed projections (`qkv_proj`, and `gate_up_proj` in the SwiGLUs: one matrix product instead of three or
two, a view made by `cat_tts.generation.views.packed_view`); the parameters are the same.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from cat_tts.model.config import CatTTSConfig
from cat_tts.model.layers import RMSNorm, SwiGLU


@dataclass
class DepthKVCache:
    """Keys and values of the depth transformer for M frames, preallocated for the 1 + N positions of a frame.

    Attributes:
        keys: per block, `[M, Hk, 1+N, Dh]`.
        values: per block, `[M, Hk, 1+N, Dh]`.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]


def _causal_mask(length: int, device: torch.device) -> torch.Tensor:
    """Boolean `[L, L]` mask, True where attention is allowed (position i sees 0..i)."""
    positions = torch.arange(length, device=device)
    return positions[None, :] <= positions[:, None]


class DepthAttention(nn.Module):
    """Grouped-query self-attention with per-head q/k RMSNorm, no positional encoding, always causal."""

    def __init__(self, config: CatTTSConfig, attn_implementation: str) -> None:
        super().__init__()
        d = config.local_hidden_size
        self.num_heads = config.depth_num_heads
        self.num_kv_heads = config.depth_num_kv_heads
        self.head_dim = config.depth_head_dim
        self.scaling = self.head_dim**-0.5
        self.attn_implementation = attn_implementation
        self.q_proj = nn.Linear(d, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, d, bias=False)
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.qkv_proj: nn.Module | None = None  # q, k, v weights stacked (an inference view; not a parameter here)
        self.qkv_sizes = (self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim,
                          self.num_kv_heads * self.head_dim)  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend causally over positions `x [M, L, Dd]` (teacher forcing) -> `[M, L, Dd]`."""
        m, length, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(m, length, self.num_heads, self.head_dim))  # [M, L, H, Dh]
        k = self.k_norm(self.k_proj(x).view(m, length, self.num_kv_heads, self.head_dim))  # [M, L, Hk, Dh]
        v = self.v_proj(x).view(m, length, self.num_kv_heads, self.head_dim)  # [M, L, Hk, Dh]
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [M, H|Hk, L, Dh]
        out = self._attend(q, k, v)  # [M, L, H, Dh]
        return self.o_proj(out.reshape(m, length, self.num_heads * self.head_dim))

    def step(self, x: torch.Tensor, cache: DepthKVCache, layer: int, position: torch.Tensor) -> torch.Tensor:
        """One new position with static shapes: no slicing by Python ints, no host synchronisation.

        Args:
            x: `[M, Dd]` the new position of each sequence.
            cache: the preallocated cache; the new key/value are written at `position` in place.
            layer: index of this block in the cache.
            position: 0-dim int64 tensor, the index of the new position (the same for every sequence).

        Returns:
            `[M, Dd]`.
        """
        m = x.shape[0]
        if self.qkv_proj is not None:  # one product for q, k and v (the engine's packed view)
            q, k, v = self.qkv_proj(x).split(self.qkv_sizes, dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = self.q_norm(q.view(m, 1, self.num_heads, self.head_dim)).transpose(1, 2)  # [M, H, 1, Dh]
        k = self.k_norm(k.view(m, 1, self.num_kv_heads, self.head_dim)).transpose(1, 2)  # [M, Hk, 1, Dh]
        v = v.view(m, 1, self.num_kv_heads, self.head_dim).transpose(1, 2)  # [M, Hk, 1, Dh]
        index = position.view(1)
        keys, values = cache.keys[layer], cache.values[layer]  # [M, Hk, P, Dh], P = capacity
        keys.index_copy_(2, index, k)
        values.index_copy_(2, index, v)
        seen = torch.arange(keys.shape[2], device=x.device) <= position  # [P] positions written so far
        # An additive mask (not a boolean one): on the CPU, SDPA with a boolean mask takes a kernel whose threading
        # overhead dwarfs a 1 x 33 attention; on CUDA both are fine.
        bias = torch.zeros(seen.shape, dtype=q.dtype, device=x.device).masked_fill(~seen, torch.finfo(q.dtype).min)
        groups = self.num_heads // self.num_kv_heads
        if self.attn_implementation == "eager":
            k_all = keys.repeat_interleave(groups, dim=1)  # [M, H, P, Dh]
            v_all = values.repeat_interleave(groups, dim=1)
            scores = torch.matmul(q, k_all.transpose(2, 3)) * self.scaling + bias  # [M, H, 1, P]
            probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
            out = torch.matmul(probs, v_all)  # [M, H, 1, Dh]
        else:  # sdpa (flash-attn takes no mask; one query over <= 33 keys gains nothing from it)
            out = F.scaled_dot_product_attention(
                q, keys, values, attn_mask=bias.view(1, 1, 1, -1), scale=self.scaling, enable_gqa=groups > 1
            )  # [M, H, 1, Dh]
        return self.o_proj(out.reshape(m, self.num_heads * self.head_dim))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Causal attention; q `[M, H, L, Dh]`, k/v `[M, Hk, P, Dh]` (queries = last L of P) -> `[M, L, H, Dh]`."""
        length = q.shape[2]
        groups = self.num_heads // self.num_kv_heads
        if self.attn_implementation == "flash_attention_2" and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
            flash_attn = importlib.import_module("flash_attn")
            return flash_attn.flash_attn_func(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=self.scaling, causal=True
            )
        if self.attn_implementation == "eager":
            k = k.repeat_interleave(groups, dim=1)  # [M, H, P, Dh]
            v = v.repeat_interleave(groups, dim=1)
            scores = torch.matmul(q, k.transpose(2, 3)) * self.scaling  # [M, H, L, P]
            scores = scores.masked_fill(~_causal_mask(length, q.device), torch.finfo(scores.dtype).min)
            probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
            return torch.matmul(probs, v).transpose(1, 2)  # [M, L, H, Dh]
        # sdpa (also the fallback for flash_attention_2 on CPU or float32 tensors, which flash-attn does not take)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scaling, enable_gqa=groups > 1)
        return out.transpose(1, 2)  # [M, L, H, Dh]


class DepthBlock(nn.Module):
    """Pre-norm residual block: causal self-attention then SwiGLU FFN."""

    def __init__(self, config: CatTTSConfig, attn_implementation: str) -> None:
        super().__init__()
        d = config.local_hidden_size
        self.self_attn = DepthAttention(config, attn_implementation)
        self.mlp = SwiGLU(d, config.local_ffn_hidden_size, d)
        self.input_layernorm = RMSNorm(d, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(d, config.rms_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))

    def step(self, x: torch.Tensor, cache: DepthKVCache, layer: int, position: torch.Tensor) -> torch.Tensor:
        """`forward` for one new position `x [M, Dd]` at tensor index `position` (see `DepthAttention.step`)."""
        x = x + self.self_attn.step(self.input_layernorm(x), cache, layer, position)
        return x + self.mlp(self.post_attention_layernorm(x))


class DepthTransformer(nn.Module):
    """Stack of `local_num_layers` causal blocks over the channels of a frame, then a final RMSNorm.

    Args:
        config: the model config (width `local_hidden_size`, FFN `local_ffn_hidden_size`, depth
            `local_num_layers`; heads, KV heads, head dim and eps from `language_config`).
        attn_implementation: "eager", "sdpa" or "flash_attention_2" (all causal).
    """

    def __init__(self, config: CatTTSConfig, attn_implementation: str = "sdpa") -> None:
        super().__init__()
        self.max_positions = config.num_channels  # position 0 = temporal state, then one per channel fed back
        self.layers = nn.ModuleList(DepthBlock(config, attn_implementation) for _ in range(config.local_num_layers))
        self.norm = RMSNorm(config.local_hidden_size, config.rms_norm_eps)
        self.gradient_checkpointing = False

    def set_attn_implementation(self, attn_implementation: str) -> None:
        """Switch the attention kernel of every block (the function computed is the same)."""
        for layer in self.layers:
            layer.self_attn.attn_implementation = attn_implementation

    def new_cache(self, batch: int, dtype: torch.dtype, device: torch.device | str) -> DepthKVCache:
        """Allocate an empty cache for `batch` sequences of up to 1 + n_vq positions."""
        attn = self.layers[0].self_attn
        shape = (batch, attn.num_kv_heads, self.max_positions, attn.head_dim)
        n = len(self.layers)
        return DepthKVCache(
            keys=[torch.zeros(shape, dtype=dtype, device=device) for _ in range(n)],
            values=[torch.zeros(shape, dtype=dtype, device=device) for _ in range(n)],
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Runs the blocks causally over positions 0..L-1 of each frame (teacher forcing).

        Args:
            x: `[M, L, Dd]`.

        Returns:
            `[M, L, Dd]` final-normed outputs.
        """
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
        return self.norm(x)

    def step(self, x: torch.Tensor, cache: DepthKVCache, position: torch.Tensor) -> torch.Tensor:
        """Runs one new position through every block with static shapes (the inference engine's depth step).

        Position `p` of a frame sees positions 0..p of the same frame: the caller feeds positions 0, 1, ... in order;
        a frame restarts at position 0 (older entries are masked out, then overwritten).

        Args:
            x: `[M, Dd]` the new position of each sequence.
            cache: preallocated for M sequences (`new_cache`).
            position: 0-dim int64 tensor on x's device, the position index (0..capacity-1).

        Returns:
            `[M, Dd]` final-normed output of that position.
        """
        for i, layer in enumerate(self.layers):
            x = layer.step(x, cache, i, position)
        return self.norm(x)
