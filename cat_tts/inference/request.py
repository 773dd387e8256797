"""`SpeechRequest`: the one definition of what a user can ask for, validated once, when it is constructed.

Every front end (`CatTTS`, infer.py, the server's HTTP and WebSocket routes, the demo, the evaluator) only parses its
own input into a `SpeechRequest` and keeps a table of its own labels for the request's fields (`--top-k`, `top_k`,
"Top-k"); a bad value raises `FieldError` naming the field, which the front end shows under its label. Adding a field
is one edit here plus one label per front end (`tests/inference/test_request_fields.py` checks every front end).

Shapes: N layers of the model, L reference frames.
"""

from __future__ import annotations

import unicodedata
from dataclasses import InitVar, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from cat_tts.errors import FieldError
from cat_tts.generation.config import EngineConfig, GenerationConfig, _finite
from cat_tts.text.normalize import clean_text

Mode = Literal["clone", "continuation"]
ReferenceAudio = str | Path | tuple[np.ndarray, int] | torch.Tensor  # a file, (samples, rate), or codes [N, L]

MAX_LANGUAGE_CHARS = 64


@dataclass(frozen=True)
class Limits:
    """What the served model and engine allow; a request constructed with limits is checked against them.

    Built by `CatTTS.limits` (or from the checkpoints' config files before loading, by the CLIs).
    """

    n_vq: int  # N: layers of the model (depth range 1..N)
    frame_rate: float  # codec frames per second (a duration in seconds -> frames)
    codebook_size: int = 1024  # codes per layer (stored voices' codes lie in 0..codebook_size-1)
    max_frames: int | None = None  # the most frames one request may generate (slot capacity or a server's cap)
    max_text_chars: int | None = None  # longest text, transcript or instruction accepted (a server's limit)

    def frames(self, seconds: float) -> int:
        """Frames of `seconds` of audio (at least 1; huge values saturate instead of overflowing)."""
        frames = seconds * self.frame_rate
        return max(1, round(frames)) if frames < 2**62 else 2**62

    @classmethod
    def of_engine(cls, engine: EngineConfig, n_vq: int, frame_rate: float, codebook_size: int = 1024) -> Limits:
        """The limits of a model served by an engine sized by `engine` (known before anything is loaded): a request
        generates at most a slot's rows less the read-back window and one prompt row."""
        return cls(n_vq, frame_rate, codebook_size, max_frames=engine.max_rows - engine.sync_every - 1)


