"""The decode batcher: every stream gets its own audio (its one-shot decode, at float32 tolerance: a row decoded beside
others goes through products of other shapes), calls arriving together become one codec call, a stream that closes
does not hold up the others, errors stay with their streams."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import torch

from cat_tts.codec import CatCodec, CodecConfig
from cat_tts.codec.tiny import random_codec
from cat_tts.inference.decoding import DecodeBatcher, DirectStream

F = 1920
WAIT_S = 60.0  # generous bound for a thread on a loaded 2-core machine; tests that pass take well under a second
WINDOW_S = 2.0  # a gathering window that threads released by one barrier all fit in, even on a loaded machine


@pytest.fixture(scope="module")
def codec() -> CatCodec:
    return random_codec(CodecConfig.tiny(), seed=0)


def random_codes(seed: int, frames: int, layers: int = 32) -> torch.Tensor:
    """Frames [t, K] of random codes."""
    return torch.randint(0, 1024, (frames, layers), generator=torch.Generator().manual_seed(seed))


def one_shot(codec: CatCodec, frames: torch.Tensor, prefix: torch.Tensor | None = None) -> torch.Tensor:
    """The reference: one-shot prefix decode of (prefix +) frames [t, K], prefix samples dropped -> [t * F]."""
    k = frames.shape[1]
    codes = frames.t() if prefix is None else torch.cat([prefix[:k], frames.t()], dim=1)  # [K, L + t]
    audio = codec.decode(codes[None]).audio[0]
    return audio[audio.shape[0] - frames.shape[0] * F :]


def assert_audio_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


def run_threads(targets: list[Callable[[], object]]) -> list[object]:
    """Runs each target in its own thread; returns their results (re-raises the first error)."""
    results: list[object] = [None] * len(targets)
    errors: list[BaseException] = []

    def call(i: int) -> None:
        try:
            results[i] = targets[i]()
        except BaseException as err:  # noqa: BLE001 - handed to the test thread
            errors.append(err)

    threads = [threading.Thread(target=call, args=(i,), daemon=True) for i in range(len(targets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
        assert not thread.is_alive(), "a stream thread is stuck"
    if errors:
        raise errors[0]
    return results


class CountingCodec:
    """The codec with its decode_step calls counted (and the frame count of each)."""

    def __init__(self, codec: CatCodec, fail_on_frames: int | None = None) -> None:
        self.codec = codec
        self.calls: list[tuple[int, int]] = []  # (rows, frames) of each call
        self.lengths: list[list[int] | None] = []  # the per-row frame counts of each call (None: all the same)
        self.fail_on_frames = fail_on_frames

    def __getattr__(self, name: str) -> object:
        return getattr(self.codec, name)

    def decode_step(self, codes: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        self.calls.append((codes.shape[0], codes.shape[2]))
        self.lengths.append(kwargs.get("lengths"))
        if codes.shape[2] == self.fail_on_frames:
            raise RuntimeError("simulated device failure")
        return self.codec.decode_step(codes, *args, **kwargs)


def test_threads_get_their_own_streams_audio(codec: CatCodec) -> None:
    """Five requests at different depths, with and without a prompt prefix, pieces of different sizes, each in its
    own thread: every stream's pieces equal its one-shot decode and its unbatched streaming decode."""
    specs = [
        (32, None, [1, 4, 4, 4]),
        (6, None, [2, 2, 5, 3]),
        (1, None, [4, 4, 4]),
        (12, 9, [1, 4, 3, 4]),
        (32, 4, [3]),
    ]
    frames = [random_codes(10 + i, sum(sizes), k) for i, (k, _, sizes) in enumerate(specs)]
    prefixes = [None if n is None else random_codes(20 + i, n).t() for i, (_, n, _) in enumerate(specs)]  # [32, L]

    def consumer(i: int, batcher: DecodeBatcher) -> torch.Tensor:
        k, _, sizes = specs[i]
        with batcher.open(k, prefixes[i]) as stream:
            pieces, start = [], 0
            for size in sizes:
                piece = stream.decode(frames[i][start : start + size])
                assert piece.shape == (size * F,) and piece.dtype == torch.float32
                pieces.append(piece)
                start += size
        return torch.cat(pieces)

    with DecodeBatcher(codec, window_s=0.05) as batcher:
        results = run_threads([lambda i=i: consumer(i, batcher) for i in range(len(specs))])
        assert batcher.open_streams == 0
    for i, (k, _, sizes) in enumerate(specs):
        assert_audio_close(results[i], one_shot(codec, frames[i], prefixes[i]))
        with DirectStream(codec, k, prefixes[i]) as alone:
            direct = torch.cat([alone.decode(p) for p in frames[i].split(sizes)])
        assert_audio_close(results[i], direct)


