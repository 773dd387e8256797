"""The temporal transformer: transformers' Qwen3 over frames.

This is the only module of cat-tts that imports transformers' Qwen3 classes. Everything else
asks this module for a language config, a temporal model, or a Qwen3 checkpoint's config.

The temporal model is a stock `Qwen3Model` driven by `inputs_embeds` (the summed per-channel
frame embeddings); its output is the final-normed last hidden state `[B, T, D]`.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import Qwen3Config, Qwen3Model
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
