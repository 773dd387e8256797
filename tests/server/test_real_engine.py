"""The server on the real pipeline and continuous-batching engine (tiny random checkpoints from make_tiny, CPU),
through real HTTP: the official OpenAI client, and raw sockets where a client misbehaves.

Issue 16: every format is a file soundfile and ffmpeg read (7); a stream cut short (time limit, engine failure,
shutdown past its grace) makes the client's read fail and is counted (2); a client that leaves while queued leaves
the queue at once (3); nothing a client sends gets a 5xx (4); stored voices survive how the codec is named, and a
second server's start-up leaves them alone (5).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import signal
import socket
import threading
from dataclasses import replace

import httpx
import pytest
import soundfile as sf

from cat_tts.generation.policy import FrameClock
from cat_tts.server.formats import SUPPORTED_FORMATS

from .audio_check import FRAME_SAMPLES, decode, decode_ffmpeg
from .conftest import serve_real, slow_frames, wait_for
from .fakes import Clip

openai = pytest.importorskip("openai")  # the official client (tests only)

SPEECH = {"input": "Hello from the real engine.", "response_format": "pcm"}


@pytest.fixture(scope="module")
def server(tiny_dirs, tmp_path_factory):
    """One engine slot and a queue of one: a third concurrent request is a 429, so a 200 or a queued request proves
    that a slot or a queue place was freed."""
    with serve_real(tiny_dirs, tmp_path_factory.mktemp("voices"), max_slots=1, max_queue=1) as running:
        yield running


@pytest.fixture
def idle(server):
    """The module's server with nothing in flight, before and after the test (and its settings put back)."""
    config = server.state.config
    wait_for(lambda: server.health()["active_requests"] + server.health()["queued_requests"] == 0, timeout=60)
    yield server
    server.state.config = config
    wait_for(lambda: server.health()["active_requests"] + server.health()["queued_requests"] == 0, timeout=60)


def _stream(url: str, body: dict, result: dict, started: threading.Event | None = None) -> None:
    """Reads a streamed answer into `result` (status, bytes, the error the read raised)."""
    result.update(bytes=0, error=None)
    try:
        with httpx.stream("POST", f"{url}/v1/audio/speech", json=body, timeout=120) as response:
            result["status"] = response.status_code
            for chunk in response.iter_bytes():
                result["bytes"] += len(chunk)
                if started is not None:
                    started.set()
    except httpx.HTTPError as err:
        result["error"] = err
    finally:
        if started is not None:
            started.set()


# ---------------------------------------------------------------------------------------------------- formats (7)


@pytest.mark.parametrize("fmt", SUPPORTED_FORMATS)
def test_every_format_is_a_file_soundfile_and_ffmpeg_read(idle, fmt):
    frames = 7
    response = idle.openai().audio.speech.create(
        model="tiny", input="Hello from the real engine.", voice="default", response_format=fmt,
        extra_body={"depth": 8, "seed": 1, "max_new_frames": frames, "min_new_frames": frames},
    )  # fmt: skip
    data, headers = response.content, response.response.headers
    samples, rate = decode(data, fmt)  # soundfile.read(io.BytesIO(data)) for every format but raw pcm
    assert rate == 24000 and samples.std() > 0  # noise from random weights, but not silence
    via_ffmpeg = decode_ffmpeg(data, fmt)
    if fmt == "mp3":  # the encoder's delay and last-frame padding, no tag to trim them
        assert frames * FRAME_SAMPLES <= samples.size <= frames * FRAME_SAMPLES + 3500
        assert frames * FRAME_SAMPLES <= via_ffmpeg.size <= frames * FRAME_SAMPLES + 3500
    else:
        assert samples.size == via_ffmpeg.size == frames * FRAME_SAMPLES
    if fmt == "flac":  # complete, with its totals and length
        assert sf.info(io.BytesIO(data)).frames == frames * FRAME_SAMPLES
        assert int(headers["content-length"]) == len(data) and "transfer-encoding" not in headers
    else:
        assert headers["transfer-encoding"] == "chunked"
    assert headers["x-cat-tts-depth"] == "8" and headers["x-cat-tts-bitrate-kbps"] == "1"


def test_streaming_pcm_starts_well_before_the_end(idle):
    frames, received = 60, []
    base = idle.health()["frames_generated"]
    with slow_frames(idle), idle.openai().audio.speech.with_streaming_response.create(
        model="tiny", input="A longer sentence for streaming.", voice="default", response_format="pcm",
        extra_body={"depth": 4, "max_new_frames": frames, "min_new_frames": frames},
    ) as response:  # fmt: skip
        for chunk in response.iter_bytes():
            received.append((len(chunk), idle.health()["frames_generated"] - base))
    assert sum(n for n, _ in received) == frames * FRAME_SAMPLES * 2
    assert received[0][1] < frames // 2  # the first bytes came while most frames were still to be generated


