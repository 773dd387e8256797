"""The speech API over a real uvicorn server and the official OpenAI client, on the fake backend: every format
decodes to exactly the generated audio, the body becomes one SpeechRequest, streaming streams, SSE events, headers,
models, health, metrics."""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import pytest

from cat_tts.server.formats import SUPPORTED_FORMATS

from .audio_check import FRAME_SAMPLES, check_duration, decode
from .conftest import fake_config, serve, wait_for
from .fakes import FakeBackend, expected_audio


@pytest.mark.parametrize("fmt", SUPPORTED_FORMATS)
def test_every_format_decodes_to_the_generated_audio(fake_server, fmt):
    frames, depth, seed = 13, 8, 3
    response = fake_server.openai().audio.speech.create(
        model="tts-1", input="Hello there.", voice="default", response_format=fmt,
        extra_body={"depth": depth, "seed": seed, "max_new_frames": frames, "min_new_frames": frames},
    )  # fmt: skip
    samples, rate = decode(response.content, fmt)
    assert rate == 24000
    check_duration(samples, fmt, frames * FRAME_SAMPLES)
    headers = response.response.headers
    assert headers["x-cat-tts-depth"] == str(depth) and headers["x-cat-tts-bitrate-kbps"] == "1"
    if fmt == "flac":  # sent complete, with its length
        assert int(headers["content-length"]) == len(response.content) and "transfer-encoding" not in headers
    else:
        assert headers["transfer-encoding"] == "chunked"
    if fmt in ("pcm", "wav", "flac"):
        np.testing.assert_allclose(samples, expected_audio(frames, depth, seed), atol=1.5 / 32767)


def test_the_body_becomes_one_speech_request(fake_server):
    fake_server.openai().audio.speech.create(
        model="cat-tts-fake", input="Say it.", voice={"id": "default"}, response_format="pcm",
        instructions="calm and slow",
        extra_body={"bitrate_kbps": 2.0, "seed": 7, "do_sample": False, "temperature": 0.7, "top_p": 0.9, "top_k": 20,
                    "repetition_penalty": 1.2, "reference_text": "my transcript", "max_new_frames": 5,
                    "language": "English", "duration": 0.4, "mode": "continuation", "control_top_k": 3},
    )  # fmt: skip
    request = fake_server.backend.calls[-1].request
    assert request.text == "Say it." and request.instructions == "calm and slow"
    assert request.reference_text == "my transcript" and request.mode == "continuation"
    assert request.language == "English" and request.duration == 0.4
    assert request.reference_audio.shape[0] == 32  # the stored voice's codes
    g = request.generation
    assert g.depth == 16  # 2 kbps / 0.125 kbps per layer
    assert (g.seed, g.do_sample, g.temperature, g.top_p, g.top_k, g.repetition_penalty, g.max_new_frames,
            g.control_top_k) == (7, False, 0.7, 0.9, 20, 1.2, 5, 3)  # fmt: skip


def test_defaults_full_depth_and_the_default_voice_transcript(fake_server):
    from cat_tts.assets import default_voice

    response = httpx.post(f"{fake_server.url}/v1/audio/speech", json={"input": "hi", "response_format": "pcm"})
    assert response.status_code == 200, response.text
    request = fake_server.backend.calls[-1].request
    assert response.headers["x-cat-tts-depth"] == "32" and response.headers["x-cat-tts-bitrate-kbps"] == "4"
    assert request.generation.depth is None and request.reference_text == default_voice().text


def test_depth_auto_reports_the_depth_the_engine_chose(fake_server):
    for body, depth in (({"depth": "auto", "max_depth": 12}, "12"), ({"bitrate_kbps": "auto", "min_depth": 2}, "32")):
        response = httpx.post(f"{fake_server.url}/v1/audio/speech", timeout=30,
                              json={"input": "x", "response_format": "pcm", "max_new_frames": 2, **body})  # fmt: skip
        assert response.status_code == 200, response.text
        assert fake_server.backend.calls[-1].request.generation.depth == "auto"
        assert response.headers["x-cat-tts-depth"] == depth


def test_streaming_pcm_arrives_before_generation_ends(make_fake_server):
    frames = 50
    server = make_fake_server(FakeBackend(frame_time=0.02))  # generation takes >= 1 s
    chunks = []
    with server.openai().audio.speech.with_streaming_response.create(
        model="tts-1", input="A long sentence.", voice="default", response_format="pcm",
        extra_body={"max_new_frames": frames},
    ) as response:  # fmt: skip
        for chunk in response.iter_bytes():
            chunks.append((chunk, server.backend.calls[-1].frames_done))
    assert sum(len(c) for c, _ in chunks) == frames * FRAME_SAMPLES * 2
    assert chunks[0][1] < frames // 2  # the first bytes arrived while most frames were still to come


