"""Scale-out in one host: several backends behind one API, each request to the least-loaded one."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest
import torch

from cat_tts.generation import QueueFull
from cat_tts.inference.request import SpeechRequest
from cat_tts.server.backend import RoutedBackend

from .conftest import fake_config, serve
from .fakes import FakeBackend


def _request(frames: int = 50) -> SpeechRequest:
    return SpeechRequest.from_fields({"text": "x", "reference_audio": torch.zeros(32, 4, dtype=torch.long),
                                      "depth": 8, "max_new_frames": frames})  # fmt: skip


def test_least_loaded_routing_and_release():
    fakes = [FakeBackend(frame_time=0.0, max_slots=2, device=f"cpu:{i}") for i in range(2)]
    router = RoutedBackend(fakes)
    streams = [router.stream(_request()) for _ in range(4)]
    assert router.open_streams() == [2, 2]
    for s in streams:
        next(s)
    assert [len(f.calls) for f in fakes] == [2, 2]
    streams[0].cancel()
    streams[0].cancel()  # idempotent
    assert sorted(router.open_streams()) == [1, 2]
    owner = router.open_streams().index(1)
    router.stream(_request())
    assert router.open_streams() == [2, 2] and len(fakes[owner].calls) == 3  # the freed backend got the next one
    assert sum(load.max_slots for load in router.loads()) == 4 and router.devices == ["cpu:0", "cpu:1"]


def test_slot_weighting_and_a_full_queue():
    big, small = FakeBackend(max_slots=3, max_queue=0), FakeBackend(max_slots=1, max_queue=0)
    router = RoutedBackend([big, small])
    streams = [router.stream(_request()) for _ in range(4)]
    assert router.open_streams() == [3, 1]  # proportional to slots
    for s in streams:
        next(s)
    extra = router.stream(_request())
    with pytest.raises(QueueFull):
        next(extra)
    assert router.open_streams() == [3, 1]  # the refused stream released its count


def test_mismatched_backends_are_refused():
    other = FakeBackend()
    other.codec_id = "codec-other"
    with pytest.raises(ValueError, match="same model"):
        RoutedBackend([FakeBackend(), other])


def test_one_api_over_two_engines(tmp_path):
    fakes = [FakeBackend(frame_time=0.005, device=f"cuda:{i}") for i in range(2)]
    router = RoutedBackend(fakes)
    with serve(router, fake_config(tmp_path)) as server:
        health = server.health()
        assert [d["device"] for d in health["devices"]] == ["cuda:0", "cuda:1"] and health["max_slots"] == 8
        statuses = []

        def one(i):
            r = httpx.post(f"{server.url}/v1/audio/speech", timeout=60,
                           json={"input": "x", "response_format": "pcm", "max_new_frames": 20, "seed": i})  # fmt: skip
            statuses.append((r.status_code, np.frombuffer(r.content, "<i2").size))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert statuses == [(200, 20 * 1920)] * 8
        assert len(fakes[0].calls) >= 2 and len(fakes[1].calls) >= 2
        assert router.open_streams() == [0, 0]
