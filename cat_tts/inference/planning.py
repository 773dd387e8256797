"""Text planning: a `SpeechRequest` becomes segments, each one engine request (its text, prompt grid, seed and
frame estimate).

Shapes: N layers of the grid, L reference frames, T prompt rows.

Long text is split into sentence segments (about `max_segment_chars` characters each); every segment is generated
with the same voice prompt and settings, its own seed derived by hashing (request seed, item, segment) so that no two
segments of a batch draw the same noise, and its share of the requested duration. The frame budget rule is the
engine's (`Engine.frame_budget`); this module only estimates a segment's length from its text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from cat_tts.errors import FieldError, InputError
from cat_tts.generation import GenerationConfig, Request
from cat_tts.generation.config import MAX_SEED
from cat_tts.generation.sampling import mix32
from cat_tts.inference.request import Limits, SpeechRequest
from cat_tts.text.normalize import split_sentences

if TYPE_CHECKING:  # pragma: no cover
    from cat_tts.text.prompt import Prompt, PromptBuilder

_SALT_ITEM = 0x2545F491
_SALT_SEGMENT = 0x9E3779B9


@dataclass(frozen=True)
class SynthesisConfig:
    """Pipeline settings that are not part of a request."""

    max_segment_chars: int = 300  # text segment budget (CJK characters count three), 10..10000
    crossfade_ms: float = 50.0  # cross-fade between text segments, 0..1000 ms
    max_reference_seconds: float = 30.0  # longer reference clips are rejected, > 0
    min_reference_seconds: float = 0.5  # shorter reference clips are rejected, >= 0.08 (one frame)
    normalize_reference: bool = True  # loudness-normalise the reference to -20 dBFS (+-3 dB), as upstream
    lookahead_segments: int = 2  # segments of one stream generated ahead of the one being played, >= 1
    decode_window_ms: float | None = 2.0  # streamed pieces arriving within it share one codec call; None = per request
    max_segment_frames: int | None = None  # most frames a segment runs when its request sets no max_new_frames (a
    # server's cap); None = what the text needs, within the engine's slot

    def __post_init__(self) -> None:
        if not 10 <= self.max_segment_chars <= 10000:
            raise InputError(f"max_segment_chars must be in 10..10000, got {self.max_segment_chars}")
        if not 0 <= self.crossfade_ms <= 1000:
            raise InputError(f"crossfade_ms must be in 0..1000, got {self.crossfade_ms}")
        if not self.max_reference_seconds > 0:
            raise InputError(f"max_reference_seconds must be > 0, got {self.max_reference_seconds}")
        if not 0.08 <= self.min_reference_seconds <= self.max_reference_seconds:
            raise InputError(
                f"min_reference_seconds must be in 0.08..max_reference_seconds, got {self.min_reference_seconds}"
            )
        if self.decode_window_ms is not None and not 0 <= self.decode_window_ms <= 1000:
            raise InputError(f"decode_window_ms must be in 0..1000 (or None), got {self.decode_window_ms}")
        if self.lookahead_segments < 1:
            raise InputError(f"lookahead_segments must be >= 1, got {self.lookahead_segments}")
        if self.max_segment_frames is not None and self.max_segment_frames < 1:
            raise InputError(f"max_segment_frames must be >= 1, got {self.max_segment_frames}")


@dataclass
class Segment:
    """One piece of a request's text, generated as one engine request."""

    text: str
    prompt: Prompt  # grid [T, 1+N] in the model's layout, and the prefix frames it ends with (or None)
    config: GenerationConfig  # the request's settings with this segment's seed
    estimate: int  # frames this segment probably needs at most (the budget when the request sets none)
    request: Request | None = None  # the engine request, once submitted


