"""Real uvicorn servers on free loopback ports for the server tests (a fake pipeline or the tiny checkpoints)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the server needs the serve extra: pip install 'cat-tts[serve]'")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
pytest.importorskip("python_multipart")

from cat_tts.server.app import create_app  # noqa: E402
from cat_tts.server.backend import PipelineBackend  # noqa: E402
from cat_tts.server.config import ServerConfig  # noqa: E402

from .fakes import FakeTTS  # noqa: E402


@dataclass
class RunningServer:
    """A server started by `serve`: its URL, app, backend and (for the fake) the fake pipeline."""

    url: str
    app: Any
    backend: Any
    tts: Any
    config: ServerConfig
    server: Any

    @property
    def state(self):
        return self.app.state.cat

    def openai(self, api_key: str = "unused", **kwargs):
        """The official OpenAI client pointed at this server (no retries: tests see every status)."""
        from openai import OpenAI

        return OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, **kwargs)

    def health(self) -> dict:
        import httpx

        return httpx.get(f"{self.url}/health", timeout=10).json()


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def serve(backend, config: ServerConfig, tts: Any = None, wait_ready: bool = True) -> Iterator[RunningServer]:
    """Runs uvicorn in a thread on a free loopback port until the block ends (by default once the app is ready)."""
    import uvicorn

    app = create_app(backend, config)
    sock = free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    state = app.state.cat
    while not server.started or (wait_ready and not state.ready and state.startup_error is None):
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", app, backend, tts, config, server)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def fake_config(tmp_path: Path, **overrides) -> ServerConfig:
    return ServerConfig(**{"voices_dir": tmp_path / "voices", "model_id": "cat-tts-fake", **overrides})


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory) -> Iterator[RunningServer]:
    """A server over a fast fake pipeline (2 ms per frame, 4 slots, queue 8), shared by a module's tests: a test
    that changes it puts it back (tests needing a fresh one use `make_fake_server`)."""
    tts = FakeTTS()
    config = fake_config(tmp_path_factory.mktemp("shared"))
    with serve(PipelineBackend(tts, codec_id="fake"), config, tts) as running:
        yield running


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """`python -m cat_tts.tools.make_tiny` checkpoints (random weights), written once per session."""
    from cat_tts.tools.make_tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny"))


def real_backend(tiny_dirs: dict[str, Path], max_slots: int, max_queue: int) -> PipelineBackend:
    """The real pipeline and engine on the tiny checkpoints (CPU, eager)."""
    return PipelineBackend.from_pretrained(str(tiny_dirs["model"]), str(tiny_dirs["codec"]), "cpu", "auto",
                                           max_slots=max_slots, max_queue=max_queue, compile="auto")  # fmt: skip


@contextlib.contextmanager
def serve_real(tiny_dirs, voices_dir: Path, max_slots: int = 8, max_queue: int = 32, **config):
    """A real server on the tiny checkpoints; `min_new_frames` 10 like the demo (random weights stop at once)."""
    config = ServerConfig(**{"voices_dir": voices_dir, "model_id": "tiny", "min_new_frames": 10,
                             "max_new_frames": 400, **config})  # fmt: skip
    backend = real_backend(tiny_dirs, max_slots, max_queue)
    with serve(backend, config, backend.tts) as running:
        yield running


@pytest.fixture
def make_fake_server(tmp_path):
    """Starts fake servers with custom settings: `make_fake_server(tts=FakeTTS(...), api_key=...)`."""
    stack = contextlib.ExitStack()

    def make(tts: FakeTTS | None = None, **config) -> RunningServer:
        tts = tts or FakeTTS()
        return stack.enter_context(serve(PipelineBackend(tts, codec_id="fake"), fake_config(tmp_path, **config), tts))

    with stack:
        yield make
