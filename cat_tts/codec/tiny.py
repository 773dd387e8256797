"""Random codecs: a tiny checkpoint in the official format for offline plumbing, and fast random weights.

Random weights make noise: these codecs are for tests, the demo's plumbing and benchmarks, never for listening.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cat_tts.codec.codec import CatCodec
from cat_tts.codec.config import CodecConfig


@torch.no_grad()
def init_random_(codec: CatCodec, seed: int = 0, layer_scale: float = 0.2) -> CatCodec:
    """Fill every parameter with seeded random values in one pass (no per-module init loops).

    Scales keep activations O(1) through any depth: Linear/conv weights ~ N(0, 1/fan_in), LayerNorm
    weights near 1, LayerScale vectors near `layer_scale` (large enough that every block matters).

    Args:
        codec: the codec to fill (parameters may be uninitialised, e.g. after `to_empty`).
        seed: random seed.
        layer_scale: mean LayerScale value.

    Returns:
        The same codec.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for name, p in codec.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
        if leaf.startswith("layer_scale"):
            value = layer_scale * (1 + 0.2 * noise)
        elif "norm" in name and leaf == "weight":
            value = 1 + 0.1 * noise
        elif leaf == "bias" or leaf == "weight_g":
            value = (1.0 if leaf == "weight_g" else 0.0) + 0.1 * noise
        elif "codebook" in name:
            value = noise
        else:  # projection / linear / conv weights: [out, in(, 1)]
            fan_in = p[0].numel() if p.dim() > 1 else 1
            value = noise * fan_in**-0.5
        p.copy_(value.to(p.dtype))
    return codec


def random_codec(config: CodecConfig, seed: int = 0, device: str | torch.device = "cpu") -> CatCodec:
    """A codec with `config`'s architecture and seeded random weights, built without default init loops."""
    with torch.device("meta"):
        codec = CatCodec(config)
    codec.to_empty(device=device)
    return init_random_(codec, seed).eval()


def write_tiny_codec(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random codec (config.json + model.safetensors, official format) to `out_dir`.

    Real 24 kHz rate, real patch structure (240, 2, 2, 2 = 1920 samples per frame), all 32 layers x 1024 codes,
    tiny widths, a 0.4 s attention window; about 0.4 M parameters (1.7 MB), fast on CPU. Random weights make noise.

    Returns:
        `out_dir` as a Path.
    """
    codec = random_codec(CodecConfig.tiny(), seed=seed)
    return codec.save_pretrained(out_dir)
