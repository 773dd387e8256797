"""POST /v1/audio/speech: one JSON body -> one `SpeechRequest` -> audio, streamed as it is generated.

The request is validated completely (server fields, voice, every request field) before anything runs; then the first
audio piece is awaited before the response headers go out, so an input the pipeline refuses, a full queue or a
closing engine are still a 4xx / 429 / 503, and the depth the engine chose (depth "auto" included) goes out in
`X-CAT-TTS-Depth`. After that:

* pcm, wav, mp3, opus: bytes are sent as they are produced (chunked transfer). A stream the server cuts short
  (the request's time limit, an engine failure, a shutdown past its grace) ends without the chunked encoding's last
  chunk, so the client's read raises instead of looking like a finished file; counted in /metrics.
* flac: sent complete, with its length (FLAC's header needs the totals; see `cat_tts.server.formats`).
* `stream_format: "sse"`: `speech.audio.delta` events (base64 of the format's bytes), then `speech.audio.done` with
  usage; a stream cut short ends with an `error` event instead.

A client that disconnects cancels its generation at once, queued or running (its engine slot is freed).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from cat_tts.codec.config import bitrate_kbps
from cat_tts.errors import FieldError, InputError
from cat_tts.generation import EngineClosed, QueueFull
from cat_tts.playback import stall_seconds
from cat_tts.server.auth import require_key
from cat_tts.server.errors import CLIENT_GONE, APIError, field_error, shutting_down
from cat_tts.server.fields import SPEECH_LABELS, SpeechCall, parse_speech
from cat_tts.server.formats import make_encoder
from cat_tts.server.limits import read_json
from cat_tts.server.streaming import AudioPump, Chunk

if TYPE_CHECKING:  # pragma: no cover
    from cat_tts.server.app import ServerState

logger = logging.getLogger(__name__)

DISCONNECT_POLL_S = 0.1  # how often a request waiting for audio checks that its client is still there

router = APIRouter(dependencies=[Depends(require_key)])


class _ClientGone(Exception):
    """The client disconnected before the response started."""


class _TimeLimit(Exception):
    """The request hit the server's time limit."""


@dataclass
class _Stream:
    """One speech response in flight: what the body sends and how it ended."""

    state: ServerState
    call: SpeechCall
    pump: AudioPump
    arrived: float  # monotonic time the request arrived
    deadline: float  # monotonic time limit
    outcome: str = "cancelled"  # completed | cancelled (client gone) | rejected (4xx/429/503) | timeout | error |
    # shutdown
    truncated: bool = False  # the server cut the stream short after its headers left
    sent_at: list[float] = field(default_factory=list)  # when each chunk with audio left (monotonic) ...
    sent_seconds: list[float] = field(default_factory=list)  # ... and the audio seconds it carried

    def sent(self, chunk: Chunk) -> None:
        """Records a chunk that has just been written to the client (for the playback-stall measure)."""
        if chunk.samples:
            self.sent_at.append(time.monotonic())
            self.sent_seconds.append(chunk.samples / self.state.backend.sample_rate)

    def end(self) -> None:
        """Cancels the generation if it still runs and records the outcome (once)."""
        pump, metrics = self.pump, self.state.metrics
        pump.cancel()
        pump.close_reader()
        if pump not in self.state.pumps:
            return
        self.state.pumps.discard(pump)
        metrics.streams.labels(self.outcome).inc()
        if self.truncated:
            metrics.truncated.labels(self.outcome).inc()
        seconds = pump.samples / self.state.backend.sample_rate
        metrics.audio_seconds.inc(seconds)
        if self.outcome == "completed" and seconds > 0 and pump.finished_at is not None:
            metrics.rtf.observe((pump.finished_at - pump.started_at) / seconds)
        if self.outcome == "completed" and self.sent_at:
            metrics.stall.labels("http").observe(stall_seconds(self.sent_at, self.sent_seconds))


@router.post("/v1/audio/speech")
async def speech(request: Request) -> Response:
    state: ServerState = request.app.state.cat
    arrived = time.monotonic()
    state.check_serving()
    call = parse_speech(await read_json(request), state.voices, state.limits, state.config)
    encoder = make_encoder(call.response_format, state.backend.sample_rate)
    pump = AudioPump(state.backend.stream(call.request), encoder, asyncio.get_running_loop()).start()
    state.pumps.add(pump)
    stream = _Stream(state, call, pump, arrived, arrived + state.config.request_timeout)
    whole = not encoder.streamed and not call.sse  # flac: sent complete, with its length
    try:
        first = await _wait(stream, request, until_final=whole)
        if first.cancelled:  # shutdown cancelled it while it waited
            raise shutting_down(state.config.retry_after_s)
    except BaseException as err:
        stream.outcome = _outcome_before_headers(err)
        stream.end()
        if isinstance(err, _ClientGone):
            return Response(status_code=CLIENT_GONE)  # nobody reads it; counted as "client closed request"
        if isinstance(err, _TimeLimit):
            raise APIError(
                504, "the request hit the server's time limit before its first audio", code="timeout"
            ) from None
        if isinstance(err, FieldError):
            raise field_error(err, SPEECH_LABELS) from None
        raise
    if pump.first_audio_at is not None:
        state.metrics.ttfa.observe(pump.first_audio_at - arrived)
    if pump.depth is not None:
        state.metrics.depth.labels("http").observe(pump.depth)
    headers = _headers(stream)
    if whole:
        stream.outcome = "completed"
        stream.end()
        return Response(first.data, media_type=encoder.media_type, headers=headers)
    if call.sse:
        headers["X-Accel-Buffering"] = "no"  # nginx: do not buffer the events
        return _SpeechResponse(_sse_events(stream, first), stream, "text/event-stream", headers)
    return _SpeechResponse(_audio_bytes(stream, first), stream, encoder.media_type, headers)


