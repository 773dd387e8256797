"""API key: off by default; when set, every /v1 route and /metrics need it (constant-time compare), /health not."""

from __future__ import annotations

import httpx
import pytest

from cat_tts.server.cli import _settings, build_parser

openai = pytest.importorskip("openai")  # the official client (tests only)

KEY = "s3cret-key"
BODY = {"input": "x", "response_format": "pcm", "max_new_frames": 2}


def test_requests_need_the_key_when_one_is_set(make_fake_server):
    server = make_fake_server(api_key=KEY)
    url = server.url
    client = httpx.Client()
    for method, path in (("POST", "/v1/audio/speech"), ("GET", "/v1/audio/voices"), ("GET", "/v1/models"),
                         ("GET", "/metrics"), ("DELETE", "/v1/audio/voices/default")):  # fmt: skip
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"X-API-Key": "nope"}):
            response = client.request(method, url + path, json=BODY if method == "POST" else None, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert response.json()["error"]["type"] == "authentication_error"
            assert response.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{url}/health").status_code == 200  # load balancers probe without a key
    ok = httpx.post(f"{url}/v1/audio/speech", json=BODY, headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200
    assert httpx.get(f"{url}/v1/models", headers={"X-API-Key": KEY}).status_code == 200
    assert httpx.get(f"{url}/metrics", headers={"Authorization": f"bearer {KEY}"}).status_code == 200


def test_openai_client_with_and_without_the_key(make_fake_server):
    server = make_fake_server(api_key=KEY)
    with pytest.raises(openai.AuthenticationError):
        server.openai(api_key="wrong").audio.speech.create(model="tts-1", input="x", voice="default")
    audio = server.openai(api_key=KEY).audio.speech.create(
        model="tts-1", input="x", voice="default", response_format="pcm", extra_body={"max_new_frames": 2}
    )
    assert len(audio.content) == 2 * 1920 * 2


def test_no_key_means_open(fake_server):
    assert httpx.post(f"{fake_server.url}/v1/audio/speech", json=BODY).status_code == 200
    assert httpx.post(f"{fake_server.url}/v1/audio/speech", json=BODY,
                      headers={"Authorization": "Bearer anything"}).status_code == 200  # fmt: skip


def test_public_metrics_need_no_key(make_fake_server):
    server = make_fake_server(api_key=KEY, public_metrics=True)
    assert httpx.get(f"{server.url}/metrics").status_code == 200
    assert httpx.get(f"{server.url}/v1/models").status_code == 401  # the API still needs it


def test_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("CAT_TTS_API_KEY", "from-env")
    config, _, _ = _settings(build_parser().parse_args(["--device", "cpu"]))
    assert config.api_key == "from-env"
    config, _, _ = _settings(build_parser().parse_args(["--device", "cpu", "--api-key", "flag"]))
    assert config.api_key == "flag"
    monkeypatch.delenv("CAT_TTS_API_KEY")
    config, _, devices = _settings(build_parser().parse_args(["--devices", "cpu,cpu", "--public-metrics"]))
    assert config.api_key is None and devices == ["cpu", "cpu"] and config.public_metrics
