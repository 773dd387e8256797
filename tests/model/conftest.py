"""Fixtures for the model tests: a tiny random model and random grids/labels in the official layout."""

from __future__ import annotations

import pytest
import torch

from cat_tts.model import CatTTSConfig, CatTTSModel
from cat_tts.model.tiny import build_tiny_model


@pytest.fixture(scope="module")
def tiny_config() -> CatTTSConfig:
    return CatTTSConfig.tiny()


@pytest.fixture(scope="module")
def tiny_model() -> CatTTSModel:
    return build_tiny_model(seed=0)


def make_batch(config: CatTTSConfig, batch: int = 2, frames: int = 7, seed: int = 0, pad_left: int = 0):
    """Random input grid, attention mask and labels shaped like the official collator's output.

    Each sample gets `pad_left * b` left-padding rows and a 2-row prompt (labels all -100); the remaining rows
    are supervised on every channel except a few random ignored entries and one pad-code audio label.
    """
    g = torch.Generator().manual_seed(seed)
    n = config.n_vq
    ids = torch.randint(0, config.audio_vocab_size, (batch, frames, 1 + n), generator=g)
    ids[..., 0] = torch.randint(0, 500, (batch, frames), generator=g)
    labels = torch.randint(0, config.audio_vocab_size, (batch, frames, 1 + n), generator=g)
    labels[..., 0] = torch.randint(0, 500, (batch, frames), generator=g)
    mask = torch.ones(batch, frames, dtype=torch.long)
    for b in range(batch):
        pad = pad_left * b
        mask[b, :pad] = 0
        ids[b, :pad, 0] = config.pad_token_id
        ids[b, :pad, 1:] = config.audio_pad_code
        labels[b, : pad + 2] = -100  # padding + prompt rows
    drop = torch.rand(labels.shape, generator=g) < 0.1
    labels[drop] = -100
    labels[0, -1, 1:] = -100  # a text-only row (like the audio_end / im_end targets)
    labels[-1, -2, 5] = config.audio_pad_code  # pad code as a label: never a target
    return ids, mask, labels
