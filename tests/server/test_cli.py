"""serve.py: --help documents every option; bad input exits 2 with one line naming the option, before the port
opens or the model loads."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cat_tts.errors import USER_ERROR_EXIT_CODE
from cat_tts.server.cli import build_parser, main, option_labels
from cat_tts.server.config import ServerConfig

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_option():
    out = subprocess.run([sys.executable, str(ROOT / "serve.py"), "--help"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)  # fmt: skip
    assert out.returncode == 0, out.stderr
    options = ("--model", "--codec", "--device", "--devices", "--dtype", "--host", "--port", "--api-key",
               "--public-metrics", "--voices-dir", "--max-slots", "--max-queue", "--max-input-chars",
               "--max-new-frames", "--min-new-frames", "--compile", "--cpu-prepack", "--max-upload-mb",
               "--max-voice-seconds", "--request-timeout", "--shutdown-grace", "CAT_TTS_API_KEY")  # fmt: skip
    for option in options:
        assert option in out.stdout, option


def test_every_server_setting_a_user_gives_is_named_by_its_option():
    labels = option_labels(build_parser())
    given = set(ServerConfig.field_names()) - {
        "install_default_voice",
        "max_body_bytes",
        "max_header_bytes",
        "max_voices",
        "retry_after_s",
    }  # set by code, not by options
    assert given <= set(labels), given - set(labels)
    assert all(labels[name] == "--" + name.replace("_", "-") for name in given)


@pytest.mark.parametrize(("argv", "option"), [
    (["--port", "70000"], "--port"),
    (["--max-slots", "0"], "--max-slots"),
    (["--max-queue", "-1"], "--max-queue"),
    (["--max-input-chars", "0"], "--max-input-chars"),
    (["--min-new-frames", "20", "--max-new-frames", "10"], "--min-new-frames"),
    (["--request-timeout", "0"], "--request-timeout"),
    (["--shutdown-grace", "-1"], "--shutdown-grace"),
    (["--max-upload-mb", "0"], "--max-upload-mb"),
    (["--max-voice-seconds", "0"], "--max-voice-seconds"),
    (["--devices", ","], "--devices"),
    (["--api-key", "  "], "--api-key"),
])  # fmt: skip
def test_bad_options_exit_2_with_one_line_naming_the_option(argv, option, capsys, tmp_path):
    assert main([*argv, "--voices-dir", str(tmp_path), "--device", "cpu"]) == USER_ERROR_EXIT_CODE
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {option} ") and "\n" not in err and "Traceback" not in err, err
    assert "_s " not in err and "bytes" not in err  # no internal field names


@pytest.mark.parametrize("kind", ["file", "proc"])
def test_an_unwritable_voices_dir_exits_2_naming_the_option(kind, capsys, tmp_path):
    voices = tmp_path / "taken" if kind == "file" else Path("/proc/self/voices")
    if kind == "file":
        voices.write_text("a file where the folder should be")
    assert main(["--voices-dir", str(voices), "--device", "cpu", "--port", "0"]) == USER_ERROR_EXIT_CODE
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --voices-dir: cannot write voices to") and "\n" not in err, err


def test_taken_port_exits_2(capsys, tmp_path, tiny_dirs):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["--port", str(port), "--device", "cpu", "--voices-dir", str(tmp_path), "--model",
                     str(tiny_dirs["model"]), "--codec", str(tiny_dirs["codec"])])  # fmt: skip
    assert code == USER_ERROR_EXIT_CODE and f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_missing_checkpoint_exits_2_before_the_port_opens(capsys, tmp_path):
    code = main(["--port", "0", "--device", "cpu", "--model", str(tmp_path / "none"), "--codec", str(tmp_path / "no"),
                 "--voices-dir", str(tmp_path / "v")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == USER_ERROR_EXIT_CODE and "does not exist" in err and "\n" not in err, err


def test_many_slots_on_a_cpu_are_warned_about_with_the_reason(caplog, tmp_path):
    with caplog.at_level(logging.WARNING, logger="cat_tts.server.cli"):
        main(["--max-slots", "4096", "--device", "cpu", "--model", str(tmp_path / "none"), "--voices-dir",
              str(tmp_path)])  # fmt: skip
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "--max-slots 4096 on a CPU" in warning and "slower than real time" in warning and "--max-queue" in warning


def test_parser_defaults_are_the_released_weights():
    from cat_tts.weights import DEFAULT_CODEC, DEFAULT_MODEL

    args = build_parser().parse_args([])
    assert (args.model, args.codec, args.host, args.port) == (DEFAULT_MODEL, DEFAULT_CODEC, "127.0.0.1", 8000)


def test_ipv6_addresses_are_written_in_brackets():
    from cat_tts.server.runner import url_of

    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    with socket.socket(socket.AF_INET6) as sock:
        try:
            sock.bind(("::1", 0))
        except OSError as err:
            pytest.skip(f"cannot bind ::1 ({err})")
        assert url_of(sock) == f"http://[::1]:{sock.getsockname()[1]}"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        assert url_of(sock) == f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize(("setting", "value", "option"), [
    ("max_new_frames", 3000, "--max-new-frames"),
    ("min_new_frames", 2500, "--min-new-frames"),
    ("max_voice_seconds", 60.0, "--max-voice-seconds"),
])  # fmt: skip
def test_a_server_limit_no_request_can_meet_is_refused(setting, value, option, tmp_path):
    from cat_tts.errors import FieldError
    from cat_tts.server.app import server_limits

    from .fakes import FakeBackend

    backend = FakeBackend()  # slots hold 2000 frames; voice clips of at most 30 s are encoded
    config = ServerConfig(voices_dir=tmp_path, **{setting: value})
    with pytest.raises(FieldError) as err:
        server_limits(config, backend)
    assert err.value.field == setting
    assert err.value.labelled(option_labels(build_parser())).startswith(f"{option} is ")
    limits = server_limits(ServerConfig(voices_dir=tmp_path, max_new_frames=500, max_input_chars=99), backend)
    assert (limits.max_frames, limits.max_text_chars) == (500, 99)  # a server cap below the slot's
