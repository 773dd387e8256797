"""The FastAPI application: OpenAI-compatible speech, voices, models, health and metrics over one `Backend`.

    POST   /v1/audio/speech          text -> audio, streamed in every format (or SSE events)
    GET    /v1/audio/voices          stored voices
    POST   /v1/audio/voices          multipart `name`, `audio` (or `audio_sample`) file, optional `text`
    GET    /v1/audio/voices/{name}   one voice
    DELETE /v1/audio/voices/{name}
    GET    /v1/models                the served model: layers, sample rate, bitrates
    GET    /health                   status and engine load (no key needed)
    GET    /metrics                  Prometheus text format

A speech request is validated completely (fields, voice, generation settings) before generation starts; then the
first audio piece is awaited before the response headers go out, so a bad reference or a full queue is still a
4xx/429. After that, audio is sent as it is produced (chunked transfer). A client that disconnects cancels its
generation; so does the per-request time limit.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from cat_tts.codec.config import KBPS_PER_LAYER, bitrate_kbps
from cat_tts.errors import InputError, UserError
from cat_tts.server.backend import Backend, Busy, SettingError, ShuttingDown, SpeechJob, check_settings
from cat_tts.server.config import ServerConfig
from cat_tts.server.errors import APIError, bad_request, install_error_handlers
from cat_tts.server.formats import SUPPORTED_FORMATS, UnsupportedFormatError, make_encoder
from cat_tts.server.metrics import ServerMetrics
from cat_tts.server.schemas import SpeechRequest, parse_speech_request
from cat_tts.server.streaming import AudioPump, Chunk
from cat_tts.server.voices import DEFAULT_VOICE, VoiceExistsError, VoiceNotFoundError, VoiceStore, decode_clip

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CLIP = REPO_ROOT / "docs" / "assets" / "reference.wav"  # the project's reference clip (voice "default")
DEFAULT_CLIP_TEXT = REPO_ROOT / "docs" / "assets" / "reference.txt"  # its transcript
DISCONNECT_POLL_S = 0.1  # how often a request waiting for its first audio checks that its client is still there
MAX_FORM_FIELDS = 8


class ServerState:
    """Everything the routes share: the backend, settings, voices, metrics and the streams in flight."""

    def __init__(self, backend: Backend, config: ServerConfig, voices: VoiceStore) -> None:
        self.backend = backend
        self.config = config
        self.voices = voices
        self.metrics = ServerMetrics(backend.load)
        self.pumps: set[AudioPump] = set()  # speech streams in flight
        self.draining = False  # SIGTERM received: new speech requests get 503
        self.ready = False  # engines warm (CUDA graphs captured / compiled) and default voice installed
        self.startup_error: str | None = None  # why start-up failed, if it did
        self.started_at = time.time()
        self.instance = f"{socket.gethostname()}:{os.getpid()}"  # tells replicas apart (Ray, load balancers)
        self.close_grace_s = config.shutdown_grace_s  # what is left for the engine when the app shuts down

    def startup(self) -> None:
        """Warms the engines up (CUDA graph capture / compilation), starts them and installs the default voice
        (blocking: runs in a thread while /health answers "starting")."""
        try:
            self.backend.start()
            if self.config.install_default_voice:
                install_default_voice(self.voices, self.backend)
        except Exception as err:  # the server stays up and says why in /health
            logger.exception("start-up failed")
            self.startup_error = f"{type(err).__name__}: {err}"
            return
        self.ready = True
        logger.info("ready")

    @property
    def status(self) -> str:
        """ "starting" (warming up), "ok", "draining" (SIGTERM received) or "failed" (start-up failed)."""
        if self.draining:
            return "draining"
        if self.startup_error is not None:
            return "failed"
        return "ok" if self.ready else "starting"

    async def drain(self, grace_s: float) -> None:
        """Stops admitting speech requests, waits up to `grace_s` for the streams in flight, then cancels them."""
        self.draining = True
        deadline = time.monotonic() + grace_s
        logger.info("draining: %d streams in flight, %.0f s grace", len(self.pumps), grace_s)
        while self.pumps and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.pumps:
            logger.warning("grace period over: cancelling %d streams", len(self.pumps))
            for pump in list(self.pumps):
                pump.cancel()
        self.close_grace_s = max(0.0, deadline - time.monotonic())

    def health(self) -> dict[str, Any]:
        loads = self.backend.loads()
        total = self.backend.load()
        body = {
            "status": self.status,
            **total.as_dict(),
            "open_streams": len(self.pumps),
            "model": self.config.model_id,
            "n_vq": self.backend.n_vq,
            "sample_rate": self.backend.sample_rate,
            "devices": [{"device": d, **load.as_dict()} for d, load in zip(self.backend.devices, loads, strict=True)],
            "uptime_s": round(time.time() - self.started_at, 1),
            "instance": self.instance,
        }
        if self.startup_error is not None:
            body["error"] = self.startup_error
        return body


def install_default_voice(voices: VoiceStore, backend: Backend) -> None:
    """Encodes the project's reference clip as voice "default" unless a usable one is stored."""
    if DEFAULT_VOICE in voices:
        return
    if not DEFAULT_CLIP.is_file():
        logger.warning("no %s: voice %r is not installed (upload a voice first)", DEFAULT_CLIP, DEFAULT_VOICE)
        return
    try:
        samples, rate = decode_clip(DEFAULT_CLIP.read_bytes(), max_seconds=60.0)
        text = DEFAULT_CLIP_TEXT.read_text(encoding="utf-8").strip() if DEFAULT_CLIP_TEXT.is_file() else None
        codes = backend.encode_reference((samples, rate))
    except UserError as err:
        logger.error("could not install voice %r from %s: %s", DEFAULT_VOICE, DEFAULT_CLIP, err)
        return
    voices.add(DEFAULT_VOICE, codes, text or None, samples.shape[-1] / rate, replace=True)