def test_sse_greedy_determinism_and_depth_auto(idle):
    body = {"input": "Deterministic.", "response_format": "pcm", "stream_format": "sse", "do_sample": False,
            "depth": "auto", "max_depth": 6, "max_new_frames": 8, "min_new_frames": 8}  # fmt: skip

    def audio() -> tuple[bytes, int, str]:
        idle.backend.tts.engine.readback.clock = FrameClock()  # a machine that measured nothing (tests slow frames)
        with httpx.stream("POST", f"{idle.url}/v1/audio/speech", json=body, timeout=120) as response:
            events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
            header = response.headers["x-cat-tts-depth"]
        assert events[-1]["type"] == "speech.audio.done" and events[-1]["usage"]["output_tokens"] == 8
        data = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
        return data, events[-1]["depth"], header

    first, depth, header = audio()
    assert len(first) == 8 * FRAME_SAMPLES * 2 and depth == 6 and header == "6"  # alone: the ceiling
    assert audio() == (first, depth, header)


def test_uploaded_voice_is_encoded_and_used(idle):
    client = idle.openai()
    voice = client.audio.voices.create(name="tone", audio_sample=("t.wav", Clip(seconds=2.0).data, "audio/wav"),
                                       consent="none")  # fmt: skip
    assert voice.id == "tone" and idle.state.voices.get("tone").codes.shape == (32, 25)  # 2 s at 12.5 frames/s
    audio = client.audio.speech.create(model="tiny", input="In the new voice.", voice="tone", response_format="wav",
                                       extra_body={"max_new_frames": 5, "min_new_frames": 5})  # fmt: skip
    assert decode(audio.content, "wav")[0].size == 5 * FRAME_SAMPLES
    short = httpx.post(f"{idle.url}/v1/audio/voices", data={"name": "quiet"},
                       files={"audio": ("q.wav", Clip(seconds=0.3).data, "audio/wav")})  # fmt: skip
    assert short.status_code == 400 and "too short" in short.json()["error"]["message"]  # the pipeline's check
    assert short.json()["error"]["param"] == "audio"
    assert client.audio.voices.delete("tone").deleted


# ---------------------------------------------------------------------------------------------------- leaving (3)


def test_a_dropped_client_frees_its_slot(idle):
    with httpx.stream("POST", f"{idle.url}/v1/audio/speech", timeout=60,
                      json={**SPEECH, "max_new_frames": 1500, "min_new_frames": 1500}) as response:  # fmt: skip
        assert response.status_code == 200
        chunks = response.iter_bytes()
        next(chunks)
        assert idle.health()["active_requests"] == 1
    wait_for(lambda: idle.health()["active_requests"] == 0)
    again = httpx.post(f"{idle.url}/v1/audio/speech", json={**SPEECH, "max_new_frames": 3}, timeout=60)
    assert again.status_code == 200 and len(again.content) == 3 * FRAME_SAMPLES * 2  # the only slot, reused


def test_a_client_that_leaves_while_queued_leaves_the_queue_at_once(idle):
    """--max-slots 1 --max-queue 1: a queued client that gives up after 1 s is gone from the queue at once, and the
    next client is queued, not refused."""
    body = {**SPEECH, "max_new_frames": 1500, "min_new_frames": 1500}
    nxt = {}
    with slow_frames(idle), httpx.stream("POST", f"{idle.url}/v1/audio/speech", json=body, timeout=120) as holder:
        chunks = holder.iter_bytes()
        next(chunks)  # the holder has the only slot
        with pytest.raises(httpx.TimeoutException):  # queued behind it; gives up after 1 s
            httpx.post(f"{idle.url}/v1/audio/speech", json={**SPEECH, "max_new_frames": 5}, timeout=1.0)
        wait_for(lambda: idle.health()["queued_requests"] == 0)  # gone from the queue, not when a slot frees
        assert idle.health()["active_requests"] == 1
        waiter = threading.Thread(target=_stream, args=(idle.url, {**SPEECH, "max_new_frames": 3}, nxt))
        waiter.start()
        wait_for(lambda: idle.health()["queued_requests"] == 1 or "status" in nxt)
        assert "status" not in nxt  # queued (a 429 would have answered at once)
    waiter.join(60)  # the holder left: the waiter got the slot
    assert nxt["status"] == 200 and nxt["bytes"] == 3 * FRAME_SAMPLES * 2


# ---------------------------------------------------------------------------------------------------- cut short (2)


def _truncated(server, reason: str) -> float:
    key = ("cat_tts_truncated_streams_total", (("reason", reason),))
    return server.metrics().get(key, 0.0)


