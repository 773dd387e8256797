"""`score` end to end through the CLI with the tiny Whisper and the tiny WavLM + ECAPA-TDNN."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
from seedtts_helpers import TINY_SV, tone, write_meta

import eval.seedtts.__main__ as cli
from cat_tts.errors import USER_ERROR_EXIT_CODE
from eval.seedtts.__main__ import main
from eval.seedtts.asr import WhisperAsr
from eval.seedtts.metrics import utterance_wer
from eval.seedtts.sim import SpeakerEncoderConfig, SpeakerSimilarity

ROOT = Path(__file__).resolve().parents[2]


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_score_cli_scores_every_usable_line_and_counts_missing_outputs(
    tiny_testset: Path, tiny_whisper_dir: Path, tiny_sim_default, tmp_path: Path, capsys
):
    out = tmp_path / "run" / "depth_8"
    out.mkdir(parents=True)
    sf.write(out / "utt_a-1.wav", tone(0.7, 24000, 210, seed=5), 24000, subtype="PCM_16")
    sf.write(out / "utt_a-2.wav", tone(0.5, 24000, 250, seed=6), 24000, subtype="PCM_16")
    # utt_b-1.wav is missing; utt_c-1 is an unusable test line (its prompt does not exist)
    (out / "generation.jsonl").write_text(
        json.dumps({"utt": "utt_a-1", "depth": 8, "seconds": 0.35, "audio_seconds": 0.7, "rtf": 0.5}) + "\n"
    )
    argv = ["score", "--meta", str(tiny_testset), "--wavs", str(out), "--lang", "en"]
    argv += ["--asr-model", str(tiny_whisper_dir), "--sim-model", str(TINY_SV)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "utt_c-1 (line 3)" in captured.err
    assert "scored 2/3" in captured.out

    results = {r["utt"]: r for r in _read_jsonl(out / "results.jsonl")}
    assert list(results) == ["utt_a-1", "utt_b-1", "utt_a-2"]
    assert results["utt_b-1"]["status"] == "missing" and results["utt_b-1"]["wer"] == 1.0
    assert results["utt_b-1"]["sim"] is None

    asr = WhisperAsr.from_pretrained(str(tiny_whisper_dir))
    sim = SpeakerSimilarity.from_checkpoint(TINY_SV, config=SpeakerEncoderConfig.tiny())
    prompt_a = tiny_testset.parent / "prompt-wavs" / "spk_a.wav"
    for utt in ("utt_a-1", "utt_a-2"):
        r = results[utt]
        assert r["status"] == "ok" and r["depth"] == 8
        assert r["hypothesis"] == asr.transcribe(out / f"{utt}.wav")
        assert r["wer"] == pytest.approx(utterance_wer(r["reference"], r["hypothesis"], "en"))
        assert r["sim"] == pytest.approx(sim.similarity(out / f"{utt}.wav", prompt_a), abs=1e-6)
    assert results["utt_a-1"]["duration"] == pytest.approx(0.7)
    assert results["utt_a-1"]["rtf"] == 0.5 and results["utt_a-2"]["rtf"] is None

    summary = json.loads((out / "summary.json").read_text())
    assert (summary["n_items"], summary["n_scored"], summary["n_bad_lines"]) == (3, 2, 1)
    assert summary["status_counts"] == {"missing": 1, "ok": 2}
    wers = [results[u]["wer"] for u in ("utt_a-1", "utt_b-1", "utt_a-2")]
    assert summary["error_rate"] == pytest.approx(100 * sum(wers) / 3, abs=1e-3)
    assert summary["error_rate_scored"] == pytest.approx(100 * (wers[0] + wers[2]) / 2, abs=1e-3)
    assert summary["sim"] == pytest.approx((results["utt_a-1"]["sim"] + results["utt_a-2"]["sim"]) / 2, abs=1e-5)
    assert summary["depth"] == 8 and summary["kbps"] == 1.0 and summary["metric"] == "WER"
    assert summary["bad_lines"][0]["utt"] == "utt_c-1"


def test_ground_truth_mode_scores_the_recordings(tiny_testset: Path, tiny_whisper_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "run" / "ground_truth"
    argv = ["score", "--meta", str(tiny_testset), "--ground-truth", "--lang", "en", "--out", str(out)]
    assert main([*argv, "--asr-model", str(tiny_whisper_dir)]) == 0
    results = _read_jsonl(out / "results.jsonl")
    assert [r["utt"] for r in results] == ["utt_a-1", "utt_b-1", "utt_a-2"]
    assert all(r["status"] == "ok" and r["depth"] is None and r["sim"] is None for r in results)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ground_truth"] and summary["n_scored"] == 3 and summary["sim"] is None
    assert "SIM is not computed" in capsys.readouterr().err


def test_empty_and_unreadable_outputs_are_reported(tiny_testset: Path, tmp_path: Path):
    from eval.seedtts.score import score_testset
    from eval.seedtts.testset import read_testset

    class EchoAsr:
        name = "echo"

        def transcribe(self, path):
            return "Get the trust fund to the bank early."

    out = tmp_path / "depth_4"
    out.mkdir()
    sf.write(out / "utt_a-1.wav", tone(0.3, 24000), 24000)
    sf.write(out / "utt_b-1.wav", tone(0.0, 24000), 24000)
    (out / "utt_a-2.wav").write_bytes(b"not a wav")
    results = score_testset(read_testset(tiny_testset), "en", EchoAsr(), None, wav_dir=out)
    assert [(r.status, r.wer) for r in results] == [("ok", 0.0), ("empty", 1.0), ("unreadable", 1.0)]
    assert results[0].depth == 4


def test_score_cli_errors_are_one_line_with_exit_code_2(tiny_testset: Path, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "load_scorers", lambda args: pytest.fail("no model may be loaded"))

    def run(*argv: str) -> str:
        assert main(["score", *argv]) == USER_ERROR_EXIT_CODE
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ")
        return err.strip()

    assert run("--meta", str(tmp_path / "x.lst"), "--wavs", str(tmp_path), "--lang", "en").startswith(
        "error: test list not found"
    )
    assert "is not a directory" in run("--meta", str(tiny_testset), "--wavs", str(tmp_path / "nope"), "--lang", "en")
    two = ["--wavs", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "o")]
    assert "apply to a single --wavs directory" in run("--meta", str(tiny_testset), *two, "--lang", "en")
    sim = ["--sim-model", str(tmp_path / "sv.safetensors")]
    assert "--sim-model" in run("--meta", str(tiny_testset), "--wavs", str(tmp_path), "--lang", "en", *sim)
    out_file = tmp_path / "file"
    out_file.write_text("x")
    gt = ["--ground-truth", "--out", str(out_file)]
    msg = run("--meta", str(tiny_testset), *gt, "--lang", "en")
    assert msg == f"error: --out {out_file} is a file, not a directory; choose a directory"
    with pytest.raises(SystemExit) as exit_info:  # argparse's own errors use the same code
        main(["score", "--meta", str(tiny_testset), "--wavs", str(tmp_path), "--lang", "fr"])
    assert exit_info.value.code == USER_ERROR_EXIT_CODE


class _DurationFunAsr:
    """Stands in for FunASR's AutoModel: reads the file it is given and "hears" one traditional-script character
    of 這是測試 (cyclically) per 0.25 s of audio."""

    def generate(self, input, batch_size_s):  # noqa: A002 - FunASR's keyword
        wav, sr = sf.read(input)
        n = round(len(wav) / sr / 0.25)
        return [{"key": Path(input).stem, "text": "".join("這是測試"[i % 4] for i in range(n))}]


def test_zh_cer_per_utterance_follows_what_paraformer_heard(tmp_path: Path):
    from eval.seedtts.asr import ParaformerAsr
    from eval.seedtts.score import score_testset
    from eval.seedtts.testset import read_testset

    root = tmp_path / "zh"
    (root / "p").mkdir(parents=True)
    sf.write(root / "p" / "spk.wav", tone(0.5, 16000), 16000)
    seconds = {"u1": 1.0, "u2": 0.5, "u3": 1.5, "u4": 0.25}
    meta = write_meta(root, [f"{u}|提示。|p/spk.wav|这是，测试！" for u in seconds])
    out = tmp_path / "depth_4"
    out.mkdir()
    for u, s in seconds.items():
        sf.write(out / f"{u}.wav", tone(s, 24000), 24000)
    results = score_testset(read_testset(meta), "zh", ParaformerAsr(_DurationFunAsr()), None, wav_dir=out)
    # the reference is 4 characters once its punctuation is gone; the transcript is converted to simplified script,
    # so n characters heard are |n - 4| deletions or insertions
    expected = {u: abs(round(s / 0.25) - 4) / 4 for u, s in seconds.items()}
    assert {r.utt: r.wer for r in results} == pytest.approx(expected)
    assert results[0].hypothesis == "這是測試" and results[0].wer == 0.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == "CER" and summary["error_rate"] == pytest.approx(100 * sum(expected.values()) / 4)


def test_score_without_the_hub_fails_within_seconds_naming_the_local_model_options(tiny_testset: Path, tmp_path):
    """The hub unreachable (an endpoint that refuses connections, an empty cache): one line, exit 2, at once
    (transformers alone retries each file for about 3 minutes, then names a feature extractor)."""
    out = tmp_path / "depth_8"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9")  # port 9: connection refused
    argv = [sys.executable, "-m", "eval.seedtts", "score", "--meta", str(tiny_testset), "--wavs", str(out)]
    started = time.monotonic()
    res = subprocess.run([*argv, "--lang", "en"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=170)
    elapsed = time.monotonic() - started
    assert res.returncode == USER_ERROR_EXIT_CODE, res.stderr
    err = res.stderr.strip().splitlines()[-1]
    assert err.startswith("error: --asr-model openai/whisper-large-v3 is not in the local cache and could not be")
    assert "--asr-model DIR" in err and "--sim-model FILE" in err and "Traceback" not in res.stderr
    assert elapsed < 60, elapsed  # process start-up included; the hub is asked once


def test_offline_mode_never_asks_the_hub(monkeypatch, tmp_path):
    import huggingface_hub
    from huggingface_hub import constants

    from eval.seedtts.asr import AsrModelUnavailableError, load_asr

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    asked: list = []
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda *args, **kwargs: asked.append(args))
    started = time.monotonic()
    with pytest.raises(AsrModelUnavailableError, match=r"\(HF_HUB_OFFLINE is set\)\. .*--asr-model DIR.*--sim-model"):
        load_asr("en")
    assert asked == [] and time.monotonic() - started < 5
    with pytest.raises(AsrModelUnavailableError, match="paraformer-zh is a model name.*HF_HUB_OFFLINE is set"):
        load_asr("zh")
