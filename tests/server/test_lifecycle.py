"""Lifecycle: a dropped client cancels its generation and frees its slot; SIGTERM drains (503 for new requests,
in-flight ones finish within the grace period or are cancelled) and the process exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from .conftest import wait_for
from .fakes import FakeBackend

BODY = {"input": "A long one.", "response_format": "pcm"}
FAKE_SERVE = Path(__file__).with_name("fake_serve.py")


def _wait(predicate, timeout: float, step: float = 0.02) -> float:
    """Seconds until `predicate()` held (raises after `timeout`)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(step)
    return time.monotonic() - start


def test_dropped_client_frees_its_slot(make_fake_server):
    server = make_fake_server(FakeBackend(frame_time=0.02, max_slots=1, max_queue=0))
    with httpx.stream("POST", f"{server.url}/v1/audio/speech", json={**BODY, "max_new_frames": 1500},
                      timeout=30) as response:  # fmt: skip
        assert response.status_code == 200
        chunks = response.iter_bytes()
        next(chunks)  # the first chunk, then drop the connection
        assert server.health()["active_requests"] == 1
    wait_for(lambda: server.health()["active_requests"] == 0)
    call = server.backend.calls[0]
    assert call.cancelled and not call.finished and call.frames_done < 1500
    assert server.state.pumps == set()
    # the one slot is free again: a new request is admitted (max_queue=0: it would be a 429 otherwise)
    again = httpx.post(f"{server.url}/v1/audio/speech", json={**BODY, "max_new_frames": 3}, timeout=30)
    assert again.status_code == 200 and len(again.content) == 3 * 1920 * 2


def test_client_that_leaves_while_queued_leaves_the_queue(make_fake_server):
    server = make_fake_server(FakeBackend(frame_time=0.02, max_slots=1, max_queue=1))
    holder = threading.Thread(target=httpx.post, args=(f"{server.url}/v1/audio/speech",),
                              kwargs={"json": {**BODY, "max_new_frames": 300}, "timeout": 30})  # fmt: skip
    holder.start()
    wait_for(lambda: server.health()["active_requests"] == 1)
    try:  # queued behind the holder; give up before it is admitted
        httpx.post(f"{server.url}/v1/audio/speech", json={**BODY, "max_new_frames": 1000}, timeout=0.5)
    except httpx.TimeoutException:
        pass
    wait_for(lambda: server.health()["queued_requests"] == 0)
    assert server.health()["active_requests"] == 1  # the holder still generates
    queued = server.backend.calls[1]
    assert queued.cancelled and queued.admitted_at is None
    nxt = httpx.post(f"{server.url}/v1/audio/speech", json={**BODY, "max_new_frames": 2}, timeout=30)
    assert nxt.status_code == 200  # its place in the queue is free (the queue holds one)
    holder.join()


def _start_fake_process(tmp_path, *args) -> tuple[subprocess.Popen, str]:
    port_file = tmp_path / "port"
    proc = subprocess.Popen([sys.executable, str(FAKE_SERVE), str(port_file), str(tmp_path / "voices"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    _wait(lambda: port_file.exists() and port_file.read_text() or proc.poll() is not None, timeout=60, step=0.05)
    url = f"http://127.0.0.1:{port_file.read_text()}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None

    _wait(up, timeout=60, step=0.05)
    assert proc.poll() is None, proc.communicate()[0]
    return proc, url


def _stream_in_background(url: str, frames: int) -> tuple[threading.Thread, dict]:
    result: dict = {"first": threading.Event(), "bytes": 0}

    def run():
        with httpx.stream("POST", f"{url}/v1/audio/speech", json={**BODY, "max_new_frames": frames},
                          timeout=60) as response:  # fmt: skip
            result["status"] = response.status_code
            try:
                for chunk in response.iter_bytes():
                    result["bytes"] += len(chunk)
                    result["first"].set()
            except httpx.HTTPError as err:
                result["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    assert result["first"].wait(30)
    return thread, result


def test_sigterm_drains_in_flight_requests_then_exits_0(tmp_path):
    proc, url = _start_fake_process(tmp_path, "--frame-time", "0.03", "--grace", "30")
    try:
        thread, result = _stream_in_background(url, frames=40)  # ~1.2 s of generation
        os.kill(proc.pid, signal.SIGTERM)
        time.sleep(0.2)
        late = httpx.post(f"{url}/v1/audio/speech", json={**BODY, "max_new_frames": 2}, timeout=10)
        assert late.status_code == 503 and late.json()["error"]["code"] == "shutting_down"
        assert httpx.get(f"{url}/health", timeout=10).json()["status"] == "draining"
        thread.join(30)
        assert result["status"] == 200 and result["bytes"] == 40 * 1920 * 2 and "error" not in result  # whole
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_sigterm_cancels_what_outlives_the_grace_period(tmp_path):
    proc, url = _start_fake_process(tmp_path, "--frame-time", "0.03", "--grace", "0.5")
    try:
        thread, result = _stream_in_background(url, frames=2000)  # a minute of generation
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        thread.join(30)
        assert 0 < result["bytes"] < 2000 * 1920 * 2
        assert isinstance(result.get("error"), httpx.RemoteProtocolError), result  # cut short: the read fails
        assert "cancelling 1 streams" in out
    finally:
        if proc.poll() is None:
            proc.kill()
