"""A small asyncio client of the server's realtime WebSocket (`/v1/audio/speech/stream`).

    async with SpeechSession("ws://127.0.0.1:8000", voice="default", depth="auto") as s:
        for word in llm_words():
            await s.send_text(word + " ")
        await s.done()
        async for piece in s.audio():      # float32 numpy [S] at 24 kHz (pcm); bytes of Ogg pages (opus)
            play(piece)
    print(s.ttfa_ms, s.stall_seconds, s.done_event)

Audio and events can be read while text is still being sent (run the sender in its own task). Every message the
server sends is kept in arrival order (`messages()`); `audio()` yields only the audio and `events()` only the JSON
events (dicts, `{"type": ...}`), each from the start of the session, independently. All three end when the server
closes the socket (after `done`). The session keeps every message, so memory grows with the audio received (48 kB/s
of pcm): fine for a conversation, not for a day-long stream.

Measured here, from the client's side: `ttfa_ms` (the first `send_text` to the first audio received) and
`stall_seconds` (pcm only: a player that starts at the first audio of each response and plays in real time waits
this long in total for data; `cat_tts.playback.stall_seconds`; text sent later than the audio plays counts too). The
server's own measures come in the `done` event (`done_event["stall_seconds"]`, `done_event["ttfa_ms"]`).

Needs the `websockets` package (in the `serve` extra: pip install 'cat-tts[serve]').

Shapes: S samples.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import numpy as np

from cat_tts.playback import stall_seconds

PATH = "/v1/audio/speech/stream"
SAMPLE_RATE = 24000  # Hz of the server's pcm


class SessionError(RuntimeError):
    """The server refused the session (a wrong key, a server starting or draining) or closed it abnormally."""


@dataclass(frozen=True)
class Message:
    """One message from the server."""

    at: float  # `time.perf_counter()` when it arrived
    event: dict[str, Any] | None = None  # a JSON event ...
    audio: np.ndarray | bytes | None = None  # ... or audio: float32 [S] (pcm) or bytes (opus)


def session_url(url: str, api_key: str | None = None, query_key: bool = False) -> str:
    """The WebSocket URL of a server: `http(s)://host:port` or `ws(s)://...` with or without the path; the key in
    the `api_key` query parameter when `query_key` (as a browser sends it)."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"the server URL must start with http://, https://, ws:// or wss://, got {url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith(PATH):
        path += PATH
    query = parts.query
    if query_key and api_key:
        query = "&".join(q for q in (query, urlencode({"api_key": api_key})) if q)
    return urlunsplit((scheme, parts.netloc, path, query, ""))


