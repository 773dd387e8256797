"""The streaming encoders: every chunk is sendable at once, the concatenation decodes to the input."""

from __future__ import annotations

import numpy as np
import pytest

from cat_tts.server.formats import SUPPORTED_FORMATS, UnsupportedFormatError, _StreamSink, make_encoder

from .audio_check import LENGTH_SLACK, decode

RATE = 24000


def _tone(seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _encode(fmt: str, audio: np.ndarray, piece: int = 4 * 1920) -> list[bytes]:
    enc = make_encoder(fmt, RATE)
    chunks = [enc.encode(audio[i : i + piece]) for i in range(0, audio.size, piece)]
    return [*chunks, enc.finish()]


@pytest.mark.parametrize("fmt", SUPPORTED_FORMATS)
def test_streamed_chunks_decode_to_the_input(fmt):
    audio = _tone()
    data = b"".join(_encode(fmt, audio))
    decoded, rate = decode(data, fmt)
    assert rate == RATE
    assert 0 <= decoded.size - audio.size <= LENGTH_SLACK[fmt]
    if fmt in ("pcm", "wav", "flac"):  # lossless up to 16-bit rounding
        np.testing.assert_allclose(decoded[: audio.size], audio, atol=1.0 / 32767 + 1e-6)
    else:  # lossy: the tone's energy comes through (after the codec delay)
        rms_in, rms_out = np.sqrt(np.mean(audio**2)), np.sqrt(np.mean(decoded[2400:-2400] ** 2))
        assert abs(rms_out / rms_in - 1.0) < 0.2, (rms_in, rms_out)


@pytest.mark.parametrize("fmt", SUPPORTED_FORMATS)
def test_streamed_encoders_produce_bytes_before_the_end(fmt):
    """Audio leaves while it is produced: most bytes come out of `encode`, not `finish` (FLAC: all at the end)."""
    chunks = _encode(fmt, _tone(3.0))
    if not make_encoder(fmt, RATE).streamed:
        assert fmt == "flac" and not any(chunks[:-1])
        return
    assert chunks[0], f"{fmt}: nothing after the first piece"
    assert sum(map(len, chunks[:-1])) > 0.7 * sum(map(len, chunks)), [len(c) for c in chunks]


def test_flac_carries_its_totals():
    import io

    import soundfile as sf

    data = b"".join(_encode("flac", _tone(1.0)))
    assert sf.info(io.BytesIO(data)).frames == RATE


def test_wav_header_declares_unknown_length():
    data = b"".join(_encode("wav", _tone(0.5)))
    assert data[4:8] == b"\xff\xff\xff\xff" and data[40:44] == b"\xff\xff\xff\xff"


def test_empty_stream():
    """No audio at all (a model that ends at once): wav is its header, opus its Ogg header pages; pcm, flac and mp3
    are empty (libsndfile writes the FLAC and MP3 headers with the first samples)."""
    bodies = {fmt: make_encoder(fmt, RATE).finish() for fmt in SUPPORTED_FORMATS}
    assert bodies["pcm"] == bodies["flac"] == bodies["mp3"] == b""
    assert bodies["opus"].startswith(b"OggS")
    decoded, rate = decode(bodies["wav"], "wav")
    assert decoded.size == 0 and rate == RATE


def test_out_of_range_samples_are_clipped():
    enc = make_encoder("pcm", RATE)
    data = enc.encode(np.array([2.0, -2.0, 0.5], dtype=np.float32))
    assert np.frombuffer(data, dtype="<i2").tolist() == [32767, -32767, 16384]


def test_mp3_stream_has_no_zero_tag_frame():
    first = _encode("mp3", _tone(1.0))[0]
    assert first[:2] == b"\xff\xf3" or first[:2] == b"\xff\xfb"
    assert any(first[4:200]), "the first frame is LAME's all-zero tag placeholder"


@pytest.mark.parametrize("fmt", ["aac", "ogg", ""])
def test_unsupported_formats_name_the_supported_ones(fmt):
    with pytest.raises(UnsupportedFormatError, match="mp3, opus, flac, wav"):
        make_encoder(fmt, RATE)


def test_sink_drops_writes_behind_the_sent_frontier():
    sink = _StreamSink()
    sink.write(b"abcdef")
    assert sink.take() == b"abcdef"
    sink.write(b"gh")
    sink.seek(2)
    sink.write(b"XYZZ")  # 4 bytes over offsets 2..5 (sent) -> dropped
    sink.seek(0, 2)
    sink.write(b"ij")
    assert sink.take() == b"ghij"
    assert sink.dropped == [(2, 4)]
