"""Realtime sessions: text cut into segments as it streams in, audio out while generated, barge-in, auto depth."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import soundfile as sf

from cat_tts.errors import FieldError
from cat_tts.generation.policy import FrameClock
from cat_tts.inference.live import (
    AudioOut,
    Cancelled,
    Finished,
    SegmentDone,
    SegmenterConfig,
    SegmentStarted,
    TextSegmenter,
)

SR = 24000


def test_the_first_segment_starts_at_a_clause_boundary_or_after_a_few_words():
    seg = TextSegmenter(SegmenterConfig(first_words=5, min_words=2))
    assert seg.append("Well") == [] and seg.append(", ") == []  # one word before the comma: too short
    assert seg.append("I think so, and ") == ["Well, I think so,"]
    assert seg.append("then we go. Next") == ["and then we go."]  # later: sentence ends
    seg = TextSegmenter(SegmenterConfig(first_words=5, min_words=2))
    assert seg.append("one two three four") == []
    assert seg.append(" five six") == ["one two three four five"]  # five complete words, no punctuation yet
    assert seg.buffer == "six"


def test_later_segments_wait_for_a_sentence_end_and_commit_flushes_mid_sentence():
    seg = TextSegmenter(SegmenterConfig(first_words=2, min_words=1))
    assert seg.append("Hi there, ") == ["Hi there,"]
    assert seg.append("version 3.14 is out") == []  # no sentence end: "3.14" has no space after the dot
    assert seg.append("! And") == ["version 3.14 is out!"]
    assert seg.flush() == ["And"] and seg.buffer == ""
    assert seg.append("你好。世界") == ["你好。"]  # a CJK full stop needs no space
    seg.clear()
    assert seg.first and seg.append("A long first clause,") == ["A long first clause,"]  # a new response


def test_a_segment_without_punctuation_is_cut_at_a_word_boundary():
    seg = TextSegmenter(SegmenterConfig(first_words=1, min_words=1, max_chars=20))
    seg.append("x, ")
    out = seg.append("aaaa bbbb cccc dddd eeee ffff")
    assert out == ["aaaa bbbb cccc dddd"] and seg.buffer == "eeee ffff"


@pytest.fixture(scope="module")
def served(tiny_tts):
    tiny_tts.start()
    yield tiny_tts
    tiny_tts.engine.stop()


@pytest.fixture()
def voice(tiny_tts, tmp_path):
    path = tmp_path / "ref.wav"
    t = np.arange(int(1.2 * SR)) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SR)
    return tiny_tts.encode_reference(path)


class Recorder:
    def __init__(self):
        self.events, self.times = [], []
        self.finished = threading.Event()
        self.cancelled = threading.Event()

    def __call__(self, event):
        self.events.append(event)
        self.times.append(time.monotonic())
        if isinstance(event, Finished):
            self.finished.set()
        if isinstance(event, Cancelled):
            self.cancelled.set()

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]


FIELDS = dict(min_new_frames=4, max_new_frames=6, seed=1)


def test_audio_starts_before_the_text_ends_and_each_sentence_is_a_segment(served, voice):
    rec = Recorder()
    session = served.live(dict(reference_audio=voice, depth=5, **FIELDS), rec)
    for word in "Hello there, my".split(" "):
        session.append(word + " ")
    deadline = time.monotonic() + 60
    while not rec.of(AudioOut) and time.monotonic() < deadline:  # the rest of the text has not been sent yet
        time.sleep(0.01)
    assert rec.of(AudioOut), "no audio while the text was still arriving"
    for word in "friend. This is a second sentence. And a third".split(" "):
        session.append(word + " ")
    session.append("one")
    assert not rec.finished.is_set()
    session.done()
    assert rec.finished.wait(120)
    started = rec.of(SegmentStarted)
    assert [s.text for s in started] == ["Hello there,", "my friend.", "This is a second sentence.", "And a third one"]
    assert all(s.depth == 5 for s in started) and len(rec.of(SegmentDone)) == 4
    usage = rec.of(Finished)[0].usage
    assert usage["segments"] == 4 and usage["frames"] >= 16
    assert usage["audio_seconds"] == pytest.approx(sum(e.audio.size for e in rec.of(AudioOut)) / SR, abs=0.06)
    session.close()


def test_cancel_stops_the_audio_at_once_and_the_session_keeps_working(served, voice):
    rec = Recorder()
    session = served.live(dict(reference_audio=voice, depth=3, min_new_frames=30, max_new_frames=30, seed=2), rec)
    session.append("A long sentence that will be interrupted. Another one queued behind it. ")
    deadline = time.monotonic() + 60
    while not rec.of(AudioOut) and time.monotonic() < deadline:
        time.sleep(0.01)
    session.cancel()
    assert rec.cancelled.wait(60)
    at = rec.events.index(rec.of(Cancelled)[0])
    assert not [e for e in rec.events[at:] if isinstance(e, AudioOut)]  # no audio after the cancel event
    assert rec.of(Cancelled)[0].segments == [0, 1]
    stats = served.engine.stats()
    assert stats.active_requests == 0 and stats.queued_requests == 0  # the slots were freed
    session.update(dict(min_new_frames=2, max_new_frames=3))
    session.append("Back again.")
    session.done()
    assert rec.finished.wait(60)
    assert rec.of(SegmentStarted)[-1].text == "Back again." and rec.of(SegmentDone)[-1].segment == 2
    session.close()


def test_a_bad_update_is_refused_naming_the_field_and_changes_nothing(served, voice):
    rec = Recorder()
    session = served.live(dict(reference_audio=voice, depth=4, **FIELDS), rec)
    with pytest.raises(FieldError) as err:
        session.update(dict(top_k=-3))
    assert err.value.field == "top_k"
    with pytest.raises(FieldError) as err:
        session.update(dict(min_depth=9, max_depth=4, depth="auto"))
    assert err.value.field == "min_depth"
    session.append("Still fine.")
    session.done()
    assert rec.finished.wait(60) and rec.of(SegmentStarted)[0].depth == 4
    session.close()


def test_auto_depth_alone_gets_its_ceiling(served, voice):
    served.engine.readback.clock = FrameClock()  # a machine that measured nothing yet (the bucket is fixed here)
    rec = Recorder()
    session = served.live(dict(reference_audio=voice, depth="auto", max_depth=20, **FIELDS), rec)
    session.append("Just me.")
    session.done()
    assert rec.finished.wait(60)
    assert rec.of(SegmentStarted)[0].depth == 20
    session.close()


def test_a_session_holds_one_engine_slot_at_a_time(served, voice):
    """Segments are generated in order: the next one is submitted when the current one is generated (it prefills while
    the audio plays), so a loaded engine never runs two of one session's segments in the same frames."""
    rec, seen, stop = Recorder(), set(), threading.Event()

    def watch():
        while not stop.is_set():
            stats = served.engine.stats()
            seen.add(stats.active_requests + stats.queued_requests)
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    session = served.live(dict(reference_audio=voice, depth=8, min_new_frames=12, max_new_frames=12, seed=3), rec)
    session.append("First sentence here. Second sentence here. Third sentence here. Fourth one. ")
    session.done()
    try:
        assert rec.finished.wait(120)
    finally:
        stop.set()
        watcher.join()
    assert len(rec.of(SegmentDone)) == 4 and max(seen) == 1 and 1 in seen
    session.close()


def test_a_cancel_while_the_next_segment_is_being_submitted_frees_its_slot(served, voice, monkeypatch):
    rec, submitted = Recorder(), []
    session = served.live(dict(reference_audio=voice, depth=3, min_new_frames=4, max_new_frames=4, seed=4), rec)
    submit = served.submit

    def submit_then_barge_in(segments, wait=True):
        submit(segments, wait=wait)
        submitted.append(segments)
        if len(submitted) == 2:  # the following segment, submitted as the first one ends: the user interrupts now
            session.cancel()

    monkeypatch.setattr(served, "submit", submit_then_barge_in)
    session.append("First one here. ")
    session.update(dict(min_new_frames=1000, max_new_frames=1000))  # an unheard second segment would run for long
    session.append("Second one here. ")
    assert rec.cancelled.wait(60) and len(submitted) == 2
    deadline = time.monotonic() + 2
    while served.engine.stats().active_requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert served.engine.stats().active_requests == 0  # not left generating 1000 frames nobody hears
    assert submitted[1][0].request.state.name == "CANCELLED"
    session.close()
