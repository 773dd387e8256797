"""`generate`: one wav per usable line and depth, bad lines reported, resumable, per-utterance seeds and timings.

The synthesiser is injected (a small fake with the `CatTTS.synthesize` signature); the end-to-end run on
the make_tiny checkpoints is in test_seedtts_generate_tiny.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import eval.seedtts.__main__ as cli
from eval.seedtts.generate import generate_testset, utterance_seed
from eval.seedtts.testset import read_testset


class FakeTTS:
    """Deterministic stand-in: noise seeded by `seed`, length depending on the text."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[dict] = []
        self.batches: list[int] = []
        self.fail_on = fail_on

    def synthesize(self, text, reference_audio, reference_text=None, depth=32, seed=None, **sampling):
        self.calls.append(dict(text=text, reference_audio=reference_audio, reference_text=reference_text, depth=depth,
                               seed=seed, sampling=sampling))  # fmt: skip
        if self.fail_on and self.fail_on in text:
            raise ValueError(f"cannot synthesise {text!r}")
        rng = np.random.default_rng(seed)
        return (0.1 * rng.standard_normal(1920 * (2 + len(text) % 4))).astype(np.float32), 24000

    def synthesize_batch(self, items, depth=32, seed=None, batch_size=8, **sampling):
        self.batches.append((len(items), batch_size))
        return [self.synthesize(depth=depth, seed=seed, **it, **sampling) for it in items]


def _wavs(d: Path) -> list[str]:
    return sorted(p.name for p in d.glob("*.wav"))


def test_generate_cli_writes_every_usable_line_per_depth_and_reports_the_bad_line(
    tiny_testset: Path, tmp_path: Path, monkeypatch, capsys
):
    fake = FakeTTS()
    loads = []
    monkeypatch.setattr(cli, "load_pipeline", lambda args: loads.append(args.model) or fake)
    out = tmp_path / "sweep"
    argv = ["generate", "--meta", str(tiny_testset), "--model", "M", "--codec", "C", "--depths", "4", "2"]
    argv += ["--out", str(out), "--seed", "7", "--temperature", "0.7", "--max-new-frames", "50"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "utt_c-1 (line 3)" in captured.err
    assert json.loads((out / "bad_lines.json").read_text())[0]["utt"] == "utt_c-1"
    expected = ["utt_a-1.wav", "utt_a-2.wav", "utt_b-1.wav"]
    for k in (2, 4):
        assert _wavs(out / f"depth_{k}") == expected
        info = sf.info(str(out / f"depth_{k}" / "utt_b-1.wav"))
        assert (info.samplerate, info.channels) == (24000, 1)
        log = [json.loads(x) for x in (out / f"depth_{k}" / "generation.jsonl").read_text().splitlines()]
        assert sorted(r["utt"] for r in log) == ["utt_a-1", "utt_a-2", "utt_b-1"]
        assert all(r["depth"] == k and r["rtf"] == pytest.approx(r["seconds"] / r["audio_seconds"]) for r in log)
    assert len(fake.calls) == 6
    first = next(c for c in fake.calls if c["text"] == "Get the trust fund to the bank early." and c["depth"] == 2)
    assert first["seed"] == utterance_seed(7, "utt_a-1")
    assert first["reference_audio"] == str(tiny_testset.parent / "prompt-wavs" / "spk_a.wav")
    assert first["reference_text"] == "We asked over twenty different people."
    assert first["sampling"] == {"temperature": 0.7, "max_new_frames": 50}

    # second run: everything exists, nothing is regenerated and the model is not even loaded
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("depth_*/*.wav")}
    fake.calls.clear()
    assert cli.main(argv) == 0
    assert fake.calls == [] and loads == ["M"]
    assert {p: p.stat().st_mtime_ns for p in out.glob("depth_*/*.wav")} == mtimes
    assert "wrote 0, kept 3, failed 0" in capsys.readouterr().out


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


def test_a_failing_utterance_is_reported_and_retried_on_the_next_run(
    tiny_testset: Path, tmp_path: Path, monkeypatch, capsys
):
    monkeypatch.setattr(cli, "load_pipeline", lambda args: FakeTTS(fail_on="Hello"))
    argv = ["generate", "--meta", str(tiny_testset), "--model", "M", "--codec", "C", "--depths", "8"]
    argv += ["--out", str(tmp_path)]
    assert cli.main(argv) == cli.EXIT_FAILURES
    assert "1 synthesis failure" in capsys.readouterr().err
    assert _wavs(tmp_path / "depth_8") == ["utt_a-1.wav", "utt_a-2.wav"]
    assert "cannot synthesise" in json.loads((tmp_path / "depth_8" / "failures.json").read_text())["utt_b-1"]
    fake = FakeTTS()
    monkeypatch.setattr(cli, "load_pipeline", lambda args: fake)
    assert cli.main(argv) == 0
    assert [c["text"] for c in fake.calls] == ["Hello, world!"]
    assert not (tmp_path / "depth_8" / "failures.json").exists()


def test_batches_go_through_synthesize_batch(tiny_testset: Path, tmp_path: Path):
    fake = FakeTTS()
    report = generate_testset(read_testset(tiny_testset), fake, tmp_path, [16], batch_size=2)
    assert fake.batches == [(2, 2)] and len(fake.calls) == 3  # a batch of 2, then a single call
    assert sorted(report.written[16]) == ["utt_a-1", "utt_a-2", "utt_b-1"]
    log = [json.loads(x) for x in (tmp_path / "depth_16" / "generation.jsonl").read_text().splitlines()]
    assert [r["batch_size"] for r in log] == [2, 2, 1]


def test_clone_mode_does_not_pass_the_prompt_transcript(tiny_testset: Path, tmp_path: Path):
    fake = FakeTTS()
    generate_testset(read_testset(tiny_testset), fake, tmp_path, [1], mode="clone")
    assert [c["reference_text"] for c in fake.calls] == [None, None, None]
    log = [json.loads(x) for x in (tmp_path / "depth_1" / "generation.jsonl").read_text().splitlines()]
    assert {r["mode"] for r in log} == {"clone"}
    with pytest.raises(ValueError, match="mode must be one of"):
        generate_testset(read_testset(tiny_testset), fake, tmp_path, [1], mode="ICL")


def test_unexpected_errors_stop_the_run(tiny_testset: Path, tmp_path: Path):
    class Broken(FakeTTS):
        def synthesize(self, *args, **kwargs):
            raise AttributeError("pipeline bug")

    with pytest.raises(AttributeError, match="pipeline bug"):
        generate_testset(read_testset(tiny_testset), Broken(), tmp_path, [8])


@pytest.mark.parametrize("depths", [["0"], ["33"]])
def test_bad_depth_is_a_one_line_error(tiny_testset: Path, tmp_path: Path, depths, capsys):
    argv = ["generate", "--meta", str(tiny_testset), "--model", "M", "--codec", "C", "--out", str(tmp_path)]
    assert cli.main([*argv, "--depths", *depths]) == 1
    assert capsys.readouterr().err.strip() == f"error: depth must be an integer in 1..32, got {int(depths[0])}"
