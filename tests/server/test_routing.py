"""Scale-out in one host: several pipelines behind one API, each request to the least-loaded one."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest
import torch

from cat_tts.server.backend import Busy, PipelineBackend, RoutedBackend, SpeechJob

from .conftest import fake_config, serve
from .fakes import FakeTTS


def _job(frames: int = 50) -> SpeechJob:
    return SpeechJob(text="x", codes=torch.zeros(32, 4, dtype=torch.long), depth=8, settings={"max_new_frames": frames})


def test_least_loaded_routing_and_release():
    fakes = [FakeTTS(frame_time=0.0, max_slots=2), FakeTTS(frame_time=0.0, max_slots=2)]
    router = RoutedBackend([PipelineBackend(f, device=f"cpu:{i}") for i, f in enumerate(fakes)])
    streams = [router.stream(_job()) for _ in range(4)]
    assert router.open_streams() == [2, 2]
    for s in streams:
        next(s)
    assert [len(f.calls) for f in fakes] == [2, 2]
    streams[0].close()
    streams[0].close()  # idempotent
    owner = 0 if fakes[0].calls[0].cancelled or fakes[0].calls[1].cancelled else 1
    assert router.open_streams()[owner] == 1
    router.stream(_job())
    assert router.open_streams() == [2, 2]  # the freed backend got the next one
    assert router.load().max_slots == 4 and router.devices == ["cpu:0", "cpu:1"]


def test_slot_weighting_and_busy():
    big, small = FakeTTS(max_slots=3, max_queue=0), FakeTTS(max_slots=1, max_queue=0)
    router = RoutedBackend([PipelineBackend(big), PipelineBackend(small)])
    streams = [router.stream(_job()) for _ in range(4)]
    assert router.open_streams() == [3, 1]  # proportional to slots
    for s in streams:
        next(s)
    extra = router.stream(_job())
    with pytest.raises(Busy):
        next(extra)
    assert router.open_streams() == [3, 1]  # the rejected stream released its count


def test_mismatched_backends_are_refused():
    other = FakeTTS()
    other.n_vq = 16
    with pytest.raises(ValueError, match="same model"):
        RoutedBackend([PipelineBackend(FakeTTS()), PipelineBackend(other)])


def test_one_api_over_two_engines(tmp_path):
    fakes = [FakeTTS(frame_time=0.005), FakeTTS(frame_time=0.005)]
    router = RoutedBackend([PipelineBackend(f, device=f"cuda:{i}", codec_id="fake") for i, f in enumerate(fakes)])
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
