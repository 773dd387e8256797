"""The temporal transformer: transformers' Qwen3 over frames.

This is the only module of cat-tts that imports transformers' Qwen3 classes. Everything else
asks this module for a language config, a temporal model, or a Qwen3 checkpoint's config.

The temporal model is a stock `Qwen3Model` driven by `inputs_embeds` (the summed per-channel
frame embeddings); its output is the final-normed last hidden state `[B, T, D]`.

For inference, `SlotKVCache` is a transformers `Cache` with static shapes: a pool of B slots of R rows each,
preallocated once. Each slot holds one request's rows at columns 0..len-1 (its own positions, no padding), so
requests of different lengths share a batch without left padding; `run_temporal` drives the stock `Qwen3Model`
with per-slot positions and an explicit attention mask (which rows each query may see).

Shapes: B slots, R rows per slot, b slots in a step (a prefix of the pool), L new rows, P visible columns,
Hk key/value heads, Dh head dim, D width.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import Qwen3Config, Qwen3Model
from transformers.cache_utils import Cache
from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding

logger = logging.getLogger(__name__)

# Attention implementations the temporal and depth transformers both support.
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")

# Architecture fields of a Qwen3 config that must agree between a Qwen3 checkpoint and a CAT-TTS config
# for `from_qwen3` to reuse the temporal weights.
ARCHITECTURE_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
)


def make_language_config(fields: dict[str, Any] | Any | None = None) -> Qwen3Config:
    """Build the Qwen3 config of the temporal transformer.

    Args:
        fields: a dict of Qwen3 config fields (as found under `language_config` in the official config.json),
            an existing `Qwen3Config` (copied), or None for transformers' Qwen3 defaults.

    Returns:
        A new `Qwen3Config`.
    """
    if fields is None:
        return Qwen3Config()
    if isinstance(fields, Qwen3Config):
        return Qwen3Config(**fields.to_dict())
    if not isinstance(fields, dict):
        raise ValueError(f"language_config must be a dict or a Qwen3Config, got {type(fields).__name__}")
    fields = {k: v for k, v in fields.items() if k != "model_type"}
    return Qwen3Config(**fields)


def is_language_config(obj: Any) -> bool:
    """True when `obj` is a Qwen3 config object."""
    return isinstance(obj, Qwen3Config)


def resolve_attn_implementation(requested: str | None) -> str:
    """Pick the attention implementation.

    Args:
        requested: "eager", "sdpa", "flash_attention_2", or None for automatic: FlashAttention-2 when the
            `flash_attn` package is installed and CUDA is available, else SDPA.

    Returns:
        The implementation name.

    Raises:
        ValueError: for an unknown name.
        ImportError: when flash_attention_2 is requested but flash_attn is not installed.
    """
    if requested is None:
        if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
        return "sdpa"
    if requested not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {requested!r}")
    if requested == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ImportError("attn_implementation='flash_attention_2' needs flash-attn: pip install 'cat-tts[gpu]'")
    return requested


def build_temporal(language_config: Qwen3Config, attn_implementation: str) -> Qwen3Model:
    """Instantiate the temporal `Qwen3Model` (random init) with the given attention implementation.

    The config is copied, so the caller's config is not modified.
    """
    config = make_language_config(language_config)
    config._attn_implementation = attn_implementation
    return Qwen3Model(config)


def reset_rotary(temporal: Qwen3Model, device: torch.device | str) -> None:
    """Recompute the temporal model's rotary buffers on `device`.

    Needed after building the model on the meta device and materialising it with `to_empty`:
    `inv_freq` is a non-persistent buffer that no checkpoint holds.
    """
    with torch.device(device):  # the constructor's `device` argument differs across transformers 5.x
        temporal.rotary_emb = Qwen3RotaryEmbedding(config=temporal.config)


def set_temporal_gradient_checkpointing(temporal: Qwen3Model, enable: bool) -> None:
    """Turn transformers' gradient checkpointing of the temporal decoder layers on or off."""
    # transformers >= 5.x renamed the API to activation_checkpointing_*; 5.0 only has gradient_checkpointing_*.
    if hasattr(temporal, "activation_checkpointing_enable"):
        if enable:
            temporal.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            temporal.activation_checkpointing_disable()
    elif enable:
        temporal.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        temporal.gradient_checkpointing_disable()


def read_qwen3_config(directory: str | Path) -> Qwen3Config:
    """Read the `config.json` of a Qwen3 causal LM checkpoint directory."""
    config = Qwen3Config.from_pretrained(str(directory))
    if getattr(config, "model_type", None) != "qwen3":
        raise ValueError(f"{directory} does not hold a Qwen3 checkpoint (model_type={config.model_type!r})")
    return config


