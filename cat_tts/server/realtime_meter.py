"""What a listener of a realtime session hears, measured (`PlaybackMeter`): the time to first audio of each response
and the playback stalls the server caused, from when the client's text arrived and when the audio left. Pure
bookkeeping: the connection (`cat_tts.server.realtime`) feeds it times; the stall of one playback is
`cat_tts.playback.stall_seconds`.
"""

from __future__ import annotations

from cat_tts.inference.live import SegmenterConfig, TextSegmenter
from cat_tts.playback import stall_seconds


class PlaybackMeter:
    """Time to first audio and playback stalls of one session, from when its text arrived and its audio left.

    Fed in the order the session's messages go out (`text` / `cancel` when the client's message was received, with
    that time; `audio` as each piece leaves; `cancelled` at the `response.cancelled` event). A shadow `TextSegmenter`
    (the session's configuration, the same calls) says when each segment's text was complete.

    Args:
        segmenter: the session's segmenter configuration.
    """

    def __init__(self, segmenter: SegmenterConfig) -> None:
        self._text = TextSegmenter(segmenter)
        self._ready: list[float] = []  # when each segment's text was complete (segment index = position)
        self._response_at: float | None = None  # first text of the current response (None: none yet)
        self._answered = False  # the current response's first audio has left
        self._cancelling = 0  # cancels received whose `response.cancelled` has not gone out yet
        self._arrivals: list[float] = []  # the current playback: when each piece left ...
        self._durations: list[float] = []  # ... and its audio seconds
        self._latest = 0.0  # max over the current playback of (sent - audio before it)
        self._played = 0.0  # audio seconds of the current playback
        self._stalls: list[float] = []  # stall seconds of the finished playbacks
        self.ttfa: list[float] = []  # seconds, one per response that got audio

    def text(self, at: float, text: str | None) -> None:
        """Text received at `at` (None: a commit or done, which flushes the buffer)."""
        if text is not None and text.strip() and self._response_at is None:
            self._response_at = at
        segments = self._text.append(text) if text is not None else self._text.flush()
        self._ready += [at] * len(segments)

    def cancel(self) -> None:
        """A cancel was received: the buffered text is dropped; audio until `cancelled` belongs to the old response."""
        self._text.clear()
        self._cancelling += 1
        self._response_at, self._answered = None, False

    def cancelled(self) -> None:
        """The `response.cancelled` event left: the player stopped (barge-in)."""
        self._cancelling = max(self._cancelling - 1, 0)
        self._close()

    def audio(self, at: float, seconds: float, segment: int | None) -> float | None:
        """A piece of `seconds` of audio of `segment` left at `at`; returns the response's TTFA on its first audio."""
        if self._cancelling or seconds <= 0:
            return None
        ready = self._ready[segment] if segment is not None and segment < len(self._ready) else at
        if self._arrivals and ready >= self._latest + self._played:  # the player had played everything: a new start
            self._close()
        if not self._arrivals:
            self._latest = at
        self._latest = max(self._latest, at - self._played)
        self._played += seconds
        self._arrivals.append(at)
        self._durations.append(seconds)
        if self._response_at is not None and not self._answered:
            self._answered = True
            self.ttfa.append(at - self._response_at)
            return self.ttfa[-1]
        return None

    @property
    def stall_seconds(self) -> float:
        """Total stall of every playback so far."""
        return sum(self._stalls) + stall_seconds(self._arrivals, self._durations)

    @property
    def played(self) -> bool:
        """Any audio was metered."""
        return bool(self._stalls or self._arrivals)

    def _close(self) -> None:
        if self._arrivals:
            self._stalls.append(stall_seconds(self._arrivals, self._durations))
        self._arrivals, self._durations, self._played = [], [], 0.0
