"""Streaming decode of a request's frames equals the one-shot decode of the same frames."""

from __future__ import annotations

import pytest
import torch

from cat_tts.generation import Engine, EngineConfig, GenerationConfig, stream_audio


@pytest.fixture(scope="module")
def codec():
    from cat_tts.codec.config import CodecConfig
    from cat_tts.codec.tiny import random_codec

    return random_codec(CodecConfig.tiny(), seed=0).eval()


@pytest.mark.parametrize("first, every", [(1, 1), (1, 2), (3, 5), (2, 100)])
@pytest.mark.parametrize("with_prefix", [False, True])
def test_streamed_audio_equals_one_shot_decode(golden_model, golden, codec, first, every, with_prefix):
    k = 6
    engine = Engine(golden_model, EngineConfig(max_slots=2, max_rows=128, sync_every=3))
    request = engine.submit(golden["grid_clone"], GenerationConfig(depth=k, max_new_frames=9, min_new_frames=7, seed=5))
    prefix = golden["ref_codes"][:k] if with_prefix else None  # [K, L]
    pieces = list(stream_audio(request.stream(), codec, first, every, prefix))
    frames = request.frames[:, 1:].t()[None]  # [1, K, F]
    sizes = [p.numel() // codec.frame_size for p in pieces]
    f = frames.shape[-1]
    expected = [min(first, f)] + [every] * ((f - min(first, f)) // every)
    expected += [f - sum(expected)] if f > sum(expected) else []
    assert sizes == expected  # fixed groups, whatever grouping the engine delivered the frames in
    full_codes = frames if prefix is None else torch.cat([prefix[None], frames], dim=-1)
    with torch.inference_mode():
        full = codec.decode(full_codes).audio[0]
    skip = 0 if prefix is None else prefix.shape[-1] * codec.frame_size
    torch.testing.assert_close(torch.cat(pieces), full[skip:], atol=1e-5, rtol=1e-4)


def test_the_first_piece_comes_after_the_first_frame(golden_model, golden, codec):
    engine = Engine(golden_model, EngineConfig(max_slots=2, max_rows=128, sync_every=8))
    request = engine.submit(golden["grid_clone"], GenerationConfig(depth=4, max_new_frames=12, min_new_frames=12))
    pieces = stream_audio(request.stream(), codec, first_piece_frames=1, piece_frames=4)
    first = next(pieces)
    assert first.numel() == codec.frame_size  # one frame, not a whole sync window
    assert request.frames_run == 1
    pieces.close()


def test_streamed_pieces_do_not_depend_on_how_the_engine_delivers_frames(golden_model, golden, codec):
    cfg = GenerationConfig(depth=5, max_new_frames=11, min_new_frames=11, seed=9)
    runs = []
    for sync_every in (1, 5):  # frames arrive one by one, or five at a time
        engine = Engine(golden_model, EngineConfig(max_slots=2, max_rows=128, sync_every=sync_every))
        request = engine.submit(golden["grid_clone"], cfg)
        runs.append(list(stream_audio(request.stream(), codec, 2, 3)))
    assert [p.shape for p in runs[0]] == [p.shape for p in runs[1]]
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))
