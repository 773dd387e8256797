"""The voice store: reference clips encoded once, kept as codes, reused by name.

Layout (nothing else is read or written):

    VOICES_DIR/CODEC_ID/NAME.safetensors    one int64 tensor "codes" [N, L]; the voice's metadata (transcript,
                                            duration, creation time, source) in the file's own metadata

`CODEC_ID` is the codec's identity (`cat_tts.server.identity`), not its path: servers started with `tiny/codec`,
`./tiny/codec/` or a hub id and its snapshot share their voices, and servers of different codecs sharing a voices
directory never see (or overwrite) each other's. A voice is one file written atomically (`cat_tts.files.atomic_write`:
a hidden temporary name, then a rename), so a reader sees a whole voice or none, and several processes (Ray replicas)
may share the directory: `get` and `list` read it each time (codes cached by the file's modification time).

Shapes: N layers, L reference frames (12.5 per second).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from safetensors.torch import save

from cat_tts.errors import CheckpointError, InputError
from cat_tts.files import atomic_write
from cat_tts.weights import SafetensorsFile

logger = logging.getLogger(__name__)

DEFAULT_VOICE = "default"  # installed from the packaged clip; cannot be uploaded over or deleted
MAX_NAME_CHARS = 64
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")  # no separators, no leading dot
SUFFIX = ".safetensors"
META_KEY = "cat_tts.voice"  # the safetensors metadata entry holding the voice's JSON description


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
    source: str | None = None  # digest of what it was made from (the default voice: its clip and transcript)

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
    """Stored voices of one codec.

    Args:
        root: the voices directory (`--voices-dir`); this codec's voices live in `root/codec_id`.
        codec_id: the codec's identity.
        n_vq: N, the layers a usable voice must have (codes of more layers are cut: the codec's prefix property).
        max_voices: how many voices may be stored for this codec.
        option: how the user named the directory, for error messages.

    Raises:
        InputError: the directory cannot be created or written (the message names `option`).
    """

    def __init__(self, root: str | Path, codec_id: str, n_vq: int, max_voices: int = 1000,
                 option: str = "--voices-dir") -> None:  # fmt: skip
        self.directory = Path(root).expanduser().resolve() / codec_id
        self.codec_id = codec_id
        self.n_vq = n_vq
        self.max_voices = max_voices
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[int, Voice]] = {}  # name -> (file mtime_ns, voice)
        check_writable(self.directory, option)

    # ------------------------------------------------------------------ queries
    def names(self) -> list[str]:
        """Names of the usable stored voices, sorted."""
        return [v.name for v in self.list()]

    def list(self) -> list[Voice]:
        """Every usable stored voice, sorted by name."""
        voices = []
        for path in sorted(self.directory.glob("*" + SUFFIX)):
            name = path.name[: -len(SUFFIX)]
            if NAME_PATTERN.fullmatch(name):
                try:
                    voices.append(self.get(name))
                except VoiceNotFoundError:
                    continue
        return voices

    def get(self, name: str) -> Voice:
        """The voice called `name`, its codes cut to N layers.

        Raises:
            InputError: the name is not valid.
            VoiceNotFoundError: no usable voice has this name.
        """
        path = self._path(check_name(name))
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            self._cache.pop(name, None)
            raise VoiceNotFoundError(name) from None
        cached = self._cache.get(name)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        voice = self._load(name, path)
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
    def add(self, name: str, codes: torch.Tensor, text: str | None, seconds: float, replace: bool = False,
            source: str | None = None) -> Voice:  # fmt: skip
        """Stores a voice (one file, written atomically).

        Args:
            name: voice name (see `check_name`).
            codes: `[N, L]` integer codes from the pipeline's `encode_reference`.
            text: transcript of the clip, or None.
            seconds: clip duration.
            replace: overwrite an existing voice of this name (the default voice).
            source: a digest of what the voice was made from (lets a start-up see that it has nothing to redo).

        Raises:
            InputError: bad name, bad codes, or the store is full.
            VoiceExistsError: the name is taken and `replace` is False.
        """
        check_name(name)
        if codes.dim() != 2 or codes.shape[0] != self.n_vq or codes.dtype.is_floating_point or codes.shape[1] < 1:
            raise InputError(f"voice codes must be an integer tensor [{self.n_vq}, L], got {tuple(codes.shape)}")
        path = self._path(name)
        voice = Voice(name, codes.detach().long().cpu().contiguous(), text, float(seconds), int(time.time()), source)
        meta = {"name": name, "text": text, "seconds": voice.seconds, "created_at": voice.created_at,
                "source": source}  # fmt: skip
        data = save({"codes": voice.codes}, metadata={META_KEY: json.dumps(meta, ensure_ascii=False)})
        with self._lock:
            if path.exists() and not replace:
                raise VoiceExistsError(f"a voice named {name!r} exists; delete it first (DELETE /v1/audio/voices/NAME)")
            if not path.exists() and len(list(self.directory.glob("*" + SUFFIX))) >= self.max_voices:
                raise InputError(f"the voice store is full ({self.max_voices} voices); delete some first")
            with atomic_write(path) as tmp:
                tmp.write_bytes(data)
            self._cache[name] = (path.stat().st_mtime_ns, voice)
        logger.info("stored voice %r (%.1f s, %d frames)", name, voice.seconds, codes.shape[1])
        return voice

    def delete(self, name: str) -> None:
        """Removes a voice.

        Raises:
            InputError: the name is not valid.
            VoiceNotFoundError: no voice has this name.
        """
        path = self._path(check_name(name))
        with self._lock:
            try:
                path.unlink()
            except FileNotFoundError:
                raise VoiceNotFoundError(name) from None
            self._cache.pop(name, None)
        logger.info("deleted voice %r", name)

    # ------------------------------------------------------------------ internals
    def _path(self, name: str) -> Path:
        path = self.directory / f"{name}{SUFFIX}"
        # defence in depth: the name pattern already excludes separators and "..", so the path stays in the folder
        assert path.parent == self.directory, name
        return path

    def _load(self, name: str, path: Path) -> Voice | None:
        try:
            with SafetensorsFile(path) as f:
                meta = json.loads((f.metadata or {}).get(META_KEY, "null"))
                codes = f.read("codes")
            if not isinstance(meta, dict) or meta.get("name") != name:
                raise ValueError("its metadata does not describe this voice")
            if codes.dim() != 2 or codes.dtype != torch.int64 or codes.shape[0] < self.n_vq:
                shape = tuple(codes.shape)
                raise ValueError(f"codes of shape {shape} and dtype {codes.dtype}, not int64 [>= {self.n_vq}, L]")
            text = meta.get("text")
            return Voice(name, codes[: self.n_vq].contiguous(), text if isinstance(text, str) else None,
                         float(meta.get("seconds") or 0.0), int(meta.get("created_at") or 0),
                         meta.get("source"))  # fmt: skip
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, CheckpointError) as err:
            logger.warning("voice %r in %s is damaged (%s): not used", name, self.directory, err)
            return None


def check_writable(directory: Path, option: str) -> None:
    """Creates `directory` if needed and checks that a voice can be written there.

    Raises:
        InputError: naming `option`, the directory and why (a file in the way, no permission, read-only...).
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_write(directory / ".write-test", durable=False) as tmp:
            tmp.write_bytes(b"")
        (directory / ".write-test").unlink()
    except OSError as err:
        raise InputError(f"{option}: cannot write voices to {directory} ({err.strerror or err})") from None


def install_default_voice(voices: VoiceStore, clip: Path, text: str, encode, max_seconds: float) -> None:
    """Stores the packaged clip as voice "default" unless the stored one was made from the same clip and transcript
    (so a start-up never rewrites a default that another server sharing the directory is using).

    Args:
        voices: the store.
        clip: the default clip (wav).
        text: its transcript.
        encode: `(samples, rate) -> codes [N, L]` (the backend's `encode_reference`).
        max_seconds: the longest clip accepted.
    """
    data = clip.read_bytes()
    source = hashlib.sha256(data + b"\0" + text.encode("utf-8")).hexdigest()
    try:
        if voices.get(DEFAULT_VOICE).source == source:
            return
    except VoiceNotFoundError:
        pass
    samples, rate = decode_clip(data, max_seconds)
    voices.add(DEFAULT_VOICE, encode((samples, rate)), text or None, samples.shape[-1] / rate, replace=True,
               source=source)  # fmt: skip


def decode_clip(data: bytes, max_seconds: float) -> tuple[np.ndarray, int]:
    """Decodes an uploaded clip (any format libsndfile reads) from memory.

    Returns:
        `(samples float32 [S] or [channels, S], sample_rate)`; the pipeline mixes down and resamples.

    Raises:
        InputError: not audio, empty, or longer than `max_seconds`.
    """
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
    except sf.LibsndfileError as err:  # its str() names the in-memory file object: say only what libsndfile said
        raise InputError(f"could not read the audio file ({err.error_string}); send wav, flac, ogg or mp3") from None
    except (RuntimeError, TypeError) as err:
        raise InputError(f"could not read the audio file ({type(err).__name__}); send wav, flac, ogg or mp3") from None
    if samples.shape[0] >= limit:
        raise InputError(f"the clip is longer than the {max_seconds:g} s limit (trim it)")
    if samples.shape[0] == 0:
        raise InputError("the audio file has no samples")
    if samples.ndim == 2:  # [S, channels] -> the pipeline's [channels, S]
        samples = np.ascontiguousarray(samples.T)
    return samples, int(rate)
