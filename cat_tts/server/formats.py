"""Audio encoders for the speech API: float32 samples in, bytes of the response format out.

pcm, wav, mp3 and opus are streamed: each encoder turns the pieces the pipeline yields into bytes that can be sent
at once, so a client plays before generation ends; the bytes of all calls concatenated are one valid file:

* `pcm`: raw 16-bit little-endian mono (the OpenAI `pcm` format; the rate is the model's, 24 kHz).
* `wav`: a RIFF header whose sizes say "unknown length" (0xFFFFFFFF, as streamed WAV from OpenAI and ffmpeg),
  then 16-bit PCM. Readers that trust the header read to the end of the data.
* `mp3`, `opus` (Ogg Opus): libsndfile (through `soundfile`) writes into an in-memory sink; what it has written is
  sent after every piece. At the end libsndfile seeks back to patch the MP3 Xing/LAME tag; those bytes have left,
  so the patch is dropped and the MP3 is constant-bitrate without a tag (decoders then keep the encoder delay,
  ~0.05 s). Ogg Opus pages are flushed every `OPUS_PAGE_LATENCY_MS` so pages leave as audio is produced.

`flac` is not a playback-streaming format: its header (STREAMINFO) carries the total length, known only at the end,
and readers such as `soundfile.read` refuse a FLAC without it. A FLAC answer is therefore encoded whole and sent
complete, with correct totals (`AudioEncoder.streamed` is False).

Shapes: S samples (mono, at the model's rate).
"""

from __future__ import annotations

import io
import logging
import struct
from typing import Protocol

import numpy as np
import soundfile as sf

logger = logging.getLogger(__name__)

FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")  # every OpenAI `response_format` value
SUPPORTED_FORMATS = ("mp3", "opus", "flac", "wav", "pcm")  # what we encode (aac: no encoder in libsndfile)
MEDIA_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
OPUS_PAGE_LATENCY_MS = 100.0  # Ogg page flush interval (libsndfile's default of 1000 ms would delay the first audio)
MP3_COMPRESSION_LEVEL = 0.5  # libsndfile's 0..1 scale; constant bitrate, ~80 kbit/s at 24 kHz mono
_SFC_SET_OGG_PAGE_LATENCY_MS = 0x1302  # sf_command id from sndfile.h (not exported by soundfile)
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # sample rates Opus encodes natively


class UnsupportedFormatError(ValueError):
    """A response format we cannot encode (the message names the supported ones)."""


class AudioEncoder(Protocol):
    """Encodes one response incrementally: `encode` for each piece, `finish` once at the end."""

    media_type: str
    streamed: bool  # False: every byte comes from `finish` (the response is sent complete)

    def encode(self, samples: np.ndarray) -> bytes:
        """Encodes float32 samples `[S]` in [-1, 1] (clipped); returns the bytes ready to send (may be empty)."""
        ...

    def finish(self) -> bytes:
        """Flushes the encoder; returns the last bytes. The encoder cannot be used afterwards."""
        ...


def make_encoder(fmt: str, sample_rate: int) -> AudioEncoder:
    """An encoder for `fmt` (one of `SUPPORTED_FORMATS`) at `sample_rate` Hz, mono.

    Raises:
        UnsupportedFormatError: `fmt` is not supported (aac, or an unknown name); the message lists the supported
            ones.
    """
    if fmt == "pcm":
        return PcmEncoder()
    if fmt == "wav":
        return WavEncoder(sample_rate)
    if fmt == "flac":
        return WholeFileEncoder("flac", sample_rate, "FLAC", "PCM_16")
    if fmt == "mp3":
        return SoundfileEncoder("mp3", sample_rate, "MP3", "MPEG_LAYER_III", compression_level=MP3_COMPRESSION_LEVEL)
    if fmt == "opus":
        if sample_rate not in _OPUS_RATES:
            raise UnsupportedFormatError(f"opus needs a sample rate in {_OPUS_RATES}, the model's is {sample_rate}")
        return SoundfileEncoder("opus", sample_rate, "OGG", "OPUS", page_latency_ms=OPUS_PAGE_LATENCY_MS)
    supported = ", ".join(SUPPORTED_FORMATS)
    if fmt == "aac":
        raise UnsupportedFormatError(f"response_format 'aac' is not supported by this server; use one of {supported}")
    raise UnsupportedFormatError(f"unknown response_format {fmt!r}; use one of {supported}")


