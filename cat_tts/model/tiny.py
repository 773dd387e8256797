"""Tiny random CAT-TTS checkpoints in the official format, for offline plumbing checks and tests.

Random weights produce noise; never listen to them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cat_tts.model.config import CatTTSConfig
from cat_tts.model.tts import CatTTSModel


def build_tiny_model(seed: int = 0, config: CatTTSConfig | None = None) -> CatTTSModel:
    """A random model of `config` (default `CatTTSConfig.tiny()`), initialised from `seed`.

    The global torch RNG state is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CatTTSModel(config or CatTTSConfig.tiny(), attn_implementation="sdpa").eval()


def write_tiny_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Write config.json + model.safetensors of a tiny random model (official format) into `out_dir`.

    Returns:
        `out_dir` as a Path (created if needed).
    """
    return build_tiny_model(seed).save_pretrained(out_dir)