def create_app(backend: Backend, config: ServerConfig, voices: VoiceStore | None = None) -> FastAPI:
    """The speech server for `backend` (started with the app, closed when it stops).

    Args:
        backend: one pipeline or several behind a router.
        config: limits, key, storage.
        voices: the voice store (default: `config.voices_dir` for this backend's codec).
    """
    voices = voices or VoiceStore(config.voices_dir, backend.codec_id, backend.n_vq, config.max_voices)
    state = ServerState(backend, config, voices)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Warm-up runs while the server already answers: /health says "starting" (503) until it is done.
        starting = asyncio.create_task(anyio.to_thread.run_sync(state.startup))
        sampler = asyncio.create_task(_sample_frames(state))
        try:
            yield
        finally:
            sampler.cancel()
            await starting
            for pump in list(state.pumps):
                pump.cancel()
            await anyio.to_thread.run_sync(backend.close, state.close_grace_s)

    app = FastAPI(title="cat-tts", version="1", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.cat = state
    install_error_handlers(app)
    app.add_middleware(_LimitsAndMetrics, state=state)
    auth = [Depends(_require_key)]

    @app.post("/v1/audio/speech", dependencies=auth)
    async def speech(request: Request) -> Response:
        return await _speech(request, state)

    @app.get("/v1/audio/voices", dependencies=auth)
    async def list_voices() -> dict:
        voices_list = await anyio.to_thread.run_sync(state.voices.list)
        return {"object": "list", "data": [v.info() for v in voices_list]}

    @app.get("/v1/audio/voices/{name}", dependencies=auth)
    async def get_voice(name: str) -> dict:
        return (await anyio.to_thread.run_sync(_get_voice, state, name)).info()

    @app.post("/v1/audio/voices", dependencies=auth)
    async def add_voice(request: Request) -> dict:
        return await _add_voice(request, state)

    @app.delete("/v1/audio/voices/{name}", dependencies=auth)
    async def delete_voice(name: str) -> dict:
        await anyio.to_thread.run_sync(_delete_voice, state, name)
        return {"id": name, "object": "audio.voice.deleted", "deleted": True}

    @app.get("/v1/models", dependencies=auth)
    async def models() -> dict:
        return {"object": "list", "data": [_model_card(state)]}

    @app.get("/v1/models/{model_id:path}", dependencies=auth)
    async def model(model_id: str) -> dict:
        if model_id not in config.model_names:
            raise APIError(404, f"unknown model {model_id!r}; this server serves {config.model_id!r}",
                           param="model", code="model_not_found")  # fmt: skip
        return _model_card(state)

    @app.get("/health")
    async def health() -> JSONResponse:
        body = state.health()
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    @app.get("/metrics", dependencies=auth)
    async def metrics() -> Response:
        data, content_type = state.metrics.render()
        return Response(data, media_type=content_type)

    return app


# ---------------------------------------------------------------------------------------------------- speech


def _require_ready(state: ServerState) -> None:
    """503 with Retry-After while the engines warm up (or after start-up failed)."""
    if state.ready:
        return
    if state.startup_error is not None:
        raise APIError(503, f"the server failed to start: {state.startup_error}", code="startup_failed")
    raise APIError(503, "the server is starting (warming up the engine); retry shortly", code="starting",
                   headers={"Retry-After": "2"})  # fmt: skip


async def _speech(request: Request, state: ServerState) -> Response:
    arrived = time.monotonic()
    config = state.config
    if state.draining:
        raise _shutting_down(config)
    _require_ready(state)
    req = parse_speech_request(await _read_json(request))
    depth, job = _build_job(req, state)
    encoder = _encoder(req, state)
    pump = AudioPump(state.backend.stream(job), encoder, asyncio.get_running_loop(), name="speech").start()
    state.pumps.add(pump)
    deadline = arrived + config.request_timeout_s
    try:
        first = await _first_chunk(pump, request, deadline)
    except BaseException as err:
        pump.cancel()
        pump.close_reader()
        state.pumps.discard(pump)
        if isinstance(err, _ClientGone):
            state.metrics.streams.labels("cancelled").inc()
            return Response(status_code=499)  # nobody reads it; counted as "client closed request"
        raise
    if first.cancelled:  # shutdown cancelled it while it waited
        raise _shutting_down(config)
    if pump.first_audio_at is not None:
        state.metrics.ttfa.observe(pump.first_audio_at - arrived)
    sse = req.stream_format == "sse"
    headers = {
        "X-CAT-TTS-Depth": str(depth),
        "X-CAT-TTS-Bitrate-Kbps": f"{bitrate_kbps(depth):g}",
        "X-CAT-TTS-Sample-Rate": str(state.backend.sample_rate),
        "X-CAT-TTS-Voice": req.voice_name,
        "X-CAT-TTS-Instance": state.instance,
        "Cache-Control": "no-cache",
    }
    if sse:
        headers["X-Accel-Buffering"] = "no"  # nginx: do not buffer the events
    body = _stream_body(state, pump, first, deadline, sse, job, depth)
    media_type = "text/event-stream" if sse else encoder.media_type
    return _DisconnectAwareStreamingResponse(body, media_type=media_type, headers=headers)


def _build_job(req: SpeechRequest, state: ServerState) -> tuple[int, SpeechJob]:
    """Validates everything of a speech request except the audio itself; returns (depth, job)."""
    config, n_vq = state.config, state.backend.n_vq
    if req.model is not None and req.model not in config.model_names:
        raise bad_request(f"unknown model {req.model!r}; use one of {list(config.model_names)}", "model",
                          code="model_not_found")  # fmt: skip
    text = req.input
    if not text.strip():
        raise bad_request("input is empty", "input", code="empty_input")
    for name in ("input", "instructions", "reference_text"):
        value = getattr(req, name)
        if value is not None and len(value) > config.max_input_chars:
            raise bad_request(f"{name} is {len(value)} characters long; the limit is {config.max_input_chars}", name,
                              code="input_too_long")  # fmt: skip
    if req.response_format not in SUPPORTED_FORMATS:
        try:
            make_encoder(req.response_format, state.backend.sample_rate)
        except UnsupportedFormatError as err:
            raise bad_request(str(err), "response_format", code="unsupported_format") from None
    if req.stream_format not in ("audio", "sse"):
        raise bad_request(f"stream_format must be 'audio' or 'sse', got {req.stream_format!r}", "stream_format")
    if req.speed != 1.0:
        raise bad_request(f"speed must be 1.0 (other speeds are not supported), got {req.speed:g}", "speed",
                          code="unsupported_value")  # fmt: skip
    depth = _depth(req, n_vq)
    settings = {name: getattr(req, name) for name in
                ("seed", "do_sample", "temperature", "top_p", "top_k", "repetition_penalty", "min_new_frames",
                 "max_new_frames") if getattr(req, name) is not None}  # fmt: skip
    if config.max_new_frames is not None and settings.get("max_new_frames", 0) > config.max_new_frames:
        raise bad_request(f"max_new_frames must be <= {config.max_new_frames} on this server, "
                          f"got {settings['max_new_frames']}", "max_new_frames")  # fmt: skip
    if "min_new_frames" not in settings and config.min_new_frames:
        settings["min_new_frames"] = min(config.min_new_frames, settings.get("max_new_frames", config.min_new_frames))
    if config.max_new_frames is not None:
        settings.setdefault("max_new_frames", config.max_new_frames)
    try:
        check_settings(settings, n_vq, depth)
    except SettingError as err:
        raise bad_request(str(err), err.param) from None
    voice = _get_voice(state, req.voice_name, param="voice")
    reference_text = req.reference_text if req.reference_text is not None else voice.text
    job = SpeechJob(text=text, codes=voice.codes, depth=depth, reference_text=reference_text or None,
                    instructions=req.instructions, settings=settings)  # fmt: skip
    return depth, job


def _depth(req: SpeechRequest, n_vq: int) -> int:
    if req.depth is not None and req.bitrate_kbps is not None:
        raise bad_request("give depth or bitrate_kbps, not both", "bitrate_kbps", code="conflicting_parameters")
    if req.bitrate_kbps is not None:
        kbps = req.bitrate_kbps
        depth = round(kbps / KBPS_PER_LAYER) if kbps == kbps and abs(kbps) < 1e6 else 0
        if not 1 <= depth <= n_vq:
            raise bad_request(f"bitrate_kbps must be in {bitrate_kbps(1):g}..{bitrate_kbps(n_vq):g} "
                              f"({KBPS_PER_LAYER:g} kbps per layer), got {kbps:g}", "bitrate_kbps")  # fmt: skip
        return depth
    if req.depth is not None and not 1 <= req.depth <= n_vq:
        raise bad_request(f"depth must be in 1..{n_vq} for this model, got {req.depth}", "depth")
    return n_vq if req.depth is None else req.depth


def _encoder(req: SpeechRequest, state: ServerState):
    try:
        return make_encoder(req.response_format, state.backend.sample_rate)
    except UnsupportedFormatError as err:
        raise bad_request(str(err), "response_format", code="unsupported_format") from None


async def _first_chunk(pump: AudioPump, request: Request, deadline: float) -> Chunk:
    """Waits for the first chunk, watching the client and the time limit; maps generation errors to HTTP ones."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise APIError(504, "the request hit the server's time limit before the first audio", code="timeout")
        try:
            return await pump.get(min(DISCONNECT_POLL_S, remaining))
        except TimeoutError:
            if await request.is_disconnected():
                raise _ClientGone() from None
        except Busy as err:
            raise APIError(429, f"the server is busy ({err}); retry later", code="queue_full",
                           headers={"Retry-After": str(_retry_after(request))}) from None  # fmt: skip
        except ShuttingDown:
            raise _shutting_down(request.app.state.cat.config) from None
        except SettingError as err:
            raise bad_request(str(err), err.param) from None
        except InputError as err:
            raise bad_request(str(err), None) from None


def _shutting_down(config: ServerConfig) -> APIError:
    return APIError(503, "the server is shutting down; retry on another instance", code="shutting_down",
                    headers={"Retry-After": str(config.retry_after_s)})  # fmt: skip


def _retry_after(request: Request) -> int:
    return request.app.state.cat.config.retry_after_s


class _ClientGone(Exception):
    """The client disconnected before the response started."""


async def _stream_body(state: ServerState, pump: AudioPump, first: Chunk, deadline: float, sse: bool,
                       job: SpeechJob, depth: int) -> AsyncIterator[bytes]:  # fmt: skip
    """Sends chunks as they come; ends on completion, cancellation or the time limit."""
    outcome = "cancelled"
    chunk = first
    try:
        while True:
            if chunk.data:
                yield _sse_event({"type": "speech.audio.delta", "audio": base64.b64encode(chunk.data).decode()}) \
                    if sse else chunk.data  # fmt: skip
            if chunk.final:
                outcome = "completed"
                break
            if chunk.cancelled:
                break
            try:
                chunk = await pump.get(max(deadline - time.monotonic(), 0.0))
            except TimeoutError:
                outcome = "timeout"
                logger.warning("a speech request hit the %.0f s time limit mid-stream", state.config.request_timeout_s)
                if sse:
                    yield _sse_event({"type": "error", "error": {"message": "time limit reached", "code": "timeout"}})
                break
            except Exception as err:
                outcome = "error"
                logger.exception("generation failed mid-stream")
                if sse:
                    yield _sse_event({"type": "error", "error": {"message": str(err)[:200], "code": "error"}})
                break
        if sse and outcome == "completed":
            seconds = pump.samples / state.backend.sample_rate
            frames = int(round(seconds * state.backend.frame_rate))
            usage = {"input_tokens": len(job.text), "output_tokens": frames, "total_tokens": len(job.text) + frames}
            yield _sse_event({"type": "speech.audio.done", "usage": usage, "audio_seconds": round(seconds, 4),
                              "depth": depth, "bitrate_kbps": bitrate_kbps(depth)})  # fmt: skip
    finally:
        pump.cancel()
        pump.close_reader()
        state.pumps.discard(pump)
        state.metrics.streams.labels(outcome).inc()
        seconds = pump.samples / state.backend.sample_rate
        state.metrics.audio_seconds.inc(seconds)
        if outcome == "completed" and seconds > 0 and pump.finished_at is not None:
            state.metrics.rtf.observe((pump.finished_at - pump.started_at) / seconds)


def _sse_event(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class _DisconnectAwareStreamingResponse(StreamingResponse):
    """Streams while listening for the client's disconnect (whatever the server's ASGI version), so a dropped
    client cancels the body at once instead of at the next write."""

    async def __call__(self, scope, receive, send) -> None:
        async with anyio.create_task_group() as group:

            async def run_then_cancel(func) -> None:
                await func()
                group.cancel_scope.cancel()

            group.start_soon(run_then_cancel, lambda: self.stream_response(send))
            await run_then_cancel(lambda: self.listen_for_disconnect(receive))


# ---------------------------------------------------------------------------------------------------- voices


def _get_voice(state: ServerState, name: str, param: str = "name"):
    try:
        return state.voices.get(name)
    except InputError as err:
        raise bad_request(str(err), param, code="invalid_voice_name") from None
    except VoiceNotFoundError:
        names = state.voices.names()
        raise APIError(404, f"no voice named {name[:80]!r}; stored voices: {names[:20]} (add one with POST "
                       "/v1/audio/voices)", param=param, code="voice_not_found") from None  # fmt: skip


def _delete_voice(state: ServerState, name: str) -> None:
    if name == DEFAULT_VOICE:
        raise bad_request(f"voice {DEFAULT_VOICE!r} is built in and cannot be deleted", "name", code="reserved_name")
    try:
        state.voices.delete(name)
    except InputError as err:
        raise bad_request(str(err), "name", code="invalid_voice_name") from None
    except VoiceNotFoundError:
        raise APIError(404, f"no voice named {name[:80]!r}", param="name", code="voice_not_found") from None


async def _add_voice(request: Request, state: ServerState) -> dict:
    config = state.config
    form = await _read_form(request)
    unknown = sorted(set(form) - _VOICE_FORM_FIELDS)
    if unknown:
        raise bad_request(f"unknown form field {unknown[0]!r}; send name, audio and optionally text", unknown[0],
                          code="unknown_parameter")  # fmt: skip
    if form.get("type", "audio_sample") != "audio_sample":
        raise bad_request("only voices from an audio sample are supported (type 'audio_sample')", "type")
    name = form.get("name")
    if not isinstance(name, str):
        raise bad_request("name is required (a form field)", "name", code="missing_parameter")
    if name == DEFAULT_VOICE:
        raise bad_request(f"voice name {DEFAULT_VOICE!r} is reserved", "name", code="reserved_name")
    upload = form.get("audio") or form.get("audio_sample")
    if upload is None or isinstance(upload, str):
        raise bad_request("audio is required (a file field named 'audio')", "audio", code="missing_parameter")
    text = form.get("text")
    if text is not None and (not isinstance(text, str) or len(text) > config.max_input_chars):
        raise bad_request(f"text must be a transcript of at most {config.max_input_chars} characters", "text")
    try:
        from cat_tts.server.voices import check_name

        check_name(name)
    except InputError as err:
        raise bad_request(str(err), "name", code="invalid_voice_name") from None
    if name in state.voices:
        raise APIError(409, f"a voice named {name!r} exists; delete it first", param="name", code="voice_exists")
    data = await upload.read()

    def encode_and_store():
        samples, rate = decode_clip(data, config.max_voice_seconds)
        codes = state.backend.encode_reference((samples, rate))
        return state.voices.add(name, codes, (text or "").strip() or None, samples.shape[-1] / rate)

    try:
        voice = await anyio.to_thread.run_sync(encode_and_store)
    except VoiceExistsError as err:
        raise APIError(409, str(err), param="name", code="voice_exists") from None
    except InputError as err:
        raise bad_request(str(err), "audio", code="invalid_audio") from None
    return voice.info()


# `audio_sample`, `consent` and `type` are what the OpenAI client's `audio.voices.create` sends (consent is ignored)
_VOICE_FORM_FIELDS = {"name", "audio", "audio_sample", "text", "consent", "type"}


async def _read_form(request: Request) -> dict[str, Any]:
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        message = "send the voice as multipart/form-data (fields: name, audio, text)"
        raise APIError(415, message, code="bad_content_type")

    config = request.app.state.cat.config

    class InMemoryParser(MultiPartParser):
        spool_max_size = config.max_upload_bytes + 1  # the whole body is bounded by this: files never spill to disk

    parser = InMemoryParser(request.headers, request.stream(), max_files=1, max_fields=MAX_FORM_FIELDS,
                            max_part_size=config.max_input_chars * 4 + 1024)  # fmt: skip
    try:
        form = await parser.parse()
    except MultiPartException as err:
        raise bad_request(f"bad multipart form: {err.message}", None, code="invalid_form") from None
    out: dict[str, Any] = {}
    for key, value in form.multi_items():
        if key in out:
            raise bad_request(f"form field {key!r} is given twice", key)
        out[key] = value if isinstance(value, (str, UploadFile)) else str(value)
    return out


# ---------------------------------------------------------------------------------------------------- helpers


def _model_card(state: ServerState) -> dict:
    n = state.backend.n_vq
    return {
        "id": state.config.model_id,
        "object": "model",
        "created": int(state.started_at),
        "owned_by": "cat-tts",
        "n_vq": n,
        "depths": [1, n],
        "sample_rate": state.backend.sample_rate,
        "frame_rate": state.backend.frame_rate,
        "bitrates_kbps": [bitrate_kbps(k) for k in range(1, n + 1)],
        "response_formats": list(SUPPORTED_FORMATS),
        "aliases": list(state.config.model_names[1:]),
    }


async def _read_json(request: Request) -> Any:
    content_type = request.headers.get("content-type", "application/json")
    if "json" not in content_type:
        raise APIError(415, f"send the request as application/json, got {content_type[:80]!r}", code="bad_content_type")
    body = await request.body()
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise bad_request(f"the body is not valid JSON ({err})", None, code="invalid_json") from None


async def _require_key(request: Request) -> None:
    """Checks `Authorization: Bearer KEY` (or `X-API-Key: KEY`) in constant time when the server has a key."""
    key = request.app.state.cat.config.api_key
    if key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    given = token.strip() if scheme.lower() == "bearer" else request.headers.get("x-api-key", "")
    if not hmac.compare_digest(given.encode("utf-8"), key.encode("utf-8")):
        message = "missing API key (send Authorization: Bearer KEY)" if not given else "wrong API key"
        raise APIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


async def _sample_frames(state: ServerState) -> None:
    while True:
        try:
            state.metrics.sample_frames()
        except Exception:  # never let the sampler die on a transient stats error
            logger.debug("sampling engine stats failed", exc_info=True)
        await asyncio.sleep(1.0)


_ENDPOINTS = ("/v1/audio/speech", "/v1/audio/voices", "/v1/models", "/health", "/metrics")


class _LimitsAndMetrics:
    """ASGI middleware: body size limits (413 before or while reading) and request counts by endpoint and status."""

    def __init__(self, app, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = next((e for e in _ENDPOINTS if path == e or path.startswith(e + "/")), "other")
        config = self.state.config
        limit = config.max_upload_bytes if endpoint == "/v1/audio/voices" else config.max_body_bytes
        status = {"code": 500}

        async def send_counted(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            length = _content_length(scope)
            if length is not None and length > limit:
                await _send_error(send_counted, _too_large(limit))
                return
            received = 0

            async def receive_limited():
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise _too_large(limit)
                return message

            await self.app(scope, receive_limited, send_counted)
        finally:
            self.state.metrics.requests.labels(endpoint, str(status["code"])).inc()


def _content_length(scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int) -> APIError:
    return APIError(413, f"the request body is larger than this server's limit of {limit} bytes",
                    code="request_too_large")  # fmt: skip


async def _send_error(send, error: APIError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]  # fmt: skip
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
