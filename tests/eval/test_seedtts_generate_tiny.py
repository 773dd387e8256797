"""The whole sweep on the make_tiny checkpoints: `generate` through the real CatTTS pipeline and its engine, then
`score` (tiny Whisper, tiny WavLM + ECAPA-TDNN) and `report` on the generated wavs. Random weights: plumbing only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from seedtts_helpers import TINY_SV, tone, write_meta

import eval.seedtts.__main__ as cli
from cat_tts.errors import USER_ERROR_EXIT_CODE
from eval.seedtts.__main__ import main
from eval.seedtts.generate import FAILURES_FILE


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from cat_tts.tools.make_tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny_ckpt"))


def test_sweep_on_tiny_checkpoints_generates_resumably_then_scores_and_reports(
    tiny_testset: Path,
    tiny_checkpoints: dict[str, Path],
    tiny_whisper_dir: Path,
    tiny_sim_default,
    tmp_path: Path,
    capsys,
):
    out = tmp_path / "sweep"
    argv = ["generate", "--meta", str(tiny_testset), "--model", str(tiny_checkpoints["model"])]
    argv += ["--codec", str(tiny_checkpoints["codec"]), "--depths", "2", "4", "--out", str(out)]
    argv += ["--min-new-frames", "2", "--max-new-frames", "4", "--device", "cpu", "--seed", "1"]
    assert main(argv) == USER_ERROR_EXIT_CODE  # utt_c-1's prompt does not exist: listed, the others generated
    captured = capsys.readouterr()
    assert "failed: utt_c-1 (line 3), every depth" in captured.err
    for k in (2, 4):
        wavs = sorted((out / f"depth_{k}").glob("*.wav"))
        assert [p.name for p in wavs] == ["utt_a-1.wav", "utt_a-2.wav", "utt_b-1.wav"]
        for p in wavs:
            info = sf.info(str(p))
            assert (info.samplerate, info.channels) == (24000, 1) and info.frames > 0
        log = (out / f"depth_{k}" / "generation.jsonl").read_text().splitlines()
        assert len(log) == 3 and all(json.loads(x)["rtf"] > 0 for x in log)

    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("depth_*/*.wav")}
    assert main(argv) == USER_ERROR_EXIT_CODE
    assert "depth 2: wrote 0, kept 3, failed 1" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.glob("depth_*/*.wav")} == mtimes
    assert len((out / "depth_2" / "generation.jsonl").read_text().splitlines()) == 3

    # a file regenerated alone is identical to the one generated beside the others: the seed depends only on
    # (seed, utt), and a request's output does not depend on its batch neighbours
    target = out / "depth_4" / "utt_b-1.wav"
    before = target.read_bytes()
    target.unlink()
    assert main(argv) == USER_ERROR_EXIT_CODE
    assert target.read_bytes() == before

    # score both depths on the generated files in one call, then the sweep report
    score = ["score", "--meta", str(tiny_testset), "--wavs", str(out / "depth_2"), str(out / "depth_4")]
    assert main([*score, "--lang", "en", "--asr-model", str(tiny_whisper_dir), "--sim-model", str(TINY_SV)]) == 0
    for k in (2, 4):
        summary = json.loads((out / f"depth_{k}" / "summary.json").read_text())
        assert (summary["n_scored"], summary["n_items"], summary["depth"]) == (3, 3, k)
        assert summary["rtf"] > 0 and -1 <= summary["sim"] <= 1
    assert main(["report", str(out)]) == 0
    table = (out / "report.md").read_text()
    assert "| depth_2 | 2 | 0.250 |" in table and "| depth_4 | 4 | 0.500 |" in table
    assert (out / "error_rate_vs_kbps.png").is_file() and (out / "sim_vs_kbps.png").is_file()


@pytest.fixture
def capture_pipeline(monkeypatch: pytest.MonkeyPatch) -> list:
    """The pipelines `generate` loads (the real loader, recorded)."""
    made = []
    real = cli.load_pipeline

    def load(args, depths):
        made.append(real(args, depths))
        return made[-1]

    monkeypatch.setattr(cli, "load_pipeline", load)
    return made


def test_a_bad_line_and_a_bad_clip_fail_alone_and_the_good_lines_are_generated(
    tiny_checkpoints: dict[str, Path], tmp_path: Path, capture_pipeline: list, capsys
):
    root = tmp_path / "set"
    (root / "p").mkdir(parents=True)
    sf.write(root / "p" / "good.wav", tone(1.0, 16000, 200, seed=1), 16000)
    sf.write(root / "p" / "silent.wav", np.zeros(16000, np.float32), 16000)  # a readable header: the list accepts it
    meta = write_meta(
        root,
        [
            "g1|A prompt.|p/good.wav|The first good line.",
            "bad|A prompt.|p/good.wav",  # 3 fields: an unusable line
            "clip|A prompt.|p/silent.wav|This reference clip is silent.",
            "g2|A prompt.|p/good.wav|The second good line.",
        ],
    )
    out = tmp_path / "out"
    argv = ["generate", "--meta", str(meta), "--model", str(tiny_checkpoints["model"])]
    argv += ["--codec", str(tiny_checkpoints["codec"]), "--depths", "3", "--out", str(out), "--slots", "4"]
    argv += ["--min-new-frames", "2", "--max-new-frames", "3", "--device", "cpu"]
    assert main(argv) == USER_ERROR_EXIT_CODE
    assert sorted(p.name for p in (out / "depth_3").glob("*.wav")) == ["g1.wav", "g2.wav"]
    failures = [json.loads(x) for x in (out / "depth_3" / FAILURES_FILE).read_text().splitlines()]
    assert [(f["utt"], f["line"], f["stage"]) for f in failures] == [("bad", 2, "test list"), ("clip", 3, "synthesis")]
    assert "silent" in failures[1]["error"]
    err = capsys.readouterr().err
    where = "prompt wav (3rd field of the test list)"  # the evaluator's label for the request's reference_audio
    assert f"failed: clip (line 3), every depth: {where}: audio is silent" in err
    assert "error: 2 of 4 test lines failed" in err
    assert capture_pipeline[0].n_vq == 32  # the tiny model's N


def test_the_utterances_of_a_run_share_engine_frame_steps(
    tiny_testset: Path, tiny_checkpoints: dict[str, Path], tmp_path: Path, capture_pipeline: list
):
    argv = ["generate", "--meta", str(tiny_testset), "--model", str(tiny_checkpoints["model"])]
    argv += ["--codec", str(tiny_checkpoints["codec"]), "--depths", "2", "--out", str(tmp_path), "--slots", "4"]
    argv += ["--min-new-frames", "3", "--max-new-frames", "5", "--device", "cpu"]
    assert main(argv) == USER_ERROR_EXIT_CODE  # utt_c-1 is unusable
    wavs = sorted((tmp_path / "depth_2").glob("*.wav"))
    assert len(wavs) == 3
    (pipeline,) = capture_pipeline
    stats = pipeline.engine.stats()
    frames = sum(sf.info(str(p)).frames for p in wavs) // pipeline.codec.frame_size  # one segment per utterance
    assert stats.frames_generated == frames >= 9
    assert stats.frame_steps < frames  # run one after another, they would need at least one step per frame
    assert stats.max_slots == 4 and stats.active_requests == 0