@pytest.mark.parametrize("fmt", ["pcm", "wav", "mp3", "opus"])
def test_a_stream_past_its_time_limit_fails_the_clients_read(idle, fmt):
    before = _truncated(idle, "timeout")
    idle.state.config = replace(idle.state.config, request_timeout=4.0)
    with slow_frames(idle), pytest.raises(Exception, match="incomplete chunked read") as err:
        with idle.openai().audio.speech.with_streaming_response.create(
            model="tiny", input="This would take a long time.", voice="default", response_format=fmt,
            extra_body={"max_new_frames": 1500, "min_new_frames": 1500},
        ) as response:  # fmt: skip
            assert response.status_code == 200
            for _ in response.iter_bytes():
                pass
    assert type(err.value).__name__ == "RemoteProtocolError"  # (the OpenAI client's HTTP library's)
    wait_for(lambda: _truncated(idle, "timeout") == before + 1)


def test_sse_past_its_time_limit_ends_with_an_error_event(idle):
    idle.state.config = replace(idle.state.config, request_timeout=4.0)
    body = {**SPEECH, "stream_format": "sse", "max_new_frames": 1500, "min_new_frames": 1500}
    with slow_frames(idle), httpx.stream("POST", f"{idle.url}/v1/audio/speech", json=body, timeout=60) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert events[0]["type"] == "speech.audio.delta" and events[-1]["type"] == "error"
    assert events[-1]["error"]["code"] == "timeout"


def test_an_engine_failure_mid_stream_fails_the_clients_read(idle):
    fail, result, started = threading.Event(), {}, threading.Event()
    before = _truncated(idle, "error")
    with slow_frames(idle, fail=fail):
        thread = threading.Thread(target=_stream, args=(idle.url, {**SPEECH, "response_format": "wav",
                                  "max_new_frames": 1500, "min_new_frames": 1500}, result, started))  # fmt: skip
        thread.start()
        assert started.wait(60)
        fail.set()
        thread.join(60)
    assert result["status"] == 200 and 0 < result["bytes"] < 1500 * FRAME_SAMPLES * 2
    assert isinstance(result["error"], httpx.RemoteProtocolError), result
    assert _truncated(idle, "error") == before + 1
    after = httpx.post(f"{idle.url}/v1/audio/speech", json={**SPEECH, "max_new_frames": 3}, timeout=60)
    assert after.status_code == 200  # the engine keeps serving


# ---------------------------------------------------------------------------------------------------- hostile (4)


def _raw(server, request: bytes, close_early: bool = False) -> bytes:
    """Sends raw bytes; returns what came back (b"" when the server closed the connection or reset it)."""
    data = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        try:
            sock.sendall(request)
            if close_early:
                return b""
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed while we were sending: read what it said
            pass
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except OSError:
            pass
    return data


def _post_raw(server, body: bytes, extra: bytes = b"") -> bytes:
    head = (f"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n").encode()  # fmt: skip
    return _raw(server, head + extra + b"\r\n" + body)


