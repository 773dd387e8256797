"""The benchmarks' measurement helpers: request shapes, per-stream numbers, the steady frame window, WAV streams."""

from __future__ import annotations

import io
import math
import wave

import numpy as np
import pytest

from cat_tts.errors import InputError
from cat_tts.tools.bench.generate import steady_frame_time
from cat_tts.tools.bench.load import StreamTiming, parse_range, percentile, request_shape, summarize
from cat_tts.tools.bench.models import FRAME_SECONDS
from cat_tts.tools.bench.modes import MODES, engine_config, parse_modes
from cat_tts.tools.bench.serve import WavReader


def test_request_shapes_are_seeded_by_client_and_index_and_stay_in_their_ranges():
    shapes = [request_shape(i, j, (3.0, 10.0), (32, 96), (40, 100)) for i in range(8) for j in range(3)]
    assert shapes == [request_shape(i, j, (3.0, 10.0), (32, 96), (40, 100)) for i in range(8) for j in range(3)]
    assert len({s.seed for s in shapes}) == len(shapes)
    assert all(3 <= s.reference_seconds <= 10 and 32 <= s.text_rows <= 96 and 40 <= s.frames <= 100 for s in shapes)


def test_stream_numbers_follow_their_definitions():
    # sent at 10 s; 1 s of audio at 10.5, 11 and 13: a player that started at 10.5 needs the third piece at 12.5
    s = StreamTiming(sent=10.0, arrivals=[10.5, 11.0, 13.0], durations=[1.0, 1.0, 1.0])
    assert s.ttfa == pytest.approx(0.5) and s.audio_seconds == 3.0
    assert s.rtf == pytest.approx(1.0)  # (13 - 10) / 3
    assert s.stall == pytest.approx(0.5)
    empty = StreamTiming(sent=0.0)
    assert math.isnan(empty.ttfa) and math.isnan(empty.rtf) and empty.stall == 0.0


def test_summary_aggregates_audio_over_wall_time_and_takes_percentiles_of_streams():
    streams = [StreamTiming(sent=0.0, arrivals=[0.1 * (i + 1), 1.0], durations=[1.0, 1.0]) for i in range(5)]
    s = summarize(streams, wall_s=2.0)
    assert s["requests"] == 5 and s["aggregate_realtime"] == pytest.approx(5.0)  # 10 s of audio in 2 s
    assert s["ttfa_ms_p50"] == pytest.approx(300.0) and s["ttfa_ms_p95"] == pytest.approx(480.0)
    assert s["stream_rtf_p50"] == pytest.approx(0.5) and s["streams_slower_than_realtime"] == 0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0 and math.isnan(percentile([], 50))


def test_steady_frame_time_uses_the_window_where_every_stream_generates():
    # Two streams sharing frame steps of 0.1 s, chunks of 2 frames; the second starts 2 steps later.
    step = 0.1
    first = StreamTiming(sent=0.0, arrivals=[step * f for f in (2, 4, 6, 8, 10)], durations=[2 * FRAME_SECONDS] * 5)
    second = StreamTiming(sent=0.0, arrivals=[step * f for f in (4, 6, 8, 10, 12)], durations=[2 * FRAME_SECONDS] * 5)
    seconds, frames = steady_frame_time([first, second])
    assert seconds == pytest.approx(step) and frames == 6  # window [0.4, 1.0]: 3 intervals of 2 frames
    late = StreamTiming(sent=0.0, arrivals=[1.2, 1.4], durations=[2 * FRAME_SECONDS] * 2)  # no common window
    seconds, frames = steady_frame_time([first, late])
    assert seconds == pytest.approx(step) and frames == 2  # each stream's own span


def test_ranges_and_modes_are_checked():
    assert parse_range("3-10", "--x") == (3.0, 10.0) and parse_range("2", "--x") == (2.0, 2.0)
    for bad in ("10-3", "0-1", "a-b", "1-2-3"):
        with pytest.raises(InputError, match="--x"):
            parse_range(bad, "--x")
    assert parse_modes("eager, default") == ["eager", "default"]
    with pytest.raises(InputError, match="known: eager"):
        parse_modes("eager,fast")
    for name in MODES:  # every mode in the table makes a valid engine config
        assert engine_config(name, max_slots=2).max_slots == 2


def _wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize("piece", [1, 7, 44, 45, 1000])
def test_wav_reader_counts_the_audio_in_a_stream_cut_anywhere(piece):
    data = _wav_bytes(np.arange(24000 * 2) % 100, 24000)  # 2 s at 24 kHz
    reader = WavReader()
    seconds = [reader.feed(data[i : i + piece]) for i in range(0, len(data), piece)]
    assert sum(seconds) == pytest.approx(2.0)
    assert all(s == 0 for s in seconds[: 44 // piece])  # the header alone is no audio
