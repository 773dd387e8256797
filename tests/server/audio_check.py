"""Reading every response format back as its users do: `soundfile.read(io.BytesIO(answer))` and the `ffmpeg`
program (raw `pcm` has no header: it is read as 16-bit little-endian samples)."""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

FRAME_SAMPLES = 1920  # 24 kHz / 12.5 frames per second
# Decoded length minus encoded length allowed per format, in samples: MP3 without a LAME tag keeps the encoder
# delay and the padding of its last frame (< 2 frames of 576 samples + 1105 delay); the others are exact.
LENGTH_SLACK = {"pcm": 0, "wav": 0, "flac": 0, "opus": 0, "mp3": 2 * 1152 + 1105}


def decode(data: bytes, fmt: str) -> tuple[np.ndarray, int]:
    """A whole response body of format `fmt` -> (float32 samples [S], sample rate), with soundfile."""
    if fmt == "pcm":
        assert len(data) % 2 == 0, f"pcm body has an odd length {len(data)}"
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767.0, 24000
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert samples.ndim == 1, samples.shape
    return samples, rate


def decode_ffmpeg(data: bytes, fmt: str) -> np.ndarray:
    """A whole response body -> float32 samples at 24 kHz mono, with the ffmpeg program (skips when absent)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg is not installed (scripts/test.sh installs it)")
    source = ["-f", "s16le", "-ar", "24000", "-ac", "1"] if fmt == "pcm" else []
    out = subprocess.run([ffmpeg, "-v", "error", *source, "-i", "pipe:0", "-f", "f32le", "-ac", "1", "-ar", "24000",
                          "pipe:1"], input=data, capture_output=True, timeout=120)  # fmt: skip
    assert out.returncode == 0 and not out.stderr, out.stderr.decode(errors="replace")
    return np.frombuffer(out.stdout, dtype="<f4")


def check_duration(samples: np.ndarray, fmt: str, expected_samples: int) -> None:
    """The decoded length equals the generated length (within the format's known slack)."""
    extra = samples.size - expected_samples
    assert 0 <= extra <= LENGTH_SLACK[fmt], (
        f"{fmt}: decoded {samples.size} samples, expected {expected_samples} (+ up to {LENGTH_SLACK[fmt]})"
    )