@pytest.fixture
def uvicorn_errors():
    """Records uvicorn's error log (it does not propagate to the root logger)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


HOSTILE_BODIES = {
    "an integer of 5000 digits": b'{"input": "x", "top_k": ' + b"7" * 5000 + b"}",
    "a float of 5000 digits": b'{"input": "x", "temperature": ' + b"9" * 5000 + b".5}",
    "a duration of 400 digits": b'{"input": "x", "duration": ' + b"3" * 400 + b".0}",
    "a seed of 60 digits": b'{"input": "x", "seed": ' + b"5" * 60 + b"}",
    "NaN": b'{"input": "x", "temperature": NaN}',
    "arrays nested 100000 deep": b"[" * 100_000 + b"]" * 100_000,
    "an object nested deep": b'{"input": "x", "voice": ' + b'{"id": ' * 50_000 + b'"a"' + b"}" * 50_001,
    "invalid UTF-8": b'{"input": "\xff\xfe"}',
}


def _server_errors(server) -> float:
    """5xx answers counted in /metrics so far."""
    return sum(v for k, v in server.metrics().items()
               if k[0] == "cat_tts_requests_total" and dict(k[1])["status"].startswith("5"))  # fmt: skip


@pytest.mark.parametrize("what", sorted(HOSTILE_BODIES))
def test_hostile_json_is_a_400(idle, what, caplog):
    before = _server_errors(idle)
    answer = _post_raw(idle, HOSTILE_BODIES[what])
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert b"Traceback" not in answer and not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert _server_errors(idle) == before


def test_a_huge_finite_duration_is_a_400(idle):
    answer = _post_raw(idle, b'{"input": "x", "duration": 1e308}')
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]


def test_a_client_that_leaves_while_sending_its_body_gets_no_5xx(idle, caplog, uvicorn_errors):
    before = _server_errors(idle)
    head = (b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n")  # fmt: skip
    for _ in range(3):
        _raw(idle, head + b'{"input": "only the start', close_early=True)
    wait_for(lambda: idle.metrics().get(("cat_tts_requests_total", (("endpoint", "/v1/audio/speech"),
                                                                    ("status", "499"))), 0) >= 3)  # fmt: skip
    assert not [r for r in caplog.records + uvicorn_errors if r.levelno >= logging.ERROR or r.exc_info]
    assert _server_errors(idle) == before


def test_headers_past_the_limit_are_refused_and_not_held(idle):
    before = _server_errors(idle)
    big = b"X-Big: " + b"a" * (4 * 1024 * 1024) + b"\r\n"  # 4 MiB of header
    answer = _post_raw(idle, b'{"input": "x"}', extra=big)
    assert answer == b"" or answer.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 431 ")), answer[:200]
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(2000))  # 200 kB in many headers
    answer = _post_raw(idle, b'{"input": "x"}', extra=many)
    assert answer == b"" or answer.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 431 ")), answer[:200]
    ok = httpx.post(f"{idle.url}/v1/audio/speech", json={**SPEECH, "max_new_frames": 2}, timeout=60)
    assert ok.status_code == 200 and _server_errors(idle) == before


# ---------------------------------------------------------------------------------------------------- voices (5)


def test_a_second_server_with_the_codec_named_otherwise_shares_the_voices(server, tiny_dirs, tmp_path):
    """Another server on the same voices directory, started with the codec path written differently, sees the
    first one's voices, does not rewrite its default voice, and a shutdown past its grace cuts its stream short."""
    client = server.openai()
    client.audio.voices.create(name="shared", audio_sample=("s.wav", Clip(seconds=1.5).data, "audio/wav"),
                               consent="none")  # fmt: skip
    default = server.state.voices.directory / "default.safetensors"
    written = (default.read_bytes(), default.stat().st_mtime_ns)
    codec = tiny_dirs["codec"]
    other_name = f"{codec.parent}/./{codec.name}/"  # the same directory, written another way
    with serve_real(tiny_dirs, server.config.voices_dir, max_slots=1, max_queue=0, codec=other_name,
                    shutdown_grace=0.5) as second:  # fmt: skip
        names = [v["id"] for v in httpx.get(f"{second.url}/v1/audio/voices", timeout=30).json()["data"]]
        assert names == ["default", "shared"]
        assert (default.read_bytes(), default.stat().st_mtime_ns) == written  # not rewritten
        ok = httpx.post(f"{second.url}/v1/audio/speech", json={**SPEECH, "voice": "shared", "max_new_frames": 3},
                        timeout=60)  # fmt: skip
        assert ok.status_code == 200
        # a shutdown past its grace (serve.py's SIGTERM handling): the stream in flight is cut, and its read fails
        result, started = {}, threading.Event()
        with slow_frames(second):
            thread = threading.Thread(target=_stream, args=(second.url, {**SPEECH, "max_new_frames": 1500,
                                      "min_new_frames": 1500}, result, started))  # fmt: skip
            thread.start()
            assert started.wait(60)
            second.server.handle_exit(signal.SIGTERM, None)
            thread.join(60)
            second.thread.join(60)
        assert isinstance(result["error"], httpx.RemoteProtocolError), result
        exposition = second.state.metrics.render()[0].decode()
        assert 'cat_tts_truncated_streams_total{reason="shutdown"} 1.0' in exposition
    assert client.audio.voices.delete("shared").deleted
    assert server.health()["status"] == "ok"  # the first server never noticed


def test_the_voices_identity_survives_how_the_codec_is_named(tiny_dirs, tmp_path, monkeypatch):
    """A relative path, a trailing slash, a copy elsewhere and a hub id resolved to its cached snapshot are one codec;
    another codec (other weights, same architecture) is another."""
    import os
    import shutil

    import huggingface_hub.constants as hub

    from cat_tts.server.identity import codec_identity
    from cat_tts.weights import resolve_checkpoint

    codec = tiny_dirs["codec"]
    snapshot = tmp_path / "hub" / "models--owner--codec" / "snapshots" / "0123abc"
    shutil.copytree(codec, snapshot)
    (tmp_path / "hub" / "models--owner--codec" / "refs").mkdir()
    (tmp_path / "hub" / "models--owner--codec" / "refs" / "main").write_text("0123abc")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(codec.parent)
    names = [codec, f"{codec}/", f"./{codec.name}", os.path.relpath(snapshot), "owner/codec"]
    identities = {codec_identity(resolve_checkpoint(name, "codec")) for name in names}
    assert len(identities) == 1, identities
    other = tmp_path / "other"
    shutil.copytree(codec, other)
    weights = sorted(other.glob("*.safetensors"))[0]
    data = bytearray(weights.read_bytes())
    data[-64:] = bytes(64)  # other values, same names and shapes
    weights.write_bytes(bytes(data))
    assert codec_identity(other) not in identities
