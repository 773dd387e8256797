"""The FastAPI application: its state and lifecycle, and the small routes (models, health, metrics).

    POST   /v1/audio/speech          text -> audio (`cat_tts.server.speech`)
    WS     /v1/audio/speech/stream   realtime sessions: text in as it is written, audio out (`cat_tts.server.realtime`)
    GET    /live                     a page that speaks text as it is typed, through that WebSocket
    GET    /v1/audio/voices ...      stored voices (`cat_tts.server.voice_routes`)
    GET    /v1/models                the served model: layers, sample rate, bitrates
    GET    /health                   status and engine load (no key needed)
    GET    /metrics                  Prometheus text format (the key, unless `public_metrics`)

The port answers from the start: while the model loads `/health` says "loading" and while the engine warms up
"starting" (both 503 with Retry-After, as is every speech request), then "ok". A start-up that fails (damaged
weights, a limit no request could meet, an unwritable voices directory) says "failed"; `serve.py` then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from cat_tts.assets import default_voice
from cat_tts.codec.config import bitrate_kbps
from cat_tts.errors import FieldError, UserError
from cat_tts.inference.request import Limits
from cat_tts.server import realtime, speech, voice_routes
from cat_tts.server.auth import require_key, require_metrics_key
from cat_tts.server.backend import Backend, Load
from cat_tts.server.config import ServerConfig
from cat_tts.server.errors import APIError, install_error_handlers, shutting_down
from cat_tts.server.formats import SUPPORTED_FORMATS
from cat_tts.server.limits import BodyLimit
from cat_tts.server.metrics import RequestCounter, ServerMetrics
from cat_tts.server.streaming import AudioPump
from cat_tts.server.voices import VoiceStore, install_default_voice

logger = logging.getLogger(__name__)

STARTING_RETRY_AFTER_S = 2  # Retry-After while the model loads or warms up


class ServerState:
    """Everything the routes share: the backend, settings, voices, metrics and the streams in flight.

    Args:
        config: the server's settings.
        backend: a loaded backend, or None to call `load` at start-up (while the port already answers).
        load: builds the backend (blocking; raises `UserError` for bad checkpoints or devices).
    """

    def __init__(self, config: ServerConfig, backend: Backend | None, load: Callable[[], Backend] | None) -> None:
        if (backend is None) == (load is None):
            raise ValueError("give a backend or a function that loads one")
        self.config = config
        self.backend = backend
        self._load = load
        self.limits: Limits | None = None  # the model's limits with the server's (set at start-up)
        self.voices: VoiceStore | None = None
        self.metrics = ServerMetrics(self.load)
        self.pumps: set[AudioPump] = set()  # speech streams and realtime sessions in flight (each has `cancel()`)
        self.phase = "loading" if backend is None else "starting"  # -> "ok" or "failed"
        self.draining = False  # SIGTERM received: new speech requests get 503
        self.startup_error: BaseException | None = None
        self.started_at = time.time()
        self.instance = f"{socket.gethostname()}:{os.getpid()}"  # tells replicas apart (Ray, load balancers)
        self.close_grace_s = config.shutdown_grace  # what is left for the engine when the app shuts down

    def startup(self) -> None:
        """Loads the model (if needed), checks the server's limits against it, opens the voice store, warms the
        engines up and starts them, and installs the default voice. Blocking: runs in a thread while the port
        answers 503. A failure is kept in `startup_error` (and logged unless it is a `UserError`)."""
        if self.phase == "ok":
            return  # started already (Ray Serve starts the app itself, and may run its lifespan as well)
        try:
            if self.backend is None:
                self.backend = self._load()
            self.phase = "starting"
            self.limits = server_limits(self.config, self.backend)
            self.voices = VoiceStore(self.config.voices_dir, self.backend.codec_id, self.limits.n_vq,
                                     self.config.max_voices)  # fmt: skip
            self.backend.start()
            if self.config.install_default_voice:
                clip = default_voice()
                install_default_voice(self.voices, clip.audio, clip.text, self.backend.encode_reference,
                                      self.backend.max_reference_seconds)  # fmt: skip
        except Exception as err:
            if not isinstance(err, UserError):  # a UserError is the user's to fix: its message says all
                logger.exception("start-up failed")
            self.startup_error = err
            self.phase = "failed"
            return
        self.phase = "ok"
        logger.info("ready")

    @property
    def status(self) -> str:
        """ "loading", "starting" (warming up), "ok", "draining" (SIGTERM received) or "failed"."""
        return "draining" if self.draining else self.phase

    def load(self) -> Load:
        """The engines' occupancy, summed (empty while loading)."""
        return sum(self.backend.loads(), Load()) if self.backend is not None else Load()

    def check_ready(self) -> None:
        """503 with Retry-After while loading or warming up, or after start-up failed."""
        if self.phase == "ok":
            return
        if self.phase == "failed":
            raise APIError(503, f"the server failed to start: {self.startup_error}", code="startup_failed")
        what = "loading the model" if self.phase == "loading" else "warming up the engine"
        raise APIError(503, f"the server is starting ({what}); retry shortly", code=self.phase,
                       headers={"Retry-After": str(STARTING_RETRY_AFTER_S)})  # fmt: skip

    def check_serving(self) -> None:
        """`check_ready`, and 503 once draining."""
        if self.draining:
            raise shutting_down(self.config.retry_after_s)
        self.check_ready()

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
        backend = self.backend
        loads = backend.loads() if backend is not None else []
        body = {
            "status": self.status,
            **sum(loads, Load()).as_dict(),
            "open_streams": len(self.pumps),
            "model": self.config.model_id,
            "n_vq": backend.limits.n_vq if backend is not None else None,
            "sample_rate": backend.sample_rate if backend is not None else None,
            "devices": [] if backend is None else [{"device": d, **load.as_dict()}
                                                   for d, load in zip(backend.devices, loads, strict=True)],
            "uptime_s": round(time.time() - self.started_at, 1),
            "instance": self.instance,
        }  # fmt: skip
        if self.startup_error is not None:
            body["error"] = str(self.startup_error)
        return body


