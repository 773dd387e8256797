"""The whole sweep on the make_tiny checkpoints: `generate` through the real CatTTS pipeline, then `score`
(tiny Whisper, tiny WavLM + ECAPA-TDNN) and `report` on the generated wavs. Random weights: plumbing only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
from seedtts_helpers import TINY_SV

from eval.seedtts.__main__ import main


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
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "utt_c-1 (line 3)" in captured.err
    for k in (2, 4):
        wavs = sorted((out / f"depth_{k}").glob("*.wav"))
        assert [p.name for p in wavs] == ["utt_a-1.wav", "utt_a-2.wav", "utt_b-1.wav"]
        for p in wavs:
            info = sf.info(str(p))
            assert (info.samplerate, info.channels) == (24000, 1) and info.frames > 0
        log = (out / f"depth_{k}" / "generation.jsonl").read_text().splitlines()
        assert len(log) == 3 and all(json.loads(x)["rtf"] > 0 for x in log)

    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("depth_*/*.wav")}
    assert main(argv) == 0
    assert "depth 2: wrote 0, kept 3, failed 0" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.glob("depth_*/*.wav")} == mtimes
    assert len((out / "depth_2" / "generation.jsonl").read_text().splitlines()) == 3

    # a regenerated file is identical: the seed depends only on (seed, utt)
    target = out / "depth_4" / "utt_b-1.wav"
    before = target.read_bytes()
    target.unlink()
    assert main(argv) == 0
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
