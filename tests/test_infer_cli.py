"""infer.py end to end on make_tiny checkpoints, batch resume, streaming, and clean one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import infer  # noqa: E402

SR = 24000


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from cat_tts.tools.make_tiny import make_tiny

    out = tmp_path_factory.mktemp("tiny")
    paths = make_tiny(out)
    ref = out / "ref.wav"
    t = np.arange(int(1.5 * SR)) / SR
    sf.write(ref, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), SR)
    return {"model": str(paths["model"]), "codec": str(paths["codec"]), "ref": str(ref)}


def _args(tiny, *extra):
    return ["--model", tiny["model"], "--codec", tiny["codec"], "--quiet", "--seed", "0", *extra]


FRAMES = ["--min-new-frames", "3", "--max-new-frames", "3"]


def test_infer_writes_a_24khz_wav_and_reports_depth_bitrate_rtf(tiny, tmp_path, capsys):
    out = tmp_path / "out.wav"
    rc = infer.main(_args(tiny, "--text", "Hello there.", "--prompt-audio", tiny["ref"], "--depth", "4", "-o", str(out),
                          *FRAMES))  # fmt: skip
    assert rc == 0
    audio, sr = sf.read(out, dtype="float32")
    assert sr == SR and audio.ndim == 1 and audio.size == 3 * 1920
    printed = capsys.readouterr().out
    assert "depth K = 4" in printed and "0.500 kbps" in printed and "RTF" in printed


def test_stream_flag_writes_the_same_audio(tiny, tmp_path):
    common = _args(tiny, "--text", "Hello there. Bye.", "--prompt-audio", tiny["ref"], "--prompt-text", "A tone.",
                   "--depth", "3", *FRAMES)  # fmt: skip
    assert infer.main([*common, "-o", str(tmp_path / "a.wav")]) == 0
    assert infer.main([*common, "--stream", "-o", str(tmp_path / "b.wav")]) == 0
    a, _ = sf.read(tmp_path / "a.wav", dtype="int16")
    b, _ = sf.read(tmp_path / "b.wav", dtype="int16")
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_jsonl_batch_is_resumable(tiny, tmp_path, capsys):
    jobs = tmp_path / "jobs.jsonl"
    ref_rel = os.path.relpath(tiny["ref"], tmp_path)
    lines = [
        {"id": "a", "text": "Hello there.", "prompt_audio": ref_rel},
        {"id": "b", "text": "Another line.", "prompt_audio": tiny["ref"], "prompt_text": "A tone."},
    ]
    jobs.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out_dir = tmp_path / "outs"
    args = _args(tiny, "--jsonl", str(jobs), "--out-dir", str(out_dir), "--depth", "2", *FRAMES)
    assert infer.main(args) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.wav", "b.wav"]
    stamp = (out_dir / "a.wav").stat().st_mtime_ns
    (out_dir / "b.wav").unlink()
    capsys.readouterr()
    assert infer.main(args) == 0
    assert "skipping 1 finished" in capsys.readouterr().out
    assert (out_dir / "b.wav").is_file() and (out_dir / "a.wav").stat().st_mtime_ns == stamp


def _run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, str(ROOT / "infer.py"), *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300
    )


@pytest.mark.parametrize(
    "args, reason",
    [
        (["--text", "   ", "--prompt-audio", "REF"], "text is empty"),
        (["--text", "Hi", "--prompt-audio", "missing.wav"], "not found"),
        (["--text", "Hi", "--prompt-audio", "REF", "--depth", "0"], "--depth must be >= 1"),
        (["--text", "Hi", "--prompt-audio", "REF", "--depth", "33"], "--depth must be in 1..32 for this model"),
        (["--text", "Hi", "--prompt-audio", "REF", "--top-p", "1.5"], "--top-p"),
        (["--text", "Hi", "--prompt-audio", "REF", "--repetition-penalty", "0"], "--repetition-penalty"),
        (["--text", "Hi", "--prompt-audio", "REF", "--temperature", "-0.5"], "--temperature must be in [0, 100]"),
        (
            ["--text", "Hi", "--prompt-audio", "REF", "--min-new-frames", "9", "--max-new-frames", "3"],
            "must not exceed",
        ),
        (["--text", "Hi"], "--prompt-audio is required"),
        (["--text", "Hi", "--prompt-audio", "REF", "--mode", "continuation"], "needs --prompt-text"),
        (["--text", "Hi", "--prompt-audio", "DIR"], "is a directory"),
        (["--text", "Hi", "--prompt-audio", "REF", "-o", "/proc/no-such/out.wav"], "--output: cannot write"),
        (["--text", "Hi", "--prompt-audio", "REF", "--codec", "MODEL"], "not a CAT codec"),
        (["--text", "Hi", "--prompt-audio", "REF", "--model", "CODEC"], "not a CAT-TTS model"),
        (["--text", "Hi", "--prompt-audio", "REF", "--model", "./no/such/dir"], "does not exist"),
        (["--text", "Hi", "--prompt-audio", "REF", "--max-reference-seconds", "0.5"], "limit"),
        (["--jsonl", "JOBS", "--out-dir", "/proc/no-such"], "--out-dir: cannot write"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tiny, tmp_path, capsys, args, reason):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"text": "Hi.", "prompt_audio": tiny["ref"]}) + "\n")
    names = {"REF": tiny["ref"], "DIR": str(tmp_path), "MODEL": tiny["model"], "CODEC": tiny["codec"]}
    args = [names.get(a, str(jobs) if a == "JOBS" else a) for a in args]
    for option in ("--model", "--codec"):
        if option not in args:
            args += [option, tiny[option[2:]]]
    if "-o" not in args and "--jsonl" not in args:
        args += ["-o", str(tmp_path / "o.wav")]
    assert infer.main(args) == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(lines) == 1 and reason in lines[0], lines


def test_a_user_error_in_a_real_process_is_one_line_and_exit_2(tiny):
    res = _run_cli("--text", "Hi", "--prompt-audio", tiny["ref"], "--depth", "0")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert [x for x in res.stderr.splitlines() if x.strip()] == [
        "error: --depth must be >= 1 (and at most the model's number of layers), got 0"
    ]


@pytest.mark.parametrize("kind", ["silent", "corrupt", "too_long"])
def test_bad_reference_after_loading_gives_one_line(tiny, tmp_path, capsys, kind):
    path = tmp_path / f"{kind}.wav"
    if kind == "silent":
        sf.write(path, np.zeros(SR, dtype=np.float32), SR)
    elif kind == "corrupt":
        path.write_bytes(b"RIFF1234WAVEjunkjunk")
    else:
        sf.write(path, np.full(31 * 8000, 0.1, dtype=np.float32), 8000)
    rc = infer.main(_args(tiny, "--text", "Hi", "--prompt-audio", str(path), "-o", str(tmp_path / "o.wav")))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and err[0].startswith("error: reference audio")


def test_unreachable_hub_tells_how_to_pass_local_directories(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = infer.main(["--text", "Hi", "--prompt-audio", tiny["ref"], "--model", "nobody-here/none", "-o",
                     str(tmp_path / "o.wav")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1
    assert "--model DIR --codec DIR" in err[0] and "make_tiny" in err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_device_without_cuda_gives_one_line(tiny, tmp_path, capsys):
    rc = infer.main(_args(tiny, "--text", "Hi", "--prompt-audio", tiny["ref"], "--device", "cuda", "-o",
                          str(tmp_path / "o.wav")))  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "CUDA is not available" in err[0]


def test_jsonl_bad_lines_and_clips_fail_alone(tiny, tmp_path, capsys):
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(SR, dtype=np.float32), SR)
    jobs = tmp_path / "jobs.jsonl"
    lines = [
        json.dumps({"id": "good-1", "text": "Hello.", "prompt_audio": tiny["ref"]}),
        json.dumps({"id": "quiet-one", "text": "Hi.", "prompt_audio": str(silent)}),
        "{not json",
        json.dumps({"id": "missing", "text": "Hi.", "prompt_audio": "nowhere.wav"}),
        json.dumps({"id": "good-2", "text": "Bye.", "prompt_audio": tiny["ref"]}),
    ]
    jobs.write_text("\n".join(lines) + "\n")
    out = tmp_path / "o"
    rc = infer.main(_args(tiny, "--jsonl", str(jobs), "--out-dir", str(out), *FRAMES))
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert sorted(p.name for p in out.glob("*.wav")) == ["good-1.wav", "good-2.wav"]  # the others were generated
    failures = [json.loads(x) for x in (out / "failures.jsonl").read_text().splitlines()]
    assert [(f["line"], f["id"]) for f in failures] == [(2, "quiet-one"), (3, "3"), (4, "missing")]
    assert "silent" in failures[0]["error"] and "JSON" in failures[1]["error"] and "not found" in failures[2]["error"]
    assert "3 of 5 jobs failed" in err and "'quiet-one'" in err
    # a rerun after fixing nothing regenerates nothing that exists and still reports the failures
    assert infer.main(_args(tiny, "--jsonl", str(jobs), "--out-dir", str(out), *FRAMES)) == 2