def to_pcm16(samples: np.ndarray) -> bytes:
    """Float samples `[S]` -> 16-bit little-endian bytes (clipped to [-1, 1], rounded)."""
    x = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    return np.round(x * 32767.0).astype("<i2").tobytes()


class PcmEncoder:
    """Raw 16-bit little-endian mono."""

    media_type = MEDIA_TYPES["pcm"]
    streamed = True

    def encode(self, samples: np.ndarray) -> bytes:
        return to_pcm16(samples)

    def finish(self) -> bytes:
        return b""


class WavEncoder:
    """16-bit PCM WAV with a streaming header (RIFF and data sizes 0xFFFFFFFF = unknown), sent before the samples."""

    media_type = MEDIA_TYPES["wav"]
    streamed = True

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._header_sent = False

    def header(self) -> bytes:
        """The 44-byte header: PCM, mono, 16 bits, sizes unknown."""
        unknown = 0xFFFFFFFF
        fmt_chunk = struct.pack("<HHIIHH", 1, 1, self.sample_rate, self.sample_rate * 2, 2, 16)
        return (
            b"RIFF" + struct.pack("<I", unknown) + b"WAVE"
            + b"fmt " + struct.pack("<I", len(fmt_chunk)) + fmt_chunk
            + b"data" + struct.pack("<I", unknown)
        )  # fmt: skip

    def encode(self, samples: np.ndarray) -> bytes:
        data = to_pcm16(samples)
        if not self._header_sent:
            self._header_sent = True
            return self.header() + data
        return data

    def finish(self) -> bytes:
        return b"" if self._header_sent else self.encode(np.zeros(0, dtype=np.float32))


class _StreamSink(io.RawIOBase):
    """A seekable in-memory file for libsndfile whose written bytes can be taken away as they are produced.

    Bytes before `sent` have left already; a write that lands there (a header patch at close) is dropped.
    """

    def __init__(self) -> None:
        super().__init__()
        self._buffer = bytearray()  # bytes written and not yet taken
        self._sent = 0  # bytes taken so far (their offsets are [0, sent))
        self._pos = 0
        self.dropped: list[tuple[int, int]] = []  # (offset, length) of writes behind the sent frontier

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        end = self._sent + len(self._buffer)
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: end}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int = -1) -> bytes:
        start = self._pos - self._sent
        if start < 0:  # libsndfile only reads back while opening (to sniff), before anything is taken
            return b""
        data = bytes(self._buffer[start:] if size is None or size < 0 else self._buffer[start : start + size])
        self._pos += len(data)
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def write(self, b) -> int:
        data = bytes(b)
        start = self._pos - self._sent
        if start < 0:
            self.dropped.append((self._pos, len(data)))
            keep = data[-start:] if len(data) > -start else b""
            start, data = 0, keep
        end = start + len(data)
        if start > len(self._buffer):
            self._buffer.extend(b"\0" * (start - len(self._buffer)))
        self._buffer[start:end] = data
        self._pos += len(b)
        return len(b)

    def take(self) -> bytes:
        """Returns the bytes written since the last call and marks them sent."""
        data = bytes(self._buffer)
        self._sent += len(data)
        self._buffer.clear()
        return data