def _outcome_before_headers(err: BaseException) -> str:
    if isinstance(err, _ClientGone):
        return "cancelled"
    if isinstance(err, _TimeLimit):
        return "timeout"
    return "rejected" if isinstance(err, (InputError, QueueFull, EngineClosed, APIError)) else "error"


def _headers(stream: _Stream) -> dict[str, str]:
    depth = stream.pump.depth
    headers = {
        "X-CAT-TTS-Sample-Rate": str(stream.state.backend.sample_rate),
        "X-CAT-TTS-Voice": stream.call.voice,
        "X-CAT-TTS-Instance": stream.state.instance,
        "Cache-Control": "no-cache",
    }
    if depth is not None:
        headers.update({"X-CAT-TTS-Depth": str(depth), "X-CAT-TTS-Bitrate-Kbps": f"{bitrate_kbps(depth):g}"})
    return headers


async def _wait(stream: _Stream, request: Request, until_final: bool = False) -> Chunk:
    """The next chunk (or the final one), watching the client (before the response starts) and the time limit."""
    while True:
        remaining = stream.deadline - time.monotonic()
        if remaining <= 0:
            raise _TimeLimit
        try:
            chunk = await stream.pump.get(min(DISCONNECT_POLL_S, remaining))
        except TimeoutError:
            if await request.is_disconnected():
                raise _ClientGone from None
            continue
        if not until_final or chunk.final or chunk.cancelled:
            return chunk


async def _chunks(stream: _Stream, first: Chunk) -> AsyncIterator[Chunk]:
    """The chunks after the headers; ends after the final one, or sets the outcome of a stream cut short."""
    chunk = first
    while True:
        yield chunk
        if chunk.final:
            stream.outcome = "completed"
            return
        if chunk.cancelled:  # only the server cancels through the pump: a shutdown past its grace
            stream.outcome = "shutdown"
            return
        try:
            chunk = await stream.pump.get(max(stream.deadline - time.monotonic(), 0.0))
        except TimeoutError:
            stream.outcome = "timeout"
            return
        except EngineClosed:
            stream.outcome = "shutdown"
            return
        except Exception as err:
            stream.outcome = "error"
            logger.warning("a speech stream failed after %.2f s of audio: %s", stream.pump.samples /
                           stream.state.backend.sample_rate, err)  # fmt: skip
            return


async def _audio_bytes(stream: _Stream, first: Chunk) -> AsyncIterator[bytes]:
    try:
        async for chunk in _chunks(stream, first):
            if chunk.data:
                yield chunk.data  # resumed once the server wrote it
            stream.sent(chunk)
        if stream.outcome != "completed":
            stream.truncated = True
            logger.warning("speech stream cut short (%s): ending it without its last chunk", stream.outcome)
    finally:
        stream.end()


async def _sse_events(stream: _Stream, first: Chunk) -> AsyncIterator[bytes]:
    try:
        async for chunk in _chunks(stream, first):
            if chunk.data:
                yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(chunk.data).decode()})
            stream.sent(chunk)
        state, pump = stream.state, stream.pump
        if stream.outcome == "completed":
            seconds = pump.samples / state.backend.sample_rate
            frames = int(round(seconds * state.limits.frame_rate))
            chars = len(stream.call.request.text)
            depth = pump.depth
            yield _event(
                {
                    "type": "speech.audio.done",
                    "audio_seconds": round(seconds, 4),
                    "depth": depth,
                    "bitrate_kbps": None if depth is None else bitrate_kbps(depth),
                    "usage": {"input_tokens": chars, "output_tokens": frames, "total_tokens": chars + frames},
                }
            )
        else:  # fmt: skip
            stream.truncated = True
            messages = {"timeout": "the request hit the server's time limit", "shutdown": "the server shut down",
                        "error": "the engine could not finish this request"}  # fmt: skip
            yield _event({"type": "error", "error": {"message": messages[stream.outcome], "code": stream.outcome}})
    finally:
        stream.end()


def _event(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class _SpeechResponse(Response):
    """A streamed body that listens for the client's disconnect (a dropped client cancels the body at once, whatever
    the server's ASGI version) and, when the server cut the stream short, ends without the final message: the server
    then closes the connection without the chunked encoding's last chunk, and the client's read fails."""

    def __init__(self, body: AsyncIterator[bytes], stream: _Stream, media_type: str, headers: dict[str, str]) -> None:
        self.body_iterator = body
        self.stream = stream
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope, receive, send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def send_body() -> None:
                    await send({"type": "http.response.start", "status": self.status_code,
                                "headers": self.raw_headers})  # fmt: skip
                    async for data in self.body_iterator:
                        await send({"type": "http.response.body", "body": data, "more_body": True})
                    if not self.stream.truncated or self.stream.call.sse:
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
                    group.cancel_scope.cancel()

                group.start_soon(send_body)
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # runs its clean-up now if a disconnect cancelled it mid-send
            self.stream.end()
