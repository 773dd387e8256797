"""ASR wrappers: Whisper hears the file resampled to 16 kHz, forced to the language, with special tokens dropped;
Paraformer gets the file path (its scoring path is tested in test_seedtts_score.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from seedtts_helpers import tone

from eval.seedtts.asr import ParaformerAsr, WhisperAsr, load_asr
from eval.seedtts.audio import SCORING_RATE, AudioReadError


@pytest.fixture(scope="module")
def whisper(tiny_whisper_dir: Path) -> WhisperAsr:
    return WhisperAsr.from_pretrained(str(tiny_whisper_dir))


def test_decoder_prompt_forces_english_transcription_without_timestamps(whisper: WhisperAsr):
    seen: list[torch.Tensor] = []

    def grab(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None:
            seen.append(ids.clone())

    handle = whisper.model.model.decoder.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        whisper.generate_ids(tone(1.0, 16000))
    finally:
        handle.remove()
    tok = whisper.processor.tokenizer
    prompt = tok.convert_tokens_to_ids(["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"])
    assert seen[0][0].tolist() == prompt


class _PitchProcessor:
    """Stands in for a WhisperProcessor: the "features" are the waveform itself; ids >= SPECIAL are special tokens,
    the others are character codes."""

    SPECIAL = 1_000_000

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int]] = []  # (dtype, declared sampling rate, samples) per call
        self.feature_extractor = self._features
        self.tokenizer = self

    def _features(self, wav, sampling_rate, return_tensors):
        wav = np.asarray(wav)
        self.seen.append((str(wav.dtype), sampling_rate, wav.size))
        return SimpleNamespace(input_features=torch.from_numpy(wav)[None])  # [1, S]

    def batch_decode(self, ids, skip_special_tokens=False):
        def token(i: int) -> str:
            return "" if skip_special_tokens else f"<|{i - self.SPECIAL}|>"

        return ["".join(chr(i) if i < self.SPECIAL else token(i) for i in row.tolist()) for row in ids]


class _PitchWhisper(torch.nn.Module):
    """Stands in for Whisper: "hears" the pitch of its input, taking the input to be sampled at 16 kHz, and answers
    "<language> <task> <pitch> hz" wrapped in special tokens."""

    dtype = torch.float64

    def generate(self, x, language, task):
        wav = x[0].numpy()  # [S]
        pitch = np.argmax(np.abs(np.fft.rfft(wav))) * SCORING_RATE / wav.size
        text = f"{language} {task} {pitch:.0f} hz"
        special = _PitchProcessor.SPECIAL
        return torch.tensor([[special + 1, special + 2, *map(ord, text), special]])


@pytest.mark.parametrize("rate", [16000, 24000, 44100])
def test_the_transcript_depends_on_the_audio_resampled_to_16k_with_the_language_forced(tmp_path: Path, rate: int):
    t = np.arange(rate) / rate  # 1 s
    sf.write(tmp_path / "a.wav", 0.5 * np.sin(2 * np.pi * 440 * t), rate, subtype="PCM_16")
    sf.write(tmp_path / "b.wav", 0.5 * np.sin(2 * np.pi * 250 * t), rate, subtype="PCM_16")
    processor = _PitchProcessor()
    asr = WhisperAsr(_PitchWhisper(), processor, language="en")
    # read at the file's rate, resampled to 16 kHz (unresampled 24 kHz samples would be heard at 293 Hz), forced
    # to English transcription, special tokens dropped
    assert asr.transcribe(tmp_path / "a.wav") == "en transcribe 440 hz"
    assert asr.transcribe(tmp_path / "b.wav") == "en transcribe 250 hz"
    chinese = WhisperAsr(_PitchWhisper(), processor, language="zh")
    assert chinese.transcribe(tmp_path / "a.wav") == "zh transcribe 440 hz"
    assert {(dtype, sr) for dtype, sr, _ in processor.seen} == {("float64", SCORING_RATE)}  # the official float64 path


def test_missing_or_empty_audio_raises_a_clear_error(whisper: WhisperAsr, tmp_path: Path):
    with pytest.raises(AudioReadError, match="not found"):
        whisper.transcribe(tmp_path / "nope.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioReadError, match="empty"):
        whisper.transcribe(tmp_path / "empty.wav")


def test_paraformer_refuses_a_missing_file_before_calling_funasr(tmp_path: Path):
    class Never:
        def generate(self, **kwargs):
            raise AssertionError("FunASR must not be called")

    with pytest.raises(FileNotFoundError, match="not found"):
        ParaformerAsr(Never()).transcribe(tmp_path / "nope.wav")


def test_paraformer_without_funasr_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_funasr(name, *args, **kwargs):
        if name == "funasr":
            raise ImportError("No module named 'funasr'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_funasr)
    with pytest.raises(ImportError, match=r"cat-tts\[eval-zh\]"):
        load_asr("zh")
    with pytest.raises(ValueError, match="lang must be"):
        load_asr("fr")
