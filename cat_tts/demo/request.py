"""What the demo page sends, parsed into a `cat_tts.inference.SpeechRequest`, and the page's labels for its fields.

The page's widgets deliver raw values (sliders send floats, empty boxes send "" or None); `page_request` turns them
into request fields and builds the request, which is the only validation. A bad value raises `FieldError`; the
handlers show it under the widget's label (`DEMO_LABELS`, via `FieldError.labelled`).

`DemoLimits` holds what the demo itself decides: text length, reference length, concurrency, queue, time limit and the
starting values of the frame settings.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from cat_tts.assets import default_voice
from cat_tts.codec.config import KBPS_PER_LAYER, bitrate_kbps
from cat_tts.errors import FieldError
from cat_tts.generation import GenerationConfig
from cat_tts.inference import Limits, SpeechRequest

_DEFAULTS = GenerationConfig()  # the released model's sampling settings: the page's starting values

# Request field -> the label of the widget that sets it (errors are shown under it). The depth is the Bitrate slider
# (its "Automatic bitrate" box asks for depth "auto"); the rarely used fields sit in the "Advanced settings" accordion.
DEMO_LABELS = {
    "text": "Text to speak",
    "reference_audio": "Reference audio",
    "reference_text": "Reference transcript",
    "mode": "Prompt mode",
    "instructions": "Instructions",
    "language": "Language",
    "duration": "Duration",
    "depth": "Bitrate",
    "bitrate_kbps": "Bitrate in kbps",
    "min_depth": "Lowest automatic depth",
    "max_depth": "Highest automatic depth",
    "max_new_frames": "Frame budget",
    "min_new_frames": "Frames before the end",
    "do_sample": "Sample",
    "temperature": "Temperature",
    "top_p": "Top-p",
    "top_k": "Top-k",
    "repetition_penalty": "Repetition penalty",
    "control_temperature": "End-of-speech temperature",
    "control_top_p": "End-of-speech top-p",
    "control_top_k": "End-of-speech top-k",
    "control_tokens": "End-of-speech tokens",
    "seed": "Seed",
}
AUTO_DEPTH = "auto_depth"  # the "Automatic bitrate" box: not a request field, it turns the depth into "auto"
# The page's inputs in the order the handlers receive them: the request's fields, then the box.
PAGE_INPUTS = (*DEMO_LABELS, AUTO_DEPTH)
_EMPTY_IS_AUTO = {"mode": "auto", "duration": 0}  # widget values that mean "not given" (the request's default)


def kbps(depth: int) -> float:
    """The bitrate of depth K, as the page shows it."""
    return bitrate_kbps(depth)


def format_kbps(depth: int) -> str:
    """`8` -> `"1 kbps"`, `3` -> `"0.375 kbps"`: exact, no trailing zeros."""
    return f"{kbps(depth):g} kbps"


def bitrate_info(depth: int, n_vq: int) -> str:
    """The bitrate slider's info line for `depth` of a model with `n_vq` layers,
    e.g. `"16 of 32 layers = 2 kbps (0.125 kbps per layer)"`."""
    return f"{depth} of {n_vq} layers = {format_kbps(depth)} ({KBPS_PER_LAYER:g} kbps per layer)"


@dataclasses.dataclass
class DemoLimits:
    """What the demo allows and how it starts. Validation raises `FieldError` naming the field."""

    max_text_chars: int = 500  # longest text to speak (and longest reference transcript), in characters
    max_reference_seconds: float = 30.0  # longest accepted reference clip, in seconds
    concurrency_limit: int | None = None  # requests handled at once (Gradio workers); None = one per engine slot
    max_queue_size: int = 16  # requests waiting in Gradio's queue before new ones are turned away
    time_limit_seconds: int = 600  # a request running longer than this is stopped, in seconds
    max_new_frames: int | None = None  # the Frame budget box's starting value (None: empty, from the text length)
    min_new_frames: int = 0  # the "Frames before the end" box's starting value (random tiny checkpoints: give 10)

    def __post_init__(self) -> None:
        for name, low, high in (
            ("max_text_chars", 1, 100_000),
            ("max_queue_size", 1, 10_000),
            ("time_limit_seconds", 1, 86_400),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise FieldError(name, f"{name} must be an integer in {low}..{high}, got {value!r}")
        if self.concurrency_limit is not None and not 1 <= self.concurrency_limit <= 1024:
            raise FieldError("concurrency_limit", f"concurrency_limit must be in 1..1024, got {self.concurrency_limit}")
        if not 0.0 < self.max_reference_seconds <= 600.0:
            raise FieldError(
                "max_reference_seconds",
                f"max_reference_seconds must be in (0, 600], got {self.max_reference_seconds:g}",
            )
        self.generation()  # the frame settings are generation settings: GenerationConfig checks them

    def generation(self) -> GenerationConfig:
        """The page's starting generation settings (the released model's, with these frame settings)."""
        return _DEFAULTS.with_overrides(min_new_frames=self.min_new_frames, max_new_frames=self.max_new_frames)

    def concurrency(self, service: Any) -> int:
        """Requests handled at once: the configured limit, else one per engine slot of `service` (1 without one).

        More than the slots is allowed: the extra requests wait in the engine's queue for a free slot.
        """
        if self.concurrency_limit is not None:
            return self.concurrency_limit
        engine = getattr(service, "engine", None)
        return int(getattr(getattr(engine, "config", None), "max_slots", 1))

    def request_limits(self, service: Limits) -> Limits:
        """The service's limits with the page's text limit."""
        return dataclasses.replace(service, max_text_chars=self.max_text_chars)


def page_fields(values: dict[str, Any]) -> dict[str, Any]:
    """Request fields from the page's raw widget values (field name -> value; `AUTO_DEPTH` for the box).

    Empty boxes, "auto" choices and a zero duration mean "not given"; whole-number floats from sliders become ints
    (any other value is left for the request to judge); without a reference clip the bundled voice speaks, with its
    transcript unless the mode is "clone".

    Raises:
        FieldError: a transcript without a clip, or a name that is not a page input.
    """
    unknown = sorted(set(values) - set(PAGE_INPUTS))
    if unknown:
        raise FieldError(unknown[0], f"{unknown[0]} is not an input of the demo page")
    fields: dict[str, Any] = {}
    for name, value in values.items():
        if name == AUTO_DEPTH:
            continue
        if isinstance(value, str) and name not in ("text", "reference_text", "instructions"):
            value = value.strip()
        if value is None or value == "" or _EMPTY_IS_AUTO.get(name, object()) == value:
            continue
        if isinstance(value, float) and math.isfinite(value) and value == int(value):
            value = int(value)  # sliders send 8.0 for 8: an integer field takes it, a float field takes an int
        fields[name] = value
    if values.get(AUTO_DEPTH):
        fields["depth"] = "auto"
        fields.pop("bitrate_kbps", None)
    else:
        fields.pop("min_depth", None)  # the automatic-depth range applies to the automatic bitrate only
        fields.pop("max_depth", None)
        if "bitrate_kbps" in fields:
            fields.pop("depth", None)  # the kbps box, when filled, replaces the slider
    if isinstance(fields.get("reference_text"), str) and not fields["reference_text"].strip():
        fields.pop("reference_text")
    if "reference_audio" not in fields:
        if "reference_text" in fields:
            raise FieldError("reference_text", "reference_text is the transcript of your clip: upload the clip too")
        voice = default_voice()
        fields["reference_audio"] = str(voice.audio)
        if fields.get("mode") != "clone":
            fields["reference_text"] = voice.text
    return fields


def page_request(values: dict[str, Any], limits: Limits | None = None) -> SpeechRequest:
    """The `SpeechRequest` of the page's widget values (see `page_fields`), checked against `limits`.

    Raises:
        FieldError: naming the first bad field (show it with `err.labelled(DEMO_LABELS)`).
    """
    return SpeechRequest.from_fields(page_fields(values), limits)
