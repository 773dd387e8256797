"""Every error case answers OpenAI-style JSON with its status code and the field at fault; user input never causes
a 500, and the server keeps serving afterwards."""

from __future__ import annotations

import threading

import httpx
import pytest

from cat_tts.errors import FieldError, InputError
from cat_tts.generation import EngineClosed, EngineError

from .conftest import wait_for
from .fakes import FakeBackend

openai = pytest.importorskip("openai")  # the official client (tests only)

GOOD = {"model": "tts-1", "input": "Hello.", "voice": "default", "response_format": "pcm", "max_new_frames": 3}


def _post(server, body=None, **kwargs) -> httpx.Response:
    kwargs.setdefault("timeout", 30)
    return httpx.post(f"{server.url}/v1/audio/speech", json=body, **kwargs)


def _error(response: httpx.Response, status: int, param: str | None = "__any__") -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["message"] and "Traceback" not in response.text
    if param != "__any__":
        assert body["error"]["param"] == param, body
    return body["error"]


BAD_FIELDS = [
    ({"input": ""}, "input"),
    ({"input": "   \n "}, "input"),
    ({"input": "x" * 4097}, "input"),
    ({"instructions": "x" * 4097}, "instructions"),
    ({"depth": 0}, "depth"),
    ({"depth": 33}, "depth"),
    ({"depth": "8"}, "depth"),
    ({"depth": 2.5}, "depth"),
    ({"bitrate_kbps": 0.01}, "bitrate_kbps"),
    ({"bitrate_kbps": 2.0, "depth": 8}, "bitrate_kbps"),  # they disagree (2 kbps = 16 layers)
    ({"response_format": "ogg"}, "response_format"),
    ({"response_format": "aac"}, "response_format"),
    ({"stream_format": "websocket"}, "stream_format"),
    ({"speed": 1.5}, "speed"),
    ({"temperature": -1.0}, "temperature"),
    ({"temperature": 1e9}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ({"do_sample": "yes"}, "do_sample"),
    ({"seed": -5}, "seed"),
    ({"min_new_frames": 10, "max_new_frames": 5}, "min_new_frames"),
    ({"max_new_frames": 0}, "max_new_frames"),
    ({"model": "gpt-5"}, "model"),
    ({"voice": "../../etc/passwd"}, "voice"),
    ({"voice": "a" * 65}, "voice"),
    ({"voice": {"name": "default"}}, "voice"),
    ({"voice": {"id": "default", "extra": 1}}, "voice"),
    ({"voice": 5}, "voice"),
    ({"colour": "blue"}, "colour"),
    ({"language": "x" * 65}, "language"),
    ({"duration": 0}, "duration"),
    ({"duration": 1e6}, "duration"),
    ({"depth": "deep"}, "depth"),
    ({"min_depth": 4}, "min_depth"),
    ({"depth": "auto", "max_depth": 40}, "max_depth"),
    ({"depth": "auto", "min_depth": 9, "max_depth": 4}, "min_depth"),
    ({"bitrate_kbps": "auto", "min_depth": 20, "max_depth": 10}, "min_depth"),
    ({"reference_text": "x" * 4097}, "reference_text"),
    ({"speed": True}, "speed"),
    ({"response_format": None, "stream_format": 3}, "stream_format"),
]


@pytest.mark.parametrize(("change", "param"), BAD_FIELDS, ids=[f"{p}-{i}" for i, (_, p) in enumerate(BAD_FIELDS)])
def test_bad_fields_are_400_naming_the_field(fake_server, change, param):
    calls = len(fake_server.backend.calls)
    error = _error(_post(fake_server, {**GOOD, **change}), 400, param)
    assert error["type"] == "invalid_request_error"
    assert len(fake_server.backend.calls) == calls, "a rejected request must not reach the backend"


def test_messages_name_what_the_client_sent(fake_server):
    assert _error(_post(fake_server, {**GOOD, "input": ""}), 400, "input")["message"].startswith("input is empty")
    voice = _error(_post(fake_server, {**GOOD, "voice": {"name": "default"}}), 400, "voice")["message"]
    assert "unknown key 'name'" in voice and "valid string" not in voice
    top_k = _error(_post(fake_server, {**GOOD, "top_k": 2**63}), 400, "top_k")["message"]
    assert top_k.startswith("top_k must be <=")


def test_missing_input_and_bad_json(fake_server):
    _error(_post(fake_server, {"voice": "default"}), 400, "input")
    bad = httpx.post(
        f"{fake_server.url}/v1/audio/speech", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert _error(bad, 400)["code"] == "invalid_json"
    _error(_post(fake_server, [1, 2]), 400)
    form = httpx.post(f"{fake_server.url}/v1/audio/speech", data={"input": "x"})
    _error(form, 415)


def test_openai_client_sees_typed_errors(fake_server):
    client = fake_server.openai()
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.speech.create(model="tts-1", input="x", voice="default", extra_body={"depth": 99})
    assert err.value.body["param"] == "depth"
    with pytest.raises(openai.NotFoundError):
        client.audio.speech.create(model="tts-1", input="x", voice="alloy")


def test_unknown_voice_is_404(fake_server):
    error = _error(_post(fake_server, {**GOOD, "voice": "nobody"}), 404, "voice")
    assert error["code"] == "voice_not_found" and "default" in error["message"]
    _error(httpx.delete(f"{fake_server.url}/v1/audio/voices/nobody"), 404, "name")
    _error(httpx.get(f"{fake_server.url}/v1/audio/voices/nobody"), 404)


def test_unknown_route_and_method(fake_server):
    _error(httpx.get(f"{fake_server.url}/v1/nothing"), 404)
    _error(httpx.get(f"{fake_server.url}/v1/audio/speech"), 405)


def test_body_over_the_limit_is_413(make_fake_server):
    server = make_fake_server(max_body_bytes=2048)
    error = _error(_post(server, {**GOOD, "input": "x" * 3000}), 413)
    assert error["code"] == "request_too_large"

    def chunked():  # no Content-Length: counted while reading
        yield b'{"input": "'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}'

    response = httpx.post(
        f"{server.url}/v1/audio/speech", content=chunked(), headers={"content-type": "application/json"}
    )
    _error(response, 413)
    assert _post(server, GOOD).status_code == 200


def test_full_queue_is_429_with_retry_after(make_fake_server):
    server = make_fake_server(FakeBackend(frame_time=0.05, max_slots=1, max_queue=1))
    held, release = [], threading.Event()

    def hold():
        with httpx.stream("POST", f"{server.url}/v1/audio/speech", timeout=60,
                          json={**GOOD, "max_new_frames": 400}) as response:  # fmt: skip
            held.append(response.status_code)
            release.wait(30)  # then disconnect

    threads = [threading.Thread(target=hold) for _ in range(2)]  # one in the slot, one waiting in the queue
    for t in threads:
        t.start()
    wait_for(lambda: server.health()["queued_requests"] + server.health()["active_requests"] == 2)
    response = _post(server, GOOD)
    error = _error(response, 429)
    assert error["type"] == "rate_limit_error" and int(response.headers["retry-after"]) >= 1
    assert error["message"].count("retry") == 1, error["message"]
    release.set()
    for t in threads:
        t.join()
    assert _post(server, GOOD).status_code == 200


def test_errors_of_the_pipeline_and_engine_keep_their_meaning(fake_server):
    cases = [(InputError("a prompt of 9 rows does not fit"), 400, None), (FieldError("reference_text", "x is bad"),
             400, "reference_text"), (FieldError("text", "text is bad"), 400, "input"),
             (EngineClosed("closing"), 503, None), (EngineError("the engine failed"), 500, None)]  # fmt: skip
    for err, status, param in cases:
        fake_server.backend.fail_next = err
        response = _post(fake_server, GOOD)
        error = _error(response, status, param)
        if status == 503:
            assert error["code"] == "shutting_down" and response.headers["retry-after"]
        if status == 500:
            assert error["code"] == "engine_error"
    assert _post(fake_server, GOOD).status_code == 200


def test_draining_server_answers_503(fake_server):
    fake_server.state.draining = True
    try:
        response = _post(fake_server, GOOD)
        _error(response, 503)
        assert response.headers["retry-after"]
        health = httpx.get(f"{fake_server.url}/health")
        assert health.status_code == 503 and health.json()["status"] == "draining"
    finally:
        fake_server.state.draining = False


def test_time_limit_before_first_audio_is_504(make_fake_server):
    server = make_fake_server(FakeBackend(frame_time=1.0), request_timeout=0.3)
    error = _error(_post(server, GOOD), 504)
    assert error["code"] == "timeout"
    call = server.backend.calls[-1]
    wait_for(lambda: call.cancelled)
    assert call.frames_done <= 2
