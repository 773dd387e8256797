"""Real uvicorn servers on free loopback ports for the server tests (a fake backend or the tiny checkpoints), run
with the same uvicorn settings and draining server as serve.py."""

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
from cat_tts.server.backend import Backend  # noqa: E402
from cat_tts.server.config import ServerConfig  # noqa: E402
from cat_tts.server.runner import DrainingServer, uvicorn_config  # noqa: E402

from .fakes import FakeBackend  # noqa: E402


@dataclass
class RunningServer:
    """A server started by `serve`: its URL, app, backend and uvicorn server."""

    url: str
    app: Any
    backend: Any
    config: ServerConfig
    server: DrainingServer
    thread: threading.Thread

    @property
    def state(self):
        return self.app.state.cat

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def openai(self, api_key: str = "unused", **kwargs):
        """The official OpenAI client pointed at this server (no retries: tests see every status)."""
        from openai import OpenAI

        return OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, **kwargs)

    def health(self) -> dict:
        import httpx

        return httpx.get(f"{self.url}/health", timeout=10).json()

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """Every sample of /metrics: (name, sorted labels) -> value."""
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def wait_for(predicate, timeout: float = 10.0, step: float = 0.02) -> None:
    """Waits until `predicate()` holds (raises after `timeout` seconds: a bound, not a measurement)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(step)


@contextlib.contextmanager
def serve(backend: Backend | None, config: ServerConfig, wait_ready: bool = True, load=None,
          ) -> Iterator[RunningServer]:  # fmt: skip
    """Runs the app under uvicorn (serve.py's settings) in a thread on a free loopback port until the block ends."""
    app = create_app(config, backend, load=load)
    sock = free_socket()
    server = DrainingServer(uvicorn_config(app, config, "warning"), config.shutdown_grace)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    state = app.state.cat
    wait_for(lambda: server.started or not thread.is_alive(), timeout=60)
    if wait_ready:
        wait_for(lambda: state.phase in ("ok", "failed") or not thread.is_alive(), timeout=600, step=0.05)
    try:
        yield RunningServer(f"http://127.0.0.1:{sock.getsockname()[1]}", app, backend, config, server, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


def fake_config(tmp_path: Path, **overrides) -> ServerConfig:
    return ServerConfig(**{"voices_dir": tmp_path / "voices", "model_id": "cat-tts-fake", **overrides})


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory) -> Iterator[RunningServer]:
    """A server over a fast fake backend (2 ms per frame, 4 slots, queue 8), shared by a module's tests: a test
    that changes it puts it back (tests needing a fresh one use `make_fake_server`)."""
    with serve(FakeBackend(), fake_config(tmp_path_factory.mktemp("shared"))) as running:
        yield running


@pytest.fixture
def make_fake_server(tmp_path):
    """Starts fake servers with custom settings: `make_fake_server(FakeBackend(...), api_key=...)`."""
    stack = contextlib.ExitStack()

    def make(backend: FakeBackend | None = None, **config) -> RunningServer:
        return stack.enter_context(serve(backend or FakeBackend(), fake_config(tmp_path, **config)))

    with stack:
        yield make


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """`python -m cat_tts.tools.make_tiny` checkpoints (random weights), written once per session."""
    from cat_tts.tools.make_tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny"))


def real_backend(model: Path | str, codec: Path | str, max_slots: int, max_queue: int, **engine):
    """The real pipeline and engine on the tiny checkpoints (CPU, eager; plain depth weights: the prepacking
    measurement at warm-up would take minutes on a shared 2-core machine and is not what these tests are about)."""
    from cat_tts.generation import EngineConfig
    from cat_tts.server.backend import PipelineBackend

    config = EngineConfig(max_slots=max_slots, max_queue=max_queue, cpu_prepack=False, **engine)
    return PipelineBackend.from_pretrained(str(model), str(codec), "cpu", "auto", config)


def real_config(voices_dir: Path, **overrides) -> ServerConfig:
    """`min_new_frames` 10 like the demo (random weights may stop at once)."""
    return ServerConfig(**{"voices_dir": voices_dir, "model_id": "tiny", "min_new_frames": 10, **overrides})


@contextlib.contextmanager
def serve_real(tiny_dirs, voices_dir: Path, max_slots: int = 8, max_queue: int = 32, codec: str | None = None,
               engine: dict | None = None, **config) -> Iterator[RunningServer]:  # fmt: skip
    """A real server on the tiny checkpoints, loading while its port already answers (as serve.py does)."""
    codec = codec or str(tiny_dirs["codec"])
    with serve(None, real_config(voices_dir, **config),
               load=lambda: real_backend(tiny_dirs["model"], codec, max_slots, max_queue, **(engine or {}))
               ) as running:  # fmt: skip
        assert running.state.phase == "ok", running.state.startup_error
        running.backend = running.state.backend
        yield running


@contextlib.contextmanager
def slow_frames(server, seconds: float = 0.05, fail: threading.Event | None = None):
    """Every engine frame takes at least `seconds` (so a long request outlives a short time limit by far), and
    raises while `fail` is set (an engine failure that no single request caused)."""
    runner = server.backend.tts.engine.runner
    frame = runner.frame

    def slowed(*args, **kwargs):
        if fail is not None and fail.is_set():
            raise RuntimeError("injected device failure")
        time.sleep(seconds)
        return frame(*args, **kwargs)

    runner.frame = slowed
    try:
        yield
    finally:
        del runner.frame  # the class's method again
