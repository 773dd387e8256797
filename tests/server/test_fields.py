"""The speech API's label table: every field of `SpeechRequest` has a JSON field, every JSON field reaches the
request, and a bad value is a 400 whose `param` is the JSON field the client sent."""

from __future__ import annotations

import httpx
import pytest

from cat_tts.inference.request import SpeechRequest
from cat_tts.server.fields import SERVER_FIELDS, SPEECH_LABELS

# request field -> (JSON value, the request's value after parsing) for a valid, non-default value
GOOD = {
    "text": ("Hello there.", "Hello there."),
    "reference_text": ("Some words.", "Some words."),
    "mode": ("clone", "clone"),
    "instructions": ("calm", "calm"),
    "language": ("English", "English"),
    "duration": (0.4, 0.4),
    "depth": (8, 8),
    "max_new_frames": (5, 5),
    "min_new_frames": (2, 2),
    "do_sample": (False, False),
    "temperature": (0.5, 0.5),
    "top_p": (0.5, 0.5),
    "top_k": (5, 5),
    "repetition_penalty": (1.5, 1.5),
    "control_temperature": (0.5, 0.5),
    "control_top_p": (0.5, 0.5),
    "control_top_k": (5, 5),
    "control_tokens": ("full", "full"),
    "seed": (9, 9),
}
# a bad value of every field
BAD = {
    "text": 7,
    "reference_audio": 7,
    "reference_text": ["x"],
    "mode": "sing",
    "instructions": {"x": 1},
    "language": "",
    "duration": -1,
    "depth": 33,
    "bitrate_kbps": 0.01,
    "min_depth": 0,
    "max_depth": "8",
    "max_new_frames": 0,
    "min_new_frames": -1,
    "do_sample": "yes",
    "temperature": -1.0,
    "top_p": 0.0,
    "top_k": 1.5,
    "repetition_penalty": 0,
    "control_temperature": 1e9,
    "control_top_p": 2.0,
    "control_top_k": -3,
    "control_tokens": "some",
    "seed": -5,
}


def test_every_request_field_has_a_json_label():
    assert set(SPEECH_LABELS) == set(SpeechRequest.field_names())
    assert len(set(SPEECH_LABELS.values())) == len(SPEECH_LABELS)  # one JSON field per request field
    assert not set(SPEECH_LABELS.values()) & set(SERVER_FIELDS)


def _post(server, body) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/audio/speech", json={"response_format": "pcm", **body}, timeout=30)


@pytest.mark.parametrize("field", sorted(GOOD))
def test_every_json_field_reaches_the_request(fake_server, field):
    value, parsed = GOOD[field]
    body = {"input": "Hi.", "max_new_frames": 5, SPEECH_LABELS[field]: value}
    response = _post(fake_server, body)
    assert response.status_code == 200, response.text
    request = fake_server.backend.calls[-1].request
    got = getattr(request, field) if hasattr(request, field) else getattr(request.generation, field)
    assert got == parsed


def test_bitrate_voice_and_auto_depth_bounds_reach_the_request(fake_server):
    assert _post(fake_server, {"input": "x", "bitrate_kbps": 1.0, "max_new_frames": 2}).status_code == 200
    assert fake_server.backend.calls[-1].request.generation.depth == 8
    body = {"input": "x", "depth": "auto", "min_depth": 3, "max_depth": 9, "max_new_frames": 2, "voice": "default"}
    assert _post(fake_server, body).status_code == 200
    g = fake_server.backend.calls[-1].request.generation
    assert (g.depth, g.min_depth, g.max_depth) == ("auto", 3, 9)


@pytest.mark.parametrize("field", sorted(BAD))
def test_a_bad_value_is_a_400_naming_the_json_field(fake_server, field):
    calls = len(fake_server.backend.calls)
    body = {"input": "Hi.", SPEECH_LABELS[field]: BAD[field]}
    if field in ("min_depth", "max_depth"):
        body["depth"] = "auto"
    response = _post(fake_server, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == SPEECH_LABELS[field], error
    assert error["message"] and "Traceback" not in response.text
    assert len(fake_server.backend.calls) == calls, "a refused request must not reach the backend"
