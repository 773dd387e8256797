"""The realtime session's measures (`PlaybackMeter`): time to first audio per response, and playback stalls that
count only the waits the server caused (not the waits for text the client had not sent). Pure bookkeeping: times are
given, nothing runs."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the server needs the serve extra: pip install 'cat-tts[serve]'")

from cat_tts.inference.live import SegmenterConfig  # noqa: E402
from cat_tts.server.realtime_messages import ClientError, parse_message  # noqa: E402
from cat_tts.server.realtime_meter import PlaybackMeter  # noqa: E402

CONFIG = SegmenterConfig(first_words=3, min_words=2)


def test_a_stream_that_stays_ahead_never_stalls_and_ttfa_runs_from_the_first_text():
    meter = PlaybackMeter(CONFIG)
    meter.text(10.0, "Hello there, ")  # segment 0 complete at 10.0
    assert meter.audio(10.4, 0.08, 0) == pytest.approx(0.4)  # the response's first audio: its TTFA
    assert meter.audio(10.45, 0.32, 0) is None
    meter.text(10.5, "my friend. ")  # segment 1
    meter.audio(10.7, 0.32, 1)
    meter.audio(10.9, 0.32, 1)
    assert meter.stall_seconds == 0.0 and meter.ttfa == [pytest.approx(0.4)]


def test_audio_later_than_playback_is_a_stall_even_across_segments_whose_text_was_ready():
    meter = PlaybackMeter(CONFIG)
    meter.text(0.0, "Hello there, my friend. ")  # segments 0 and 1, both ready at 0.0
    meter.audio(1.0, 0.5, 0)  # plays 1.0 .. 1.5
    meter.audio(1.7, 0.5, 0)  # 0.2 s late
    meter.audio(2.6, 0.5, 1)  # due at 2.2 (after the first wait): 0.4 s late, although a new segment
    assert meter.stall_seconds == pytest.approx(0.6)


def test_a_segment_whose_text_came_after_the_player_ran_dry_starts_a_new_playback():
    meter = PlaybackMeter(CONFIG)
    meter.text(0.0, "Hello there, ")
    meter.audio(0.5, 1.0, 0)  # plays 0.5 .. 1.5
    meter.text(3.0, "my friend. ")  # the client paused: the listener heard silence, not a stall
    meter.audio(3.6, 1.0, 1)
    meter.audio(5.0, 1.0, 1)  # due at 4.6: 0.4 s late
    assert meter.stall_seconds == pytest.approx(0.4)
    assert meter.ttfa == [pytest.approx(0.5)]  # the pause is not a new response


def test_audio_between_a_cancel_and_its_event_is_not_measured_and_the_next_response_has_its_own_ttfa():
    meter = PlaybackMeter(CONFIG)
    meter.text(0.0, "Hello there, and more words ")
    meter.audio(0.3, 0.5, 0)
    meter.cancel()  # barge-in received at ~0.4
    meter.text(0.5, "New answer, ")  # the next response's text (its segment index follows the dropped ones)
    assert meter.audio(5.0, 0.5, 0) is None  # audio of the cancelled response still leaving: ignored
    meter.cancelled()
    assert meter.audio(0.9, 0.5, 1) == pytest.approx(0.4)  # segment 1: "New answer,"
    assert meter.ttfa == [pytest.approx(0.3), pytest.approx(0.4)] and meter.stall_seconds == 0.0


def test_messages_are_json_objects_with_a_type_and_bounded_numbers():
    assert parse_message('{"type": "text.commit"}') == {"type": "text.commit"}
    for text, param in (("[1]", "type"), ('{"text": "x"}', "type"), ('{"type": 3}', "type"), ("{", None),
                        ('{"type": "x", "n": NaN}', None), ('{"type": "x", "n": ' + "9" * 70 + "}", None),
                        ("[" * 100000 + "]" * 100000, None)):  # fmt: skip
        with pytest.raises(ClientError) as err:
            parse_message(text)
        assert err.value.param == param, text[:40]