def test_sse_events_carry_base64_audio_and_usage(fake_server):
    frames = 9
    with httpx.stream("POST", f"{fake_server.url}/v1/audio/speech", timeout=30, json={
        "input": "Stream it.", "response_format": "pcm", "stream_format": "sse", "max_new_frames": frames, "depth": 4,
    }) as response:  # fmt: skip
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    assert len(deltas) >= 2 and events[-1]["type"] == "speech.audio.done"
    assert len(b"".join(base64.b64decode(e["audio"]) for e in deltas)) == frames * FRAME_SAMPLES * 2
    done = events[-1]
    assert done["usage"]["output_tokens"] == frames and done["depth"] == 4
    assert done["usage"]["total_tokens"] == done["usage"]["input_tokens"] + frames


def test_sse_with_flac_carries_the_complete_file(fake_server):
    with httpx.stream("POST", f"{fake_server.url}/v1/audio/speech", timeout=30, json={
        "input": "x", "response_format": "flac", "stream_format": "sse", "max_new_frames": 6,
    }) as response:  # fmt: skip
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    data = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    samples, _ = decode(data, "flac")
    assert samples.size == 6 * FRAME_SAMPLES


def test_models_lists_layers_rate_and_bitrates(fake_server):
    card = fake_server.openai().models.list().data[0]
    assert card.id == "cat-tts-fake"
    extra = card.model_extra
    assert extra["n_vq"] == 32 and extra["sample_rate"] == 24000
    assert extra["bitrates_kbps"][0] == 0.125 and extra["bitrates_kbps"][-1] == 4.0
    assert fake_server.openai().models.retrieve("tts-1").id == "cat-tts-fake"


def test_health_reports_engine_load(make_fake_server):
    server = make_fake_server(FakeBackend(frame_time=0.05))
    with httpx.stream("POST", f"{server.url}/v1/audio/speech", timeout=30,
                      json={"input": "x", "response_format": "pcm", "max_new_frames": 40}) as response:  # fmt: skip
        chunks = response.iter_bytes()  # (kept: a dropped iterator closes the connection)
        next(chunks)
        busy = server.health()
    wait_for(lambda: server.health()["active_requests"] == 0)
    idle = server.health()
    assert busy["status"] == "ok" and busy["active_requests"] == 1 and busy["open_streams"] == 1
    assert idle["active_requests"] == 0 and idle["queued_requests"] == 0 and idle["max_slots"] == 4


def test_health_says_loading_then_starting_until_the_engine_is_warm(tmp_path):
    import threading

    backend, loaded = FakeBackend(), threading.Event()
    backend.warm.clear()  # the warm-up (CUDA graph capture / compilation) is still running

    def load():
        loaded.wait(30)
        return backend

    with serve(None, fake_config(tmp_path), wait_ready=False, load=load) as server:
        for phase in ("loading", "starting"):
            health = httpx.get(f"{server.url}/health", timeout=10)
            refused = httpx.post(f"{server.url}/v1/audio/speech", json={"input": "x"}, timeout=10)
            assert health.status_code == 503 and health.json()["status"] == phase
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "2"
            assert refused.json()["error"]["code"] == phase
            loaded.set()
            wait_for(lambda: server.state.phase != "loading")
        assert not backend.started
        backend.warm.set()
        wait_for(lambda: httpx.get(f"{server.url}/health", timeout=10).status_code == 200)
        speech = httpx.post(f"{server.url}/v1/audio/speech", json={"input": "x", "response_format": "wav",
                                                                   "max_new_frames": 3}, timeout=30)  # fmt: skip
        assert speech.status_code == 200 and backend.started


def test_metrics_in_prometheus_format(make_fake_server):
    server = make_fake_server()  # fresh counters
    server.openai().audio.speech.create(model="tts-1", input="x", voice="default", response_format="wav",
                                        extra_body={"max_new_frames": 4})  # fmt: skip
    httpx.post(f"{server.url}/v1/audio/speech", json={"input": ""})
    server.state.metrics.sample_frames()
    samples = server.metrics()
    assert samples[("cat_tts_requests_total", (("endpoint", "/v1/audio/speech"), ("status", "200")))] == 1
    assert samples[("cat_tts_requests_total", (("endpoint", "/v1/audio/speech"), ("status", "400")))] == 1
    assert samples[("cat_tts_speech_streams_total", (("outcome", "completed"),))] == 1
    assert samples[("cat_tts_time_to_first_audio_seconds_count", ())] == 1
    assert samples[("cat_tts_frames_generated_total", ())] == 4
    for name in ("cat_tts_queued_requests", "cat_tts_active_requests", "cat_tts_max_slots",
                 "cat_tts_frames_per_second", "cat_tts_real_time_factor_count"):  # fmt: skip
        assert (name, ()) in samples, name


def test_server_keeps_serving_after_a_backend_bug(fake_server):
    fake_server.backend.fail_next = RuntimeError("boom")
    response = httpx.post(f"{fake_server.url}/v1/audio/speech", json={"input": "x", "response_format": "pcm"})
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error" and "boom" not in response.text
    ok = httpx.post(f"{fake_server.url}/v1/audio/speech", json={"input": "x", "response_format": "pcm"})
    assert ok.status_code == 200
