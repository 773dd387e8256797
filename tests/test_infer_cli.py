"""infer.py (`cat-tts infer`) end to end on make_tiny checkpoints: every request field through its option and its jsonl
key, errors under the option's name as one line, the bundled voice, batch resume, streaming, atomic outputs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cat_tts.commands import infer
from cat_tts.commands.jobs import JSONL_LABELS, read_jobs
from cat_tts.errors import FieldError
from cat_tts.generation import EngineError, GenerationConfig, QueueFull
from cat_tts.inference import SpeechRequest

ROOT = Path(__file__).resolve().parents[1]
SR = 24000
FRAMES = ["--min-new-frames", "3", "--max-new-frames", "3"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from cat_tts.tools.make_tiny import make_tiny

    out = tmp_path_factory.mktemp("tiny")
    paths = make_tiny(out)
    ref = out / "ref.wav"
    t = np.arange(int(1.5 * SR)) / SR
    sf.write(ref, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), SR)
    return {"model": str(paths["model"]), "codec": str(paths["codec"]), "ref": str(ref)}


@pytest.fixture(scope="module")
def loaded(tiny):
    """One loaded service per batch size, reused by the runs of this module (loading is the slow part)."""
    cache = {}

    def load(args, model_dir, codec_dir):
        key = (args.batch_size if args.jsonl else 8, args.max_reference_seconds)
        if key not in cache:
            cache[key] = real_load(args, model_dir, codec_dir)
        return cache[key]

    real_load = infer._load
    return load


@pytest.fixture
def fast(monkeypatch, loaded):
    monkeypatch.setattr(infer, "_load", loaded)


def _args(tiny, *extra):
    return ["--model", tiny["model"], "--codec", tiny["codec"], "--quiet", "--seed", "0", *extra]


def _one_error_line(capsys) -> str:
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(lines) == 1, lines
    return lines[0]


# ---------------------------------------------------------------------- every request field through its option
# A usable value of every field as the command line spells it, and what the request holds then.
GOOD = {
    "text": (["Hello there."], "Hello there."),
    "reference_audio": (["REF"], "REF"),
    "reference_text": (["A tone."], "A tone."),
    "mode": (["clone"], "clone"),
    "instructions": (["Speak slowly."], "Speak slowly."),
    "language": (["English"], "English"),
    "duration": (["2.5"], 2.5),
    "depth": (["auto"], "auto"),
    "bitrate_kbps": (["1"], None),  # becomes depth 8
    "min_depth": (["2"], 2),
    "max_depth": (["6"], 6),
    "max_new_frames": (["40"], 40),
    "min_new_frames": (["3"], 3),
    "do_sample": ([], False),
    "temperature": (["0.7"], 0.7),
    "top_p": (["0.5"], 0.5),
    "top_k": (["7"], 7),
    "repetition_penalty": (["1.3"], 1.3),
    "control_temperature": (["0.9"], 0.9),
    "control_top_p": (["0.8"], 0.8),
    "control_top_k": (["9"], 9),
    "control_tokens": (["full"], "full"),
    "seed": (["123"], 123),
}
NEEDS = {
    "reference_text": ["--prompt-audio", "REF"],
    "min_depth": ["--depth", "auto"],
    "max_depth": ["--depth", "auto"],
}


def test_the_label_tables_cover_every_request_field():
    assert set(infer.INFER_LABELS) == set(SpeechRequest.field_names()) == set(GOOD)
    assert set(JSONL_LABELS) == set(SpeechRequest.field_names())
    assert len(set(infer.INFER_LABELS.values())) == len(infer.INFER_LABELS)  # one option per field
    assert len(set(JSONL_LABELS.values())) == len(JSONL_LABELS)


@pytest.mark.parametrize("field", sorted(GOOD))
def test_every_request_field_is_taken_from_its_option(field, tiny):
    values, expected = GOOD[field]
    flag = infer.INFER_LABELS[field]
    argv = [*NEEDS.get(field, []), flag, *values]
    if field != "text":
        argv = ["--text", "Hi.", *argv]
    argv = [tiny["ref"] if a == "REF" else a for a in argv]
    request = infer.single_request(infer.build_parser().parse_args(argv))
    holder = request.generation if field in GenerationConfig.field_names() else request
    if field == "bitrate_kbps":
        assert request.generation.depth == 8
    elif field == "reference_audio":
        assert request.reference_audio == tiny["ref"]
    else:
        assert getattr(holder, field) == expected


BAD = {
    "text": ("   ", "--text is empty"),
    "reference_audio": ("missing.wav", "--prompt-audio file not found"),
    "mode": ("continuation", None),  # checked below: continuation needs a transcript (bundled voice: has one)
    "language": ("x" * 65, "--language must be a name of 1-64"),
    "duration": ("-1", "--duration must be a number of seconds > 0"),
    "depth": ("0", "--depth must be >= 1, got 0"),
    "bitrate_kbps": ("0.01", "--bitrate-kbps must be at least 0.125"),
    "min_depth": ("0", "--min-depth must be >= 1"),
    "max_depth": ("0", "--max-depth must be >= 1"),
    "max_new_frames": ("0", "--max-new-frames must be >= 1"),
    "min_new_frames": ("-1", "--min-new-frames must be >= 0"),
    "temperature": ("-0.5", "--temperature must be in [0, 100]"),
    "top_p": ("1.5", "--top-p must be in (0, 1]"),
    "top_k": ("-1", "--top-k must be >= 0"),
    "repetition_penalty": ("0", "--repetition-penalty must be in (0, 100]"),
    "control_temperature": ("1e-45", "--control-temperature must be 0 or at least"),
    "control_top_p": ("0", "--control-top-p must be in (0, 1]"),
    "control_top_k": (str(2**63), "--control-top-k must be <="),
    "seed": ("-3", "--seed must be >= 0"),
}


@pytest.mark.parametrize("field", sorted(k for k, v in BAD.items() if v[1]))
def test_a_bad_value_is_refused_under_its_option_as_one_line_before_loading(field, tiny, tmp_path, capsys):
    value, reason = BAD[field]
    argv = ["--text", "Hi.", *NEEDS.get(field, []), infer.INFER_LABELS[field], value]
    argv = argv[2:] if field == "text" else argv
    argv = [tiny["ref"] if a == "REF" else a for a in argv]
    # a model directory that does not exist: the request is refused before any checkpoint is looked at
    rc = infer.main([*argv, "--model", str(tmp_path / "nothing"), "-o", str(tmp_path / "o.wav")])
    assert rc == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"error: {reason}"), line


def test_limits_of_the_model_are_checked_under_the_option(tiny, tmp_path, capsys):
    assert infer.main(_args(tiny, "--text", "Hi", "--depth", "33", "-o", str(tmp_path / "o.wav"))) == 2
    assert _one_error_line(capsys) == "error: --depth must be in 1..32 for this model, got 33"
    assert infer.main(_args(tiny, "--text", "Hi", "--duration", "1000", "-o", str(tmp_path / "o.wav"))) == 2
    line = _one_error_line(capsys)
    assert line.startswith("error: --duration 1000 s is 12500 frames; the frame limit"), line


def test_text_from_a_file_is_named_by_that_option(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n", encoding="utf-8")
    assert infer.main(["--text-file", str(empty), "--model", str(tmp_path), "-o", str(tmp_path / "o.wav")]) == 2
    assert _one_error_line(capsys).startswith("error: --text-file is empty")


def test_a_transcript_needs_its_clip(tmp_path, capsys):
    assert infer.main(["--text", "Hi", "--prompt-text", "words", "-o", str(tmp_path / "o.wav")]) == 2
    assert "--prompt-text is the transcript of --prompt-audio" in _one_error_line(capsys)


# ---------------------------------------------------------------------- runs
def test_infer_writes_a_24khz_wav_and_reports_depth_bitrate_rtf(tiny, tmp_path, capsys, fast):
    out = tmp_path / "out.wav"
    argv = _args(tiny, "--text", "Hello there.", "--prompt-audio", tiny["ref"], "--depth", "4", "-o", str(out), *FRAMES)
    assert infer.main(argv) == 0
    audio, sr = sf.read(out, dtype="float32")
    assert sr == SR and audio.ndim == 1 and audio.size == 3 * 1920
    printed = capsys.readouterr().out
    assert "depth K = 4" in printed and "0.500 kbps" in printed and "RTF" in printed


def test_without_a_prompt_the_bundled_voice_and_its_transcript_speak(tiny, tmp_path, fast):
    from cat_tts.assets import default_voice

    args = infer.build_parser().parse_args(["--text", "Hello."])
    request = infer.single_request(args)
    voice = default_voice()
    assert request.reference_audio == str(voice.audio) and request.reference_text == voice.text
    clone = infer.single_request(infer.build_parser().parse_args(["--text", "Hello.", "--mode", "clone"]))
    assert clone.reference_audio == str(voice.audio) and clone.reference_text is None
    out = tmp_path / "default.wav"
    assert infer.main(_args(tiny, "--text", "Hello.", "--language", "English", "--depth", "2", "-o", str(out),
                            *FRAMES)) == 0  # fmt: skip
    assert sf.info(out).frames == 3 * 1920


def test_stream_flag_writes_the_same_audio(tiny, tmp_path, fast):
    common = _args(tiny, "--text", "Hello there. Bye.", "--prompt-audio", tiny["ref"], "--prompt-text", "A tone.",
                   "--depth", "3", *FRAMES)  # fmt: skip
    assert infer.main([*common, "-o", str(tmp_path / "a.wav")]) == 0
    assert infer.main([*common, "--stream", "-o", str(tmp_path / "b.wav")]) == 0
    a, _ = sf.read(tmp_path / "a.wav", dtype="int16")
    b, _ = sf.read(tmp_path / "b.wav", dtype="int16")
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_a_stream_cut_short_leaves_no_file_and_says_the_engine_failed(tiny, tmp_path, capsys, fast, monkeypatch):
    from cat_tts.inference import CatTTS

    def failing(self, request, **kwargs):
        yield np.zeros(1920, dtype=np.float32)
        raise EngineError("frame step failed")

    monkeypatch.setattr(CatTTS, "stream_request", failing)
    out = tmp_path / "cut.wav"
    assert infer.main(_args(tiny, "--text", "Hi.", "--stream", "-o", str(out))) == 1
    assert _one_error_line(capsys) == "error: the engine failed: frame step failed (the log has the traceback)"
    assert list(tmp_path.iterdir()) == []  # neither the wav nor a temporary


def test_a_busy_engine_is_not_called_bad_input(tiny, tmp_path, capsys, fast, monkeypatch):
    from cat_tts.inference import CatTTS

    def busy(self, request, **kwargs):
        raise QueueFull("4 queued")

    monkeypatch.setattr(CatTTS, "synthesize_request", busy)
    assert infer.main(_args(tiny, "--text", "Hi.", "-o", str(tmp_path / "o.wav"))) == 1
    assert _one_error_line(capsys).startswith("error: the engine is busy")


def test_no_audio_writes_nothing_and_prints_no_nan(tiny, tmp_path, capsys, fast, monkeypatch):
    from cat_tts.inference import CatTTS

    monkeypatch.setattr(CatTTS, "synthesize_request", lambda self, r, **k: (np.zeros(0, np.float32), SR))
    monkeypatch.setattr(CatTTS, "iter_requests", lambda self, rs, **k: ((i, (np.zeros(0, np.float32), SR))
                                                                          for i, _ in enumerate(rs)))  # fmt: skip
    assert infer.main(_args(tiny, "--text", "Hi.", "-o", str(tmp_path / "o.wav"))) == 1
    captured = capsys.readouterr()
    assert "without audio; nothing written" in captured.err and not re.search(r"\bnan\b", captured.out + captured.err)
    assert not (tmp_path / "o.wav").exists()
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"id": "a", "text": "Hi."}) + "\n")
    assert infer.main(_args(tiny, "--jsonl", str(jobs), "--out-dir", str(tmp_path / "outs"))) == 1
    captured = capsys.readouterr()
    assert "wrote 0 files" in captured.out and "no audio in" in captured.out
    assert not re.search(r"\bnan\b", (captured.out + captured.err).lower())
    assert not list((tmp_path / "outs").glob("*.wav"))


# ---------------------------------------------------------------------- jsonl jobs
def test_jsonl_batch_is_resumable_and_reads_a_byte_order_mark(tiny, tmp_path, capsys, fast):
    jobs = tmp_path / "jobs.jsonl"
    ref_rel = os.path.relpath(tiny["ref"], tmp_path)
    lines = [
        {"id": "a", "text": "Hello there.", "prompt_audio": ref_rel, "language": "English"},
        {"id": "b", "text": "Another line.", "prompt_audio": tiny["ref"], "prompt_text": "A tone.", "duration": 0.2},
        {"id": "c", "text": "The bundled voice."},
    ]
    jobs.write_bytes(b"\xef\xbb\xbf" + "\n".join(json.dumps(x) for x in lines).encode() + b"\n")
    out_dir = tmp_path / "outs"
    args = _args(tiny, "--jsonl", str(jobs), "--out-dir", str(out_dir), "--depth", "2", *FRAMES)
    assert infer.main(args) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.wav", "b.wav", "c.wav"]
    stamp = (out_dir / "a.wav").stat().st_mtime_ns
    (out_dir / "b.wav").unlink()
    capsys.readouterr()
    assert infer.main(args) == 0
    assert "skipping 2 finished" in capsys.readouterr().out
    assert (out_dir / "b.wav").is_file() and (out_dir / "a.wav").stat().st_mtime_ns == stamp


def test_jsonl_lines_take_every_request_field_under_its_key(tiny, tmp_path):
    values = {
        "text": "Hi.", "prompt_audio": tiny["ref"], "prompt_text": "A tone.", "mode": "continuation",
        "instructions": "Calm.", "language": "Chinese", "duration": 1.5, "depth": "auto", "min_depth": 2,
        "max_depth": 5, "max_new_frames": 30, "min_new_frames": 2, "do_sample": False, "temperature": 0.5,
        "top_p": 0.9, "top_k": 11, "repetition_penalty": 1.2, "control_temperature": 1.1, "control_top_p": 0.7,
        "control_top_k": 13, "control_tokens": "full", "seed": 5,
    }  # fmt: skip
    assert set(values) | {"bitrate_kbps"} == set(JSONL_LABELS.values())
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps(values) + "\n" + json.dumps({"text": "Hi.", "bitrate_kbps": 0.5}) + "\n")
    first, second = read_jobs(jobs, {"top_k": 3, "language": "English"})
    request = first.request
    for field, key in JSONL_LABELS.items():
        if key in values and key != "prompt_audio":
            holder = request.generation if field in GenerationConfig.field_names() else request
            assert getattr(holder, field) == values[key], field
    assert request.reference_audio == tiny["ref"]
    assert second.request.generation.depth == 4 and second.request.generation.top_k == 3  # the command line's
    assert second.request.language == "English"


def test_jsonl_seeds_follow_the_line_not_what_is_left_to_do(tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps({"id": n, "text": "Hi."}) + "\n" for n in "abc"))
    seeds = [j.request.generation.seed for j in read_jobs(jobs, {"seed": 7})]
    assert seeds[0] == 7 and len(set(seeds)) == 3
    assert [j.request.generation.seed for j in read_jobs(jobs, {"seed": 7})] == seeds


def test_jsonl_bad_lines_and_clips_fail_alone_under_their_keys(tiny, tmp_path, capsys, fast):
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(SR, dtype=np.float32), SR)
    jobs = tmp_path / "jobs.jsonl"
    lines = [
        json.dumps({"id": "good-1", "text": "Hello.", "prompt_audio": tiny["ref"]}),
        json.dumps({"id": "quiet-one", "text": "Hi.", "prompt_audio": str(silent)}),
        "{not json",
        json.dumps({"id": "missing", "text": "Hi.", "prompt_audio": "nowhere.wav"}),
        json.dumps({"id": "typo", "text": "Hi.", "top-k": 5}),
        json.dumps({"id": "bad-k", "text": "Hi.", "top_k": -2}),
        json.dumps({"id": "good-2", "text": "Bye.", "prompt_audio": tiny["ref"]}),
    ]
    jobs.write_text("\n".join(lines) + "\n")
    out = tmp_path / "o"
    rc = infer.main(_args(tiny, "--jsonl", str(jobs), "--out-dir", str(out), *FRAMES))
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert sorted(p.name for p in out.glob("*.wav")) == ["good-1.wav", "good-2.wav"]  # the others were generated
    failures = [json.loads(x) for x in (out / "failures.jsonl").read_text().splitlines()]
    assert [(f["line"], f["id"]) for f in failures] == [(2, "quiet-one"), (3, "3"), (4, "missing"), (5, "typo"),
                                                        (6, "bad-k")]  # fmt: skip
    errors = [f["error"] for f in failures]
    assert errors[0].startswith("prompt_audio") and "silent" in errors[0]
    assert "JSON" in errors[1]
    assert errors[2].startswith("prompt_audio file not found")
    assert errors[3].startswith("unknown key 'top-k'")
    assert errors[4] == "top_k must be >= 0, got -2"
    assert "5 of 7 jobs failed" in err and "'quiet-one'" in err
    # a rerun regenerates nothing that exists and still reports the failures
    assert infer.main(_args(tiny, "--jsonl", str(jobs), "--out-dir", str(out), *FRAMES)) == 2


# ---------------------------------------------------------------------- other one-line errors
@pytest.mark.parametrize(
    "args, reason",
    [
        (["--text", "Hi", "--prompt-audio", "DIR"], "--prompt-audio"),
        (["--text", "Hi", "--prompt-audio", "REF", "-o", "/proc/no-such/out.wav"], "--output: cannot write"),
        (["--text", "Hi", "--prompt-audio", "REF", "--codec", "MODEL"], "not a CAT codec"),
        (["--text", "Hi", "--prompt-audio", "REF", "--model", "CODEC"], "not a CAT-TTS model"),
        (["--text", "Hi", "--prompt-audio", "REF", "--model", "./no/such/dir"], "does not exist"),
        (["--text", "Hi", "--top-k", "many"], "argument --top-k: invalid int value"),
        (["--text", "Hi", "--depth", "deep"], "argument --depth: expected an integer or auto"),
        (["--jsonl", "JOBS", "--out-dir", "/proc/no-such"], "--out-dir: cannot write"),
        (["--jsonl", "JOBS"], "--jsonl needs --out-dir"),
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
    if "argument" in reason:  # argparse's own type check: one line too
        with pytest.raises(SystemExit) as raised:
            infer.main(args)
        assert raised.value.code == 2
    else:
        assert infer.main(args) == 2
    assert reason in _one_error_line(capsys)


def test_a_user_error_in_a_real_process_is_one_line_and_exit_2(tiny):
    res = subprocess.run([sys.executable, str(ROOT / "infer.py"), "--text", "Hi", "--depth", "0"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)  # fmt: skip
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert [x for x in res.stderr.splitlines() if x.strip()] == ["error: --depth must be >= 1, got 0"]


@pytest.mark.parametrize("kind", ["silent", "corrupt", "too_long"])
def test_bad_reference_after_loading_gives_one_line_under_the_option(tiny, tmp_path, capsys, kind, fast):
    path = tmp_path / f"{kind}.wav"
    if kind == "silent":
        sf.write(path, np.zeros(SR, dtype=np.float32), SR)
    elif kind == "corrupt":
        path.write_bytes(b"RIFF1234WAVEjunkjunk")
    else:
        sf.write(path, np.full(31 * 8000, 0.1, dtype=np.float32), 8000)
    rc = infer.main(_args(tiny, "--text", "Hi", "--prompt-audio", str(path), "-o", str(tmp_path / "o.wav")))
    assert rc == 2 and _one_error_line(capsys).startswith("error: --prompt-audio: ")


def test_unreachable_hub_tells_how_to_pass_local_directories(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = infer.main(["--text", "Hi", "--model", "nobody-here/none", "-o", str(tmp_path / "o.wav")])
    line = _one_error_line(capsys)
    assert rc == 2 and "--model DIR --codec DIR" in line and "make_tiny" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_device_without_cuda_gives_one_line(tiny, tmp_path, capsys):
    rc = infer.main(_args(tiny, "--text", "Hi", "--device", "cuda", "-o", str(tmp_path / "o.wav")))
    assert rc == 2 and "CUDA is not available" in _one_error_line(capsys)


def test_field_errors_are_shown_under_the_front_ends_label():
    err = FieldError("top_k", "top_k must be >= 0, got -1")
    assert err.labelled(infer.INFER_LABELS) == "--top-k must be >= 0, got -1"
    assert err.labelled(JSONL_LABELS) == "top_k must be >= 0, got -1"