@dataclass(frozen=True)
class SpeechRequest:
    """Text to speak in a voice, and how. Construction validates every field (`FieldError` names the first bad one).

    Without `limits` the model-dependent checks (depth <= N, duration within the frame limit, codes of N layers)
    are left to the service, which rebuilds the request with its limits (`with_limits`).
    """

    text: str  # what to say (cleaned of control characters and extra whitespace; any length: split into segments)
    reference_audio: ReferenceAudio | None = None  # the voice: a clip (file path or (samples, rate)) or stored codes
    reference_text: str | None = None  # the voice clip's transcript (enables continuation mode)
    mode: Mode | None = None  # "clone" or "continuation"; None = continuation when a transcript is given
    instructions: str | None = None  # a style instruction (the chat prompt's instruction field)
    language: str | None = None  # the language of the text, e.g. "English", "Chinese" (the prompt's language field)
    duration: float | None = None  # target length of the speech in seconds (the prompt's token field, in frames)
    generation: GenerationConfig = field(default_factory=GenerationConfig)  # depth/bitrate, sampling, frames, seed
    limits: InitVar[Limits | None] = None

    def __post_init__(self, limits: Limits | None) -> None:
        if not isinstance(self.text, str):
            raise FieldError("text", f"text must be a string, got {type(self.text).__name__}")
        text = clean_text(self.text)
        if not text:
            raise FieldError("text", "text is empty (after removing whitespace and control characters)")
        object.__setattr__(self, "text", text)
        if self.reference_text is not None:
            if not isinstance(self.reference_text, str):
                raise FieldError("reference_text", f"reference_text must be a string, got {_kind(self.reference_text)}")
            object.__setattr__(self, "reference_text", clean_text(self.reference_text).replace("\n\n", " ") or None)
        if self.instructions is not None and not isinstance(self.instructions, str):
            raise FieldError("instructions", f"instructions must be a string, got {_kind(self.instructions)}")
        if self.mode not in (None, "clone", "continuation"):
            raise FieldError("mode", f"mode must be 'clone' or 'continuation', got {self.mode!r}")
        if self.mode == "continuation" and self.reference_text is None:
            raise FieldError("reference_text", "continuation mode needs the reference transcript (reference_text)")
        _check_reference(self.reference_audio)
        if self.language is not None:
            object.__setattr__(self, "language", _check_language(self.language))
        if self.duration is not None:
            value = self.duration
            if not _finite(value) or value <= 0:
                raise FieldError("duration", f"duration must be a number of seconds > 0, got {str(value)[:40]}")
        if not isinstance(self.generation, GenerationConfig):
            raise TypeError(f"generation must be a GenerationConfig, got {type(self.generation).__name__}")
        if limits is not None:
            self._check_limits(limits)

    def _check_limits(self, limits: Limits) -> None:
        self.generation.depth_range(limits.n_vq)
        if limits.max_text_chars is not None:
            for name in ("text", "reference_text", "instructions"):
                value = getattr(self, name)
                if value is not None and len(value) > limits.max_text_chars:
                    raise FieldError(
                        name, f"{name} is {len(value)} characters long; the limit is {limits.max_text_chars}"
                    )
        budget = self.generation.max_new_frames
        if limits.max_frames is not None and budget is not None and budget > limits.max_frames:
            raise FieldError("max_new_frames", f"max_new_frames must be <= {limits.max_frames} here, got {budget}")
        if self.duration is not None:
            frames = limits.frames(self.duration)
            caps = [x for x in (budget, limits.max_frames) if x is not None]
            cap = min(caps) if caps else None
            if cap is not None and frames > cap:
                raise FieldError(
                    "duration",
                    f"duration {self.duration:g} s is {frames} frames; the frame limit of this request is {cap} "
                    f"({cap / limits.frame_rate:g} s): ask for less, or raise max_new_frames",
                )
        codes = self.reference_audio
        if isinstance(codes, torch.Tensor):
            if codes.shape[0] != limits.n_vq:
                raise FieldError(
                    "reference_audio",
                    f"reference codes must have {limits.n_vq} layers ([{limits.n_vq}, L]), got {tuple(codes.shape)}",
                )
            if int(codes.min()) < 0 or int(codes.max()) >= limits.codebook_size:
                raise FieldError("reference_audio", f"reference codes must be in 0..{limits.codebook_size - 1}")

    # ------------------------------------------------------------------ building
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Every field a front end can set: the request's own, then the generation settings (flat)."""
        own = tuple(f.name for f in fields(cls) if f.name != "generation")
        return own + GenerationConfig.field_names()

    @classmethod
    def from_fields(
        cls, values: dict[str, Any], limits: Limits | None = None, base: GenerationConfig | None = None
    ) -> SpeechRequest:
        """A request from flat field values (`text`, `reference_audio`, ..., `depth`, `top_k`, ...).

        None means "not given" (the default). Unknown names raise `FieldError` naming the first one.

        Args:
            values: field name -> value.
            limits: the model's and engine's limits to check against.
            base: the generation settings the given ones override (default: the released settings).
        """
        own = {f.name for f in fields(cls) if f.name != "generation"}
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise FieldError(unknown[0], f"unknown field {unknown[0]!r}; known: {', '.join(cls.field_names())}")
        settings = {k: v for k, v in values.items() if k not in own}
        generation = (base or GenerationConfig()).with_overrides(**settings)
        given = {k: v for k, v in values.items() if k in own and v is not None}
        if "text" not in given:
            raise FieldError("text", "text is required")
        return cls(**given, generation=generation, limits=limits)

    @classmethod
    def labels(cls, **renamed: str) -> dict[str, str]:
        """A front end's label table: every field under its own name, except those `renamed` (field -> label)."""
        unknown = sorted(set(renamed) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"not fields of the request: {unknown}")
        return {name: renamed.get(name, name) for name in cls.field_names()}

    def with_limits(self, limits: Limits) -> SpeechRequest:
        """This request checked against `limits` (raises `FieldError`); returns it unchanged."""
        self._check_limits(limits)
        return self

    def replace(self, **changes: Any) -> SpeechRequest:
        """A copy with some fields replaced (validated again); generation settings by their flat names."""
        own = {f.name for f in fields(self) if f.name != "generation"}
        values = {name: getattr(self, name) for name in own}
        values.update({k: v for k, v in changes.items() if k in own})
        settings = {k: v for k, v in changes.items() if k not in own and k != "generation"}
        generation = changes.get("generation", self.generation).with_overrides(**settings)
        return type(self)(**values, generation=generation)


def _kind(value: Any) -> str:
    return type(value).__name__


def _check_reference(reference: Any) -> None:
    if reference is None or isinstance(reference, (str, Path)):
        if isinstance(reference, str) and not reference.strip():
            raise FieldError("reference_audio", "reference_audio is an empty path")
        return
    if isinstance(reference, tuple) and len(reference) == 2:
        return  # (samples, rate): checked when the clip is read (`cat_tts.audio.audio_from_array`)
    if isinstance(reference, torch.Tensor):
        if reference.dim() != 2 or reference.shape[1] < 1 or reference.dtype.is_floating_point:
            raise FieldError(
                "reference_audio",
                f"reference codes must be an integer tensor [N, L] (from encode_reference), got {reference.dtype} "
                f"{tuple(reference.shape)}",
            )
        return
    raise FieldError(
        "reference_audio",
        f"reference_audio must be a file path, a (samples, sample_rate) tuple or codes from encode_reference, got "
        f"{_kind(reference)}",
    )


def _check_language(language: Any) -> str:
    if not isinstance(language, str):
        raise FieldError("language", f"language must be a string, got {_kind(language)}")
    name = " ".join(language.split())
    if not 1 <= len(name) <= MAX_LANGUAGE_CHARS or any(unicodedata.category(ch)[0] == "C" for ch in name):
        raise FieldError(
            "language",
            f"language must be a name of 1-{MAX_LANGUAGE_CHARS} printable characters (e.g. English), got {language!r}",
        )
    return name
