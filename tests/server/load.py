"""A bounded loopback load: N concurrent clients with mixed depths, formats and streaming modes (shared by the fake
and the real-engine load tests)."""

from __future__ import annotations

import base64
import json
import os
import threading
from dataclasses import dataclass

import httpx
import numpy as np

from .audio_check import FRAME_SAMPLES, LENGTH_SLACK, decode

FORMATS = ("pcm", "wav", "flac", "mp3", "opus")


@dataclass
class Result:
    index: int
    fmt: str
    depth: int
    sse: bool
    status: int = 0
    samples: np.ndarray | None = None
    error: str | None = None


def rss_mb() -> float:
    """Resident memory of this process, MiB."""
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def request_audio(url: str, body: dict, sse: bool, timeout: float = 300) -> tuple[int, bytes]:
    """POSTs a speech request; returns (status, the audio bytes), decoding SSE events when `sse`."""
    with httpx.stream("POST", f"{url}/v1/audio/speech", json={**body, **({"stream_format": "sse"} if sse else {})},
                      timeout=timeout) as response:  # fmt: skip
        if response.status_code != 200:
            return response.status_code, response.read()
        if not sse:
            return 200, response.read()
        parts, done = [], False
        for line in response.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                if event["type"] == "speech.audio.delta":
                    parts.append(base64.b64decode(event["audio"]))
                done = done or event["type"] == "speech.audio.done"
        return (200 if done else 599), b"".join(parts)


def run_load(url: str, clients: int, frames: int, n_vq: int, text: str = "Load test sentence.") -> list[Result]:
    """`clients` concurrent requests (depth, format and SSE vary with the index), each of exactly `frames` frames.

    Each result's samples are decoded and checked: 24 kHz and the generated length (within the format's slack).
    """
    results = [Result(i, FORMATS[i % len(FORMATS)], 1 + (i * 7) % n_vq, i % 3 == 2) for i in range(clients)]
    start = threading.Barrier(clients)

    def one(result: Result) -> None:
        body = {"input": f"{text} {result.index}", "response_format": result.fmt, "depth": result.depth,
                "seed": result.index, "max_new_frames": frames, "min_new_frames": frames}  # fmt: skip
        try:
            start.wait(30)
            result.status, data = request_audio(url, body, result.sse)
            if result.status == 200:
                samples, rate = decode(data, result.fmt)
                assert rate == 24000, rate
                extra = samples.size - frames * FRAME_SAMPLES
                assert 0 <= extra <= LENGTH_SLACK[result.fmt], (result.fmt, samples.size)
                result.samples = samples
        except Exception as err:  # reported by the test with the request's settings
            result.error = f"{type(err).__name__}: {err}"

    threads = [threading.Thread(target=one, args=(r,)) for r in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    return results
