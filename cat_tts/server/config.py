"""Settings of the speech server that are not generation settings: limits, auth, storage, lifecycle.

Field names are the command-line options' names (`max_upload_mb` is `--max-upload-mb`, in the option's unit), so an
error names the option the user typed (`FieldError.labelled(OPTION_LABELS)`); the Ray Serve deployment takes the
same names as `key=value`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from cat_tts.errors import FieldError

API_KEY_ENV = "CAT_TTS_API_KEY"  # environment variable read when --api-key is not given
KIB = 1024
MIB = 1024 * 1024
# OpenAI model names accepted as aliases of the served model, so existing clients work unchanged
OPENAI_MODEL_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")


def default_voices_dir() -> Path:
    """`$XDG_DATA_HOME/cat-tts/voices` (default `~/.local/share/cat-tts/voices`)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cat-tts" / "voices"


@dataclass(frozen=True)
class ServerConfig:
    """What the HTTP layer enforces. Validation raises `FieldError` naming the field, the value and the range."""

    model_id: str = "cat-tts"  # the id /v1/models reports and requests may name (plus "cat-tts" and OpenAI aliases)
    api_key: str | None = None  # when set, /v1/* (and /metrics unless public_metrics) need `Authorization: Bearer`
    public_metrics: bool = False  # /metrics answers without the key (for scrapers inside a trusted network)
    voices_dir: Path = field(default_factory=default_voices_dir)  # stored voices, one folder per codec; created
    install_default_voice: bool = True  # encode the packaged default clip as voice "default" when it is missing
    max_input_chars: int = 4096  # longest `input` (and `instructions`, `reference_text`), in characters
    max_body_bytes: int = 1 * MIB  # largest JSON request body
    max_header_bytes: int = 16 * KIB  # request line + headers at most (uvicorn's h11 limit; beyond: 400 and close)
    max_upload_mb: float = 16.0  # largest voice upload (the whole multipart body), MiB
    max_voice_seconds: float = 30.0  # longest accepted voice clip, seconds (at most the pipeline's reference limit)
    max_voices: int = 1000  # stored voices at most (uploads beyond answer 400)
    max_new_frames: int | None = None  # the most frames (80 ms) a request may ask for; None = what a slot holds
    min_new_frames: int = 0  # min_new_frames of requests that give none (random tiny checkpoints: e.g. 10)
    request_timeout: float = 300.0  # one request's whole generation time at most, seconds
    shutdown_grace: float = 30.0  # SIGTERM: how long in-flight requests may finish before they are cut, seconds
    retry_after_s: int = 1  # Retry-After of a 429 (queue full) and 503 (shutting down), seconds

    def __post_init__(self) -> None:
        object.__setattr__(self, "voices_dir", Path(self.voices_dir).expanduser())
        if self.api_key is not None and not self.api_key.strip():
            raise FieldError("api_key", "api_key must not be empty (omit it to run without a key)")
        if not isinstance(self.model_id, str) or not 0 < len(self.model_id) <= 256:
            raise FieldError("model_id", f"model_id must be a string of 1..256 characters, got {self.model_id!r}")
        _check_range("max_input_chars", self.max_input_chars, 1, 1_000_000)
        _check_range("max_body_bytes", self.max_body_bytes, KIB, 1024 * MIB)
        _check_range("max_header_bytes", self.max_header_bytes, KIB, 16 * MIB)
        _check_range("max_upload_mb", self.max_upload_mb, 0.01, 1024)
        _check_range("max_voice_seconds", self.max_voice_seconds, 0.5, 600.0)
        _check_range("max_voices", self.max_voices, 1, 1_000_000)
        if self.max_new_frames is not None:
            _check_range("max_new_frames", self.max_new_frames, 1, 1_000_000)
        _check_range("min_new_frames", self.min_new_frames, 0, self.max_new_frames or 1_000_000)
        _check_range("request_timeout", self.request_timeout, 0.1, 86400.0)
        _check_range("shutdown_grace", self.shutdown_grace, 0.0, 3600.0)
        _check_range("retry_after_s", self.retry_after_s, 1, 3600)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MIB)

    @property
    def model_names(self) -> tuple[str, ...]:
        """Every `model` value a request may give."""
        return tuple(dict.fromkeys((self.model_id, "cat-tts", *OPENAI_MODEL_ALIASES)))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise FieldError(name, f"{name} must be in {low:g}..{high:g}, got {value!r}")
