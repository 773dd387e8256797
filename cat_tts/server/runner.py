"""Runs the app under uvicorn: bounded request parsing, a drain step on SIGTERM/SIGINT, and an exit status that says
whether start-up worked."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from typing import Any

import uvicorn

from cat_tts.errors import USER_ERROR_EXIT_CODE, UserError
from cat_tts.server.config import ServerConfig
from cat_tts.server.limits import uvicorn_limits

logger = logging.getLogger(__name__)


def uvicorn_config(app: Any, config: ServerConfig, log_level: str = "info") -> uvicorn.Config:
    """uvicorn's settings for the speech app (the h11 parser with the header limit, lifespan on)."""
    return uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=5,
                          **uvicorn_limits(config))  # fmt: skip


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain step, which also stops when the app's start-up failed.

    The first SIGTERM/SIGINT marks the app as draining (new speech requests get 503, /health says "draining"),
    waits up to `grace_s` for the streams in flight, cancels the rest, then lets uvicorn shut down (the app's
    lifespan closes the engines). A second SIGINT exits at once. Unlike plain uvicorn, the signal is not raised
    again at the end, so the process exits 0.
    """

    def __init__(self, config: uvicorn.Config, grace_s: float) -> None:
        super().__init__(config)
        self.grace_s = grace_s
        self._drain_task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def app_state(self) -> Any:
        return getattr(getattr(self.config.app, "state", None), "cat", None)

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def on_tick(self, counter: int) -> bool:
        state = self.app_state
        if state is not None and state.startup_error is not None:
            return True  # nothing to serve: exit (main reports why)
        return await super().on_tick(counter)

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self._drain_task is not None or self._loop is None:
            if sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True
            return
        logger.info("received %s: draining for up to %.0f s", signal.Signals(sig).name, self.grace_s)
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self._drain_task is None:
            self._drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        state = self.app_state
        try:
            if state is not None:
                await state.drain(self.grace_s)
        finally:
            self.should_exit = True


def url_of(sock: socket.socket) -> str:
    """The base URL of a bound socket (IPv6 addresses in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve_forever(app: Any, sock: socket.socket, config: ServerConfig, log_level: str = "info") -> int:
    """Serves `app` on the bound `sock` until SIGTERM/SIGINT.

    Returns:
        0 after a clean shutdown; `USER_ERROR_EXIT_CODE` when start-up failed on the user's input (the reason is
        printed as one line: bad weights, a limit no request can meet...); 1 for any other failure (logged).
    """
    server = DrainingServer(uvicorn_config(app, config, log_level), config.shutdown_grace)
    logger.info("cat-tts speech server on %s (POST /v1/audio/speech); /health says when it is ready", url_of(sock))
    server.run(sockets=[sock])
    error = getattr(server.app_state, "startup_error", None)
    if isinstance(error, UserError):
        return USER_ERROR_EXIT_CODE
    return 1 if error is not None or not server.started else 0
