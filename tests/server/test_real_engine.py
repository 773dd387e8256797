"""The server on the real pipeline and continuous-batching engine (tiny random checkpoints from make_tiny, CPU):
the OpenAI client gets every format at 24 kHz with exactly the generated frames, streaming streams, SSE, voices
are encoded by the real codec, and a dropped client frees its engine slot for the next request within 2 s."""

from __future__ import annotations

import base64
import json
import time

import httpx
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
