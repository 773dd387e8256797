"""`python -m cat_tts.tools.bench realtime` runs end to end at tiny sizes and reports what it promises: N WebSocket
sessions streaming text, once at a fixed depth and once with depth "auto", with stall and TTFA percentiles and the
depths used. No timing is asserted: the numbers are the benchmark's to measure (docs/notes/realtime.md)."""

from __future__ import annotations

import json
import math
import socket
import threading
import time

import pytest

for _module in ("fastapi", "uvicorn", "websockets", "prometheus_client", "python_multipart"):
    pytest.importorskip(_module, reason="bench realtime needs the serve extra")

from cat_tts.tools.bench.__main__ import main  # noqa: E402
from cat_tts.tools.bench.realtime import SENTENCES, session_words, write_checkpoints  # noqa: E402

RUN_KEYS = ("stall_s_p50", "stall_s_p95", "ttfa_ms_p50", "ttfa_ms_p95", "depths", "depth", "load_before",
            "load_after", "server_stall_s_p95")  # fmt: skip


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    """A real server (uvicorn in a thread) on tiny random checkpoints written the way the benchmark writes them."""
    from cat_tts.generation import EngineConfig
    from cat_tts.server.app import create_app
    from cat_tts.server.backend import PipelineBackend
    from cat_tts.server.config import ServerConfig
    from cat_tts.server.runner import DrainingServer, uvicorn_config

    tmp = tmp_path_factory.mktemp("realtime")
    model, codec = write_checkpoints(tmp, "tiny")
    engine = EngineConfig(max_slots=4, max_queue=8, cpu_prepack=False)
    config = ServerConfig(voices_dir=tmp / "voices", model_id="tiny")
    backend = PipelineBackend.from_pretrained(str(model), str(codec), "cpu", "auto", engine)
    app = create_app(config, backend)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = DrainingServer(uvicorn_config(app, config, "warning"), 1.0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 300
    while app.state.cat.phase not in ("ok", "failed") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app.state.cat.phase == "ok", app.state.cat.startup_error
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(60)
    sock.close()


def _check(result: dict, sessions: int) -> None:
    assert result["complete"] and result["sessions"] == sessions
    for mode in ("fixed", "auto"):
        run = result[mode]
        assert set(RUN_KEYS) <= set(run), mode
        assert all(math.isfinite(run[k]) and run[k] >= 0 for k in ("stall_s_p50", "stall_s_p95", "ttfa_ms_p50",
                                                                     "ttfa_ms_p95"))  # fmt: skip
        assert sum(run["depths"].values()) == run["segments"] >= sessions
    assert result["fixed"]["depths"] == {"32": result["fixed"]["segments"]}  # the fixed run is at 32 throughout
    assert result["auto"]["depth"] == "auto" and all(1 <= int(k) <= 32 for k in result["auto"]["depths"])
    assert isinstance(result["done_when"], bool)


def test_bench_realtime_runs_fixed_and_auto_sessions_against_a_server(server_url, tmp_path):
    out = tmp_path / "realtime.json"
    argv = ["--json", str(out), "realtime", "--url", server_url, "--sessions", "2", "--sentences", "1", "--frames", "2",
            "--stagger", "0", "--words-per-second", "200"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(out.read_text())
    _check(result, 2)
    assert result["preset"] == f"the server at {server_url}"


def test_sessions_send_different_sentences():
    words = [session_words(i, 2) for i in range(3)]
    assert words[0] != words[1] and " ".join(words[0]).startswith(SENTENCES[0])
    assert " ".join(words[1]) == f"{SENTENCES[1]} {SENTENCES[2]}"


def test_bad_options_are_one_line_and_exit_2(capsys):
    assert main(["realtime", "--sessions", "0"]) == 2
    assert "--sessions must be >= 1" in capsys.readouterr().err
    assert main(["realtime", "--preset", "huge"]) == 2  # refused before any server starts
    assert "--preset: unknown preset 'huge'" in capsys.readouterr().err


@pytest.mark.slow  # a server process starts (about half a minute on 2 busy cores)
def test_bench_realtime_starts_its_own_server_on_preset_checkpoints(tmp_path):
    out = tmp_path / "realtime.json"
    argv = ["--json", str(out), "realtime", "--sessions", "2", "--sentences", "1", "--frames", "2", "--stagger", "0",
            "--compile", "off"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(out.read_text())
    _check(result, 2)
    assert result["preset"] == "tiny"