class SoundfileEncoder:
    """MP3 or Ogg Opus through libsndfile, streamed (see the module docstring for the MP3 tag)."""

    streamed = True

    def __init__(
        self,
        name: str,
        sample_rate: int,
        major: str,
        subtype: str,
        compression_level: float | None = None,
        page_latency_ms: float | None = None,
    ) -> None:
        self.name = name
        self.media_type = MEDIA_TYPES[name]
        self._sink = _StreamSink()
        kwargs = {}
        if major == "MP3":
            kwargs = {"bitrate_mode": "CONSTANT", "compression_level": compression_level}
        self._file = sf.SoundFile(
            self._sink, "w", samplerate=sample_rate, channels=1, format=major, subtype=subtype, **kwargs
        )
        if page_latency_ms is not None:
            _set_ogg_page_latency(self._file, page_latency_ms)
        self._first = True  # the next bytes taken are the first of the stream
        self._closed = False

    def encode(self, samples: np.ndarray) -> bytes:
        x = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
        if x.size:
            self._file.write(x)
        return self._take()

    def finish(self) -> bytes:
        if not self._closed:
            self._closed = True
            self._file.close()
        if self._sink.dropped:
            logger.debug("%s stream: dropped %d header patches (sent already)", self.name, len(self._sink.dropped))
        return self._take()

    def _take(self) -> bytes:
        data = self._sink.take()
        if self._first and data:
            self._first = False
            if self.name == "mp3":
                data = _strip_mp3_tag_placeholder(data)
        return data


class WholeFileEncoder:
    """A format whose header needs the total length (FLAC): encoded into memory, returned whole by `finish`."""

    streamed = False

    def __init__(self, name: str, sample_rate: int, major: str, subtype: str) -> None:
        self.media_type = MEDIA_TYPES[name]
        self._buffer = io.BytesIO()
        self._file = sf.SoundFile(self._buffer, "w", samplerate=sample_rate, channels=1, format=major, subtype=subtype)

    def encode(self, samples: np.ndarray) -> bytes:
        x = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
        if x.size:
            self._file.write(x)
        return b""

    def finish(self) -> bytes:
        if not self._file.closed:
            self._file.close()  # writes the totals into the header
        return self._buffer.getvalue()


def _set_ogg_page_latency(file, milliseconds: float) -> None:
    """Asks libsndfile (>= 1.1) to end an Ogg page every `milliseconds`; older versions keep their default."""
    try:
        value = sf._ffi.new("double*", float(milliseconds))
        sf._snd.sf_command(file._file, _SFC_SET_OGG_PAGE_LATENCY_MS, value, sf._ffi.sizeof("double"))
    except (AttributeError, TypeError) as err:  # pragma: no cover - depends on the soundfile build
        logger.warning("could not set the Ogg page latency (%s); Opus audio will arrive in ~1 s pages", err)


def _strip_mp3_tag_placeholder(data: bytes) -> bytes:
    """Drops LAME's placeholder for the Xing/LAME tag frame (a frame header then zeros, filled in only at close).

    Streamed, it would stay an all-zero frame that some decoders count as the stream's length; without it the
    stream is a plain constant-bitrate MP3.
    """
    length = _mp3_frame_length(data[:4])
    if length and len(data) >= length and not any(data[4:length]):
        return data[length:]
    return data


def _mp3_frame_length(header: bytes) -> int | None:
    """Byte length of the MPEG audio layer III frame starting with `header` (4 bytes); None if it is not one."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version = (header[1] >> 3) & 3  # 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5
    layer = (header[1] >> 1) & 3  # 1 = layer III
    bitrate_index, rate_index, padding = header[2] >> 4, (header[2] >> 2) & 3, (header[2] >> 1) & 1
    if layer != 1 or version == 1 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    if version == 3:
        kbps = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)[bitrate_index]
        rate = (44100, 48000, 32000)[rate_index]
        return 144 * kbps * 1000 // rate + padding
    kbps = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)[bitrate_index]
    rate = (22050, 24000, 16000)[rate_index] // (1 if version == 2 else 2)
    return 72 * kbps * 1000 // rate + padding
