"""The `cat-tts` command: every subcommand runs its tool with the tool's own options, and a wheel installed in a fresh
virtual environment outside the repository runs `cat-tts` with the bundled voice (infer and serve)."""

from __future__ import annotations

import importlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cat_tts import commands

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 3  # frames per request on the random tiny checkpoints


def test_every_command_runs_its_tools_main(monkeypatch):
    ran = []
    for name, command in commands.COMMANDS.items():
        module = importlib.import_module(command.module)
        monkeypatch.setattr(module, "main", lambda argv, prog=None, name=name: ran.append((name, argv, prog)) or 7)
        assert commands.main([name, "--some", "option"]) == 7
    assert [r[0] for r in ran] == ["infer", "serve", "demo", "train", "eval", "bench"]
    assert all(argv == ["--some", "option"] for _, argv, _ in ran)
    assert {name: prog for name, _, prog in ran if prog} == {n: f"cat-tts {n}" for n in ("infer", "demo", "train")}


def test_a_commands_help_is_its_tools_help_under_the_commands_name(capsys):
    from cat_tts.commands.infer import build_parser

    with pytest.raises(SystemExit) as info:
        commands.main(["infer", "--help"])
    assert info.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith("usage: cat-tts infer") and shown == build_parser("cat-tts infer").format_help()


@pytest.mark.parametrize(("argv", "message"), [([], "give a command"), (["speak"], "invalid choice: 'speak'")])
def test_a_missing_or_unknown_command_is_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        commands.main(argv)
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "infer" in lines[0]


def test_python_dash_m_cat_tts_is_the_command():
    res = subprocess.run([sys.executable, "-m", "cat_tts", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0
    for name in commands.COMMANDS:
        assert f"    {name} " in res.stdout


# ---------------------------------------------------------------------- the wheel, installed elsewhere
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    """The wheel built from this working tree and installed into a fresh virtual environment (the system's packages
    visible for torch and the rest; the repository not on the path), and a working directory outside the repository.
    """
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy: building writes build/ and *.egg-info next to the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("cat_tts", "eval"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    env = clean_env()
    build = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(tmp)]
    subprocess.run([*build, "-q"], check=True, env=env, cwd=tmp, timeout=600)
    (wheel,) = tmp.glob("cat_tts-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)]
    subprocess.run(pip, check=True, env=env, cwd=tmp, timeout=600)
    work = tmp / "elsewhere"
    work.mkdir()
    return {"bin": venv / "bin", "work": work, "tmp": tmp}


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONNOUSERSITE": "1"}


def run_installed(installed, *argv: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(installed["bin"] / "cat-tts"), *argv], capture_output=True, text=True,
                          cwd=installed["work"], env=clean_env(), timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def tiny(installed) -> dict[str, str]:
    from cat_tts.tools.make_tiny import make_tiny

    paths = make_tiny(installed["tmp"] / "tiny")
    return {"model": str(paths["model"]), "codec": str(paths["codec"])}


@pytest.mark.slow  # builds and installs a wheel, then loads the tiny checkpoints in three fresh processes (~1-2 min)
def test_the_installed_command_runs_from_anywhere_with_the_bundled_voice(installed, tiny):
    python = str(installed["bin"] / "python")
    code = "import cat_tts.assets as a; print(a.default_voice().audio)"
    where = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=installed["work"],
                           env=clean_env(), check=True)  # fmt: skip
    clip = Path(where.stdout.strip())
    assert clip.is_file() and ROOT not in clip.parents and Path(installed["bin"]).parent in clip.parents

    res = run_installed(installed, "--help")
    assert res.returncode == 0 and all(f"    {name} " in res.stdout for name in commands.COMMANDS)

    out = installed["work"] / "hello.wav"
    frames = ["--min-new-frames", str(FRAMES), "--max-new-frames", str(FRAMES)]
    res = run_installed(installed, "infer", "--model", tiny["model"], "--codec", tiny["codec"], "--text", "Hello.",
                        "--seed", "0", "--quiet", *frames, "-o", str(out))  # fmt: skip
    assert res.returncode == 0, res.stderr
    audio, rate = sf.read(out, dtype="float32")
    assert rate == 24000 and audio.size == FRAMES * 1920 and np.isfinite(audio).all()


@pytest.mark.slow
def test_the_installed_server_answers_with_the_bundled_voice(installed, tiny):
    port = free_port()
    command = [str(installed["bin"] / "cat-tts"), "serve", "--model", tiny["model"], "--codec", tiny["codec"],
               "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
               "--voices-dir", str(installed["tmp"] / "voices")]  # fmt: skip
    log = installed["tmp"] / "serve.log"
    with log.open("w") as sink:
        server = subprocess.Popen(
            command, cwd=installed["work"], env=clean_env(), stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                    if json.loads(response.read()).get("status") == "ok":
                        break
            except OSError:
                time.sleep(0.5)
        body = {"input": "Hello.", "voice": "default", "response_format": "wav", "seed": 0,
                "min_new_frames": FRAMES, "max_new_frames": FRAMES}  # fmt: skip
        request = urllib.request.Request(f"{url}/v1/audio/speech", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=300) as response:
            assert response.status == 200
            audio, rate = sf.read(io.BytesIO(response.read()), dtype="float32")
        assert rate == 24000 and audio.size == FRAMES * 1920
        with urllib.request.urlopen(f"{url}/v1/audio/voices", timeout=30) as response:
            assert "default" in response.read().decode()
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
