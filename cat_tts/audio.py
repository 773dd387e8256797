"""Audio files in and out: load any common format to mono float32 at 24 kHz, loudness-normalise, save wav.

Shapes: S samples. Waveforms are 1-D float32 numpy arrays in [-1, 1] unless a name says otherwise.

The reference-clip pipeline of the official CAT-TTS processor is: load -> resample to 24 kHz -> downmix to mono
(channel mean) -> `loudness_normalize` (gain towards -20 dB mean power, clamped to +-3 dB) -> codec encode.
`load_audio` does the first three steps; call `loudness_normalize` on its result for the fourth.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cat_tts.files import atomic_write

DEFAULT_SAMPLE_RATE = 24000
SILENCE_PEAK = 1e-5  # a clip whose peak |sample| is below this (-100 dBFS) counts as silent


class AudioError(ValueError):
    """An audio file or waveform cannot be used (missing, unreadable, empty, silent, NaN, too long)."""


def load_audio(
    path: str | Path, sample_rate: int = DEFAULT_SAMPLE_RATE, max_seconds: float | None = None
) -> np.ndarray:
    """Read an audio file (wav, flac, ogg, mp3: whatever libsndfile reads) as mono float32 at `sample_rate`.

    Multi-channel audio is averaged to mono; other rates are resampled with soxr (high quality).

    Args:
        path: the file.
        sample_rate: output rate in Hz.
        max_seconds: reject clips longer than this (None: no limit).

    Returns:
        [S] float32.

    Raises:
        AudioError: the file is missing, unreadable or corrupt, empty, all silent, contains NaN/inf, or is
            longer than `max_seconds`.
    """
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise AudioError(f"audio file not found: {path}")
    if path.is_dir():
        raise AudioError(f"{path} is a directory, not an audio file")
    if not path.is_file():
        raise AudioError(f"not a regular file: {path}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
    try:
        info = sf.info(str(path))
    except Exception as err:  # libsndfile raises its own error types (and RuntimeError) for bad files
        raise AudioError(
            f"cannot read {path} as audio ({err}); supported: wav, flac, ogg, mp3 and other libsndfile formats"
        ) from None
    if info.frames == 0 or info.samplerate <= 0:
        raise AudioError(f"audio file is empty: {path}")
    if max_seconds is not None and info.frames / info.samplerate > max_seconds:
        raise AudioError(
            f"audio is {info.frames / info.samplerate:.1f} s long, over the {max_seconds:g} s limit: {path} "
            "(trim it or raise the limit)"
        )
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)  # [S, channels]
    except Exception as err:
        raise AudioError(f"cannot decode {path}: {err} (the file may be corrupt or truncated)") from None
    if data.shape[0] == 0:
        raise AudioError(f"audio file is empty: {path}")
    wav = data.mean(axis=1, dtype=np.float32)  # [S]
    _check_waveform(wav, str(path))
    if max_seconds is not None and wav.shape[0] / file_rate > max_seconds:  # sf.info may estimate (mp3)
        raise AudioError(f"audio is {wav.shape[0] / file_rate:.1f} s long, over the {max_seconds:g} s limit: {path}")
    if file_rate != sample_rate:
        wav = resample(wav, file_rate, sample_rate)
    return np.ascontiguousarray(wav, dtype=np.float32)


def audio_from_array(
    samples: np.ndarray, rate: int, sample_rate: int = DEFAULT_SAMPLE_RATE, max_seconds: float | None = None
) -> np.ndarray:
    """Checks in-memory audio like `load_audio` checks a file and brings it to mono float32 at `sample_rate`.

    Args:
        samples: `[S]` mono or `[channels, S]` / `[S, channels]` (the shorter axis is taken as channels).
        rate: its sample rate in Hz.
        sample_rate: output rate in Hz.
        max_seconds: reject clips longer than this (None: no limit).

    Returns:
        [S] float32.

    Raises:
        AudioError: a bad rate or shape, empty, silent, NaN/inf, or too long.
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise AudioError(f"sample rate must be a positive integer, got {rate!r}")
    try:
        wav = np.asarray(samples, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise AudioError(f"samples must be a numeric array ({err})") from None
    if wav.ndim == 2:
        wav = wav.mean(axis=0) if wav.shape[0] < wav.shape[1] else wav.mean(axis=1)
    if wav.ndim != 1:
        raise AudioError(f"expected mono samples [S] or [channels, S], got shape {np.shape(samples)}")
    _check_waveform(wav, "the given samples")
    if max_seconds is not None and wav.size / rate > max_seconds:
        raise AudioError(f"audio is {wav.size / rate:.1f} s long, over the {max_seconds:g} s limit (trim it)")
    return np.ascontiguousarray(resample(wav, int(rate), sample_rate), dtype=np.float32)


def resample(wav: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample a [S] waveform with soxr ("HQ" quality); returns float32."""
    if orig_rate == new_rate:
        return np.asarray(wav, dtype=np.float32)
    import soxr

    return soxr.resample(np.asarray(wav, dtype=np.float32), orig_rate, new_rate, quality="HQ").astype(np.float32)


def _check_waveform(wav: np.ndarray, what: str) -> None:
    if wav.size == 0:
        raise AudioError(f"audio is empty: {what}")
    if not np.isfinite(wav).all():
        raise AudioError(f"audio contains NaN or infinite samples: {what}")
    if float(np.abs(wav).max()) < SILENCE_PEAK:
        raise AudioError(f"audio is silent (peak below {SILENCE_PEAK:g}): {what}")


def loudness_normalize(wav: np.ndarray, target_db: float = -20.0, max_gain_db: float = 3.0) -> np.ndarray:
    """Scale towards `target_db` mean power, as the official reference pipeline does.

    gain_dB = clamp(target_db - 10 log10(mean(x^2) + 1e-9), -max_gain_db, +max_gain_db); x * 10^(gain_dB / 20).

    Args:
        wav: [S] (or any shape: the mean runs over all samples) float waveform, numpy or torch.
        target_db: target mean power in dB.
        max_gain_db: the gain is clamped to +-this many dB.

    Returns:
        The scaled waveform, same type and dtype as the input.
    """
    if max_gain_db < 0:
        raise ValueError(f"max_gain_db must be >= 0, got {max_gain_db}")
    if hasattr(wav, "detach"):  # torch tensor
        power = float(wav.detach().double().pow(2).mean())
    else:
        wav = np.asarray(wav)
        power = float(np.mean(np.square(wav, dtype=np.float64)))
    gain_db = min(max(target_db - 10.0 * math.log10(power + 1e-9), -max_gain_db), max_gain_db)
    scale = 10.0 ** (gain_db / 20.0)
    out = wav * scale
    return out if hasattr(out, "detach") else out.astype(wav.dtype, copy=False)


def save_audio(path: str | Path, wav: np.ndarray, sample_rate: int = DEFAULT_SAMPLE_RATE) -> Path:
    """Write a mono waveform as 16-bit PCM wav (samples clipped to [-1, 1]); creates parent directories.

    The file is written under a temporary name and renamed when complete (`cat_tts.files.atomic_write`): a run
    killed while writing never leaves a partial wav under `path`, so "the file exists" means "it is finished".

    Args:
        path: output file (".wav").
        wav: [S] float waveform (numpy or torch).
        sample_rate: its rate in Hz.

    Returns:
        The path written.
    """
    import soundfile as sf

    if hasattr(wav, "detach"):
        wav = wav.detach().float().cpu().numpy()
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise AudioError(f"save_audio expects a mono [S] waveform, got shape {wav.shape}")
    if not np.isfinite(wav).all():
        raise AudioError("refusing to save a waveform containing NaN or infinite samples")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        sf.write(str(tmp), np.clip(wav, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return path
