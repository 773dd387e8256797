"""ASR wrappers: Whisper is forced to English transcription on 16 kHz input; Paraformer gets the file path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from seedtts_helpers import tone

from eval.seedtts.asr import ParaformerAsr, WhisperAsr, load_asr
from eval.seedtts.audio import AudioReadError, resample_fft


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


def test_transcript_is_the_decoded_text_without_special_tokens(whisper: WhisperAsr):
    wav = tone(1.0, 16000)
    ids = whisper.generate_ids(wav)
    expected = whisper.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)[0]
    assert whisper.transcribe_waveform(wav, 16000) == expected
    assert "<|" not in expected


def test_files_are_read_in_float64_and_fft_resampled_to_16k(whisper: WhisperAsr, tmp_path: Path):
    wav24 = tone(0.8, 24000, seed=3)
    path = tmp_path / "x.wav"
    sf.write(path, wav24, 24000, subtype="PCM_16")
    pcm, _ = sf.read(path, dtype="float64")
    direct = whisper.generate_ids(resample_fft(pcm, 24000, 16000))
    assert whisper.transcribe(path) == whisper.processor.tokenizer.batch_decode(direct, skip_special_tokens=True)[0]
    assert len(resample_fft(pcm, 24000, 16000)) == int(len(pcm) * 16000 / 24000)


def test_missing_or_empty_audio_raises_a_clear_error(whisper: WhisperAsr, tmp_path: Path):
    with pytest.raises(AudioReadError, match="not found"):
        whisper.transcribe(tmp_path / "nope.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioReadError, match="empty"):
        whisper.transcribe(tmp_path / "empty.wav")


class _FakeFunAsr:
    def __init__(self):
        self.calls = []

    def generate(self, input, batch_size_s):  # noqa: A002 - FunASR's keyword
        self.calls.append((input, batch_size_s))
        return [{"key": "x", "text": "這是測試"}]


def test_paraformer_gets_the_path_and_keeps_the_raw_transcript(tmp_path: Path):
    path = tmp_path / "a.wav"
    sf.write(path, tone(0.2, 24000), 24000)
    fake = _FakeFunAsr()
    asr = ParaformerAsr(fake)
    assert asr.transcribe(path) == "這是測試"  # conversion to simplified happens in utterance_wer
    assert fake.calls == [(str(path), 300)]


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