def test_submissions_arriving_together_are_one_codec_call(codec: CatCodec) -> None:
    """Six streams, each submitting its next piece as soon as it has the last one's audio (as consumers do when the
    engine delivers everyone's frames at each read-back): one decode_step per read-back (5) instead of one per
    submission (30). Only the first gathering lasts the window (new streams may still join it); the others end as
    soon as every stream has submitted."""
    counting, streams, rounds = CountingCodec(codec), 6, 5
    barrier = threading.Barrier(streams)
    frames = [random_codes(30 + i, 2 * rounds, [32, 8, 8, 4, 32, 1][i]) for i in range(streams)]

    def consumer(i: int, batcher: DecodeBatcher) -> torch.Tensor:
        with batcher.open(frames[i].shape[1]) as stream:
            barrier.wait(WAIT_S)
            return torch.cat([stream.decode(frames[i][2 * j : 2 * j + 2]) for j in range(rounds)])

    with DecodeBatcher(counting, window_s=WINDOW_S) as batcher:
        results = run_threads([lambda i=i: consumer(i, batcher) for i in range(streams)])
    assert counting.calls == [(streams, 2)] * rounds and batcher.calls == rounds
    assert batcher.window_waits == 1
    for i in range(streams):
        assert_audio_close(results[i], one_shot(codec, frames[i]))


