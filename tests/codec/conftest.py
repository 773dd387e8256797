"""Fixtures for the codec tests: one tiny random codec (0.4 s window, 32 x 1024 codes) per session."""

from __future__ import annotations

import pytest
import torch

from cat_tts.codec import CatCodec, CodecConfig
from cat_tts.codec.tiny import random_codec


@pytest.fixture(scope="session")
def codec() -> CatCodec:
    return random_codec(CodecConfig.tiny(), seed=0)


@pytest.fixture(scope="session")
def wav() -> torch.Tensor:
    """Two 2.5 s clips (30 frames: six times the tiny 5-frame window) of smooth random audio, [2, S]."""
    gen = torch.Generator().manual_seed(1)
    t = torch.arange(30 * 1920) / 24000
    tones = torch.stack([0.3 * torch.sin(2 * torch.pi * 220 * t), 0.2 * torch.sin(2 * torch.pi * 330 * t + 1)])
    return tones + 0.05 * torch.randn(2, t.numel(), generator=gen)
