"""The voice store: reference clips encoded once, kept as codes in a directory, reused by name.

Layout of the voices directory (nothing else is read or written):

    NAME.safetensors   the codes, one int64 tensor "codes" [N, L] (all N layers of the codec)
    NAME.json          metadata: name, transcript, duration, creation time, codec id, N

Writes are atomic (a hidden temporary file in the same directory, fsync, rename), codes first and metadata last,
so a voice exists exactly when its metadata file does; a crash leaves at most a stray temporary file, removed at
the next start. Several processes (Ray replicas on one host) may share the directory: `get` and `list` read the
directory each time and cache codes by the metadata file's modification time.

Shapes: N codec layers, L reference frames (12.5 per second).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cat_tts.errors import InputError

logger = logging.getLogger(__name__)

DEFAULT_VOICE = "default"  # installed from the project's reference clip; cannot be uploaded over or deleted
MAX_NAME_CHARS = 64
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")  # no separators, no leading dot
_TMP_PREFIX = ".tmp-"


class VoiceNotFoundError(KeyError):
    """No stored voice has this name."""

    def __str__(self) -> str:
        return f"no voice named {self.args[0]!r}"


class VoiceExistsError(ValueError):
    """A voice with this name is stored already."""


@dataclass(frozen=True)
class Voice:
    """A stored voice."""

    name: str
    codes: torch.Tensor  # [N, L] int64, CPU
    text: str | None  # transcript of the clip (enables continuation mode), or None
    seconds: float  # clip duration
    created_at: int  # unix time
    codec: str  # id of the codec that made the codes

    def info(self) -> dict:
        """The JSON description the API returns (OpenAI's voice object plus our fields)."""
        return {
            "id": self.name,
            "object": "audio.voice",
            "name": self.name,
            "type": "audio_sample",
            "created_at": self.created_at,
            "text": self.text,
            "seconds": round(self.seconds, 3),
        }


def check_name(name: object) -> str:
    """Returns `name` if it is a valid voice name, else raises `InputError` saying what is allowed."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        shown = name if not isinstance(name, str) else name[:80]
        raise InputError(
            f"voice name must be 1..{MAX_NAME_CHARS} characters of letters, digits, '_', '-' and '.' "
            f"(not starting with '.'), got {shown!r}"
        )
    return name


class VoiceStore:
    """Stored voices of one codec, in one directory.

    Args:
        directory: where voices live (created).
        codec_id: identifies the codec that encodes clips; voices made by another codec are not used.
        n_vq: the codec's number of layers N (stored codes must be [N, L]).
        max_voices: how many voices may be stored.
    """

    def __init__(self, directory: str | Path, codec_id: str, n_vq: int, max_voices: int = 1000) -> None:
        self.directory = Path(directory).expanduser().resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.codec_id = codec_id
        self.n_vq = n_vq
        self.max_voices = max_voices
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[int, Voice]] = {}  # name -> (metadata mtime_ns, voice)
        for stray in self.directory.glob(_TMP_PREFIX + "*"):  # left by a crash mid-write
            stray.unlink(missing_ok=True)

    # ------------------------------------------------------------------ queries

    def names(self) -> list[str]:
        """Names of the stored voices made by this codec, sorted."""
        return [v.name for v in self.list()]

    def list(self) -> list[Voice]:
        """Every usable stored voice, sorted by name."""
        voices = []
        for meta in sorted(self.directory.glob("*.json")):
            name = meta.stem
            if not NAME_PATTERN.fullmatch(name):
                continue
            try:
                voices.append(self.get(name))
            except (VoiceNotFoundError, InputError):
                continue
        return voices

    def get(self, name: str) -> Voice:
        """The voice called `name`.

        Raises:
            InputError: the name is not valid.
            VoiceNotFoundError: no usable voice has this name.
        """
        check_name(name)
        meta_path, codes_path = self._paths(name)
        try:
            mtime = meta_path.stat().st_mtime_ns
        except FileNotFoundError:
            self._cache.pop(name, None)
            raise VoiceNotFoundError(name) from None
        cached = self._cache.get(name)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        voice = self._load(name, meta_path, codes_path)
        if voice is None:
            raise VoiceNotFoundError(name)
        self._cache[name] = (mtime, voice)
        return voice

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
        except (VoiceNotFoundError, InputError):
            return False
        return True

    # ------------------------------------------------------------------ changes

    def add(self, name: str, codes: torch.Tensor, text: str | None, seconds: float, replace: bool = False) -> Voice:
        """Stores a voice atomically.

        Args:
            name: voice name (see `check_name`).
            codes: `[N, L]` integer codes from the pipeline's `encode_reference`.
            text: transcript of the clip, or None.
            seconds: clip duration.
            replace: overwrite an existing voice of this name (used for the default voice).

        Raises:
            InputError: bad name, bad codes, or the store is full.
            VoiceExistsError: the name is taken and `replace` is False.
        """
        from safetensors.torch import save

        check_name(name)
        if codes.dim() != 2 or codes.shape[0] != self.n_vq or codes.dtype.is_floating_point or codes.shape[1] < 1:
            raise InputError(f"voice codes must be an integer tensor [{self.n_vq}, L], got {tuple(codes.shape)}")
        meta_path, codes_path = self._paths(name)
        voice = Voice(name, codes.detach().long().cpu().contiguous(), text, float(seconds), int(time.time()),
                      self.codec_id)  # fmt: skip
        with self._lock:
            if meta_path.exists() and not replace:
                raise VoiceExistsError(f"a voice named {name!r} exists; delete it first (DELETE /v1/audio/voices/NAME)")
            if not meta_path.exists() and len(list(self.directory.glob("*.json"))) >= self.max_voices:
                raise InputError(f"the voice store is full ({self.max_voices} voices); delete some first")
            meta = {
                "name": name,
                "text": text,
                "seconds": voice.seconds,
                "created_at": voice.created_at,
                "codec": self.codec_id,
                "n_vq": self.n_vq,
                "frames": int(codes.shape[1]),
            }
            _atomic_write(codes_path, save({"codes": voice.codes}))
            _atomic_write(meta_path, json.dumps(meta, ensure_ascii=False, indent=1).encode("utf-8"))
            self._cache[name] = (meta_path.stat().st_mtime_ns, voice)
        logger.info("stored voice %r (%.1f s, %d frames)", name, voice.seconds, codes.shape[1])
        return voice

    def delete(self, name: str) -> None:
        """Removes a voice (metadata first, so it is gone at once).

        Raises:
            InputError: the name is not valid.
            VoiceNotFoundError: no voice has this name.
        """
        check_name(name)
        meta_path, codes_path = self._paths(name)
        with self._lock:
            try:
                meta_path.unlink()
            except FileNotFoundError:
                raise VoiceNotFoundError(name) from None
            codes_path.unlink(missing_ok=True)
            self._cache.pop(name, None)
        logger.info("deleted voice %r", name)

    # ------------------------------------------------------------------ internals

    def _paths(self, name: str) -> tuple[Path, Path]:
        meta = self.directory / f"{name}.json"
        codes = self.directory / f"{name}.safetensors"
        # defence in depth: the name pattern already excludes separators and "..", so both stay in the directory
        assert meta.parent == self.directory and codes.parent == self.directory, name
        return meta, codes

    def _load(self, name: str, meta_path: Path, codes_path: Path) -> Voice | None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict) or meta.get("name") != name:
                raise ValueError("metadata does not describe this voice")
            if meta.get("codec") != self.codec_id or meta.get("n_vq") != self.n_vq:
                logger.warning(
                    "voice %r was made by codec %r (N=%s); this server runs %r (N=%d): not used",
                    name, meta.get("codec"), meta.get("n_vq"), self.codec_id, self.n_vq,
                )  # fmt: skip
                return None
            codes = load_file(str(codes_path))["codes"]
            if codes.dim() != 2 or codes.shape[0] != self.n_vq or codes.dtype != torch.int64:
                raise ValueError(f"codes have shape {tuple(codes.shape)} and dtype {codes.dtype}")
            text = meta.get("text")
            return Voice(name, codes, text if isinstance(text, str) else None, float(meta.get("seconds", 0.0)),
                         int(meta.get("created_at", 0)), self.codec_id)  # fmt: skip
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as err:
            logger.warning("voice %r in %s is damaged (%s): not used", name, self.directory, err)
            return None


def _atomic_write(path: Path, data: bytes) -> None:
    """Writes `data` to `path` so readers see the old file or the new one, never a part."""
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def decode_clip(data: bytes, max_seconds: float) -> tuple[np.ndarray, int]:
    """Decodes an uploaded clip (any format libsndfile reads) from memory.

    Returns:
        `(samples float32 [S] or [S, channels], sample_rate)`; the pipeline mixes down and resamples.

    Raises:
        InputError: not audio, empty, or longer than `max_seconds`.
    """
    import soundfile as sf

    if not data:
        raise InputError("the audio file is empty")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate = f.samplerate
            frames = f.frames
            if 0 < frames < 2**62 and frames / rate > max_seconds:
                raise InputError(f"the clip is {frames / rate:.1f} s long; the limit is {max_seconds:g} s (trim it)")
            limit = int(max_seconds * rate) + 1
            samples = f.read(frames=limit, dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise InputError(f"could not read the audio file ({reason}); send wav, flac, ogg or mp3") from err
    if samples.shape[0] >= limit:
        raise InputError(f"the clip is longer than the {max_seconds:g} s limit (trim it)")
    if samples.shape[0] == 0:
        raise InputError("the audio file has no samples")
    if samples.ndim == 2:  # [S, channels] -> the pipeline's [channels, S]
        samples = np.ascontiguousarray(samples.T)
    return samples, int(rate)