def server_limits(config: ServerConfig, backend: Backend) -> Limits:
    """The model's limits with the server's; a server limit that no request could meet is refused.

    Raises:
        FieldError: naming the server's setting (`max_new_frames`, `min_new_frames`, `max_voice_seconds`).
    """
    limits = backend.limits
    room = limits.max_frames
    for name in ("max_new_frames", "min_new_frames"):
        value = getattr(config, name)
        if room is not None and value is not None and value > room:
            raise FieldError(name, f"{name} is {value}, but an engine slot holds at most {room} new frames; use at "
                                   f"most {room} (or give the engine more rows per slot)")  # fmt: skip
    if config.max_voice_seconds > backend.max_reference_seconds:
        raise FieldError(
            "max_voice_seconds",
            f"max_voice_seconds is {config.max_voice_seconds:g}, but the pipeline "
            f"encodes voice clips of at most {backend.max_reference_seconds:g} s; use at most that",
        )
    caps = [x for x in (room, config.max_new_frames) if x is not None]
    return replace(limits, max_frames=min(caps) if caps else None, max_text_chars=config.max_input_chars)


def create_app(config: ServerConfig, backend: Backend | None = None, load: Callable[[], Backend] | None = None
               ) -> FastAPI:  # fmt: skip
    """The speech server (its backend started with the app, closed when it stops).

    Args:
        config: limits, key, storage.
        backend: one engine or several behind a router, loaded; or None with `load`.
        load: builds the backend at start-up, while the port answers 503 "loading".
    """
    state = ServerState(config, backend, load)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        starting = asyncio.create_task(anyio.to_thread.run_sync(state.startup))
        sampler = asyncio.create_task(_sample_frames(state))
        try:
            yield
        finally:
            sampler.cancel()
            await starting
            for pump in list(state.pumps):
                pump.cancel()
            if state.backend is not None:
                await anyio.to_thread.run_sync(state.backend.close, state.close_grace_s)

    app = FastAPI(title="cat-tts", version="1", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.cat = state
    install_error_handlers(app)
    app.add_middleware(BodyLimit, config=config)
    app.add_middleware(RequestCounter, metrics=state.metrics)  # outermost: counts the 413s too
    app.include_router(speech.router)
    app.include_router(voice_routes.router)
    app.include_router(realtime.router)

    @app.get("/v1/models", dependencies=[Depends(require_key)])
    async def models() -> dict:
        state.check_ready()
        return {"object": "list", "data": [_model_card(state)]}

    @app.get("/v1/models/{model_id:path}", dependencies=[Depends(require_key)])
    async def model(model_id: str) -> dict:
        state.check_ready()
        if model_id not in config.model_names:
            raise APIError(404, f"unknown model {model_id[:80]!r}; this server serves {config.model_id!r}",
                           param="model", code="model_not_found")  # fmt: skip
        return _model_card(state)

    @app.get("/health")
    async def health() -> JSONResponse:
        body = state.health()
        headers = {} if body["status"] == "ok" else {"Retry-After": str(STARTING_RETRY_AFTER_S)}
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503, headers=headers)

    @app.get("/metrics", dependencies=[Depends(require_metrics_key)])
    async def metrics(request: Request) -> Response:
        data, content_type = state.metrics.render()
        return Response(data, media_type=content_type)

    return app


def _model_card(state: ServerState) -> dict:
    limits = state.limits
    n = limits.n_vq
    return {
        "id": state.config.model_id,
        "object": "model",
        "created": int(state.started_at),
        "owned_by": "cat-tts",
        "n_vq": n,
        "depths": [1, n],
        "sample_rate": state.backend.sample_rate,
        "frame_rate": limits.frame_rate,
        "max_new_frames": limits.max_frames,
        "bitrates_kbps": [bitrate_kbps(k) for k in range(1, n + 1)],
        "response_formats": list(SUPPORTED_FORMATS),
        "aliases": list(state.config.model_names[1:]),
    }


async def _sample_frames(state: ServerState) -> None:
    while True:
        try:
            state.metrics.sample_frames()
        except Exception:  # never let the sampler die on a transient stats error
            logger.debug("sampling engine stats failed", exc_info=True)
        await asyncio.sleep(1.0)