def test_a_stream_that_closes_midway_does_not_block_the_others(codec: CatCodec) -> None:
    counting = CountingCodec(codec)
    barrier = threading.Barrier(3)
    frames = [random_codes(40 + i, 8) for i in range(3)]

    def consumer(i: int, batcher: DecodeBatcher) -> torch.Tensor:
        stream = batcher.open(32)
        barrier.wait(WAIT_S)
        pieces = []
        for j in range(4):
            if i == 2 and j == 2:
                stream.close()  # the request was cancelled: no more submissions from this stream
                with pytest.raises(RuntimeError, match="closed"):
                    stream.decode(frames[i][4:6])
                return torch.cat(pieces)
            pieces.append(stream.decode(frames[i][2 * j : 2 * j + 2]))
        stream.close()
        return torch.cat(pieces)

    with DecodeBatcher(counting, window_s=WINDOW_S) as batcher:
        results = run_threads([lambda i=i: consumer(i, batcher) for i in range(3)])
    assert batcher.window_waits == 1, "the open streams waited for the closed one"  # only the first (joining) call
    assert [r for r, _ in counting.calls] == [3, 3, 2, 2]
    for i in range(3):
        assert_audio_close(results[i], one_shot(codec, frames[i][: results[i].shape[0] // F]))
    assert results[2].shape[0] == 4 * F


@pytest.mark.parametrize("max_pad_ratio", [4.0, 1.0])
def test_pieces_of_different_sizes_share_a_call_within_the_padding_ratio(codec: CatCodec, max_pad_ratio: float) -> None:
    """A stream of 4-frame pieces beside a stream of 1-frame pieces (like a request's first piece): padded into one
    call when 4 <= max_pad_ratio x 1, else one call per size."""
    counting = CountingCodec(codec)
    barrier = threading.Barrier(2)
    frames = [random_codes(50, 12, 8), random_codes(51, 3, 32)]
    sizes = [4, 1]

    def consumer(i: int, batcher: DecodeBatcher) -> torch.Tensor:
        with batcher.open(frames[i].shape[1]) as stream:
            barrier.wait(WAIT_S)
            return torch.cat([stream.decode(piece) for piece in frames[i].split(sizes[i])])

    with DecodeBatcher(counting, window_s=WINDOW_S, max_pad_ratio=max_pad_ratio) as batcher:
        results = run_threads([lambda i=i: consumer(i, batcher) for i in range(2)])
    if max_pad_ratio == 4.0:  # three read-backs, one call each: both rows padded to 4 frames
        assert counting.calls == [(2, 4)] * 3 and [sorted(n) for n in counting.lengths] == [[1, 4]] * 3
    else:
        assert sorted(counting.calls) == [(1, 1)] * 3 + [(1, 4)] * 3 and counting.lengths == [None] * 6
    assert batcher.window_waits == 1
    for i in range(2):
        assert_audio_close(results[i], one_shot(codec, frames[i]))


def test_a_failed_call_fails_its_streams_only(codec: CatCodec) -> None:
    counting = CountingCodec(codec, fail_on_frames=3)
    with DecodeBatcher(counting, window_s=0.0, max_pad_ratio=1.0) as batcher:
        good, bad = batcher.open(8), batcher.open(8)
        frames = random_codes(60, 6, 8)
        with pytest.raises(RuntimeError, match="simulated"):
            bad.decode(frames[:3])
        with pytest.raises(RuntimeError, match="earlier decode"):
            bad.decode(frames[:1])
        audio = torch.cat([good.decode(frames[:2]), good.decode(frames[2:])])
        assert_audio_close(audio, one_shot(codec, frames))


def test_a_stream_takes_part_from_its_first_frames(codec: CatCodec) -> None:
    """An opened stream whose request is still queued (no frames yet) holds nobody up; its depth may come from its
    first frames (depth "auto"), its prefix is decoded with them."""
    frames, prefix = random_codes(70, 5, 12), random_codes(71, 3).t()  # [5, 12], [32, 3]
    with DecodeBatcher(codec, window_s=0.5) as batcher:
        queued = batcher.open(prefix_codes=prefix)
        running = batcher.open(8)
        assert batcher.open_streams == 0 and queued.depth is None
        for piece in random_codes(72, 4, 8).split(2):  # not held up by the queued stream
            running.decode(piece)
        assert batcher.open_streams == 1
        running.close()
        audio = torch.cat([queued.decode(frames[:1]), queued.decode(frames[1:])])
        assert queued.depth == 12 and batcher.open_streams == 1
    assert batcher.window_waits == 2  # each stream's first call (it joins); never for the queued stream
    assert_audio_close(audio, one_shot(codec, frames, prefix))


def test_bad_input_and_closed_batcher_raise(codec: CatCodec) -> None:
    batcher = DecodeBatcher(codec)
    stream = batcher.open(4)
    with pytest.raises(ValueError, match="layers"):
        stream.decode(random_codes(0, 2, 5))
    with pytest.raises(ValueError, match="0..1023"):
        stream.decode(torch.full((2, 4), 1024))
    with pytest.raises(ValueError, match="depth"):
        batcher.open(0)
    with pytest.raises(ValueError, match="prefix_codes"):
        batcher.open(8, random_codes(0, 3, 4).t())
    assert stream.decode(random_codes(0, 0, 4)).shape == (0,)
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        stream.decode(random_codes(0, 2, 4))
    with pytest.raises(RuntimeError, match="closed"):
        batcher.open(4)
    with pytest.raises(ValueError, match="window_s"):
        DecodeBatcher(codec, window_s=-1)
