"""Decoding helpers for the server tests: every response format back to float32 samples.

Streamed FLAC says "total samples unknown" and a streamed MP3 has no length tag, so `soundfile.read` (which trusts
the header) cannot be used on them: `decode` reads block by block until libsndfile reports the end.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import soundfile as sf

FRAME_SAMPLES = 1920  # 24 kHz / 12.5 frames per second
# Decoded length minus encoded length allowed per format, in samples: MP3 without a LAME tag keeps the encoder
# delay and the padding of its last frame (< 2 frames of 576 samples + 1105 delay); the others are exact.
LENGTH_SLACK = {"pcm": 0, "wav": 0, "flac": 0, "opus": 0, "mp3": 2 * 1152 + 1105}


def decode(data: bytes, fmt: str) -> tuple[np.ndarray, int]:
    """Decodes a whole response body of format `fmt`; returns (float32 samples [S], sample rate)."""
    if fmt == "pcm":
        assert len(data) % 2 == 0, f"pcm body has an odd length {len(data)}"
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767.0, 24000
    if fmt == "wav":
        assert data[:4] == b"RIFF" and data[8:12] == b"WAVE", data[:12]
        channels, rate, _, _, bits = struct.unpack("<HIIHH", data[22:36])
        assert (channels, bits) == (1, 16), (channels, bits)
        assert data[36:40] == b"data", data[36:40]
        return np.frombuffer(data[44:], dtype="<i2").astype(np.float32) / 32767.0, rate
    with sf.SoundFile(io.BytesIO(data)) as f:
        assert f.channels == 1, f.channels
        parts = []
        block = np.zeros(4096, dtype=np.float32)
        while True:  # sf_readf_float directly: SoundFile.read seeks after reading, which unknown-length FLAC refuses
            n = sf._snd.sf_readf_float(f._file, sf._ffi.cast("float *", block.ctypes.data), block.size)
            if n <= 0:
                break
            parts.append(block[:n].copy())
        rate = f.samplerate
    return (np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)), rate


def check_duration(samples: np.ndarray, fmt: str, expected_samples: int) -> None:
    """The decoded length equals the generated length (within the format's known slack)."""
    extra = samples.size - expected_samples
    assert 0 <= extra <= LENGTH_SLACK[fmt], (
        f"{fmt}: decoded {samples.size} samples, expected {expected_samples} (+ up to {LENGTH_SLACK[fmt]})"
    )
