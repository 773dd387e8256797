"""app.py (`cat-tts demo`): --help documents every option; every user error exits 2 with one line and no traceback; a
good start loads the service on the engine, starts it, sizes the page's concurrency to its slots, and closes it on
exit."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from demo_fakes import tiny_model_config

from cat_tts.codec.config import CodecConfig
from cat_tts.demo import cli, kbps
from cat_tts.errors import USER_ERROR_EXIT_CODE
from cat_tts.weights import DEFAULT_CODEC, DEFAULT_MODEL, DTYPE_CHOICES

ROOT = Path(__file__).resolve().parents[2]


def run_main(argv: list[str]) -> int:
    """`cli.main` in this process; argparse's own errors exit through SystemExit."""
    try:
        return cli.main(argv)
    except SystemExit as e:
        return int(e.code)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_help_lists_every_option_and_the_defaults_come_from_one_place():
    text = cli.build_parser().format_help()
    for option in ("--model", "--codec", "--device", "--dtype", "--compile", "--host", "--port", "--share",
                   "--max-slots", "--concurrency", "--queue-size", "--max-text-chars", "--max-reference-seconds",
                   "--max-new-frames", "--min-new-frames"):  # fmt: skip
        assert option in text, option
    assert "engine's queue" in text  # what happens to requests beyond the slots
    from cat_tts.demo import DemoLimits
    from cat_tts.generation import EngineConfig

    args = cli.build_parser().parse_args([])
    assert (args.model, args.codec, args.host, args.port) == (DEFAULT_MODEL, DEFAULT_CODEC, "127.0.0.1", 7860)
    limits, engine = cli.settings_from_args(args)
    assert limits == DemoLimits() and engine == EngineConfig()  # the defaults are the library's
    assert args.concurrency is None and limits.concurrency_limit is None  # -> one per engine slot
    dtype = next(a for a in cli.build_parser()._actions if a.dest == "dtype")
    assert tuple(dtype.choices) == DTYPE_CHOICES


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "70000"], "--port must be in 1..65535, got 70000"),
        (["--port", "0"], "--port must be in 1..65535, got 0"),
        (["--port", "http"], "argument --port: invalid int value: 'http'"),
        (["--max-slots", "0"], "--max-slots must be an integer >= 1, got 0"),
        (["--concurrency", "0"], "--concurrency must be in 1..1024, got 0"),
        (["--queue-size", "0"], "--queue-size must be an integer in 1..10000, got 0"),
        (["--max-text-chars", "0"], "--max-text-chars must be an integer in 1..100000, got 0"),
        (["--max-reference-seconds", "0"], "--max-reference-seconds must be in (0, 600], got 0"),
        (["--min-new-frames", "9", "--max-new-frames", "2"], "--min-new-frames (9) must not exceed max_new_frames (2)"),
        (["--max-new-frames", "0"], "--max-new-frames must be >= 1, got 0"),
        (["--compile", "maybe"], "argument --compile: invalid choice: 'maybe'"),
        (["--dtype", "int8"], "argument --dtype: invalid choice: 'int8'"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_bad_options_exit_2_with_one_line(argv, message, capsys):
    assert run_main(argv) == USER_ERROR_EXIT_CODE
    assert message in one_line_error(capsys)


@pytest.mark.parametrize(
    ("model", "codec", "message"),
    [
        ("missing", "codec", r"--model: model directory '.*missing' does not exist"),
        ("model", "missing", r"--codec: codec directory '.*missing' does not exist"),
        ("codec", "codec", r"--model: .*codec holds a CAT codec .*not a CAT-TTS model .*: pass it as the codec"),
        ("model", "model", r"--codec: .*model holds a CAT-TTS model .*not a CAT codec .*: pass it as the model"),
        ("model/config.json", "codec", r"--model: .*config.json is a file, not a directory"),
    ],
)
def test_checkpoint_mistakes_exit_2_and_say_which_kind_of_directory(tiny_dirs, model, codec, message, capsys):
    root = tiny_dirs["model"].parent
    argv = ["--model", str(root / model), "--codec", str(root / codec), "--device", "cpu", "--port", "7999"]
    assert run_main(argv) == USER_ERROR_EXIT_CODE
    assert re.search(message, one_line_error(capsys))


def test_a_taken_port_exits_2_before_anything_loads(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        start = time.perf_counter()
        assert run_main(["--port", str(port), "--model", "/nonexistent"]) == USER_ERROR_EXIT_CODE
    assert f"cannot listen on 127.0.0.1:{port}" in one_line_error(capsys)
    assert time.perf_counter() - start < 5


def test_a_missing_cuda_device_exits_2(tiny_dirs, capsys):
    if __import__("torch").cuda.is_available():
        pytest.skip("CUDA is available here")
    argv = ["--model", str(tiny_dirs["model"]), "--codec", str(tiny_dirs["codec"]), "--device", "cuda"]
    assert run_main([*argv, "--port", "7999"]) == USER_ERROR_EXIT_CODE
    assert "CUDA is not available" in one_line_error(capsys)


@pytest.mark.parametrize(
    "argv", [["--model", "/nonexistent/model"], ["--min-new-frames", "9", "--max-new-frames", "2"]]
)
def test_app_py_process_exits_2_with_one_line(argv):
    result = subprocess.run([sys.executable, str(ROOT / "app.py"), *argv], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == USER_ERROR_EXIT_CODE, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr


@pytest.fixture(scope="module")
def model12(tmp_path_factory) -> Path:
    """A tiny model directory whose config has 12 RVQ layers (N), with its tokenizer."""
    from cat_tts.model.tiny import build_tiny_model
    from cat_tts.text.tiny_tokenizer import write_tiny_tokenizer

    out = tmp_path_factory.mktemp("model12") / "model"
    build_tiny_model(seed=0, config=tiny_model_config(12)).save_pretrained(out)
    write_tiny_tokenizer(out)
    return out


def test_start_serves_a_started_engine_sized_to_the_model_and_closes_it(model12, tiny_dirs, monkeypatch, capsys):
    import gradio as gr

    from cat_tts.inference import CatTTS

    seen: dict = {}
    start, close = CatTTS.start, CatTTS.close

    def spy_start(self):
        seen["started"] = True
        start(self)

    def spy_close(self, grace_s: float = 0.0):
        seen["closed"] = True
        close(self, grace_s)

    def fake_launch(demo, host, port, share, max_threads):  # instead of serving until interrupted
        seen.update(
            demo=demo, port=port, max_threads=max_threads, running=seen.get("started") and not seen.get("closed")
        )

    monkeypatch.setattr(CatTTS, "start", spy_start)
    monkeypatch.setattr(CatTTS, "close", spy_close)
    monkeypatch.setattr("cat_tts.demo.launch_demo", fake_launch)
    argv = ["--model", str(model12), "--codec", str(tiny_dirs["codec"]), "--device", "cpu", "--port", "7999"]
    assert cli.main([*argv, "--max-slots", "3"]) == 0
    out = capsys.readouterr().out
    assert "cpu, model in float32, codec in float32, compile auto" in out  # device and dtypes
    frame_rate = CodecConfig.from_json(tiny_dirs["codec"] / "config.json").frame_rate
    assert f"depth K = 1..12 layers ({kbps(1):g}..{kbps(12):g} kbps)" in out and f"{frame_rate:g} frames/s" in out
    assert "engine: 3 slots" in out and "up to 3 requests at once" in out
    assert seen["running"] and seen["closed"]  # served while the engine ran; closed on the way out
    demo = seen["demo"]
    assert demo._queue.default_concurrency_limit == 3 and seen["max_threads"] >= 3
    sliders = {b.label: b for b in demo.blocks.values() if isinstance(b, gr.Slider)}
    assert sliders["Bitrate"].maximum == sliders["Depth B"].value == 12
    (table,) = [b for b in demo.blocks.values() if isinstance(b, gr.Dataset)]
    assert max(row[-1] for row in table.samples) == 12  # the examples' depths follow the model too


def test_concurrency_above_the_slots_is_allowed_and_said(model12, tiny_dirs, monkeypatch, capsys):
    monkeypatch.setattr("cat_tts.demo.launch_demo", lambda demo, **kwargs: None)
    argv = ["--model", str(model12), "--codec", str(tiny_dirs["codec"]), "--device", "cpu", "--port", "7999"]
    assert cli.main([*argv, "--max-slots", "2", "--concurrency", "5"]) == 0
    assert "requests beyond the 2 slots wait in the engine's queue" in capsys.readouterr().out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# A real app.py process (imports, tiny checkpoints, Gradio start-up): ~10 s on 2 busy cores.
def test_app_py_serves_and_exits_0_on_sigterm(tiny_dirs, tmp_path):
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / "app.py"), "--model", str(tiny_dirs["model"]), "--codec",
               str(tiny_dirs["codec"]), "--device", "cpu", "--port", str(port), "--min-new-frames", "4"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        assert process.poll() is None, process.communicate()[0]
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "model in float32, codec in float32" in output and "engine: 8 slots" in output
    assert "Traceback" not in output
