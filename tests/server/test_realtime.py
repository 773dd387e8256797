"""The realtime WebSocket (/v1/audio/speech/stream) on the real engine (tiny random checkpoints, CPU), through a real
client (`cat_tts.client.SpeechSession`, the `websockets` package) and a real uvicorn server.

Issue 19: audio starts while the text still arrives; one segment per sentence at the depth asked; barge-in stops the
audio at once and the session goes on; bad messages are answered with an `error` naming the field and the session
goes on; the API key is required; a client that leaves frees its slot at once; depth "auto" alone gets its ceiling;
min_depth > max_depth is a 400 on HTTP and an error on the socket; stalls, depths and sessions are in /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from dataclasses import replace

import httpx
import numpy as np
import pytest
import soundfile as sf

from .conftest import serve_real, slow_frames, wait_for

pytest.importorskip("websockets", reason="the realtime client needs websockets (the serve extra)")

from cat_tts.client import SessionError, SpeechSession  # noqa: E402
from cat_tts.generation.policy import FrameClock

FIELDS = dict(min_new_frames=4, max_new_frames=6, seed=1)
TIMEOUT = 120  # seconds any one test's session may take at most on 2 busy cores (a bound, not a measurement)


@pytest.fixture(scope="module")
def server(tiny_dirs, tmp_path_factory):
    with serve_real(tiny_dirs, tmp_path_factory.mktemp("voices"), max_slots=2, max_queue=4) as running:
        yield running


@pytest.fixture
def idle(server):
    """The module's server with nothing in flight, before and after the test (and its settings put back)."""
    config = server.state.config

    def quiet() -> bool:
        health = server.health()
        return health["active_requests"] + health["queued_requests"] + health["open_streams"] == 0

    wait_for(quiet, timeout=60)
    yield server
    server.state.config = config
    server.state.draining = False
    wait_for(quiet, timeout=60)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


async def first_audio(session: SpeechSession) -> int:
    """Waits for the session's first audio; returns its index in `session.received`."""
    async for message in session.messages():
        if message.audio is not None and len(message.audio):
            return session.received.index(message)
    raise AssertionError(f"the session closed without audio: {session.errors}")


def kinds(session: SpeechSession) -> list[str]:
    """What arrived, in order: "audio" or the event's type."""
    return ["audio" if m.audio is not None else m.event["type"] for m in session.received]


# ---------------------------------------------------------------------------------------------------- streaming
def test_audio_begins_before_the_last_text_delta_and_each_sentence_is_a_segment_at_the_depth_asked(idle):
    async def main():
        async with SpeechSession(idle.url, voice="default", depth=5, **FIELDS) as s:
            for word in "Hello there, my".split(" "):
                await s.send_text(word + " ")
            await first_audio(s)  # the rest of the text has not been sent yet
            assert not [e for e in s.segments if "friend" in e["text"]]
            for word in "friend. This is a second sentence. And a third".split(" "):
                await s.send_text(word + " ")
            await s.send_text("one")
            await s.done()
            await s.wait_closed()
        return s

    s = run(main())
    assert s.close_code == 1000 and not s.errors
    assert [e["text"] for e in s.segments] == ["Hello there,", "my friend.", "This is a second sentence.",
                                               "And a third one"]  # fmt: skip
    assert [e["depth"] for e in s.segments] == [5, 5, 5, 5]
    done = s.done_event
    assert done["usage"]["segments"] == 4 and done["usage"]["frames"] >= 16
    samples = s.audio_array().size
    assert done["usage"]["audio_seconds"] == pytest.approx(samples / 24000, abs=1e-3)  # what the client received
    assert done["stall_seconds"] >= 0 and done["ttfa_ms"] > 0  # as the server measured them
    assert s.ttfa_ms > 0 and s.stall_seconds >= 0  # as the client measured them
    seg_done = [m.event for m in s.received if m.event and m.event["type"] == "segment.done"]
    assert [e["segment"] for e in seg_done] == [0, 1, 2, 3]
    assert kinds(s)[-1] == "done"


