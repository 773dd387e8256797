"""Streaming == one-shot: decode for chunk sizes 1, 2, 3, 7 frames past the attention window; live encode."""

from __future__ import annotations

import pytest
import torch

from cat_tts.codec import CatCodec

F = 1920


def _chunks(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    return [x[..., i : i + size] for i in range(0, x.shape[-1], size)]


@pytest.mark.parametrize("chunk_frames", [1, 2, 3, 7])
def test_streaming_decode_matches_full_decode(codec: CatCodec, wav: torch.Tensor, chunk_frames: int) -> None:
    codes = codec.encode(wav).codes  # [2, 32, 30]: six times the 5-frame window at 12.5 Hz
    assert codes.shape[2] > 5 * codec.config.contexts()[1][0]
    full = codec.decode(codes).audio
    pieces = list(codec.decode_stream(_chunks(codes, chunk_frames)))
    assert [p.shape[1] for p in pieces] == [c.shape[2] * F for c in _chunks(codes, chunk_frames)]
    streamed = torch.cat(pieces, dim=1)
    torch.testing.assert_close(streamed, full, rtol=1e-4, atol=1e-5 * float(full.abs().max()))


def test_streaming_decode_with_uneven_chunks_and_reduced_depth(codec: CatCodec, wav: torch.Tensor) -> None:
    codes = codec.encode(wav, num_layers=6).codes
    full = codec.decode(codes).audio
    state = codec.new_stream_state(batch_size=2)
    out, start = [], 0
    for size in (4, 1, 0, 9, 2, 14):
        out.append(codec.decode_step(codes[:, :, start : start + size], state))
        start += size
    assert start == codes.shape[2] and state.frames_decoded == start
    torch.testing.assert_close(torch.cat(out, dim=1), full, rtol=1e-4, atol=1e-5 * float(full.abs().max()))


def test_streaming_state_keeps_exactly_window_minus_one_steps(codec: CatCodec, wav: torch.Tensor) -> None:
    codes = codec.encode(wav).codes
    state = codec.new_stream_state(2)
    for chunk in _chunks(codes, 3):
        codec.decode_step(chunk, state)
    _, dec_ctx = codec.config.contexts()
    for i, stage_state in enumerate(state.decoder):
        if stage_state is None:
            continue
        for cache in stage_state.layers:
            assert cache.keys.shape[2] == dec_ctx[i] - 1


@pytest.mark.parametrize("chunk_samples", [F, 3 * F, 1000, 7 * F + 333])
def test_streaming_encode_matches_full_encode(codec: CatCodec, wav: torch.Tensor, chunk_samples: int) -> None:
    audio = wav[:, : 29 * F + 1234]  # a trailing partial frame: dropped by both paths
    full = codec.encode(audio).codes
    pieces = list(codec.encode_stream(_chunks(audio, chunk_samples)))
    streamed = torch.cat(pieces, dim=2)
    assert streamed.shape == full.shape == (2, 32, 29)
    torch.testing.assert_close(streamed, full, rtol=0, atol=0)


def test_one_state_serves_encode_and_decode(codec: CatCodec, wav: torch.Tensor) -> None:
    """A live loop: encode incoming audio and decode the codes as they appear, with one state object."""
    state = codec.new_stream_state(2)
    codes, audio = [], []
    for chunk in _chunks(wav, 2500):
        c = codec.encode_step(chunk, state, num_layers=8)
        codes.append(c)
        audio.append(codec.decode_step(c, state))
    codes_all = torch.cat(codes, dim=2)
    torch.testing.assert_close(codes_all, codec.encode(wav, num_layers=8).codes, rtol=0, atol=0)
    full = codec.decode(codes_all).audio
    torch.testing.assert_close(torch.cat(audio, dim=1), full, rtol=1e-4, atol=1e-5 * float(full.abs().max()))


def test_streaming_rejects_a_batch_mismatch(codec: CatCodec, wav: torch.Tensor) -> None:
    state = codec.new_stream_state(1)
    codes = codec.encode(wav[:, : 2 * F]).codes
    with pytest.raises(ValueError, match="batch"):
        codec.decode_step(codes, state)


def test_long_one_shot_calls_in_pieces_compute_the_same_function(codec: CatCodec, wav: torch.Tensor) -> None:
    """Long inputs go through the stack in pieces (linear memory); results equal the single-pass call."""
    codes = codec.encode(wav).codes
    audio = codec.decode(codes).audio
    saved = codec.max_piece_frames
    try:
        codec.max_piece_frames = 4  # 30 frames -> 8 pieces, each shorter than the 5-frame window
        torch.testing.assert_close(codec.encode(wav).codes, codes, rtol=0, atol=0)
        pieces = codec.decode(codes).audio
    finally:
        codec.max_piece_frames = saved
    torch.testing.assert_close(pieces, audio, rtol=1e-4, atol=1e-5 * float(audio.abs().max()))
