"""`generate`: one wav per usable line and depth, failures isolated and listed, resumable, per-utterance seeds and
timings, depths checked against the model's config, one-line user errors.

The synthesiser is injected (a small fake with `CatTTS.iter_requests` and `CatTTS.limits`); the end-to-end runs on the
make_tiny checkpoints (the real engine) are in test_seedtts_generate_tiny.py.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import eval.seedtts.__main__ as cli
from cat_tts.errors import USER_ERROR_EXIT_CODE, FieldError, InputError
from cat_tts.inference import Limits, SpeechRequest
from eval.seedtts.generate import EVAL_LABELS, FAILURES_FILE, check_depths, generate_testset, utterance_seed
from eval.seedtts.testset import read_testset


class FakeTTS:
    """Deterministic stand-in for `CatTTS.iter_requests`: noise seeded by the request's seed, length depending on the
    text; requests whose text contains `fail_on` fail alone (their result is an InputError), as do unusable requests
    (their result is their error, as `iter_requests` gives it)."""

    def __init__(self, fail_on: str | None = None, n_vq: int = 32, slots: int = 4) -> None:
        self.calls: list[dict] = []
        self.batches: list[int] = []  # requests per iter_requests call
        self.fail_on = fail_on
        self.n_vq = n_vq
        self.limits = Limits(n_vq=n_vq, frame_rate=12.5, max_frames=2000)
        self.engine = type("Engine", (), {"config": type("Config", (), {"max_slots": slots})()})()

    def iter_requests(self, requests, on_frame=None):
        requests = list(requests)
        self.batches.append(len(requests))
        for i, request in enumerate(requests):
            if isinstance(request, Exception):
                yield i, request
                continue
            assert isinstance(request, SpeechRequest)
            self.calls.append({
                "text": request.text, "reference_audio": request.reference_audio,
                "reference_text": request.reference_text, "seed": request.generation.seed,
                "depth": request.generation.depth, "config": request.generation, "request": request,
            })  # fmt: skip
            if self.fail_on and self.fail_on in request.text:
                yield i, InputError(f"cannot synthesise {request.text!r}")
                continue
            rng = np.random.default_rng(request.generation.seed)
            yield i, ((0.1 * rng.standard_normal(1920 * (2 + len(request.text) % 4))).astype(np.float32), 24000)


def _wavs(d: Path) -> list[str]:
    return sorted(p.name for p in d.glob("*.wav"))


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def _argv(meta: Path, out: Path, *extra: str) -> list[str]:
    return ["generate", "--meta", str(meta), "--model", "M", "--codec", "C", "--out", str(out), *extra]


@pytest.fixture
def model_config_dir(tmp_path: Path) -> Path:
    """A model directory that holds only a config.json saying N = 8 layers (no weights: nothing can load it)."""
    d = tmp_path / "model8"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "moss_tts_delay", "n_vq": 8}))
    return d


def test_generate_cli_writes_every_usable_line_per_depth_and_lists_the_bad_line(
    tiny_testset: Path, tmp_path: Path, monkeypatch, capsys
):
    fake = FakeTTS()
    loads = []
    monkeypatch.setattr(cli, "load_pipeline", lambda args, depths: loads.append((args.model, depths)) or fake)
    out = tmp_path / "sweep"
    argv = _argv(tiny_testset, out, "--depths", "4", "2", "--seed", "7", "--temperature", "0.7")
    argv += ["--max-new-frames", "50"]
    assert cli.main(argv) == USER_ERROR_EXIT_CODE  # utt_c-1 cannot be generated: the run is not complete
    captured = capsys.readouterr()
    assert "utt_c-1 (line 3)" in captured.err
    assert "failed: utt_c-1 (line 3), every depth: audio file not found" in captured.err
    assert json.loads((out / "bad_lines.json").read_text())[0]["utt"] == "utt_c-1"
    for k in (2, 4):
        assert _wavs(out / f"depth_{k}") == ["utt_a-1.wav", "utt_a-2.wav", "utt_b-1.wav"]
        info = sf.info(str(out / f"depth_{k}" / "utt_b-1.wav"))
        assert (info.samplerate, info.channels) == (24000, 1)
        log = _jsonl(out / f"depth_{k}" / "generation.jsonl")
        assert sorted(r["utt"] for r in log) == ["utt_a-1", "utt_a-2", "utt_b-1"]
        assert all(r["depth"] == k and r["rtf"] == pytest.approx(r["seconds"] / r["audio_seconds"]) for r in log)
        assert {r["slots"] for r in log} == {4}
        failures = _jsonl(out / f"depth_{k}" / FAILURES_FILE)
        assert [(f["utt"], f["line"], f["depth"], f["stage"]) for f in failures] == [("utt_c-1", 3, k, "test list")]
    assert fake.batches == [3, 3]  # every missing utterance of a depth goes to the engine in one call
    first = next(c for c in fake.calls if c["text"] == "Get the trust fund to the bank early." and c["depth"] == 2)
    assert first["seed"] == utterance_seed(7, "utt_a-1")
    assert first["reference_audio"] == str(tiny_testset.parent / "prompt-wavs" / "spk_a.wav")
    assert first["reference_text"] == "We asked over twenty different people."
    assert (first["config"].temperature, first["config"].max_new_frames) == (0.7, 50)
    assert first["config"].top_p == type(first["config"])().top_p  # unset options keep GenerationConfig's defaults

    # second run: everything that can exist exists: nothing is regenerated and the model is not even loaded
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("depth_*/*.wav")}
    fake.calls.clear()
    assert cli.main(argv) == USER_ERROR_EXIT_CODE
    assert fake.calls == [] and loads == [("M", [2, 4])]
    assert {p: p.stat().st_mtime_ns for p in out.glob("depth_*/*.wav")} == mtimes
    assert "wrote 0, kept 3, failed 1" in capsys.readouterr().out


def test_a_complete_list_exits_zero_and_leaves_no_failures_file(tiny_testset: Path, tmp_path: Path, monkeypatch):
    lines = [x for x in tiny_testset.read_text().splitlines() if not x.startswith("utt_c-1")]
    tiny_testset.write_text("\n".join(lines) + "\n")
    (tmp_path / "depth_8").mkdir()
    (tmp_path / "depth_8" / FAILURES_FILE).write_text('{"utt": "stale"}\n')
    monkeypatch.setattr(cli, "load_pipeline", lambda args, depths: FakeTTS())
    assert cli.main(_argv(tiny_testset, tmp_path, "--depths", "8")) == 0
    assert not (tmp_path / "depth_8" / FAILURES_FILE).exists()


def test_resumed_run_regenerates_only_missing_files_with_the_same_seed(tiny_testset: Path, tmp_path: Path):
    ts = read_testset(tiny_testset)
    generate_testset(ts, FakeTTS(), tmp_path, [8], seed=3)
    target = tmp_path / "depth_8" / "utt_b-1.wav"
    before = target.read_bytes()
    target.unlink()
    fake = FakeTTS()
    report = generate_testset(ts, fake, tmp_path, [8], seed=3)
    assert report.written[8] == ["utt_b-1"] and sorted(report.kept[8]) == ["utt_a-1", "utt_a-2"]
    assert [c["text"] for c in fake.calls] == ["Hello, world!"]
    assert target.read_bytes() == before
    assert not list((tmp_path / "depth_8").glob(".*partial*"))


def test_a_failing_utterance_fails_alone_and_is_retried_on_the_next_run(
    tiny_testset: Path, tmp_path: Path, monkeypatch, capsys
):
    monkeypatch.setattr(cli, "load_pipeline", lambda args, depths: FakeTTS(fail_on="Hello"))
    argv = _argv(tiny_testset, tmp_path, "--depths", "8")
    assert cli.main(argv) == USER_ERROR_EXIT_CODE
    err = capsys.readouterr().err
    assert "failed: utt_b-1 (line 2), every depth: InputError: cannot synthesise 'Hello, world!'" in err
    assert "error: 2 of 4 test lines failed" in err
    assert _wavs(tmp_path / "depth_8") == ["utt_a-1.wav", "utt_a-2.wav"]  # the utterances after it are generated
    failures = _jsonl(tmp_path / "depth_8" / FAILURES_FILE)
    assert [(f["utt"], f["stage"]) for f in failures] == [("utt_b-1", "synthesis"), ("utt_c-1", "test list")]
    assert "cannot synthesise" in failures[0]["error"]
    fake = FakeTTS()
    monkeypatch.setattr(cli, "load_pipeline", lambda args, depths: fake)
    assert cli.main(argv) == USER_ERROR_EXIT_CODE  # utt_c-1 is still unusable
    assert [c["text"] for c in fake.calls] == ["Hello, world!"]
    assert [f["utt"] for f in _jsonl(tmp_path / "depth_8" / FAILURES_FILE)] == ["utt_c-1"]


def test_an_empty_output_is_a_failure_of_that_utterance(tiny_testset: Path, tmp_path: Path):
    class Silent(FakeTTS):
        def iter_requests(self, requests, **kwargs):
            requests = list(requests)
            for i, result in super().iter_requests(requests, **kwargs):
                yield i, (np.zeros(0, np.float32), 24000) if "Hello" in requests[i].text else result

    report = generate_testset(read_testset(tiny_testset), Silent(), tmp_path, [8])
    assert [(f.utt, f.stage) for f in report.failed[8]] == [("utt_b-1", "synthesis"), ("utt_c-1", "test list")]
    assert "no samples" in report.failed[8][0].error
    assert sorted(report.written[8]) == ["utt_a-1", "utt_a-2"]


def test_clone_mode_does_not_pass_the_prompt_transcript(tiny_testset: Path, tmp_path: Path):
    fake = FakeTTS()
    generate_testset(read_testset(tiny_testset), fake, tmp_path, [1], mode="clone")
    assert [c["reference_text"] for c in fake.calls] == [None, None, None]
    log = _jsonl(tmp_path / "depth_1" / "generation.jsonl")
    assert {r["mode"] for r in log} == {"clone"}
    with pytest.raises(InputError, match="mode must be one of"):
        generate_testset(read_testset(tiny_testset), fake, tmp_path, [1], mode="ICL")


def test_an_exception_raised_by_the_synthesiser_stops_the_run_and_keeps_what_was_written(
    tiny_testset: Path, tmp_path: Path
):
    class Broken(FakeTTS):
        def iter_requests(self, requests, **kwargs):
            for i, result in super().iter_requests(requests, **kwargs):
                if i == 1:
                    raise AttributeError("pipeline bug")
                yield i, result

    with pytest.raises(AttributeError, match="pipeline bug"):
        generate_testset(read_testset(tiny_testset), Broken(), tmp_path, [8])
    assert _wavs(tmp_path / "depth_8") == ["utt_a-1.wav"]
    failures = _jsonl(tmp_path / "depth_8" / FAILURES_FILE)
    assert [f["utt"] for f in failures] == ["utt_b-1", "utt_c-1", "utt_a-2"]
    assert failures[0]["error"] == "not generated: AttributeError: pipeline bug"


def test_depths_are_checked_against_the_synthesisers_layers(tiny_testset: Path, tmp_path: Path):
    assert check_depths([8, 2, 8]) == [2, 8]
    with pytest.raises(InputError, match=r"1\.\.8"):
        generate_testset(read_testset(tiny_testset), FakeTTS(n_vq=8), tmp_path, [4, 9])
    assert not (tmp_path / "depth_4").exists()  # refused before anything is generated
    for bad in ([], [0], [-3]):
        with pytest.raises(InputError):
            check_depths(bad)


def test_depth_above_the_models_layers_is_refused_before_loading(
    tiny_testset: Path, tmp_path: Path, model_config_dir: Path, monkeypatch, capsys
):
    from cat_tts.inference import CatTTS

    def never(*args, **kwargs):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(CatTTS, "from_pretrained", never)
    argv = ["generate", "--meta", str(tiny_testset), "--model", str(model_config_dir), "--codec", "C"]
    assert cli.main([*argv, "--out", str(tmp_path / "o"), "--depths", "4", "9"]) == USER_ERROR_EXIT_CODE
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: --depths: depth must be in 1..8 for this model, got 9")
    assert f"model {model_config_dir} has N = 8 layers" in err
    assert not list((tmp_path / "o").glob("depth_*"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--depths", "0"], "error: --depths: depth must be >= 1, got 0"),
        (["--depths", "2", "--temperature", "-1"], "error: --temperature must be in [0, 100], got -1"),
        (["--depths", "2", "--min-new-frames", "9", "--max-new-frames", "3"], "error: --min-new-frames (9) must not"),
        (["--depths", "2", "--slots", "0"], "error: --slots must be >= 1, got 0"),
        (["--depths", "2", "--batch-size", "0"], "error: --slots must be >= 1, got 0"),
    ],
)
def test_bad_options_are_one_line_errors_before_anything_is_read(
    tiny_testset: Path, tmp_path: Path, extra, message, monkeypatch, capsys
):
    monkeypatch.setattr(cli, "load_pipeline", lambda args, depths: pytest.fail("nothing may be loaded"))
    assert cli.main(_argv(tmp_path / "no_such.lst", tmp_path / "o", *extra)) == USER_ERROR_EXIT_CODE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(message)


def test_user_errors_are_one_line_with_exit_code_2(
    tiny_testset: Path, tmp_path: Path, model_config_dir: Path, monkeypatch, capsys
):
    def run(*argv: str) -> str:
        assert cli.main(list(argv)) == USER_ERROR_EXIT_CODE
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines[-1].startswith("error: ")
        return lines[-1]

    base = ["generate", "--depths", "2", "--out", str(tmp_path / "o")]
    assert "test list not found" in run(*base, "--meta", str(tmp_path / "nope.lst"))
    out_file = tmp_path / "a_file"
    out_file.write_text("x")
    msg = run("generate", "--meta", str(tiny_testset), "--depths", "2", "--out", str(out_file))
    assert msg == f"error: --out {out_file} is a file, not a directory; choose a directory"
    msg = run(*base, "--meta", str(tiny_testset), "--model", str(tmp_path / "missing"), "--codec", "C")
    assert "does not exist" in msg and "hub" not in msg
    msg = run(*base, "--meta", str(tiny_testset), "--model", str(model_config_dir), "--codec", str(model_config_dir))
    assert "holds a CAT-TTS model" in msg and "not a CAT codec" in msg
    empty = tmp_path / "empty.lst"
    empty.write_text("u|p|nope.wav|t\n")
    assert "has no usable line" in run(*base, "--meta", str(empty))


def test_model_given_as_codec_exits_2_without_a_traceback(tiny_testset: Path, tmp_path: Path, model_config_dir: Path):
    argv = ["--meta", str(tiny_testset), "--model", str(model_config_dir), "--codec", str(model_config_dir)]
    proc = subprocess.run(
        [sys.executable, "-m", "eval.seedtts", "generate", *argv, "--depths", "2", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[2],
        timeout=300,
    )
    assert proc.returncode == USER_ERROR_EXIT_CODE
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {model_config_dir} holds a CAT-TTS model")


# ---------------------------------------------------------------------- every request field
def test_the_label_table_covers_every_request_field():
    assert set(EVAL_LABELS) == set(SpeechRequest.field_names())
    (sub,) = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    options = {flag for action in sub.choices["generate"]._actions for flag in action.option_strings}
    for field, label in EVAL_LABELS.items():
        assert label in options or "field of the test list" in label, (field, label)


# A value of every field the generate command takes for the whole run, and what each request holds then.
RUN = {
    "instructions": (["--instructions", "Calm."], "Calm."),
    "language": (["--language", "English"], "English"),
    "duration": (["--duration", "1.5"], 1.5),
    "max_new_frames": (["--max-new-frames", "40"], 40),
    "min_new_frames": (["--min-new-frames", "3"], 3),
    "do_sample": (["--greedy"], False),
    "temperature": (["--temperature", "0.7"], 0.7),
    "top_p": (["--top-p", "0.5"], 0.5),
    "top_k": (["--top-k", "7"], 7),
    "repetition_penalty": (["--repetition-penalty", "1.3"], 1.3),
    "control_temperature": (["--control-temperature", "0.9"], 0.9),
    "control_top_p": (["--control-top-p", "0.8"], 0.8),
    "control_top_k": (["--control-top-k", "9"], 9),
    "control_tokens": (["--control-tokens", "full"], "full"),
    "mode": (["--mode", "clone"], "clone"),
}


@pytest.mark.parametrize("field", sorted(RUN))
def test_every_run_option_reaches_every_request(field, tiny_testset: Path, tmp_path: Path, monkeypatch):
    fake = FakeTTS()
    monkeypatch.setattr(cli, "load_pipeline", lambda args, depths: fake)
    extra, expected = RUN[field]
    cli.main(_argv(tiny_testset, tmp_path / "o", "--depths", "3", *extra))
    assert len(fake.calls) == 3
    for call in fake.calls:
        request = call["request"]
        if field == "mode":  # clone: the prompt transcript is not given
            assert request.reference_text is None
            continue
        holder = request.generation if hasattr(request.generation, field) else request
        assert getattr(holder, field) == expected, field
        assert request.generation.depth == 3


def test_each_line_gives_its_text_voice_and_transcript_and_each_depth_its_seed(tiny_testset: Path, tmp_path: Path):
    fake = FakeTTS()
    generate_testset(read_testset(tiny_testset), fake, tmp_path, [2, 5], seed=11)
    first = [c["request"] for c in fake.calls if c["text"] == "Hello, world!"]
    assert [r.generation.depth for r in first] == [2, 5]
    assert {r.generation.seed for r in first} == {utterance_seed(11, "utt_b-1")}
    assert first[0].reference_text == "It was his." and first[0].reference_audio.endswith("spk_b.wav")


def test_bitrates_give_the_depths(tiny_testset: Path, tmp_path: Path, monkeypatch, capsys):
    fake = FakeTTS()
    monkeypatch.setattr(cli, "load_pipeline", lambda args, depths: fake)
    cli.main(_argv(tiny_testset, tmp_path / "o", "--bitrates-kbps", "0.25", "1"))
    assert sorted({c["depth"] for c in fake.calls}) == [2, 8]
    assert sorted(p.name for p in (tmp_path / "o").glob("depth_*")) == ["depth_2", "depth_8"]
    assert cli.main(_argv(tiny_testset, tmp_path / "o", "--bitrates-kbps", "0.01")) == USER_ERROR_EXIT_CODE
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: --bitrates-kbps must be at least 0.125")


@pytest.mark.parametrize(
    ("spec", "language"),
    [("English", "English"), ("en=Englisch,zh=Chinesisch", "Englisch"), ("zh=Chinese", None), ("auto", "English")],
)
def test_language_per_test_set(spec, language, tiny_testset: Path, tmp_path: Path, monkeypatch):
    assert tiny_testset.parent.name == "en"
    fake = FakeTTS()
    monkeypatch.setattr(cli, "load_pipeline", lambda args, depths: fake)
    cli.main(_argv(tiny_testset, tmp_path / "o", "--depths", "2", "--language", spec))
    assert {c["request"].language for c in fake.calls} == {language}
    assert {r["language"] for r in _jsonl(tmp_path / "o" / "depth_2" / "generation.jsonl")} == {language}
    assert cli.language_for("auto", "zh") == "Chinese"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--language", "x" * 65], "error: --language must be a name of 1-64"),
        (["--language", "en=English,zh"], "error: --language: expected NAME or SET=NAME pairs"),
        (["--duration", "-2"], "error: --duration must be a number of seconds > 0"),
        (["--top-k", "-1"], "error: --top-k must be >= 0, got -1"),
        (["--control-top-p", "0"], "error: --control-top-p must be in (0, 1]"),
    ],
)
def test_a_bad_run_option_is_named_before_anything_loads(extra, message, tiny_testset: Path, tmp_path, monkeypatch,
                                                          capsys):  # fmt: skip
    monkeypatch.setattr(cli, "load_pipeline", lambda args, depths: pytest.fail("nothing may be loaded"))
    assert cli.main(_argv(tiny_testset, tmp_path / "o", "--depths", "2", *extra)) == USER_ERROR_EXIT_CODE
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(message)


def test_a_duration_beyond_the_engines_frame_limit_is_named_once(tiny_testset: Path, tmp_path: Path, monkeypatch,
                                                                  capsys):  # fmt: skip
    fake = FakeTTS()
    monkeypatch.setattr(cli, "load_pipeline", lambda args, depths: fake)
    assert cli.main(_argv(tiny_testset, tmp_path / "o", "--depths", "2", "--duration", "500")) == USER_ERROR_EXIT_CODE
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --duration 500 s is 6250 frames; the frame limit") and fake.calls == []


def test_a_bad_prompt_wav_is_named_by_its_place_in_the_test_list(tiny_testset: Path, tmp_path: Path):
    class Unreadable(FakeTTS):
        def iter_requests(self, requests, **kwargs):
            for i, _ in enumerate(requests):
                yield i, FieldError("reference_audio", "reference_audio: audio file is silent")

    report = generate_testset(read_testset(tiny_testset), Unreadable(), tmp_path, [2])
    error = report.failed[2][0].error
    assert error == "prompt wav (3rd field of the test list): audio file is silent"


def test_run_fields_that_lines_or_depths_set_are_refused(tiny_testset: Path, tmp_path: Path):
    for name in ("text", "depth", "seed", "reference_audio"):
        with pytest.raises(InputError, match=f"{name} is set per line and depth"):
            generate_testset(read_testset(tiny_testset), FakeTTS(), tmp_path, [2], fields={name: "x"})