class SlotKVCache(Cache):
    """Preallocated temporal keys/values for a pool of slots (a transformers `Cache`, so `Qwen3Model` writes into it).

    Two ways to write, chosen before each forward:
    * decode (default): the forward runs the first b slots with one new row each; slot i's row is written at column
      `write_columns[i]` (a tensor the caller owns and updates in place: no host synchronisation, fixed addresses), and
      attention sees all R columns of the b slots (the caller's mask says which are valid);
    * prefill (`prefill(slot, start)`): the forward runs one slot's next L prompt rows, written at columns
      start..start+L-1; attention sees columns 0..start+L-1 of that slot.
    * static prefill (`prefill_at(slot, columns)`, both tensors): the same with fixed shapes for compiled and captured
      prefill: the L rows go to `columns` of `slot`, and attention sees all R columns of that slot (the caller's mask
      says which are valid).

    Args:
        config: the temporal Qwen3 config (layers, KV heads, head dim).
        slots: B, the number of slots.
        rows: R, the capacity of each slot (prompt rows + generated frames).
        write_columns: `[B]` int64 tensor on `device`: the column each slot's next decode row goes to.
        dtype, device: of the buffers.
    """

    def __init__(
        self,
        config: Qwen3Config,
        slots: int,
        rows: int,
        write_columns: torch.Tensor,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        super().__init__(layers=[])
        kv_heads = config.num_key_value_heads or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        shape = (slots, kv_heads, rows, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.write_columns = write_columns
        self._prefill: tuple[int, int] | None = None
        self._static: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def rows(self) -> int:
        """R, the capacity of each slot."""
        return self.keys[0].shape[2]

    def prefill(self, slot: int, start: int) -> None:
        """The next forward writes prompt rows of `slot` from column `start` (call `decode()` afterwards)."""
        self._prefill = (slot, start)

    def prefill_at(self, slot: torch.Tensor, columns: torch.Tensor) -> None:
        """The next forward writes its L rows at `columns [L]` of slot `slot [1]` (device tensors: no host values in
        the forward) and attends over all R columns of that slot (call `decode()` afterwards)."""
        self._static = (slot, columns)

    def decode(self) -> None:
        """The next forwards write one row per slot at `write_columns` (the default)."""
        self._prefill = None
        self._static = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Stores the new keys/values `[b, Hk, L, Dh]` and returns what attention sees (`[b, Hk, P, Dh]` each)."""
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if self._static is not None:
            slot, columns = self._static  # [1], [L]
            keys[slot, :, columns] = key_states[0].transpose(0, 1)  # [L, Hk, Dh] into (slot, :, column) pairs
            values[slot, :, columns] = value_states[0].transpose(0, 1)
            return keys.index_select(0, slot), values.index_select(0, slot)  # [1, Hk, R, Dh]
        if self._prefill is not None:
            slot, start = self._prefill
            end = start + key_states.shape[2]
            if end > self.rows:
                raise ValueError(f"slot capacity is {self.rows} rows; cannot write rows {start}..{end - 1}")
            keys[slot : slot + 1, :, start:end] = key_states
            values[slot : slot + 1, :, start:end] = value_states
            return keys[slot : slot + 1, :, :end], values[slot : slot + 1, :, :end]
        b, heads, _, dim = key_states.shape
        column = self.write_columns[:b].clamp(max=self.rows - 1).view(b, 1, 1, 1).expand(b, heads, 1, dim)
        keys[:b].scatter_(2, column, key_states)
        values[:b].scatter_(2, column, value_states)
        return keys[:b], values[:b]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        # Positions are always passed explicitly (per slot), so transformers never needs this.
        return 0


def run_temporal(
    temporal: Qwen3Model,
    inputs_embeds: torch.Tensor,
    position_ids: torch.Tensor,
    visible: torch.Tensor,
    cache: SlotKVCache,
) -> torch.Tensor:
    """Runs the stock `Qwen3Model` on new rows against a `SlotKVCache` with an explicit mask.

    Args:
        temporal: the temporal model.
        inputs_embeds: `[B, L, D]` new rows.
        position_ids: `[B, L]` their positions (per slot).
        visible: `[B, L, P]` bool, True where a new row may attend to a column of what the cache returns.
        cache: the slot cache (in decode or prefill mode).

    Returns:
        `[B, L, D]` final-normed hidden states.
    """
    # An additive mask for every implementation: transformers' eager attention adds it, and on the CPU SDPA with a
    # boolean mask takes a kernel whose threading overhead dominates small decode steps.
    dtype = inputs_embeds.dtype
    mask = torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill(~visible, torch.finfo(dtype).min)
    mask = mask[:, None]  # [B, 1, L, P]
    if getattr(temporal, "has_sliding_layers", False):
        raise NotImplementedError("sliding-window temporal blocks are not supported by the slot cache")
    masks = {"full_attention": mask}  # a prepared mask bypasses transformers' own mask construction
    out = temporal(
        inputs_embeds=inputs_embeds,
        attention_mask=masks,
        position_ids=position_ids,
        past_key_values=cache,
        use_cache=True,
    )
    return out.last_hidden_state
