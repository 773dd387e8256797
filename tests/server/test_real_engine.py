"""The server on the real pipeline and continuous-batching engine (tiny random checkpoints from make_tiny, CPU):
the OpenAI client gets every format at 24 kHz with exactly the generated frames, streaming streams, SSE, voices
are encoded by the real codec, and a dropped client frees its engine slot for the next request within 2 s."""

from __future__ import annotations

import base64
import json
import time

import httpx
import numpy as np
import pytest

from cat_tts.server.formats import SUPPORTED_FORMATS

from .audio_check import FRAME_SAMPLES, check_duration, decode
from .conftest import serve_real
from .fakes import Clip


@pytest.fixture(scope="module")
def one_slot_server(tiny_dirs, tmp_path_factory):
    """One engine slot and no queue: a second concurrent request would be a 429, so a 200 proves the slot is free."""
    with serve_real(tiny_dirs, tmp_path_factory.mktemp("voices"), max_slots=1, max_queue=0) as server:
        yield server


def _idle(server, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while server.health()["active_requests"] and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.mark.parametrize("fmt", SUPPORTED_FORMATS)
def test_formats_have_24khz_and_the_generated_frames(one_slot_server, fmt):
    _idle(one_slot_server)
    frames = 7
    response = one_slot_server.openai().audio.speech.create(
        model="tiny", input="Hello from the real engine.", voice="default", response_format=fmt,
        extra_body={"depth": 8, "seed": 1, "max_new_frames": frames, "min_new_frames": frames},
    )  # fmt: skip
    samples, rate = decode(response.content, fmt)
    assert rate == 24000
    check_duration(samples, fmt, frames * FRAME_SAMPLES)
    assert samples.std() > 0  # noise from random weights, but not silence


def test_streaming_pcm_starts_well_before_the_end(one_slot_server):
    _idle(one_slot_server)
    frames = 60
    start, first_at, data = time.monotonic(), None, b""
    with one_slot_server.openai().audio.speech.with_streaming_response.create(
        model="tiny", input="A longer sentence for streaming.", voice="default", response_format="pcm",
        extra_body={"depth": 4, "max_new_frames": frames, "min_new_frames": frames},
    ) as response:  # fmt: skip
        for chunk in response.iter_bytes():
            if chunk and first_at is None:
                first_at = time.monotonic() - start
            data += chunk
    total = time.monotonic() - start
    assert len(data) == frames * FRAME_SAMPLES * 2
    assert first_at < total / 3, (first_at, total)


def test_sse_and_greedy_determinism(one_slot_server):
    _idle(one_slot_server)
    body = {"input": "Deterministic.", "response_format": "pcm", "stream_format": "sse", "do_sample": False,
            "depth": 6, "max_new_frames": 8, "min_new_frames": 8}  # fmt: skip

    def audio() -> bytes:
        with httpx.stream("POST", f"{one_slot_server.url}/v1/audio/speech", json=body, timeout=120) as response:
            events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
        assert events[-1]["type"] == "speech.audio.done" and events[-1]["usage"]["output_tokens"] == 8
        return b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")

    first = audio()
    assert len(first) == 8 * FRAME_SAMPLES * 2 and audio() == first


def test_uploaded_voice_is_encoded_and_used(one_slot_server):
    _idle(one_slot_server)
    client = one_slot_server.openai()
    voice = client.audio.voices.create(name="tone", audio_sample=("t.wav", Clip(seconds=2.0).data, "audio/wav"),
                                       consent="none")  # fmt: skip
    assert voice.id == "tone"
    codes = one_slot_server.state.voices.get("tone").codes
    assert codes.shape == (32, 25)  # 2 s at 12.5 frames/s, all 32 layers
    audio = client.audio.speech.create(model="tiny", input="In the new voice.", voice="tone", response_format="wav",
                                       extra_body={"max_new_frames": 5, "min_new_frames": 5})  # fmt: skip
    samples, _ = decode(audio.content, "wav")
    assert samples.size == 5 * FRAME_SAMPLES
    silent = httpx.post(f"{one_slot_server.url}/v1/audio/voices", data={"name": "quiet"},
                        files={"audio": ("q.wav", Clip(seconds=0.3).data, "audio/wav")})  # fmt: skip
    assert silent.status_code == 400 and "too short" in silent.json()["error"]["message"]  # the pipeline's check
    assert client.audio.voices.delete("tone").deleted


def test_dropped_client_frees_its_slot_within_two_seconds(one_slot_server):
    _idle(one_slot_server)
    url = one_slot_server.url
    with httpx.stream("POST", f"{url}/v1/audio/speech", timeout=60, json={
        "input": "This would go on for a long time.", "response_format": "pcm", "max_new_frames": 400,
        "min_new_frames": 400,
    }) as response:  # fmt: skip
        assert response.status_code == 200
        next(response.iter_bytes())
        assert one_slot_server.health()["active_requests"] == 1
    dropped = time.monotonic()
    while one_slot_server.health()["active_requests"]:
        assert time.monotonic() - dropped < 2.0, one_slot_server.health()
        time.sleep(0.02)
    frames_before = one_slot_server.health()["frames_generated"]
    assert frames_before < 400  # it stopped early
    again = httpx.post(
        f"{url}/v1/audio/speech",
        timeout=60,
        json={"input": "Next.", "response_format": "pcm", "max_new_frames": 3, "min_new_frames": 3},
    )
    assert again.status_code == 200 and len(again.content) == 3 * FRAME_SAMPLES * 2  # the only slot, reused


@pytest.mark.slow
def test_32_concurrent_clients_on_the_engine(tiny_dirs, tmp_path):
    """32 concurrent clients (mixed depths, formats, SSE) on 8 engine slots and a queue of 32: all succeed with
    valid audio, the engine returns to idle, memory stays bounded, and a greedy request gives the same audio alone
    and in the middle of the load (batch invariance through the whole server)."""
    from .load import request_audio, rss_mb, run_load

    with serve_real(tiny_dirs, tmp_path / "voices", max_slots=8, max_queue=32) as server:
        greedy = {"input": "Same every time.", "response_format": "pcm", "do_sample": False, "depth": 12,
                  "max_new_frames": 12, "min_new_frames": 12}  # fmt: skip
        alone = request_audio(server.url, greedy, sse=False)
        assert alone[0] == 200 and len(alone[1]) == 12 * FRAME_SAMPLES * 2
        run_load(server.url, clients=8, frames=4, n_vq=32)  # warm-up (allocations, codec states)
        before = rss_mb()
        during: list = []

        def greedy_in_the_middle():
            deadline = time.monotonic() + 60
            while server.health()["active_requests"] < 8 and time.monotonic() < deadline:
                time.sleep(0.01)  # wait until the slots are full
            during.append(request_audio(server.url, greedy, sse=False))

        import threading

        thread = threading.Thread(target=greedy_in_the_middle)
        thread.start()
        results = run_load(server.url, clients=32, frames=24, n_vq=32)
        thread.join()
        failed = [(r.index, r.fmt, r.depth, r.sse, r.status, r.error) for r in results if r.status != 200 or r.error]
        assert not failed, failed[:5]
        # the same frames beside 8 other requests: the pipeline's streaming decode groups frames as they arrive from
        # the engine, which varies with load and moves samples by float rounding (~1e-6), so compare 16-bit samples
        # within one step; a single different code would change the noise of random weights completely
        assert during[0][0] == 200
        a, b = (np.frombuffer(x[1], dtype="<i2").astype(np.int32) for x in (alone, during[0]))
        assert a.shape == b.shape and np.abs(a - b).max() <= 1, np.abs(a - b).max()
        idle = server.health()
        deadline = time.monotonic() + 10
        while (idle["active_requests"] or idle["queued_requests"]) and time.monotonic() < deadline:
            time.sleep(0.05)
            idle = server.health()
        assert idle["active_requests"] == 0 and idle["queued_requests"] == 0 and idle["open_streams"] == 0
        growth = rss_mb() - before
        assert growth < MEMORY_BOUND_MB, f"RSS grew {growth:.0f} MiB"


MEMORY_BOUND_MB = 400  # RSS growth of this process (server, engine, 32 clients) over one load run


def _start_serve_py(tiny_dirs, voices_dir, *extra, env=None):
    """`python serve.py` on the tiny checkpoints on any free port; returns (process, url)."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, str(root / "serve.py"), "--model", str(tiny_dirs["model"]), "--codec",
           str(tiny_dirs["codec"]), "--device", "cpu", "--port", "0", "--voices-dir", str(voices_dir),
           "--min-new-frames", "5", "--max-slots", "2", *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=root, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, **(env or {})})  # fmt: skip
    url = None
    for line in proc.stderr:  # the runner logs the bound address before uvicorn starts
        match = re.search(r"speech server on (http://\S+) ", line)
        if match:
            url = match.group(1)
        if "Application startup complete" in line:
            break
    assert url and proc.poll() is None, f"serve.py did not start (exit {proc.poll()})"
    import threading

    threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe from filling up
    return proc, url


@pytest.mark.slow
def test_serve_py_voices_persist_across_a_restart_and_sigterm_exits_0(tiny_dirs, tmp_path):
    import signal

    voices = tmp_path / "voices"
    headers = {"Authorization": "Bearer k3y"}
    proc, url = _start_serve_py(tiny_dirs, voices, env={"CAT_TTS_API_KEY": "k3y"})
    try:
        assert httpx.get(f"{url}/v1/models", timeout=30).status_code == 401  # the key from the environment
        up = httpx.post(f"{url}/v1/audio/voices", headers=headers, data={"name": "kept", "text": "a tone"},
                        files={"audio": ("k.wav", Clip(seconds=1.2).data, "audio/wav")}, timeout=60)  # fmt: skip
        assert up.status_code == 200, up.text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        proc.kill() if proc.poll() is None else None
    proc, url = _start_serve_py(tiny_dirs, voices)
    try:
        names = [v["name"] for v in httpx.get(f"{url}/v1/audio/voices", timeout=30).json()["data"]]
        assert names == ["default", "kept"]
        speech = httpx.post(f"{url}/v1/audio/speech", timeout=60, json={
            "input": "Still here.", "voice": "kept", "response_format": "wav", "max_new_frames": 5})  # fmt: skip
        assert speech.status_code == 200 and decode(speech.content, "wav")[0].size == 5 * FRAME_SAMPLES
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        proc.kill() if proc.poll() is None else None