def test_opus_sessions_send_ogg_pages_that_decode_and_the_format_is_fixed_once_audio_left(idle):
    async def main():
        async with SpeechSession(idle.url, response_format="opus", depth=4, **FIELDS) as s:
            await s.send_text("Opus please. ")
            await first_audio(s)
            await s.update(response_format="pcm")
            await s.wait_for("error", timeout=TIMEOUT)
            await s.send_text("And more.")
            await s.done()
            await s.wait_closed()
        return s

    s = run(main())
    data = b"".join(m.audio for m in s.received if m.audio is not None)
    assert data[:4] == b"OggS"
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == 24000 and samples.size > 0.5 * s.done_event["usage"]["audio_seconds"] * 24000
    assert s.errors == [{"message": "response_format cannot change once audio has been sent",
                         "param": "response_format", "code": "format_fixed"}]  # fmt: skip
    assert len(s.segments) == 2 and s.close_code == 1000


# ---------------------------------------------------------------------------------------------------- barge-in
def test_cancel_stops_the_audio_at_once_and_the_session_keeps_working(idle):
    engine = idle.backend.tts.engine

    async def main():
        async with SpeechSession(idle.url, depth=3, min_new_frames=30, max_new_frames=30, seed=2) as s:
            await s.send_text("A long sentence that will be interrupted. Another one queued behind it. ")
            await first_audio(s)
            await s.cancel()
            cancelled = await s.wait_for("response.cancelled", timeout=TIMEOUT)
            at = len(s.received)
            stats = await asyncio.to_thread(engine.stats)
            await s.update(min_new_frames=2, max_new_frames=3)
            await s.send_text("Back again.")
            await s.done()
            await s.wait_closed()
        return s, cancelled, at, stats

    s, cancelled, at, stats = run(main())
    assert cancelled["segments"] == [0, 1]
    assert stats.active_requests == 0 and stats.queued_requests == 0  # the slots were freed when it was cancelled
    order = kinds(s)
    after = order[order.index("response.cancelled") + 1 :]
    assert after.index("segment.started") < after.index("audio")  # nothing of the cancelled response followed
    assert at <= len(s.received) and s.segments[-1] == {"type": "segment.started", "segment": 2, "text": "Back again.",
                                                        "depth": 3}  # fmt: skip
    assert s.close_code == 1000 and s.done_event["usage"]["segments"] == 1  # the one spoken to the end


def test_cancel_without_text_is_answered_and_done_without_text_closes(idle):
    async def main():
        async with SpeechSession(idle.url) as s:
            await s.cancel()
            await s.wait_for("response.cancelled", timeout=TIMEOUT)
            await s.done()
            await s.wait_closed()
        return s

    s = run(main())
    assert kinds(s) == ["response.cancelled", "done"] and s.close_code == 1000
    assert s.done_event["usage"]["segments"] == 0 and s.done_event["ttfa_ms"] is None


# ---------------------------------------------------------------------------------------------------- bad messages
def test_bad_json_an_unknown_type_and_bad_fields_each_give_an_error_naming_the_field_and_the_session_goes_on(idle):
    async def main():
        async with SpeechSession(idle.url, depth=4, **FIELDS) as s:
            await s.send_raw("{not json")
            await s.send_raw(json.dumps({"type": "speak.now"}))
            await s.send_raw(json.dumps(["text.append"]))
            await s.send_raw(b"\x00\x01")
            await s.update(top_k=-3)
            await s.update(depth="auto", min_depth=9, max_depth=4)
            await s.update(voice="nobody")
            await s.update(input="Hello")
            await s.update(speed=2)
            await s.update(response_format="mp3")
            await s.send_raw(json.dumps({"type": "text.append", "text": 5}))
            await s.send_raw(json.dumps({"type": "text.append", "text": "x" * 5000}))
            await s.send_raw('{"type": "session.update", "session": {"seed": 1' + "0" * 80 + "}}")
            await s.send_raw('{"type": "session.update", "session": {"temperature": NaN}}')
            await s.send_text("Still fine.")
            await s.done()
            await s.wait_closed()
        return s

    s = run(main())
    got = [(e["param"], e["code"]) for e in s.errors]
    assert got == [
        (None, "invalid_json"),
        ("type", "unknown_type"),
        ("type", "invalid_message"),
        (None, "invalid_message"),  # a binary frame
        ("top_k", "invalid_value"),
        ("min_depth", "invalid_value"),
        ("voice", "voice_not_found"),
        ("input", "unknown_parameter"),
        ("speed", "unknown_parameter"),
        ("response_format", "unsupported_format"),
        ("text", "invalid_value"),
        ("text", "invalid_value"),  # longer than the server's input limit
        (None, "invalid_json"),  # an integer of 81 digits
        (None, "invalid_json"),  # NaN
    ]
    assert s.errors[4]["message"].startswith("top_k")
    # none of them changed anything: the segment is spoken at the depth set before them
    assert s.segments == [{"type": "segment.started", "segment": 0, "text": "Still fine.", "depth": 4}]
    assert s.close_code == 1000 and s.done_event["usage"]["segments"] == 1


