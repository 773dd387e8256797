"""Offline stand-ins for the Seed-TTS-Eval tests: a tiny test set on disk, a tiny random Whisper with a
tiny byte-level tokenizer, and the tiny speaker-verification model of tests/assets/eval."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

ASSETS = Path(__file__).parents[1] / "assets" / "eval"
TINY_SV = ASSETS / "tiny_wavlm_ecapa_official_layout.safetensors"

WHISPER_SPECIALS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|zh|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nospeech|>",
    "<|notimestamps|>",
]


def tone(seconds: float, sr: int, freq: float = 220.0, seed: int = 0) -> np.ndarray:
    """A speech-like test signal: an amplitude-modulated tone plus a little noise."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    wav = 0.3 * np.sin(2 * math.pi * freq * t) * (1 + 0.5 * np.sin(2 * math.pi * 3 * t)) + 0.02 * rng.standard_normal(
        t.size
    )
    return wav.astype(np.float32)


def write_meta(root: Path, lines: list[str], name: str = "meta.lst") -> Path:
    """Write a test list under `root` (its prompts are relative to `root`)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def tiny_testset(tmp_path: Path) -> Path:
    """`en/meta.lst` with 3 usable lines and one whose prompt audio is missing; 16 and 24 kHz prompts;
    ground-truth recordings in `wavs/` for the usable lines."""
    root = tmp_path / "seedtts_testset" / "en"
    (root / "prompt-wavs").mkdir(parents=True)
    (root / "wavs").mkdir()
    sf.write(root / "prompt-wavs" / "spk_a.wav", tone(0.6, 16000, 200, seed=1), 16000, subtype="PCM_16")
    sf.write(root / "prompt-wavs" / "spk_b.wav", tone(0.6, 24000, 300, seed=2), 24000, subtype="PCM_16")
    lines = [
        "utt_a-1|We asked over twenty different people.|prompt-wavs/spk_a.wav|Get the trust fund to the bank early.",
        "utt_b-1|It was his.|prompt-wavs/spk_b.wav|Hello, world!",
        "utt_c-1|Missing prompt here.|prompt-wavs/nope.wav|This line cannot be used.",
        "utt_a-2|We asked over twenty different people.|prompt-wavs/spk_a.wav|It's a dog's life.",
    ]
    for i, utt in enumerate(["utt_a-1", "utt_b-1", "utt_a-2"]):
        sf.write(root / "wavs" / f"{utt}.wav", tone(0.4, 24000, 180 + 40 * i, seed=10 + i), 24000, subtype="PCM_16")
    return write_meta(root, lines)


def _byte_level_vocab() -> dict[str, int]:
    """GPT-2 style byte-to-unicode vocabulary (256 single-byte tokens), so any text can be decoded."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars = dict(zip(keep, keep, strict=True))
    n = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + n
            n += 1
    return {chr(chars[b]): b for b in range(256)}


def build_tiny_whisper(out_dir: Path, seed: int = 0):
    """A tiny random Whisper + processor, built and saved offline.  Returns (model, processor)."""
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(_byte_level_vocab()), encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    eot = WHISPER_SPECIALS[0]
    tok = WhisperTokenizer(
        str(out_dir / "vocab.json"),
        str(out_dir / "merges.txt"),
        unk_token=eot,
        bos_token=eot,
        eos_token=eot,
        pad_token=eot,
    )
    tok.add_special_tokens({"additional_special_tokens": WHISPER_SPECIALS[1:]})
    ids = dict(zip(WHISPER_SPECIALS, tok.convert_tokens_to_ids(WHISPER_SPECIALS), strict=True))
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tok)
    torch.manual_seed(seed)
    config = WhisperConfig(
        vocab_size=len(tok),
        num_mel_bins=80,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_source_positions=1500,  # 30 s of 10 ms features after the stride-2 conv, as in every Whisper
        max_target_positions=32,
        pad_token_id=ids[eot],
        bos_token_id=ids[eot],
        eos_token_id=ids[eot],
        decoder_start_token_id=ids["<|startoftranscript|>"],
    )
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"],
        eos_token_id=ids[eot],
        pad_token_id=ids[eot],
        bos_token_id=ids[eot],
        lang_to_id={"<|en|>": ids["<|en|>"], "<|zh|>": ids["<|zh|>"]},
        task_to_id={"translate": ids["<|translate|>"], "transcribe": ids["<|transcribe|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"],
        is_multilingual=True,
        max_length=12,
        suppress_tokens=[],
        begin_suppress_tokens=[ids[eot]],
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return model, processor


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory with a saved tiny Whisper (loadable with `WhisperAsr.from_pretrained`)."""
    out = tmp_path_factory.mktemp("tiny_whisper")
    build_tiny_whisper(out)
    return out


@pytest.fixture(scope="session")
def tiny_sim():
    """The tiny speaker-similarity model of tests/assets/eval (official key layout, strictly loaded)."""
    from eval.seedtts.sim import SpeakerEncoderConfig, SpeakerSimilarity

    return SpeakerSimilarity.from_checkpoint(TINY_SV, config=SpeakerEncoderConfig.tiny())


@pytest.fixture
def tiny_sim_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `--sim-model` build the tiny architecture (the CLI always builds WavLM-Large)."""
    from eval.seedtts.sim import SpeakerEncoderConfig

    monkeypatch.setattr(SpeakerEncoderConfig, "wavlm_large", classmethod(lambda cls: SpeakerEncoderConfig.tiny()))
