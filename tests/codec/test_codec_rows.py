"""Rows of a streaming state are independent streams: one decode_step advances streams at different positions,
by different numbers of frames and at different depths, and each row's audio is its own one-shot decode.

Equality is at float32 tolerance, not bit for bit: a row decoded beside others goes through matrix products,
attention and convolutions of other shapes (more rows, padded frames), whose reductions are blocked differently.
"""

from __future__ import annotations

import pytest
import torch

from cat_tts.codec import CatCodec
from cat_tts.codec.transformer import KVCache, _slide, stream_mask

F = 1920


def assert_audio_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * scale)


@pytest.fixture(scope="module")
def codes() -> torch.Tensor:
    """Three streams of 20 random frames, [3, 32, 20] (four times the tiny 5-frame window)."""
    return torch.randint(0, 1024, (3, 32, 20), generator=torch.Generator().manual_seed(0))


def test_stream_mask_matches_a_loop() -> None:
    offsets, t, past, window = torch.tensor([0, 2, 9]), 3, 4, 5
    mask = stream_mask(offsets, t, past, window)
    assert mask.shape == (3, 1, t, past + t)
    for r, offset in enumerate(offsets.tolist()):
        for i in range(t):
            for j in range(past + t):
                q, k = offset + i, offset - past + j  # slot j holds position offset - P + j
                assert bool(mask[r, 0, i, j]) == (k >= 0 and 0 <= q - k < window), (r, i, j)


def test_slide_keeps_each_rows_last_window_steps() -> None:
    x = torch.arange(2 * 1 * 7 * 1).reshape(2, 1, 7, 1)  # past 4 + 3 new steps per row
    assert _slide(x, None, 4)[:, 0, :, 0].tolist() == [[3, 4, 5, 6], [10, 11, 12, 13]]
    assert _slide(x, torch.tensor([1, 3]), 4)[:, 0, :, 0].tolist() == [[1, 2, 3, 4], [10, 11, 12, 13]]


def test_quantizer_depths_sum_exactly_the_prefix(codec: CatCodec, codes: torch.Tensor) -> None:
    depths = torch.tensor([32, 6, 1])
    padded = codec.quantizer.decode(codes, depths)
    for b, k in enumerate(depths.tolist()):
        torch.testing.assert_close(padded[b : b + 1], codec.quantizer.decode(codes[b : b + 1, :k]), rtol=0, atol=0)


def test_streams_at_different_positions_and_depths_in_one_call(codec: CatCodec, codes: torch.Tensor) -> None:
    depths, pieces = [32, 6, 1], [[], [], []]
    state = codec.new_stream_state(3)
    # Stagger the streams: row 0 at frame 4, row 1 at frame 2, row 2 at frame 0 (subsets of rows, one per call).
    pieces[0].append(codec.decode_step(codes[0:1, :32, :4], state, rows=[0])[0])
    pieces[1].append(codec.decode_step(codes[1:2, :6, :2], state, rows=torch.tensor([1]))[0])
    assert state.decoded.tolist() == [4, 2, 0]
    positions, calls = [4, 2, 0], 0
    while min(positions) < 20:  # then every call advances all three, each by up to 3 frames from its own position
        lengths = [min(3, 20 - p) for p in positions]
        t = max(lengths)
        batch = torch.full((3, 32, t), 1024)  # the pad code where a row has no frame or layer: ignored
        for r in range(3):
            batch[r, : depths[r], : lengths[r]] = codes[r, : depths[r], positions[r] : positions[r] + lengths[r]]
        audio = codec.decode_step(batch, state, lengths=lengths, depths=depths)
        assert audio.shape == (3, t * F)
        for r in range(3):
            if lengths[r] < t:  # samples of padded frames are zero
                assert audio[r, lengths[r] * F :].abs().max() == 0
            pieces[r].append(audio[r, : lengths[r] * F])
            positions[r] += lengths[r]
        calls += 1
    assert calls == 7 and state.decoded.tolist() == [20, 20, 20] and state.frames_decoded == 20
    for r, k in enumerate(depths):
        alone = torch.cat(list(codec.decode_stream(codes[r : r + 1, :k].split(3, dim=2))), dim=1)[0]
        one_shot = codec.decode(codes[r : r + 1, :k]).audio[0]
        assert_audio_close(torch.cat(pieces[r]), one_shot)
        assert_audio_close(torch.cat(pieces[r]), alone)


