"""serve.py: --help documents every option; bad input exits 2 with one line and no traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cat_tts.errors import USER_ERROR_EXIT_CODE
from cat_tts.server.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_option():
    out = subprocess.run([sys.executable, str(ROOT / "serve.py"), "--help"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)  # fmt: skip
    assert out.returncode == 0, out.stderr
    options = ("--model", "--codec", "--device", "--devices", "--dtype", "--host", "--port", "--api-key",
               "--voices-dir", "--max-slots", "--max-queue", "--max-input-chars", "--max-new-frames",
               "--min-new-frames", "--compile", "--request-timeout", "--shutdown-grace", "CAT_TTS_API_KEY")  # fmt: skip
    for option in options:
        assert option in out.stdout, option


@pytest.mark.parametrize("argv", [
    ["--port", "70000"],
    ["--max-slots", "0"],
    ["--max-queue", "-1"],
    ["--max-input-chars", "0"],
    ["--min-new-frames", "20", "--max-new-frames", "10"],
    ["--request-timeout", "0"],
    ["--devices", ","],
    ["--api-key", "  "],
])  # fmt: skip
def test_bad_options_exit_2_with_one_line(argv, capsys, tmp_path):
    assert main([*argv, "--voices-dir", str(tmp_path), "--device", "cpu"]) == USER_ERROR_EXIT_CODE
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err


def test_taken_port_exits_2(capsys, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--port", str(port), "--device", "cpu", "--voices-dir", str(tmp_path)]) == USER_ERROR_EXIT_CODE
    assert "cannot listen" in capsys.readouterr().err


@pytest.mark.slow  # imports the model stack (~5 s on 2 cores)
def test_missing_checkpoint_exits_2(capsys, tmp_path):
    code = main(["--port", "0", "--device", "cpu", "--model", str(tmp_path / "none"), "--codec", str(tmp_path / "no"),
                 "--voices-dir", str(tmp_path / "v")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == USER_ERROR_EXIT_CODE and "does not exist" in err and "\n" not in err, err


def test_parser_defaults_are_the_released_weights():
    from cat_tts.weights import DEFAULT_CODEC, DEFAULT_MODEL

    args = build_parser().parse_args([])
    assert (args.model, args.codec, args.host, args.port) == (DEFAULT_MODEL, DEFAULT_CODEC, "127.0.0.1", 8000)
