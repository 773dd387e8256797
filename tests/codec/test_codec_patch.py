"""Patch stages: exact inverse of each other, and the channel ordering the checkpoint was trained with."""

from __future__ import annotations

import torch

from cat_tts.codec.patch import patchify, unpatchify


def test_patchify_unpatchify_round_trip() -> None:
    x = torch.randn(3, 5, 24)
    for h in (1, 2, 3, 8, 24):
        y = patchify(x, h)
        assert y.shape == (3, 5 * h, 24 // h)
        torch.testing.assert_close(unpatchify(y, h), x, rtol=0, atol=0)


def test_waveform_patch_puts_sample_240t_plus_j_in_channel_j() -> None:
    wav = torch.arange(3 * 240, dtype=torch.float32).view(1, 1, -1)  # sample index as value
    frames = patchify(wav, 240)  # [1, 240, 3]
    for t in range(3):
        for j in (0, 1, 117, 239):
            assert frames[0, j, t] == 240 * t + j


def test_feature_patch_interleaves_per_channel() -> None:
    # channel c, time s -> value 100 c + s
    x = (100 * torch.arange(3).view(1, 3, 1) + torch.arange(4).view(1, 1, 4)).float()
    y = patchify(x, 2)  # [1, 6, 2]
    # channels at step t: c0@2t, c0@2t+1, c1@2t, c1@2t+1, c2@2t, c2@2t+1 (not concatenated halves)
    assert y[0, :, 1].tolist() == [2, 3, 102, 103, 202, 203]
    assert y[0, :, 0].tolist() == [0, 1, 100, 101, 200, 201]
