"""Realtime speech for agents: text arrives while a language model writes it, audio leaves while it is generated.

A `LiveSession` cuts the incoming text into segments (`TextSegmenter`: the first at a clause boundary or after a few
words, for latency; later ones at sentence boundaries), generates them in order with the same voice and settings
(each with a seed derived from the session's), one after the other: the next segment is submitted when the current
one is generated, so it prefills while the current one's audio plays (generation runs ahead of playback), and a session
holds one engine slot at a time (a second one would make every frame of a loaded engine slower for one segment's
head start). Consecutive segments are joined with a cross-fade. `cancel()` (barge-in) drops the buffered text and
stops the segment being generated at once. Events go out through one callback, from one worker thread, in order: no
audio of a cancelled response follows its `Cancelled` event, and its engine slots are free by then.

Shapes: S samples (24 kHz).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from cat_tts.errors import FieldError, InputError
from cat_tts.generation import EngineClosed, EngineError
from cat_tts.inference.output import Crossfader, cancel_unfinished, stream_pieces
from cat_tts.inference.planning import Segment, derive_seed
from cat_tts.inference.request import SpeechRequest

if TYPE_CHECKING:  # pragma: no cover
    from cat_tts.inference.service import CatTTS

logger = logging.getLogger(__name__)

_CLAUSE_END = re.compile(r"[,;:.!?\u2026\u3002\uff0c\u3001\uff01\uff1f\uff1b\uff1a][\"')\]\u201d\u2019]*(\s|$)")
_SENTENCE_END = re.compile(r"[.!?\u2026][\"')\]\u201d\u2019]*\s|[\u3002\uff01\uff1f]")
_PLACEHOLDER = "."  # the text a session's settings are validated with (every field but the text)


@dataclass(frozen=True)
class SegmenterConfig:
    """How streamed text is cut into segments."""

    first_words: int = 6  # the first segment of a response starts after this many words, even without punctuation
    min_words: int = 2  # ... or at the first clause boundary (, ; : . ! ?) with at least this many words before it
    max_chars: int = 300  # a segment without a sentence end is cut at a word boundary after this many characters

    def __post_init__(self) -> None:
        if not 1 <= self.min_words <= self.first_words:
            raise InputError(f"need 1 <= min_words <= first_words, got {self.min_words}, {self.first_words}")
        if self.max_chars < 10:
            raise InputError(f"max_chars must be >= 10, got {self.max_chars}")


class TextSegmenter:
    """Buffers streamed text and returns the segments ready to speak (pure text logic, no threads)."""

    def __init__(self, config: SegmenterConfig | None = None) -> None:
        self.config = config or SegmenterConfig()
        self.buffer = ""
        self.first = True  # the next segment is the first of a response (cut early, for latency)

    def append(self, text: str) -> list[str]:
        """Adds text; returns the segments now complete."""
        self.buffer += text
        out = []
        while (cut := self._cut()) is not None:
            segment, self.buffer = self.buffer[:cut].strip(), self.buffer[cut:]
            if segment:
                out.append(segment)
                self.first = False
        return out

    def flush(self) -> list[str]:
        """Everything buffered as one segment (even mid-sentence)."""
        segment, self.buffer = self.buffer.strip(), ""
        if segment:
            self.first = False
        return [segment] if segment else []

    def clear(self) -> None:
        """Drops the buffer; the next segment is the first of a new response."""
        self.buffer, self.first = "", True

    def _cut(self) -> int | None:
        text, cfg = self.buffer, self.config
        if self.first:
            for match in _CLAUSE_END.finditer(text):
                if len(text[: match.start()].split()) >= cfg.min_words:
                    return match.end()
            words = list(re.finditer(r"\S+\s", text))  # complete words (a space follows)
            if len(words) >= cfg.first_words:
                return words[cfg.first_words - 1].end()
        else:
            match = _SENTENCE_END.search(text)
            if match is not None:
                return match.end()
        if len(text) > cfg.max_chars:
            space = text.rfind(" ", 0, cfg.max_chars)
            return space + 1 if space > 0 else cfg.max_chars
        return None


# ---------------------------------------------------------------------- events
@dataclass(frozen=True)
class SegmentStarted:
    segment: int  # index in the session, from 0
    text: str
    depth: int  # the depth it is generated at (chosen by the engine for depth "auto")


@dataclass(frozen=True)
class AudioOut:
    segment: int
    audio: np.ndarray  # float32 [S] at the codec's rate


@dataclass(frozen=True)
class SegmentDone:
    segment: int
    frames: int
    audio_seconds: float


@dataclass(frozen=True)
class Cancelled:
    segments: list[int]  # the segments that were stopped or dropped


@dataclass(frozen=True)
class Failed:
    message: str
    param: str | None = None  # the field at fault, for a bad update
    code: str = "generation_failed"


@dataclass(frozen=True)
class Finished:
    usage: dict[str, Any]


LiveEvent = SegmentStarted | AudioOut | SegmentDone | Cancelled | Failed | Finished
_END = object()


@dataclass
class _Job:
    index: int
    text: str
    request: SpeechRequest
    epoch: int  # the response it belongs to (a cancel starts a new one)
    segments: list[Segment] = field(default_factory=list)


class LiveSession:
    """One realtime session over a `CatTTS` (whose engine runs in the background: `tts.start()`).

    Args:
        tts: the service.
        fields: the session's request fields except the text (voice as `reference_audio` codes or a clip, depth or
            depth "auto", sampling, seed, language, ...); `update` changes them for segments not yet started.
        emit: receives every event, from the session's worker thread, in order.
        segmenter: how text is cut into segments.
        first_piece_frames, piece_frames: frames per audio piece (the first small, for latency).

    Raises:
        FieldError: a bad field (the session is not created).
    """

    def __init__(self, tts: CatTTS, fields: dict[str, Any], emit: Callable[[LiveEvent], None],
                 segmenter: SegmenterConfig | None = None, first_piece_frames: int = 1,
                 piece_frames: int = 4) -> None:  # fmt: skip
        self.tts = tts
        self._emit = emit
        self._fields: dict[str, Any] = {}
        self._template = self._validated(fields)
        self._fields = dict(fields)
        self._segmenter = TextSegmenter(segmenter)
        self._pieces = (first_piece_frames, piece_frames)
        self._lock = threading.Condition()
        self._jobs: deque[_Job | object] = deque()
        self._epoch = 0
        self._count = 0  # segments created
        self._cancelled: list[int] = []  # segments stopped by the last cancel, not yet reported
        self._stopping: list[Segment] = []  # their engine requests: `Cancelled` goes out once they have ended
        self._closed = False
        self._current: _Job | None = None  # the job the worker is speaking
        self._usage = dict(segments=0, frames=0, audio_seconds=0.0, input_characters=0)
        self._worker = threading.Thread(target=self._run, name="cat-tts-live", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ commands (any thread)
    def update(self, fields: dict[str, Any]) -> None:
        """Changes request fields for the segments not yet started (raises `FieldError`; nothing changes then)."""
        if "text" in fields:
            raise FieldError("text", "the text arrives with text.append, not in the session's settings")
        merged = {**self._fields, **fields}
        template = self._validated(merged)
        with self._lock:
            self._fields, self._template = merged, template

    def append(self, text: str) -> None:
        """More text; complete segments start (in order) as soon as the worker reaches them."""
        if not isinstance(text, str):
            raise FieldError("text", f"text must be a string, got {type(text).__name__}")
        with self._lock:
            self._usage["input_characters"] += len(text)
            self._queue(self._segmenter.append(text))

    def commit(self) -> None:
        """Speaks what is buffered now, even mid-sentence."""
        with self._lock:
            self._queue(self._segmenter.flush())

    def done(self) -> None:
        """No more text: the rest is spoken, then `Finished` is emitted."""
        with self._lock:
            self._queue(self._segmenter.flush())
            self._jobs.append(_END)
            self._lock.notify_all()

    def cancel(self) -> None:
        """Barge-in: drops the buffered text and the queued segments and stops the one being generated at once;
        `Cancelled` follows the last audio of the response. The session stays open."""
        with self._lock:
            self._segmenter.clear()
            self._epoch += 1
            dropped = [job for job in self._jobs if isinstance(job, _Job)]
            if self._current is not None:
                self._stop(self._current.segments)  # stops at once: the engine frees its slot at the frame's end
            self._jobs = deque(job for job in self._jobs if not isinstance(job, _Job))
            self._cancelled += [job.index for job in dropped]
            for job in dropped:
                self._stop(job.segments)
            self._jobs.appendleft(("cancelled", self._epoch))
            self._lock.notify_all()

    def close(self) -> None:
        """Stops everything (the client left): engine slots are freed at once."""
        with self._lock:
            self._closed = True
            self._epoch += 1
            for job in self._jobs:
                if isinstance(job, _Job):
                    cancel_unfinished(job.segments)
            self._jobs.clear()
            self._lock.notify_all()
        self._worker.join(timeout=5)

    # ------------------------------------------------------------------ internals
    def _validated(self, fields: dict[str, Any]) -> SpeechRequest:
        template = SpeechRequest.from_fields({**fields, "text": _PLACEHOLDER}, self.tts.limits)
        voice = template.reference_audio
        if voice is not None and not hasattr(voice, "dim"):  # a clip: encoded once, not once per segment
            template = template.replace(reference_audio=self.tts.encode_reference(voice))
        return template

    def _queue(self, texts: list[str]) -> None:
        for text in texts:  # called with the lock held
            seed = derive_seed(self._template.generation.seed, segment=self._count)
            request = self._template.replace(text=text, seed=seed)
            self._jobs.append(_Job(self._count, text, request, self._epoch))
            self._count += 1
        self._lock.notify_all()

    def _next(self) -> _Job | object | None:
        with self._lock:
            while not self._jobs and not self._closed:
                self._lock.wait()
            return None if self._closed else self._jobs.popleft()

    def _peek_job(self) -> _Job | None:
        with self._lock:
            return next((j for j in self._jobs if isinstance(j, _Job)), None)

    def _live(self, job: _Job) -> bool:
        return job.epoch == self._epoch and not self._closed

    def _run(self) -> None:
        fader = Crossfader(self.tts.overlap)
        try:
            while (job := self._next()) is not None:
                if job is _END:
                    tail = fader.finish()
                    if tail.size:
                        self._audio_out(self._count - 1, tail)
                    self._emit(Finished(dict(self._usage)))
                    return
                if isinstance(job, tuple):  # ("cancelled", epoch): the audio before it has all been emitted
                    fader = Crossfader(self.tts.overlap)
                    with self._lock:
                        stopped, self._cancelled = self._cancelled, []
                        stopping, self._stopping = self._stopping, []
                    _wait_ended(stopping)  # a frame step at most: when the client hears of it, the slots are free
                    self._emit(Cancelled(sorted(stopped)))
                    continue
                self._speak(job, fader)
                if self._peek_job() is None and self._live(job):  # nothing follows yet: play the tail now
                    tail = fader.finish()
                    if tail.size:
                        self._audio_out(job.index, tail)
                    fader = Crossfader(self.tts.overlap)
        except Exception:  # pragma: no cover - a bug: say so instead of hanging the client
            logger.exception("live session worker failed")
            self._emit(Failed("the session failed; see the server log", code="internal_error"))

    def _audio_out(self, index: int, audio: np.ndarray) -> None:
        with self._lock:
            self._usage["audio_seconds"] += audio.size / self.tts.sample_rate  # what the client receives
        self._emit(AudioOut(index, audio))

    def _submit(self, job: _Job) -> None:
        if not job.segments:
            segments = self.tts.plan(job.request)
            try:
                self.tts.submit(segments, wait=True)
            except BaseException:
                cancel_unfinished(segments)
                raise
            job.segments = segments
            if not self._live(job):  # a cancel or close came while it was being submitted: nobody would hear it
                self._stop(segments)

    def _submit_next(self) -> None:
        """Submits the segment that follows (once this one is generated: it prefills while this one's audio plays);
        an error is reported when its turn comes."""
        following = self._peek_job()
        if following is not None:
            with contextlib.suppress(InputError, EngineClosed):
                self._submit(following)

    def _speak(self, job: _Job, fader: Crossfader) -> None:
        with self._lock:
            self._current = job
        try:
            self._speak_job(job, fader)
        finally:
            with self._lock:
                self._current = None

    def _stopped(self, job: _Job) -> bool:
        """True (and the job cancelled, recorded for the `Cancelled` event) when a cancel or close overtook it."""
        if self._live(job):
            return False
        self._stop(job.segments)
        with self._lock:
            self._cancelled.append(job.index)
        return True

    def _stop(self, segments: list[Segment]) -> None:
        """Cancels the engine requests of `segments` (the next `Cancelled` waits for them to end)."""
        cancel_unfinished(segments)
        with self._lock:
            self._stopping += segments

    def _speak_job(self, job: _Job, fader: Crossfader) -> None:
        if self._stopped(job):
            return
        try:
            self._submit(job)
        except (InputError, EngineClosed) as err:
            self._emit(Failed(str(err), getattr(err, "field", None), "invalid_request"))
            return
        frames, samples, started = 0, 0, False
        try:
            out = fader.start_segment()
            if out.size:
                self._audio_out(job.index, out)
            for segment in job.segments:
                first, every = self._pieces
                prefix = segment.prompt.prefix_codes
                pieces = stream_pieces(self.tts.codec, segment.request, prefix, first, every, batcher=self.tts.decoder)
                for piece in pieces:
                    if self._stopped(job):
                        return
                    if not started:
                        self._emit(SegmentStarted(job.index, job.text, segment.request.depth))
                        started = True
                    out = fader.push(piece)
                    samples += piece.size
                    if out.size:
                        self._audio_out(job.index, out)
                frames += segment.request.num_frames
        except (EngineError, EngineClosed) as err:
            cancel_unfinished(job.segments)
            if not self._stopped(job):
                self._emit(Failed(f"segment {job.index}: {err}"))
            return
        if self._stopped(job):  # cancelled between pieces: its requests ended without an error
            return
        self._submit_next()
        if not started:
            depth = job.segments[0].request.depth if job.segments else 0
            self._emit(SegmentStarted(job.index, job.text, depth))
        seconds = samples / self.tts.sample_rate
        with self._lock:
            self._usage["segments"] += 1
            self._usage["frames"] += frames
        self._emit(SegmentDone(job.index, frames, seconds))


def _wait_ended(segments: list[Segment], timeout: float = 10.0) -> None:
    """Waits until the engine has ended the requests of `segments` (cancelled ones end at the end of the frame step
    running when they were cancelled)."""
    deadline = time.monotonic() + timeout
    for segment in segments:
        while segment.request is not None and not segment.request.done and time.monotonic() < deadline:
            time.sleep(0.002)
