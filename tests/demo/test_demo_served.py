"""The demo served by Gradio (in this process, on a loopback port) to two clients at once: Gradio's concurrency
lets both requests into the engine together, and they are generated in one batch.

A regression to one request at a time (the old default concurrency of 1) makes this test fail: the second request
would never reach the engine while the first one waits for it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from demo_fakes import page_values

from cat_tts.demo import PAGE_INPUTS, DemoHandlers, DemoLimits, build_demo

FRAMES = 8  # frames per request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served(make_tiny_tts, tmp_path, monkeypatch) -> Iterator[tuple[str, object, threading.Barrier]]:
    """A tiny service (not started) behind the served page; its engine only takes requests two by two."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    tts = make_tiny_tts(n_vq=32, max_slots=4)
    both_submitted = threading.Barrier(2, action=tts.start, timeout=60)
    submit = tts.engine.submit

    def submit_then_wait(*args, **kwargs):
        request = submit(*args, **kwargs)
        both_submitted.wait()  # raises BrokenBarrierError when the second request never comes
        return request

    monkeypatch.setattr(tts.engine, "submit", submit_then_wait)
    demo = build_demo(tts, DemoLimits(min_new_frames=FRAMES, max_new_frames=FRAMES), streaming=False)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False)
    try:
        yield f"http://127.0.0.1:{port}/", tts, both_submitted
    finally:
        demo.close()
        tts.close()


def test_two_clients_at_once_share_one_engine_batch(served, clips):
    from gradio_client import Client, handle_file

    url, tts, _ = served
    assert DemoHandlers(tts).limits.concurrency(tts) == 4  # the page's concurrency: one request per engine slot
    clients = [Client(url, verbose=False) for _ in range(2)]
    before = tts.engine.stats()
    jobs = []
    for i, client in enumerate(clients):
        values = page_values(tts, text=f"User {i} speaks.", reference_audio=handle_file(str(clips["good"])), depth=8)
        values.update(min_new_frames=FRAMES, max_new_frames=FRAMES, seed=3)
        jobs.append(client.submit(*[values[name] for name in PAGE_INPUTS], api_name="/generate"))
    results = [job.result(timeout=180) for job in jobs]
    after = tts.engine.stats()
    for _, full, summary in results:
        assert summary.startswith("Depth 8 = 1 kbps") and full
    assert after.frames_generated - before.frames_generated == 2 * FRAMES
    assert after.frame_steps - before.frame_steps < 2 * FRAMES  # generated together
