"""Streaming decode of generated frames equals the one-shot decode of the same frames."""

from __future__ import annotations

import pytest
import torch

from cat_tts.generation import GenerationConfig, iter_frames, stream_audio


@pytest.fixture(scope="module")
def codec():
    from cat_tts.codec.config import CodecConfig
    from cat_tts.codec.tiny import random_codec

    return random_codec(CodecConfig.tiny(), seed=0).eval()


@pytest.mark.parametrize("first, every", [(1, 1), (1, 2), (3, 5), (2, 100)])
@pytest.mark.parametrize("with_prefix", [False, True])
def test_streamed_audio_equals_one_shot_decode(golden_model, golden, codec, first, every, with_prefix):
    k = 6
    cfg = GenerationConfig(depth=k, max_new_frames=9, min_new_frames=7, seed=5)
    steps = list(iter_frames(golden_model, golden["grid_clone"][None], None, cfg))
    frames = torch.stack([s.tokens[0, 1:] for s in steps if bool(s.is_audio[0])], dim=-1)[None]  # [1, K, F]
    prefix = golden["ref_codes"][:k][None] if with_prefix else None
    pieces = list(stream_audio(iter(steps), codec, first, every, prefix))
    sizes = [p.numel() // codec.frame_size for p in pieces]
    assert sizes[0] == min(first, frames.shape[-1]) and sum(sizes) == frames.shape[-1]
    full_codes = frames if prefix is None else torch.cat([prefix, frames], dim=-1)
    with torch.inference_mode():
        full = codec.decode(full_codes).audio[0]
    skip = 0 if prefix is None else prefix.shape[-1] * codec.frame_size
    torch.testing.assert_close(torch.cat(pieces), full[skip:], atol=1e-5, rtol=1e-4)


def test_stream_audio_rejects_batches(golden_model, golden, codec):
    cfg = GenerationConfig(depth=2, max_new_frames=2, do_sample=False)
    steps = iter_frames(golden_model, golden["batch_input_ids"], golden["batch_attention_mask"], cfg)
    with pytest.raises(ValueError, match="one utterance"):
        list(stream_audio(steps, codec))