def test_a_subset_of_rows_leaves_the_others_untouched(codec: CatCodec, codes: torch.Tensor) -> None:
    state = codec.new_stream_state(3)
    codec.decode_step(codes[:, :, :5], state)
    before = [(s.offsets.clone(), [(c.keys.clone(), c.values.clone()) for c in s.layers]) for s in state.decoder if s]
    codec.decode_step(codes[2:, :, 5:7], state, rows=[2])
    after = [s for s in state.decoder if s]
    for (offsets, layers), stage in zip(before, after, strict=True):
        assert stage.offsets.tolist()[:2] == offsets.tolist()[:2] and stage.offsets[2] > offsets[2]
        for (keys, values), cache in zip(layers, stage.layers, strict=True):
            torch.testing.assert_close(cache.keys[:2], keys[:2], rtol=0, atol=0)
            torch.testing.assert_close(cache.values[:2], values[:2], rtol=0, atol=0)
    assert state.decoded.tolist() == [5, 5, 7]


def test_dropped_and_added_rows_keep_every_stream_its_own_audio(codec: CatCodec, codes: torch.Tensor) -> None:
    """A pool of streams: drop a finished row, append a fresh one; every stream still decodes its own audio."""
    state = codec.new_stream_state(2)
    first = codec.decode_step(codes[:2, :, :6], state)  # streams 0 and 1 at frame 6
    state.keep_rows([1])  # stream 0 finished
    state.add_rows(1)  # stream 2 joins at frame 0, as row 1
    assert state.batch_size == 2 and state.decoded.tolist() == [6, 0]
    assert all(s.offsets.tolist()[1] == 0 for s in state.decoder if s)
    rest = codec.decode_step(torch.stack([codes[1, :, 6:12], codes[2, :, :6]]), state)
    assert_audio_close(torch.cat([first[1], rest[0]]), codec.decode(codes[1:2, :, :12]).audio[0])
    assert_audio_close(rest[1], codec.decode(codes[2:3, :, :6]).audio[0])


def test_caches_keep_window_minus_one_steps_per_row(codec: CatCodec, codes: torch.Tensor) -> None:
    state = codec.new_stream_state(3)
    codec.decode_step(codes[:1, :, :2], state, rows=[1])
    _, dec_ctx = codec.config.contexts()
    for i, stage in enumerate(state.decoder):
        if stage is not None:
            assert all(
                isinstance(c, KVCache) and c.keys.shape[:3] == (3, c.keys.shape[1], dec_ctx[i] - 1)
                for c in stage.layers
            )


def test_bad_row_arguments_raise_and_leave_the_state_unchanged(codec: CatCodec, codes: torch.Tensor) -> None:
    state = codec.new_stream_state(3)
    with pytest.raises(ValueError, match="rows"):
        codec.decode_step(codes[:2, :, :1], state, rows=[1, 1])
    with pytest.raises(ValueError, match="rows"):
        codec.decode_step(codes[:2, :, :1], state, rows=[0, 3])
    with pytest.raises(ValueError, match="batch"):
        codec.decode_step(codes[:2, :, :1], state)
    with pytest.raises(ValueError, match="lengths"):
        codec.decode_step(codes[:, :, :2], state, lengths=[1, 2, 3])
    with pytest.raises(ValueError, match="depths"):
        codec.decode_step(codes[:, :4, :2], state, depths=[0, 2, 4])
    with pytest.raises(ValueError, match="0..1023"):
        codec.decode_step(torch.full((3, 4, 2), 1024), state, depths=[4, 2, 4])
    assert state.decoded.tolist() == [0, 0, 0]
    empty = codec.decode_step(codes[:0, :, :3], state, rows=[])
    assert empty.shape == (0, 3 * F)


def test_rows_cannot_join_a_live_encode(codec: CatCodec) -> None:
    state = codec.new_stream_state(1)
    codec.encode_step(torch.zeros(1, 1000), state)
    with pytest.raises(ValueError, match="encode_step"):
        state.add_rows(1)
