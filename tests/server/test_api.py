"""The speech API over a real uvicorn server and the official OpenAI client, on the fake pipeline: every format
decodes to exactly the generated audio, streaming streams, SSE events, headers, models, health, metrics."""

from __future__ import annotations

import base64
import json
import time

import httpx
import numpy as np
import pytest

from cat_tts.server.formats import SUPPORTED_FORMATS

from .audio_check import FRAME_SAMPLES, check_duration, decode
from .fakes import FakeTTS, expected_audio


@pytest.mark.parametrize("fmt", SUPPORTED_FORMATS)
def test_every_format_decodes_to_the_generated_audio(fake_server, fmt):
    frames, depth, seed = 13, 8, 3
    client = fake_server.openai()
    response = client.audio.speech.create(
        model="tts-1", input="Hello there.", voice="default", response_format=fmt,
        extra_body={"depth": depth, "seed": seed, "max_new_frames": frames, "min_new_frames": frames},
    )  # fmt: skip
    samples, rate = decode(response.content, fmt)
    assert rate == 24000
    check_duration(samples, fmt, frames * FRAME_SAMPLES)
    assert response.response.headers["x-cat-tts-depth"] == str(depth)
    assert response.response.headers["x-cat-tts-bitrate-kbps"] == "1"
    assert response.response.headers["transfer-encoding"] == "chunked"
    if fmt in ("pcm", "wav", "flac"):
        np.testing.assert_allclose(samples, expected_audio(frames, depth, seed), atol=1.5 / 32767)


def test_request_fields_reach_the_pipeline(fake_server):
    client = fake_server.openai()
    client.audio.speech.create(
        model="cat-tts-fake", input="Say it.", voice={"id": "default"}, response_format="pcm",
        instructions="calm and slow",
        extra_body={"bitrate_kbps": 2.0, "seed": 7, "do_sample": False, "temperature": 0.7, "top_p": 0.9, "top_k": 20,
                    "repetition_penalty": 1.2, "reference_text": "my transcript", "max_new_frames": 5},
    )  # fmt: skip
    call = fake_server.tts.calls[-1]
    assert call.text == "Say it." and call.depth == 16  # 2 kbps / 0.125
    assert call.kwargs["instructions"] == "calm and slow" and call.kwargs["reference_text"] == "my transcript"
    assert call.kwargs["wait"] is False  # the server answers 429 instead of letting the engine wait
    for name, value in dict(seed=7, do_sample=False, temperature=0.7, top_p=0.9, top_k=20, repetition_penalty=1.2,
                            max_new_frames=5).items():  # fmt: skip
        assert call.kwargs[name] == value, name


def test_defaults_full_depth_and_the_default_voice_transcript(fake_server):
    response = httpx.post(f"{fake_server.url}/v1/audio/speech", json={"input": "hi", "response_format": "pcm"})
    assert response.status_code == 200, response.text
    call = fake_server.tts.calls[-1]
    assert call.depth == 32 and response.headers["x-cat-tts-bitrate-kbps"] == "4"
    assert call.kwargs["reference_text"].startswith("Hello, this is a short reference clip")


def test_streaming_pcm_arrives_before_generation_ends(make_fake_server):
    frames, frame_time = 50, 0.02  # ~1 s of generation
    server = make_fake_server(FakeTTS(frame_time=frame_time))
    client = server.openai()
    start = time.monotonic()
    first_at = None
    data = b""
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", input="A long sentence.", voice="default", response_format="pcm",
        extra_body={"max_new_frames": frames},
    ) as response:  # fmt: skip
        for chunk in response.iter_bytes():
            if chunk and first_at is None:
                first_at = time.monotonic() - start
            data += chunk
    total = time.monotonic() - start
    assert len(data) == frames * FRAME_SAMPLES * 2
    assert first_at < total / 3, (first_at, total)  # generation takes >= 1 s; the first bytes come after ~1 frame


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
    audio = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    assert len(audio) == frames * FRAME_SAMPLES * 2
    done = events[-1]
    assert done["usage"]["output_tokens"] == frames and done["depth"] == 4
    assert done["usage"]["total_tokens"] == done["usage"]["input_tokens"] + frames


def test_sse_with_an_encoded_format(fake_server):
    with httpx.stream("POST", f"{fake_server.url}/v1/audio/speech", timeout=30, json={
        "input": "x", "response_format": "flac", "stream_format": "sse", "max_new_frames": 6,
    }) as response:  # fmt: skip
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    data = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    samples, _ = decode(data, "flac")
    assert samples.size == 6 * FRAME_SAMPLES