def test_min_depth_above_max_depth_is_a_400_on_http_and_an_error_event_on_the_socket(idle):
    body = {"input": "Hi.", "response_format": "pcm", "depth": "auto", "min_depth": 9, "max_depth": 4}
    answer = httpx.post(f"{idle.url}/v1/audio/speech", json=body, timeout=60)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "min_depth"

    async def main():
        async with SpeechSession(idle.url, depth="auto", min_depth=9, max_depth=4) as s:
            await s.wait_for("error", timeout=TIMEOUT)
        return s

    s = run(main())
    assert s.errors[0]["param"] == "min_depth" and "max_depth" in s.errors[0]["message"]


def test_text_after_done_is_refused_and_an_unknown_voice_at_the_first_text_names_the_voice(idle):
    async def main():
        async with SpeechSession(idle.url, **FIELDS) as s:
            await s.update(voice={"id": "missing"})
            await s.send_text("Hello.")
            await s.done()
            await s.send_text("More.")
            await s.wait_closed()
        return s

    s = run(main())
    assert [(e["param"], e["code"]) for e in s.errors] == [("voice", "voice_not_found"), ("type", "session_done")]
    assert len(s.segments) == 1  # the default voice spoke: the bad update changed nothing


# ---------------------------------------------------------------------------------------------------- access
def test_the_api_key_is_required_when_set(idle):
    config = idle.state.config
    idle.state.config = replace(config, api_key="secret")

    async def attempt(**kwargs) -> SpeechSession:
        async with SpeechSession(idle.url, **kwargs, **FIELDS) as s:
            with contextlib.suppress(SessionError):
                await s.send_text("Hi.")
                await s.done()
            await s.wait_closed()
        return s

    for kwargs in ({}, {"api_key": "wrong"}, {"api_key": "wrong", "query_key": True}):
        s = run(attempt(**kwargs))
        assert s.refused and s.close_code == 1008 and not s.segments, kwargs
        assert s.errors[0]["code"] == "invalid_api_key"
    for kwargs in ({"api_key": "secret"}, {"api_key": "secret", "query_key": True}):
        s = run(attempt(**kwargs))
        assert s.close_code == 1000 and len(s.segments) == 1, (kwargs, s.errors)
    idle.state.config = config  # /metrics needs the key too
    assert idle.metrics()[("cat_tts_realtime_sessions_total", (("outcome", "refused"),))] >= 3


def test_a_draining_server_refuses_new_sessions_with_try_again_later(idle):
    idle.state.draining = True

    async def main():
        async with SpeechSession(idle.url) as s:
            await s.wait_closed()
        return s

    s = run(main())
    assert s.close_code == 1013 and s.errors[0]["code"] == "shutting_down"


def test_a_client_that_disconnects_frees_its_slot_at_once(idle):
    engine = idle.backend.tts.engine
    before = engine.stats().requests_cancelled

    async def main():
        s = SpeechSession(idle.url, depth=2, min_new_frames=1000, max_new_frames=1000)
        await s.__aenter__()
        await s.send_text("A very long sentence nobody will hear to the end. ")
        await first_audio(s)
        assert (await asyncio.to_thread(engine.stats)).active_requests == 1
        await s.close()  # the client leaves mid-segment

    with slow_frames(idle):  # 1000 frames would take 50 s at least: only a cancel ends it within the wait below
        run(main())
        wait_for(lambda: engine.stats().active_requests == 0, timeout=30)
    assert engine.stats().requests_cancelled == before + 1  # cancelled, not run to its budget
    metrics = idle.metrics()
    assert metrics[("cat_tts_realtime_sessions_total", (("outcome", "disconnected"),))] >= 1


def test_the_server_shutting_down_closes_sessions_with_going_away(idle):
    async def main():
        async with SpeechSession(idle.url, depth=2, min_new_frames=1000, max_new_frames=1000) as s:
            await s.send_text("Talking while the server stops. ")
            await first_audio(s)
            connection = next(iter(idle.state.pumps))
            idle.server._loop.call_soon_threadsafe(connection.cancel)  # what the drain does after its grace
            await s.wait_closed()
        return s

    with slow_frames(idle):
        s = run(main())
    assert s.close_code == 1001 and s.errors[-1]["code"] == "shutting_down"


