"""The chunk joiner: incremental pushes give the one-shot result; the cross-fade is a linear blend."""

from __future__ import annotations

import numpy as np
import pytest

from cat_tts.inference.output import Crossfader as _Crossfader


def _join(segments, overlap, piece_sizes=None):
    fader = _Crossfader(overlap)
    out = []
    rng = np.random.default_rng(0)
    for seg in segments:
        out.append(fader.start_segment())
        if piece_sizes is None:
            out.append(fader.push(seg))
        else:
            i = 0
            while i < seg.size:
                n = int(rng.choice(piece_sizes))
                out.append(fader.push(seg[i : i + n]))
                i += n
    out.append(fader.finish())
    return np.concatenate(out)


@pytest.mark.parametrize("overlap", [0, 1, 7, 50])
@pytest.mark.parametrize("pieces", [[1], [2, 3], [13, 1, 40]])
def test_incremental_join_equals_one_shot(overlap, pieces):
    rng = np.random.default_rng(1)
    segments = [rng.standard_normal(n).astype(np.float32) for n in (120, 5, 64, 200)]
    assert np.array_equal(_join(segments, overlap, pieces), _join(segments, overlap))


def test_single_segment_passes_through():
    seg = np.arange(100, dtype=np.float32)
    assert np.array_equal(_join([seg], 10), seg)


def test_crossfade_blends_tail_and_head_linearly():
    a = np.ones(30, dtype=np.float32)
    b = np.zeros(30, dtype=np.float32)
    out = _join([a, b], 10)
    assert out.size == 50  # the 10 overlapping samples are shared
    assert np.array_equal(out[:20], a[:20]) and np.array_equal(out[30:], b[10:])
    fade = out[20:30]
    assert np.all(np.diff(fade) < 0) and 0 < fade.min() and fade.max() < 1