def test_models_lists_layers_rate_and_bitrates(fake_server):
    models = fake_server.openai().models.list()
    card = models.data[0]
    assert card.id == "cat-tts-fake"
    extra = card.model_extra
    assert extra["n_vq"] == 32 and extra["sample_rate"] == 24000
    assert extra["bitrates_kbps"][0] == 0.125 and extra["bitrates_kbps"][-1] == 4.0
    assert fake_server.openai().models.retrieve("tts-1").id == "cat-tts-fake"


def test_health_reports_engine_load(make_fake_server):
    server = make_fake_server(FakeTTS(frame_time=0.05))
    with httpx.stream("POST", f"{server.url}/v1/audio/speech", timeout=30,
                      json={"input": "x", "response_format": "pcm", "max_new_frames": 40}) as response:  # fmt: skip
        next(response.iter_bytes())
        busy = server.health()
    idle = _wait_for(lambda: server.health(), lambda h: h["active_requests"] == 0)
    assert busy["status"] == "ok" and busy["active_requests"] == 1 and busy["busy_slots"] == 1
    assert idle["active_requests"] == 0 and idle["queued_requests"] == 0 and idle["max_slots"] == 4


def test_health_says_starting_until_the_engine_is_warm(tmp_path):
    from cat_tts.server.backend import PipelineBackend

    from .conftest import fake_config, serve

    tts = FakeTTS()
    tts.warm.clear()  # the warm-up (CUDA graph capture / compilation) is still running
    with serve(PipelineBackend(tts, codec_id="fake"), fake_config(tmp_path), tts, wait_ready=False) as server:
        starting = httpx.get(f"{server.url}/health", timeout=10)
        refused = httpx.post(f"{server.url}/v1/audio/speech", json={"input": "x"}, timeout=10)
        assert starting.status_code == 503 and starting.json()["status"] == "starting"
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "2"
        assert refused.json()["error"]["code"] == "starting"
        assert not tts.started
        tts.warm.set()
        ready = _wait_for(lambda: httpx.get(f"{server.url}/health", timeout=10), lambda r: r.status_code == 200)
        assert ready.json()["status"] == "ok" and tts.started
        speech = httpx.post(f"{server.url}/v1/audio/speech", json={"input": "x", "response_format": "wav",
                                                                   "max_new_frames": 3}, timeout=30)  # fmt: skip
        assert speech.status_code == 200


def test_metrics_in_prometheus_format(make_fake_server):
    fake_server = make_fake_server()  # fresh counters
    client = fake_server.openai()
    client.audio.speech.create(model="tts-1", input="x", voice="default", response_format="wav",
                               extra_body={"max_new_frames": 4})  # fmt: skip
    httpx.post(f"{fake_server.url}/v1/audio/speech", json={"input": ""})
    fake_server.state.metrics.sample_frames()
    text = httpx.get(f"{fake_server.url}/metrics").text
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = {(s.labels["endpoint"], s.labels["status"]): s.value for s in families["cat_tts_requests"].samples
                if s.name.endswith("_total")}  # fmt: skip
    assert requests[("/v1/audio/speech", "200")] == 1 and requests[("/v1/audio/speech", "400")] == 1
    for name in (
        "cat_tts_queued_requests",
        "cat_tts_busy_slots",
        "cat_tts_frames_per_second",
        "cat_tts_time_to_first_audio_seconds",
        "cat_tts_real_time_factor",
        "cat_tts_frames_generated",
    ):
        assert name in families, name  # fmt: skip
    ttfa = {s.name: s.value for s in families["cat_tts_time_to_first_audio_seconds"].samples}
    assert ttfa["cat_tts_time_to_first_audio_seconds_count"] == 1
    frames = {s.name: s.value for s in families["cat_tts_frames_generated"].samples}
    assert frames["cat_tts_frames_generated_total"] == 4


def test_server_keeps_serving_after_a_pipeline_bug(fake_server):
    fake_server.tts.fail_next = RuntimeError("boom")
    response = httpx.post(f"{fake_server.url}/v1/audio/speech", json={"input": "x", "response_format": "pcm"})
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error" and "boom" not in response.text
    ok = httpx.post(f"{fake_server.url}/v1/audio/speech", json={"input": "x", "response_format": "pcm"})
    assert ok.status_code == 200


def _wait_for(get, ok, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if ok(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.02)
