"""Runs the app under uvicorn with a drain step on SIGTERM/SIGINT (and exit status 0 after a clean drain)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain step.

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

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

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
        state = getattr(getattr(self.config.app, "state", None), "cat", None)
        try:
            if state is not None:
                await state.drain(self.grace_s)
        finally:
            self.should_exit = True


def serve_forever(app: Any, sock: socket.socket, grace_s: float, log_level: str = "info") -> int:
    """Serves `app` on the bound `sock` until SIGTERM/SIGINT; returns 0 after a clean shutdown, 1 if it never
    started (the app's startup failed: see the log)."""
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5, lifespan="on")
    server = DrainingServer(config, grace_s)
    host, port = sock.getsockname()[:2]
    logger.info("cat-tts speech server on http://%s:%d (POST /v1/audio/speech)", host, port)
    server.run(sockets=[sock])
    return 0 if server.started else 1


@contextlib.contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 300.0) -> Iterator[str]:
    """Runs `app` under uvicorn in a background thread (benchmarks, notebooks); yields its base URL once the app is
    ready (for the speech app: its engines warm).

    Raises:
        RuntimeError: the server did not start within `timeout_s` (e.g. the app's startup failed).
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="uvicorn")
    thread.start()
    deadline = time.monotonic() + timeout_s
    state = getattr(getattr(app, "state", None), "cat", None)  # the speech app's state: wait for its warm-up too
    while not server.started or (state is not None and not state.ready and state.startup_error is None):
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the server did not start (see the log)")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()