def derive_seed(seed: int | None, item: int = 0, segment: int = 0) -> int | None:
    """The seed of segment `segment` of batch item `item` of a request seeded with `seed`.

    Item 0, segment 0 keeps `seed` itself (a one-segment request gives what the engine gives for that seed); every
    other (item, segment) gets a hash, so that item 0 segment 1 and item 1 segment 0 draw different noise.
    """
    if seed is None or (item == 0 and segment == 0):
        return seed
    low = mix32(mix32((seed & 0xFFFFFFFF) ^ _SALT_ITEM ^ mix32(item)) ^ mix32(segment ^ _SALT_SEGMENT))
    high = mix32(mix32((seed >> 32) & 0xFFFFFFFF) ^ low ^ mix32(item + 1) ^ mix32(segment + 1))
    return ((high << 32) | low) & MAX_SEED


def item_request(
    i: int, item: Any, limits: Limits, base: GenerationConfig | None, common: dict[str, Any]
) -> SpeechRequest:
    """Item `i` of a batch as a request: a `SpeechRequest` (checked against `limits`), or a dict of request fields
    over the batch's `common` fields; without its own seed, a common seed is derived for the item.

    Raises:
        FieldError: naming the field, the message starting "item i: ".
    """
    try:
        if isinstance(item, SpeechRequest):
            return item.with_limits(limits)
        if not isinstance(item, dict):
            raise FieldError("text", f"an item must be a dict of request fields or a SpeechRequest, got "
                                     f"{type(item).__name__}")  # fmt: skip
        values = {**common, **item}
        if "seed" not in item and common.get("seed") is not None:
            values["seed"] = derive_seed(common["seed"], item=i)
        return SpeechRequest.from_fields(values, limits, base)
    except FieldError as err:
        raise FieldError(err.field, f"item {i}: {err}") from err


def text_frames(text: str, frame_rate: float) -> int:
    """Frames a text probably needs at most: about 3x a normal speaking time, plus 3 s.

    Latin-script characters count 0.2 s, CJK characters 0.6 s (normal speech is ~0.07 s and ~0.22 s).
    """
    cjk = sum(1 for ch in text if "\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff")
    seconds = 3.0 + 0.2 * (len(text) - cjk) + 0.6 * cjk
    return int(math.ceil(frame_rate * seconds))


def plan_segments(
    request: SpeechRequest, codes: torch.Tensor, prompts: PromptBuilder, frame_rate: float, config: SynthesisConfig
) -> list[Segment]:
    """The segments of one request: its text split into sentences, each with its prompt grid and seed.

    Args:
        request: the validated request.
        codes: `[N, L]` the voice's reference codes (all layers).
        prompts: the model's prompt builder (its layout).
        frame_rate: codec frames per second.
        config: the pipeline's settings (segment length, frame cap).
    """
    texts = split_sentences(request.text, config.max_segment_chars)
    total_chars = sum(len(t) for t in texts)
    fields: dict[str, Any] = {}
    if request.instructions:
        fields["instruction"] = request.instructions
    if request.language:
        fields["language"] = request.language
    if prompts.layout == "plain":  # text then audio: no user-message fields to carry them
        given = [name for name, value in (("instructions", request.instructions), ("language", request.language),
                                          ("duration", request.duration)) if value is not None]  # fmt: skip
        if given:
            raise FieldError(given[0], f"this model uses the plain prompt layout (text, then audio), which has no "
                                       f"field for {given[0]}: leave it out")  # fmt: skip
    segments = []
    for i, text in enumerate(texts):
        estimate = text_frames(text, frame_rate)
        if request.duration is not None:  # this segment's share of the target length, as frames (`- Tokens:`)
            frames = max(1, round(request.duration * frame_rate * len(text) / total_chars))
            fields["tokens"] = frames
            estimate = max(estimate, frames + int(math.ceil(3 * frame_rate)))
        if config.max_segment_frames is not None:
            estimate = min(estimate, config.max_segment_frames)
        prompt = prompts.generation_prompt(text, codes, request.reference_text, request.mode, **fields)
        seed = derive_seed(request.generation.seed, segment=i)
        settings = request.generation if seed == request.generation.seed else replace(request.generation, seed=seed)
        segments.append(Segment(text, prompt, settings, estimate))
    return segments
