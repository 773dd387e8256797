"""Seed-TTS-Eval-shaped load for the engine and server benchmarks: request shapes, closed-loop clients, per-stream
timings and their summary.

A request looks like one Seed-TTS-Eval utterance: a reference clip of 3-10 s (prompt rows = its frames at the codec's
frame rate, plus the text rows of the transcript, the target text and the template) and 40-100 frames of output
(3.2-8 s), forced with min = max frames so that random weights produce the same amount of audio as a real model.
Shapes are drawn from a seeded generator per (client, request), so every mode, depth and concurrency level serves
the same requests.

Per stream (one request): time to first audio (request sent -> first audio received), real-time factor (request sent
-> last audio received, divided by the audio's duration: < 1 means the stream was produced faster than real time),
and the playback stall (`cat_tts.playback.stall_seconds`). Over a run: the aggregate real-time rate (audio seconds
produced / wall seconds) and p50/p95 of the per-stream numbers.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cat_tts.errors import InputError
from cat_tts.playback import stall_seconds


@dataclass(frozen=True)
class RequestShape:
    """The size of one benchmark request."""

    reference_seconds: float  # duration of the reference clip
    text_rows: int  # prompt rows that are text (transcript, target text, template)
    frames: int  # audio frames generated (min = max)
    seed: int  # sampling seed and seed of its random prompt


@dataclass
class StreamTiming:
    """When one stream's audio arrived (seconds on `time.perf_counter`'s clock)."""

    sent: float  # the request was sent
    arrivals: list[float] = field(default_factory=list)  # each piece of audio arrived
    durations: list[float] = field(default_factory=list)  # audio seconds in each piece

    @property
    def audio_seconds(self) -> float:
        return sum(self.durations)

    @property
    def ttfa(self) -> float:
        """Seconds from sending to the first audio (nan without audio)."""
        return self.arrivals[0] - self.sent if self.arrivals else math.nan

    @property
    def rtf(self) -> float:
        """Seconds from sending to the last audio per second of audio (nan without audio)."""
        audio = self.audio_seconds
        return (self.arrivals[-1] - self.sent) / audio if audio > 0 else math.nan

    @property
    def stall(self) -> float:
        """Seconds a player that started at the first audio waits for data."""
        return stall_seconds(self.arrivals, self.durations)


def parse_ints(text: str, name: str) -> list[int]:
    """Positive integers from a comma-separated option value."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{name} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise InputError(f"{name} takes integers >= 1, got {text!r}")
    return values


def parse_range(text: str, name: str) -> tuple[float, float]:
    """`LO-HI` (or one number) from an option value."""
    try:
        parts = [float(x) for x in text.split("-")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not 0 < parts[0] <= parts[1] or not all(map(math.isfinite, parts)):
        raise InputError(f"{name} takes LO-HI with 0 < LO <= HI (or one number), got {text!r}")
    return parts[0], parts[1]


def request_shape(
    client: int,
    index: int,
    reference_seconds: tuple[float, float],
    text_rows: tuple[float, float],
    frames: tuple[float, float],
) -> RequestShape:
    """The shape of request `index` of client `client`: uniform draws in each range, seeded by (client, index)."""
    seed = client * 1000 + index
    rng = random.Random(seed)
    return RequestShape(
        reference_seconds=rng.uniform(*reference_seconds),
        text_rows=rng.randint(round(text_rows[0]), round(text_rows[1])),
        frames=rng.randint(round(frames[0]), round(frames[1])),
        seed=seed,
    )


def run_clients(clients: int, per_client: int, one_request: Callable[[int, int], StreamTiming]) -> dict:
    """`clients` threads start together; client i sends requests (i, 0) .. (i, per_client - 1) one after another
    through `one_request(i, j)`. Returns the streams and the wall time from the common start to the last audio.

    Raises:
        RuntimeError: a request failed (the first error is chained).
    """
    streams: list[StreamTiming] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        barrier.wait()
        for j in range(per_client):
            try:
                timing = one_request(i, j)
            except BaseException as err:  # reported by the caller's thread
                with lock:
                    errors.append(err)
                return
            with lock:
                streams.append(timing)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} of {clients * per_client} requests failed: {errors[0]!r}") from errors[0]
    return {"streams": streams, "wall_s": wall}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation; nan for no values."""
    values = sorted(v for v in values if not math.isnan(v))
    if not values:
        return math.nan
    pos = (len(values) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (pos - low)


def summarize(streams: list[StreamTiming], wall_s: float) -> dict:
    """The run's numbers: aggregate real-time rate, per-stream RTF / TTFA / stall p50 and p95."""
    audio = sum(s.audio_seconds for s in streams)
    rtf = [s.rtf for s in streams]
    ttfa = [s.ttfa for s in streams]
    stall = [s.stall for s in streams]
    return {
        "requests": len(streams),
        "audio_s": audio,
        "wall_s": wall_s,
        "aggregate_realtime": audio / wall_s if wall_s > 0 else math.nan,
        "stream_rtf_p50": percentile(rtf, 50),
        "stream_rtf_p95": percentile(rtf, 95),
        "streams_slower_than_realtime": sum(r >= 1 for r in rtf),
        "ttfa_ms_p50": percentile(ttfa, 50) * 1e3,
        "ttfa_ms_p95": percentile(ttfa, 95) * 1e3,
        "stall_s_p50": percentile(stall, 50),
        "stall_s_p95": percentile(stall, 95),
    }