# ---------------------------------------------------------------------------------------------------- auto depth
def test_auto_depth_alone_gets_its_ceiling(idle):
    async def main(**depth):
        async with SpeechSession(idle.url, **depth, **FIELDS) as s:
            await s.send_text("Just me.")
            await s.done()
            await s.wait_closed()
        return s

    engine = idle.backend.tts.engine
    for depth, expected in (dict(depth="auto", max_depth=20), 20), (dict(depth="auto"), 32), (
            dict(bitrate_kbps="auto", max_depth=12), 12):  # fmt: skip
        engine.readback.clock = FrameClock()  # a machine that measured nothing yet (earlier tests slowed frames)
        assert run(main(**depth)).segments[0]["depth"] == expected
    clock = FrameClock()
    clock.observe(1, 32, 0.200)  # a lone frame measured slower than real time at K = 32, and fast at K = 4
    clock.observe(1, 4, 0.010)
    engine.readback.clock = clock
    assert 4 < run(main(depth="auto")).segments[0]["depth"] < 32


# ---------------------------------------------------------------------------------------------------- metrics
def test_sessions_http_streams_depths_and_stalls_are_in_metrics(idle):
    before = idle.metrics()

    def count(metrics, name, **labels) -> float:
        return metrics.get((name, tuple(sorted(labels.items()))), 0.0)

    body = {"input": "Metrics.", "response_format": "pcm", "depth": 7, "max_new_frames": 4, "min_new_frames": 4}
    assert httpx.post(f"{idle.url}/v1/audio/speech", json=body, timeout=60).status_code == 200

    async def main():
        async with SpeechSession(idle.url, depth=6, **FIELDS) as s:
            await s.send_text("One two. Three four.")
            await s.done()
            await s.wait_closed()

    run(main())
    wait_for(lambda: count(idle.metrics(), "cat_tts_realtime_sessions_total", outcome="completed")
             > count(before, "cat_tts_realtime_sessions_total", outcome="completed"))  # fmt: skip
    after = idle.metrics()
    grew = lambda name, **labels: count(after, name, **labels) - count(before, name, **labels)  # noqa: E731
    assert grew("cat_tts_depth_count", source="http") == 1
    assert grew("cat_tts_depth_sum", source="http") == 7
    assert grew("cat_tts_depth_count", source="websocket") == 2 and grew("cat_tts_depth_sum", source="websocket") == 12
    assert grew("cat_tts_playback_stall_seconds_count", source="http") == 1
    assert grew("cat_tts_playback_stall_seconds_count", source="websocket") == 1
    assert grew("cat_tts_realtime_time_to_first_audio_seconds_count") == 1
    assert count(after, "cat_tts_realtime_active_sessions") == 0


def test_the_live_page_is_served_without_a_key(idle):
    idle.state.config = replace(idle.state.config, api_key="secret")
    page = httpx.get(f"{idle.url}/live", timeout=30)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/v1/audio/speech/stream" in page.text and "api_key" in page.text


def test_many_sessions_at_once_each_get_their_own_audio(idle):
    async def one(i: int) -> SpeechSession:
        async with SpeechSession(idle.url, depth=2 + i, min_new_frames=3, max_new_frames=3, seed=i) as s:
            await s.send_text(f"Session {i} speaks. ")
            await s.done()
            await s.wait_closed()
        return s

    async def main():
        return await asyncio.gather(*(one(i) for i in range(4)))  # more sessions than the server's 2 slots

    sessions = run(main())
    for i, s in enumerate(sessions):
        assert s.close_code == 1000 and [e["depth"] for e in s.segments] == [2 + i]
        assert s.audio_array().size > 0 and np.isfinite(s.audio_array()).all()


def test_a_session_without_text_holds_no_slot(idle):
    async def main():
        async with SpeechSession(idle.url, depth=3) as s:
            await s.update(seed=-1)
            await s.wait_for("error", timeout=TIMEOUT)  # the server has taken the messages before it
            return await asyncio.to_thread(idle.backend.tts.engine.stats), idle.health()["open_streams"]

    stats, open_streams = run(main())
    assert stats.active_requests == 0 and stats.queued_requests == 0 and open_streams == 1
