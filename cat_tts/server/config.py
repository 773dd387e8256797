"""Settings of the speech server that are not generation settings: limits, auth, storage, lifecycle."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

API_KEY_ENV = "CAT_TTS_API_KEY"  # environment variable read when --api-key is not given
MIB = 1024 * 1024
# OpenAI model names accepted as aliases of the served model, so existing clients work unchanged
OPENAI_MODEL_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")


def default_voices_dir() -> Path:
    """`$XDG_DATA_HOME/cat-tts/voices` (default `~/.local/share/cat-tts/voices`)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cat-tts" / "voices"


@dataclass(frozen=True)
class ServerConfig:
    """What the HTTP layer enforces. Validation raises `ValueError` naming the field, the value and the range."""

    model_id: str = "cat-tts"  # the id /v1/models reports and requests may name (plus "cat-tts" and OpenAI aliases)
    api_key: str | None = None  # when set, /v1/* and /metrics need `Authorization: Bearer <key>`; None = open
    voices_dir: Path = field(default_factory=default_voices_dir)  # stored voices (codes + metadata); created
    install_default_voice: bool = True  # encode docs/assets/reference.wav as voice "default" when it is missing
    max_input_chars: int = 4096  # longest `input` (and `instructions`, `reference_text`), in characters
    max_body_bytes: int = 1 * MIB  # largest JSON request body
    max_upload_bytes: int = 16 * MIB  # largest voice upload (the whole multipart body)
    max_voice_seconds: float = 30.0  # longest accepted voice clip, seconds
    max_voices: int = 1000  # stored voices at most (uploads beyond answer 400)
    max_new_frames: int | None = None  # cap on a request's max_new_frames (12.5 frames/s); None = no cap
    min_new_frames: int = 0  # min_new_frames of requests that give none (random tiny checkpoints: e.g. 10)
    request_timeout_s: float = 300.0  # one request's whole generation time at most, seconds
    shutdown_grace_s: float = 30.0  # SIGTERM: how long in-flight requests may finish before they are cancelled
    retry_after_s: int = 1  # Retry-After of a 429 (queue full) and 503 (shutting down), seconds

    def __post_init__(self) -> None:
        object.__setattr__(self, "voices_dir", Path(self.voices_dir).expanduser())
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key must not be empty (omit it to run without a key)")
        if not isinstance(self.model_id, str) or not 0 < len(self.model_id) <= 256:
            raise ValueError(f"model_id must be a string of 1..256 characters, got {self.model_id!r}")
        _check_range("max_input_chars", self.max_input_chars, 1, 1_000_000)
        _check_range("max_body_bytes", self.max_body_bytes, 1024, 1024 * MIB)
        _check_range("max_upload_bytes", self.max_upload_bytes, 1024, 1024 * MIB)
        _check_range("max_voice_seconds", self.max_voice_seconds, 0.5, 600.0)
        _check_range("max_voices", self.max_voices, 1, 1_000_000)
        if self.max_new_frames is not None:
            _check_range("max_new_frames", self.max_new_frames, 1, 1_000_000)
        _check_range("min_new_frames", self.min_new_frames, 0, self.max_new_frames or 1_000_000)
        _check_range("request_timeout_s", self.request_timeout_s, 0.1, 86400.0)
        _check_range("shutdown_grace_s", self.shutdown_grace_s, 0.0, 3600.0)
        _check_range("retry_after_s", self.retry_after_s, 1, 3600)

    @property
    def model_names(self) -> tuple[str, ...]:
        """Every `model` value a request may give."""
        return tuple(dict.fromkeys((self.model_id, "cat-tts", *OPENAI_MODEL_ALIASES)))


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name} must be in {low:g}..{high:g}, got {value!r}")
