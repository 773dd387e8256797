"""WebSocket /v1/audio/speech/stream: realtime speech for agents. Text comes in while a language model writes it,
audio goes out while it is generated, and the user can interrupt (barge-in).

Client messages are JSON text frames:

    {"type": "session.update", "session": {...}}  any field of POST /v1/audio/speech but `input`, by the same JSON
                                                  names (`voice`, `response_format` pcm | opus, `depth` or
                                                  `bitrate_kbps` incl. "auto", `min_depth`, `max_depth`, sampling,
                                                  `seed`, frame limits, `language`, `instructions`,
                                                  `reference_text`, `model`); applies to the segments not yet started
                                                  (`response_format` only before the first audio); null = default
    {"type": "text.append", "text": "..."}        more text, any size up to the server's input limit
    {"type": "text.commit"}                       speak what is buffered now, even mid-sentence
    {"type": "text.done"}                         no more text: the rest is spoken, `done` is sent, the server closes
    {"type": "response.cancel"}                   barge-in: buffered text dropped, the segment being generated stopped

Server messages: binary frames of audio (pcm: s16le, 24 kHz, mono; opus: Ogg Opus pages, one Ogg stream per response:
a cancel ends one, the next audio starts a new, chained one) and JSON events:

    {"type": "segment.started", "segment": i, "text": "...", "depth": K}   K as chosen by the engine for "auto"
    {"type": "segment.done", "segment": i, "frames": n, "audio_seconds": s}
    {"type": "response.cancelled", "segments": [...]}                       no audio of that response follows it
    {"type": "error", "error": {"message", "param", "code"}}               `param`: the JSON field at fault; the
                                                                            session stays usable
    {"type": "done", "usage": {...}, "stall_seconds": s, "ttfa_ms": t}      then the server closes (1000)

The API key is the server's (`Authorization: Bearer KEY`, `X-API-Key`, or an `api_key` query parameter, which is
what a browser can send). A connection without it, or one that arrives while the server starts or drains, is accepted
and answered with one `error` event and a close: 1008 (policy violation) without the key, 1013 (try again later)
while starting or draining. Accepting first lets every client, browsers included, read why.

Each connection is one `LiveSession` (`cat_tts.inference.live`), created at the first text. Its events come from the
session's worker thread: audio is encoded there and everything is handed to the event loop through an asyncio queue
(`loop.call_soon_threadsafe`), so generation never waits for the socket; one task writes the socket in order. A
client that reads too slowly (more than `MAX_QUEUED_BYTES` waiting) is closed with 1008. A client that disconnects
cancels its session at once: its engine slots are freed.

Client messages and session settings are checked in `cat_tts.server.realtime_messages`. Measured per session
(`cat_tts.server.realtime_meter.PlaybackMeter`): the time to first audio (the first text of a response received -> its
first audio sent) and playback stalls: a player that starts at a response's first audio and plays in real time,
waiting whenever the next audio has not left the server yet. Waits for text the client has not sent are not stalls:
a new playback starts at a segment whose text was complete only after the previous audio had all been played.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse

from cat_tts.errors import FieldError
from cat_tts.inference.live import (
    AudioOut,
    Cancelled,
    Failed,
    Finished,
    LiveEvent,
    LiveSession,
    SegmentDone,
    SegmenterConfig,
    SegmentStarted,
)
from cat_tts.server.auth import given_key
from cat_tts.server.backend import Load
from cat_tts.server.errors import APIError
from cat_tts.server.formats import AudioEncoder, make_encoder
from cat_tts.server.live_page import live_page
from cat_tts.server.realtime_messages import ClientError, SessionSettings, client_error, field_label, parse_message
from cat_tts.server.realtime_meter import PlaybackMeter

if TYPE_CHECKING:  # pragma: no cover
    from cat_tts.inference import CatTTS
    from cat_tts.server.app import ServerState

logger = logging.getLogger(__name__)

PATH = "/v1/audio/speech/stream"
SEGMENTER = SegmenterConfig()  # how streamed text is cut into segments (the first after a clause or a few words)
# Audio leaves frame by frame (HTTP streams: 4-frame pieces): a player that starts at a 1-frame first piece never waits
# while frames take under 80 ms; with n-frame pieces it waits about n frame times less 80 ms at the start.
FIRST_PIECE_FRAMES = 1
PIECE_FRAMES = 1
MAX_QUEUED_BYTES = 32 * 1024 * 1024  # audio waiting for a client that does not read: beyond, the session is closed
CLOSE_TIMEOUT_S = 2.0  # closing the socket of a client that does not read gives up after this long

# WebSocket close codes (RFC 6455)
NORMAL = 1000
GOING_AWAY = 1001  # the server shuts down
POLICY_VIOLATION = 1008  # no or a wrong API key; a client that does not read its audio
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013  # starting or draining

router = APIRouter()


@router.get("/live", include_in_schema=False)
async def live() -> HTMLResponse:
    """A page that speaks text as it is typed, through this WebSocket (no key needed to load it; it asks for one)."""
    return HTMLResponse(live_page(PATH))


@router.websocket(PATH)
async def speech_stream(websocket: WebSocket) -> None:
    state: ServerState = websocket.app.state.cat
    await websocket.accept()
    try:
        _check_key(websocket, state.config.api_key)
        state.check_serving()
        tts = _pipeline(state.backend)
    except APIError as err:
        state.metrics.sessions.labels("refused").inc()
        code = {401: POLICY_VIOLATION, 503: TRY_AGAIN_LATER}.get(err.status, INTERNAL_ERROR)
        event = {"type": "error", "error": {"message": err.message, "param": err.param, "code": err.code}}
        with contextlib.suppress(Exception):  # the client may be gone already
            await websocket.send_text(json.dumps(event))
            await websocket.close(code, reason=err.message[:120])
        return
    await RealtimeConnection(state, websocket, tts).run()


def _check_key(websocket: WebSocket, key: str | None) -> None:
    if key is None:
        return
    given = given_key(websocket) or websocket.query_params.get("api_key", "")  # headers, then the browser's way
    if not hmac.compare_digest(given.encode("utf-8"), key.encode("utf-8")):
        message = "missing API key (send Authorization: Bearer KEY, or ?api_key=KEY)" if not given else "wrong API key"
        raise APIError(401, message, code="invalid_api_key")


def _pipeline(backend: Any) -> CatTTS:
    """The `CatTTS` a session runs on: the backend's, or the least-loaded one of a routed backend's."""
    tts = getattr(backend, "tts", None)
    if tts is not None:
        return tts
    backends = getattr(backend, "backends", None)
    if backends:

        def busy(b: Any) -> float:
            load = sum(b.loads(), Load())
            return (load.active_requests + load.queued_requests) / max(load.max_slots, 1)

        return _pipeline(min(backends, key=busy))
    raise APIError(501, "this server's backend does not run realtime sessions (no local pipeline)", code="unsupported")


# ---------------------------------------------------------------------------------------------------- a connection
@dataclass(frozen=True)
class _Audio:
    data: bytes  # encoded bytes to send (may be empty: the encoder buffers)
    seconds: float  # audio seconds this piece carries (0 for an encoder's flush)
    segment: int | None


@dataclass(frozen=True)
class _Received:
    """A client message, in the outgoing queue so the meter sees it in order with the audio."""

    at: float
    kind: str  # "text" | "flush" | "cancel"
    text: str | None = None


_SHUTDOWN = object()  # the server shuts down: close the socket (1001)


class RealtimeConnection:
    """One WebSocket and its `LiveSession`.

    Args:
        state: the server's state (settings, voices, metrics, the streams in flight).
        websocket: the accepted socket.
        tts: the pipeline the session runs on.
    """

    def __init__(self, state: ServerState, websocket: WebSocket, tts: CatTTS) -> None:
        self.state = state
        self.websocket = websocket
        self.tts = tts
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()  # what goes out, in order (and the client's marks for the meter)
        self.settings = SessionSettings(state)
        self.session: LiveSession | None = None
        self.meter = PlaybackMeter(SEGMENTER)
        self.outcome = "disconnected"  # completed | disconnected | shutdown | slow_client | error
        self.audio_seconds = 0.0
        self._format = "pcm"
        self._encoder: AudioEncoder | None = None  # used by the session's worker thread only (created at its audio)
        self._format_lock = threading.Lock()  # the format is fixed once the first audio was encoded
        self._audio_started = False
        self._done = False  # text.done received
        self._queued_bytes = 0
        self._group: anyio.abc.TaskGroup | None = None

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        state = self.state
        state.pumps.add(self)  # drained and cancelled with the HTTP streams on shutdown
        state.metrics.sessions_active.inc()
        try:
            async with anyio.create_task_group() as group:
                self._group = group

                async def send_all() -> None:
                    self.outcome = await self._send_loop()
                    group.cancel_scope.cancel()

                group.start_soon(send_all)
                await self._receive_loop()
                group.cancel_scope.cancel()
        except Exception:  # a bug: log it, free the slots, close the socket
            logger.exception("realtime session failed")
            self.outcome = "error"
            await self._close_socket(INTERNAL_ERROR, "internal error (logged on the server)")
        finally:
            state.pumps.discard(self)
            state.metrics.sessions_active.dec()
            with anyio.CancelScope(shield=True):
                if self.outcome == "slow_client":
                    await self._close_socket(POLICY_VIOLATION, "the client does not read its audio")
                await self._close_session()
            self._record()

    def cancel(self) -> None:
        """The server shuts down: the socket is closed with 1001 (called on the event loop's thread)."""
        self.queue.put_nowait(_SHUTDOWN)

    async def _close_socket(self, code: int, reason: str) -> None:
        with anyio.move_on_after(CLOSE_TIMEOUT_S), contextlib.suppress(Exception):  # the client may be gone or stuck
            await self.websocket.close(code, reason=reason)

    async def _close_session(self) -> None:
        session = self.session
        if session is not None:
            session.cancel()  # frees the engine slots now (close() alone waits for the worker's next piece)
            await anyio.to_thread.run_sync(session.close)

    def _record(self) -> None:
        metrics = self.state.metrics
        metrics.sessions.labels(self.outcome).inc()
        metrics.audio_seconds.inc(self.audio_seconds)
        if self.meter.played:
            metrics.stall.labels("websocket").observe(self.meter.stall_seconds)

    # ------------------------------------------------------------------ the session's thread -> the loop
    def _emit(self, event: LiveEvent) -> None:
        """The session's events (its worker thread): audio encoded here, everything handed to the loop in order."""
        if isinstance(event, AudioOut):
            self._post(_Audio(self._encode(event.audio), event.audio.size / self.tts.sample_rate, event.segment))
            return
        if isinstance(event, (Cancelled, Finished)):  # the response's Ogg stream ends before the event
            tail = self._finish_encoder()
            if tail:
                self._post(_Audio(tail, 0.0, None))
        self._post(event)

    def _encode(self, audio) -> bytes:
        with self._format_lock:
            self._audio_started = True
            if self._encoder is None:
                self._encoder = make_encoder(self._format, self.tts.sample_rate)
            encoder = self._encoder
        return encoder.encode(audio)

    def _finish_encoder(self) -> bytes:
        with self._format_lock:
            encoder, self._encoder = self._encoder, None
        return encoder.finish() if encoder is not None else b""

    def _post(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self._enqueue, item)
        except RuntimeError:  # the loop is closed: nobody listens any more
            pass

    def _enqueue(self, item: Any) -> None:
        if isinstance(item, _Audio):
            self._queued_bytes += len(item.data)
            if self._queued_bytes > MAX_QUEUED_BYTES and self.outcome != "slow_client":
                logger.warning("a realtime client reads too slowly (%d bytes waiting): closing it", self._queued_bytes)
                self.outcome = "slow_client"
                if self._group is not None:
                    self._group.cancel_scope.cancel()  # the writer may be stuck in a send: stop it, then close
        self.queue.put_nowait(item)

    # ------------------------------------------------------------------ sending (one task writes the socket)
    async def _send_loop(self) -> str:
        try:
            return await self._send_items()
        except (WebSocketDisconnect, OSError):  # the client left while we wrote
            return "disconnected"

    async def _send_items(self) -> str:
        ws, metrics = self.websocket, self.state.metrics
        while True:
            item = await self.queue.get()
            if isinstance(item, _Audio):
                self._queued_bytes -= len(item.data)
                if item.data:
                    await ws.send_bytes(item.data)
                self.audio_seconds += item.seconds
                ttfa = self.meter.audio(time.monotonic(), item.seconds, item.segment)
                if ttfa is not None:
                    metrics.session_ttfa.observe(ttfa)
            elif isinstance(item, _Received):
                if item.kind == "cancel":
                    self.meter.cancel()
                else:
                    self.meter.text(item.at, item.text)
            elif isinstance(item, SegmentStarted):
                metrics.depth.labels("websocket").observe(item.depth)
                await self._send({"type": "segment.started", "segment": item.segment, "text": item.text,
                                  "depth": item.depth})  # fmt: skip
            elif isinstance(item, SegmentDone):
                await self._send({"type": "segment.done", "segment": item.segment, "frames": item.frames,
                                  "audio_seconds": round(item.audio_seconds, 4)})  # fmt: skip
            elif isinstance(item, Cancelled):
                self.meter.cancelled()
                metrics.session_cancels.inc()
                await self._send({"type": "response.cancelled", "segments": item.segments})
            elif isinstance(item, Failed):
                await self._send_error(ClientError(item.message, field_label(item.param), item.code))
            elif isinstance(item, ClientError):
                await self._send_error(item)
            elif isinstance(item, Finished):
                await self._send(self._done_event(item.usage))
                await ws.close(NORMAL)
                return "completed"
            elif item is _SHUTDOWN:
                await self._send_error(ClientError("the server is shutting down", None, "shutting_down"))
                await ws.close(GOING_AWAY, reason="the server is shutting down")
                return "shutdown"

    async def _send(self, event: dict[str, Any]) -> None:
        await self.websocket.send_text(json.dumps(event, separators=(",", ":")))

    async def _send_error(self, error: ClientError) -> None:
        self.state.metrics.session_errors.labels(error.code).inc()
        await self._send(error.event())

    def _done_event(self, usage: dict[str, Any]) -> dict[str, Any]:
        ttfa = self.meter.ttfa[0] if self.meter.ttfa else None
        stall = self.meter.stall_seconds
        return {"type": "done", "usage": {**usage, "audio_seconds": round(usage.get("audio_seconds", 0.0), 4)},
                "stall_seconds": round(stall, 4) if math.isfinite(stall) else None,
                "ttfa_ms": None if ttfa is None else round(ttfa * 1000.0, 1)}  # fmt: skip

    # ------------------------------------------------------------------ receiving
    async def _receive_loop(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                if message.get("text") is None:
                    raise ClientError("send JSON text frames; binary frames are not accepted", None, "invalid_message")
                self._handle(parse_message(message["text"]))
            except ClientError as err:
                self.queue.put_nowait(err)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        handlers = {
            "session.update": self._update,
            "text.append": self._append,
            "text.commit": self._commit,
            "text.done": self._text_done,
            "response.cancel": self._cancel,
        }
        handler = handlers.get(kind)
        if handler is None:
            raise ClientError(f"unknown message type {kind[:80]!r}; known: {', '.join(handlers)}", "type",
                              "unknown_type")  # fmt: skip
        handler(message)

    def _update(self, message: dict[str, Any]) -> None:
        values, fields, fmt = self.settings.check(message.get("session"))
        with self._format_lock:
            if fmt != self._format:
                if self._audio_started:
                    raise ClientError("response_format cannot change once audio has been sent", "response_format",
                                      "format_fixed")  # fmt: skip
                self._format = fmt
        if self.session is not None:
            try:
                self.session.update(fields)
            except FieldError as err:  # checked above already: the pipeline's own limits
                raise client_error(err) from None
        self.settings.commit(values)

    def _live(self) -> LiveSession:
        if self.session is None:
            try:
                pieces = dict(first_piece_frames=FIRST_PIECE_FRAMES, piece_frames=PIECE_FRAMES)
                self.session = self.tts.live(self.settings.fields(), self._emit, segmenter=SEGMENTER, **pieces)
            except FieldError as err:
                raise client_error(err) from None
        return self.session

    def _check_open(self) -> None:
        if self._done:
            raise ClientError("text.done was sent: this session takes no more text", "type", "session_done")

    def _append(self, message: dict[str, Any]) -> None:
        text = message.get("text")
        if not isinstance(text, str):
            raise ClientError("text.append needs `text`, a string", "text")
        limit = self.state.limits.max_text_chars
        if limit is not None and len(text) > limit:
            raise ClientError(f"text is {len(text)} characters long; send at most {limit} per message", "text")
        self._check_open()
        at = time.monotonic()
        self._live().append(text)
        self.queue.put_nowait(_Received(at, "text", text))

    def _commit(self, message: dict[str, Any]) -> None:
        self._check_open()
        if self.session is not None:
            at = time.monotonic()
            self.session.commit()
            self.queue.put_nowait(_Received(at, "flush"))

    def _text_done(self, message: dict[str, Any]) -> None:
        self._check_open()
        self._done = True
        if self.session is None:  # no text at all: nothing to speak
            self.queue.put_nowait(Finished(dict(segments=0, frames=0, audio_seconds=0.0, input_characters=0)))
            return
        at = time.monotonic()
        self.session.done()
        self.queue.put_nowait(_Received(at, "flush"))

    def _cancel(self, message: dict[str, Any]) -> None:
        self.queue.put_nowait(_Received(time.monotonic(), "cancel"))
        if self.session is None:
            self.queue.put_nowait(Cancelled([]))
            return
        self.session.cancel()
