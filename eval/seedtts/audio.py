"""Audio reading and the two resamplers of the Seed-TTS-Eval protocol.

The official scorer resamples differently for each model, and we keep that difference because it
changes scores slightly:

* Whisper (EN WER): the file is read as float64 and, unless already 16 kHz, resampled with an FFT
  resampler (`scipy.signal.resample`) to `int(S * 16000 / sr)` samples (`resample_fft`).
* Speaker similarity: the file is read as float32 and resampled to 16 kHz with a Hann-windowed sinc
  interpolator (6 zero crossings, roll-off 0.99 of the lower Nyquist rate, filter computed in float64 and
  applied in float32), the default resampler of torchaudio's `transforms.Resample` (`resample_sinc`).
  tests/eval/test_seedtts_sim.py pins ours against outputs of the torchaudio implementation.

Paraformer (ZH CER) reads the file itself (see `asr.ParaformerAsr`).

Shapes: S samples, B batch.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

SCORING_RATE = 16000
"""Both scoring models (Whisper, WavLM) run at 16 kHz."""


class AudioReadError(ValueError):
    """An audio file to score is missing, unreadable or empty (`kind`: "missing", "unreadable" or "empty")."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def read_audio(path: str | Path, dtype: str = "float32") -> tuple[np.ndarray, int]:
    """Read a file at its native rate and keep the first channel.

    Args:
        path: audio file (anything libsndfile reads).
        dtype: "float32" or "float64" (PCM is scaled to [-1, 1)).

    Returns:
        (samples [S], sample_rate).

    Raises:
        AudioReadError: missing, unreadable or zero-length file.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioReadError(f"audio file not found: {path}", "missing")
    try:
        wav, sr = sf.read(str(path), dtype=dtype, always_2d=True)  # [S, C]
    except Exception as err:  # libsndfile errors are RuntimeError subclasses
        raise AudioReadError(f"cannot read audio file {path}: {err}", "unreadable") from err
    if wav.shape[0] == 0:
        raise AudioReadError(f"audio file is empty: {path}", "empty")
    return np.ascontiguousarray(wav[:, 0]), int(sr)


def resample_fft(wav: np.ndarray, orig_sr: int, new_sr: int = SCORING_RATE) -> np.ndarray:
    """FFT resampling to `int(S * new_sr / orig_sr)` samples (the Whisper path of the official scorer).

    Raises:
        ImportError: when scipy (extra `eval`) is missing.
    """
    if orig_sr == new_sr:
        return wav
    try:
        from scipy.signal import resample
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("EN scoring needs scipy: pip install 'cat-tts[eval]'") from err
    return resample(wav, int(len(wav) * new_sr / orig_sr))


def sinc_resample_kernel(
    orig_sr: int, new_sr: int, zero_crossings: int = 6, rolloff: float = 0.99
) -> tuple[torch.Tensor, int, int, int]:
    """Polyphase filter bank of the Hann-windowed sinc resampler.

    Both rates are divided by their gcd: the input then advances `down` samples for every `up` output
    samples. Output phase j (0 <= j < up) of block q sits at input time q*down + j*down/up; its filter
    covers the inputs q*down - half .. q*down + half + down - 1.

    Returns:
        (kernel [up, 1, 2*half + down] float64, half, up, down).
    """
    g = math.gcd(orig_sr, new_sr)
    down, up = orig_sr // g, new_sr // g
    cutoff = min(down, up) * rolloff  # low-pass corner, in the same units as the reduced rates
    half = math.ceil(zero_crossings * down / cutoff)  # one-sided filter length in input samples
    offsets = torch.arange(-half, half + down, dtype=torch.float64) / down  # input tap times (seconds at rate `down`)
    # Output phase times; rounded through float32 first, as torchaudio does, so that results match it bit for bit.
    phases = (torch.arange(up, dtype=torch.float32)[:, None] / up).to(torch.float64)
    x = ((offsets[None, :] - phases) * cutoff).clamp(-zero_crossings, zero_crossings)  # [up, taps]
    window = torch.cos(x * (math.pi / (2 * zero_crossings))) ** 2
    arg = x * math.pi
    safe = torch.where(arg == 0, torch.ones_like(arg), arg)
    sinc = torch.where(arg == 0, torch.ones_like(arg), torch.sin(safe) / safe)
    kernel = sinc * window * (cutoff / down)
    return kernel[:, None, :], half, up, down


def resample_sinc(wav: torch.Tensor, orig_sr: int, new_sr: int = SCORING_RATE) -> torch.Tensor:
    """Band-limited resampling with the torchaudio-default Hann-windowed sinc filter (the SIM path).

    Args:
        wav: float waveform [B, S] or [S].
        orig_sr: its sample rate.
        new_sr: target rate.

    Returns:
        The resampled waveform, [B, ceil(S * new_sr / orig_sr)] (or 1-D for 1-D input), same dtype.
    """
    if orig_sr == new_sr:
        return wav
    squeeze = wav.dim() == 1
    x = wav[None] if squeeze else wav  # [B, S]
    kernel, half, up, down = sinc_resample_kernel(orig_sr, new_sr)
    kernel = kernel.to(torch.float32).to(x.dtype)  # computed in float64, used in float32 like torchaudio's transform
    n = x.shape[-1]
    padded = F.pad(x, (half, half + down))[:, None, :]  # [B, 1, S + 2*half + down]
    y = F.conv1d(padded, kernel, stride=down)  # [B, up, Q]: one row per output phase
    y = y.transpose(1, 2).reshape(x.shape[0], -1)  # [B, Q*up], phases interleaved in time order
    y = y[:, : math.ceil(up * n / down)]
    return y[0] if squeeze else y
