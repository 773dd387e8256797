"""Audio I/O: formats, mono downmix, soxr resampling, loudness normalisation, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cat_tts.audio import AudioError, load_audio, loudness_normalize, save_audio


def _tone(seconds: float, rate: int, freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize(("fmt", "subtype"), [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", None)])
def test_load_formats_downmix_and_resample(tmp_path: Path, fmt: str, subtype: str | None) -> None:
    tone = _tone(1.0, 16000)
    stereo = np.stack([tone, tone], axis=1)
    path = tmp_path / f"clip.{fmt.lower()}"
    if fmt not in sf.available_formats():
        pytest.skip(f"libsndfile here cannot write {fmt}")
    sf.write(str(path), stereo, 16000, format=fmt, subtype=subtype)
    wav = load_audio(path)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(wav.shape[0] - 24000) <= 2400  # lossy containers may add encoder delay/padding
    # still a 440 Hz tone at 24 kHz: the spectrum peaks at 440 Hz
    spectrum = np.abs(np.fft.rfft(wav[:12000]))
    assert abs(np.argmax(spectrum) * 24000 / 12000 - 440) <= 4


def test_wav_resampled_exactly_to_the_target_length(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    sf.write(str(path), _tone(2.0, 44100), 44100, subtype="FLOAT")
    wav = load_audio(path, sample_rate=24000)
    assert wav.shape == (48000,)
    np.testing.assert_allclose(wav[1000:-1000], _tone(2.0, 24000)[1000:-1000], atol=2e-3)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav")


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(b"RIFF\x00\x00garbage" * 10)
    with pytest.raises(AudioError, match="cannot read"):
        load_audio(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(str(path), np.zeros(0, dtype=np.float32), 24000)
    with pytest.raises(AudioError, match="empty"):
        load_audio(path)


def test_silent_file(tmp_path: Path) -> None:
    path = tmp_path / "silent.wav"
    sf.write(str(path), np.zeros(24000, dtype=np.float32), 24000)
    with pytest.raises(AudioError, match="silent"):
        load_audio(path)


def test_nan_samples(tmp_path: Path) -> None:
    path = tmp_path / "nan.wav"
    data = _tone(0.5, 24000)
    data[100] = np.nan
    sf.write(str(path), data, 24000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(path)


def test_too_long(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    sf.write(str(path), _tone(3.0, 8000), 8000)
    assert load_audio(path, max_seconds=3.5).shape == (72000,)
    with pytest.raises(AudioError, match="3.0 s long, over the 2 s limit"):
        load_audio(path, max_seconds=2)


def test_loudness_normalize_reaches_target_within_the_clamp() -> None:
    x = _tone(1.0, 24000, amp=0.12)  # mean power -> about -21.4 dB: within +-3 dB of -20
    y = loudness_normalize(x)
    assert y.dtype == np.float32
    assert abs(10 * np.log10(np.mean(y.astype(np.float64) ** 2)) + 20.0) < 1e-3


def test_loudness_normalize_clamps_the_gain() -> None:
    quiet = _tone(1.0, 24000, amp=0.001)
    loud = _tone(1.0, 24000, amp=0.9)
    np.testing.assert_allclose(loudness_normalize(quiet), quiet * 10 ** (3 / 20), rtol=1e-6)
    np.testing.assert_allclose(loudness_normalize(loud), loud * 10 ** (-3 / 20), rtol=1e-6)
    t = torch.from_numpy(quiet)
    torch.testing.assert_close(loudness_normalize(t), t * 10 ** (3 / 20))


def test_save_then_load(tmp_path: Path) -> None:
    x = _tone(0.5, 24000)
    path = save_audio(tmp_path / "sub" / "out.wav", x)
    np.testing.assert_allclose(load_audio(path), x, atol=1e-4)
    with pytest.raises(AudioError, match="mono"):
        save_audio(tmp_path / "x.wav", np.zeros((2, 10), dtype=np.float32))
