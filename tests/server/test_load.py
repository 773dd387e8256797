"""A bounded loopback load on the fake pipeline: 32 concurrent clients with mixed depths, formats and streaming
modes all succeed with valid audio, the server returns to idle, memory stays bounded, and a greedy request gives
the same audio alone and in the middle of the load. (The same load on the real engine: test_real_engine.py.)"""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np

from .fakes import FakeBackend, expected_audio
from .load import request_audio, rss_mb, run_load

MEMORY_BOUND_MB = 300  # RSS growth of this process (server + 32 clients) over one load run


def test_32_concurrent_clients(make_fake_server):
    server = make_fake_server(FakeBackend(frame_time=0.004, max_slots=8, max_queue=32))
    greedy = {"input": "Same every time.", "response_format": "pcm", "do_sample": False, "depth": 12,
              "max_new_frames": 10}  # fmt: skip
    alone = request_audio(server.url, greedy, sse=False)
    before = rss_mb()
    during: list = []
    thread = threading.Thread(target=lambda: (time.sleep(0.2), during.append(request_audio(server.url, greedy, False))))
    thread.start()
    results = run_load(server.url, clients=32, frames=20, n_vq=32)
    thread.join()
    failed = [r for r in results if r.status != 200 or r.error]
    assert not failed, failed[:3]
    assert len({r.fmt for r in results}) == 5 and len({r.depth for r in results}) > 10 and any(r.sse for r in results)
    assert during[0] == alone
    idle = httpx.get(f"{server.url}/health").json()
    assert idle["active_requests"] == 0 and idle["queued_requests"] == 0 and idle["open_streams"] == 0
    assert rss_mb() - before < MEMORY_BOUND_MB
    assert max(c.depth or 0 for c in server.backend.calls) > 1
    # every client got its own stream (no cross-talk): the fake's tone depends on depth and seed
    for r in results:
        if r.fmt in ("pcm", "wav", "flac"):
            np.testing.assert_allclose(r.samples, expected_audio(20, r.depth, r.index), atol=1.5 / 32767)
