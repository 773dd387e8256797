"""Patch stages: fold time steps into channels (encoder) and back (decoder).

Shapes: B batch, C channels, L time steps, h patch size.

Folding is channel-major: output channel `c * h + j` at step `t` holds input channel `c` at time `t * h + j`.
For the mono waveform and h = 240, channel j of frame t is sample 240 t + j; for features and h = 2 the
channels come out interleaved per input channel (`c0@2t, c0@2t+1, c1@2t, ...`), not as concatenated halves.
"""

from __future__ import annotations

import torch
from torch import nn

from cat_tts.codec.config import PatchConfig


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Fold `patch_size` consecutive steps into channels: [B, C, L] -> [B, C*h, L/h] (L divisible by h)."""
    b, c, length = x.shape
    assert length % patch_size == 0, f"time axis {tuple(x.shape)} not divisible by patch size {patch_size}"
    x = x.reshape(b, c, length // patch_size, patch_size)  # [B, C, L/h, h]
    return x.transpose(2, 3).reshape(b, c * patch_size, length // patch_size)  # [B, C*h, L/h]


def unpatchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Inverse of `patchify`: [B, C*h, L] -> [B, C, L*h]."""
    b, ch, length = x.shape
    assert ch % patch_size == 0, f"channels {tuple(x.shape)} not divisible by patch size {patch_size}"
    x = x.reshape(b, ch // patch_size, patch_size, length)  # [B, C, h, L]
    return x.transpose(2, 3).reshape(b, ch // patch_size, length * patch_size)  # [B, C, L*h]


class Patch(nn.Module):
    """A parameter-free patch stage. `fold=True` in the encoder (rate / h), `False` in the decoder (rate * h).

    Stateless when streaming: every chunk holds a whole number of patches (a codec frame is a whole number of
    patches at every stage), so chunk boundaries never split a patch.
    """

    def __init__(self, config: PatchConfig, fold: bool) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.fold = fold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return patchify(x, self.patch_size) if self.fold else unpatchify(x, self.patch_size)

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, fold={self.fold}"