class SpeechSession:
    """One realtime session: text in (`send_text`, `commit`, `done`, `cancel`), audio and events out.

    Args:
        url: the server (`http://host:port`) or the WebSocket URL.
        api_key: the server's key, sent as `Authorization: Bearer` (or as `?api_key=` with `query_key`).
        response_format: "pcm" (audio as float32 numpy arrays) or "opus" (audio as bytes of Ogg pages).
        query_key: send the key in the URL instead of a header.
        open_timeout: seconds to connect.
        **fields: session settings by the server's JSON names (`voice`, `depth` (an int or "auto"), `min_depth`,
            `max_depth`, `bitrate_kbps`, `seed`, `max_new_frames`, `language`, ...), sent on entry.

    A session the server refuses (no or a wrong key: close code 1008; starting or draining: 1013) gets one `error`
    event and is closed: `refused` says so, `errors` says why, and sending on it raises `SessionError`.

    Raises (on entry):
        OSError, websockets.InvalidHandshake: the server cannot be reached, or is no WebSocket server.
        ImportError: `websockets` is not installed.
    """

    def __init__(self, url: str, api_key: str | None = None, *, response_format: str = "pcm", query_key: bool = False,
                 open_timeout: float = 30.0, **fields: Any) -> None:  # fmt: skip
        if response_format not in ("pcm", "opus"):
            raise ValueError(f"response_format must be 'pcm' or 'opus', got {response_format!r}")
        self.url = session_url(url, api_key, query_key)
        self.api_key = None if query_key else api_key
        self.response_format = response_format
        self.open_timeout = open_timeout
        self.fields = fields
        self.received: list[Message] = []  # every message, in arrival order
        self.done_event: dict[str, Any] | None = None  # the server's `done` event (usage, its stall and TTFA)
        self.close_code: int | None = None
        self.close_reason: str = ""
        self._socket: Any = None
        self._reader: asyncio.Task | None = None
        self._arrived = asyncio.Event()  # set (and replaced) whenever a message arrives or the socket closes
        self._closed = False
        self._first_text_at: float | None = None
        self._playbacks: list[tuple[list[float], list[float]]] = [([], [])]  # per response: arrivals, durations

    # ------------------------------------------------------------------ connecting
    async def __aenter__(self) -> SpeechSession:
        try:
            from websockets.asyncio.client import connect
        except ImportError as err:  # pragma: no cover - the serve extra has it
            raise ImportError("cat_tts.client needs websockets: pip install 'cat-tts[serve]'") from err
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else None
        self._socket = await connect(self.url, additional_headers=headers, open_timeout=self.open_timeout,
                                     max_size=None)  # fmt: skip
        self._reader = asyncio.create_task(self._read())
        settings = {"response_format": self.response_format, **self.fields}
        try:
            await self.update(**settings)
        except SessionError:  # refused at once: `refused`, `errors` and `close_code` say why
            await self._reader
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the socket (the server stops the session and frees its slots) and waits for the reader."""
        if self._socket is not None:
            await self._socket.close()
        if self._reader is not None:
            await self._reader

    # ------------------------------------------------------------------ sending
    async def update(self, **fields: Any) -> None:
        """Changes session settings (for the segments not yet started); a bad one comes back as an `error` event."""
        await self._send({"type": "session.update", "session": fields})

    async def send_text(self, text: str) -> None:
        """More text (any size, e.g. one LLM token)."""
        if self._first_text_at is None:
            self._first_text_at = time.perf_counter()
        await self._send({"type": "text.append", "text": text})

    async def commit(self) -> None:
        """Speak what is buffered now, even mid-sentence."""
        await self._send({"type": "text.commit"})

    async def done(self) -> None:
        """No more text: the server speaks the rest, sends `done` and closes."""
        await self._send({"type": "text.done"})

    async def cancel(self) -> None:
        """Barge-in: the server drops the buffered text, stops the segment being generated and answers
        `response.cancelled`; the session stays open."""
        await self._send({"type": "response.cancel"})

    async def send_raw(self, data: str | bytes) -> None:
        """Sends a frame as it is (tests of malformed messages)."""
        from websockets.exceptions import ConnectionClosed

        try:
            await self._socket.send(data)
        except ConnectionClosed as err:
            errors = "; ".join(e["message"] for e in self.errors)
            raise SessionError(f"the session is closed ({err.rcvd.code if err.rcvd else 'no close frame'})"
                               + (f": {errors}" if errors else "")) from None  # fmt: skip

    async def _send(self, message: dict[str, Any]) -> None:
        await self.send_raw(json.dumps(message))

    # ------------------------------------------------------------------ receiving
    async def messages(self) -> AsyncIterator[Message]:
        """Every message from the start of the session, in arrival order, until the socket closes."""
        index = 0
        while True:
            while index < len(self.received):
                yield self.received[index]
                index += 1
            if self._closed:
                return
            await self._arrived.wait()

    async def audio(self) -> AsyncIterator[np.ndarray | bytes]:
        """The audio, from the start of the session: float32 numpy `[S]` at 24 kHz (pcm) or bytes (opus)."""
        async for message in self.messages():
            if message.audio is not None:
                yield message.audio

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The JSON events (`segment.started`, `segment.done`, `response.cancelled`, `error`, `done`)."""
        async for message in self.messages():
            if message.event is not None:
                yield message.event

    async def wait_for(self, kind: str, timeout: float | None = None) -> dict[str, Any]:
        """The first event of type `kind` (already received or the next one).

        Raises:
            TimeoutError: none within `timeout` seconds.
            SessionError: the socket closed before one came.
        """

        async def find() -> dict[str, Any]:
            async for event in self.events():
                if event["type"] == kind:
                    return event
            raise SessionError(f"the session closed ({self.close_code} {self.close_reason}) without a {kind!r} event")

        return await asyncio.wait_for(find(), timeout)

    async def wait_closed(self, timeout: float | None = None) -> None:
        """Waits until the server closed the socket."""
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        socket = self._socket
        try:
            async for frame in socket:
                now = time.perf_counter()
                if isinstance(frame, bytes):
                    self._record_audio(now, frame)
                else:
                    event = json.loads(frame)
                    self._record_event(now, event)
                self._wake()
        except ConnectionClosed:
            pass
        finally:
            self.close_code, self.close_reason = socket.close_code, socket.close_reason or ""
            self._closed = True
            self._wake()

    def _wake(self) -> None:
        event, self._arrived = self._arrived, asyncio.Event()
        event.set()

    def _record_audio(self, now: float, frame: bytes) -> None:
        if self.response_format == "pcm":
            audio: np.ndarray | bytes = np.frombuffer(frame, dtype="<i2").astype(np.float32) / 32768.0
            arrivals, durations = self._playbacks[-1]
            arrivals.append(now)
            durations.append(audio.size / SAMPLE_RATE)
        else:
            audio = frame
        self.received.append(Message(now, audio=audio))

    def _record_event(self, now: float, event: dict[str, Any]) -> None:
        self.received.append(Message(now, event=event))
        if event.get("type") == "response.cancelled":
            self._playbacks.append(([], []))  # the player stops; the next response starts anew
        elif event.get("type") == "done":
            self.done_event = event

    # ------------------------------------------------------------------ what was measured
    @property
    def ttfa_ms(self) -> float | None:
        """Milliseconds from the first `send_text` to the first audio received (None before either)."""
        first = next((m.at for m in self.received if m.audio is not None and len(m.audio)), None)
        if first is None or self._first_text_at is None:
            return None
        return (first - self._first_text_at) * 1000.0

    @property
    def stall_seconds(self) -> float | None:
        """Total playback stall of the responses so far (pcm; None for opus, whose durations are not parsed here)."""
        if self.response_format != "pcm":
            return None
        return sum(stall_seconds(arrivals, durations) for arrivals, durations in self._playbacks)

    @property
    def segments(self) -> list[dict[str, Any]]:
        """The `segment.started` events so far."""
        return [m.event for m in self.received if m.event is not None and m.event["type"] == "segment.started"]

    @property
    def errors(self) -> list[dict[str, Any]]:
        """The `error` objects received so far (`message`, `param`, `code`)."""
        return [m.event["error"] for m in self.received if m.event is not None and m.event["type"] == "error"]

    @property
    def refused(self) -> bool:
        """The server closed the session with a policy violation (1008: no or a wrong key) or 1013 (try later)."""
        return self.close_code in (1008, 1013)

    def audio_array(self) -> np.ndarray:
        """Every pcm sample received so far, concatenated (float32 `[S]`)."""
        pieces = [m.audio for m in self.received if isinstance(m.audio, np.ndarray)]
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
