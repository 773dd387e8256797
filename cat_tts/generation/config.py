"""The generation settings (`GenerationConfig`, per request) and the engine's settings (`EngineConfig`, per engine).

The generation settings are defined once: every entry point (model.generate, CatTTS, infer.py, the demo, the
evaluator, the server) builds a `GenerationConfig` and nothing else.

Sampling defaults are the released model's (model card: audio 1.0 / 0.95 / 50 / 1.1, channel 0 1.5 / 1.0 / 50).
Sampling follows the Hugging Face processor order the released code uses: repetition penalty -> temperature ->
top-k -> top-p -> draw; the draw is an exponential-noise argmax (Gumbel-max) keyed by (seed, frame, channel), so a
seeded request gives the same frames alone or beside others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from cat_tts.errors import InputError

ControlTokens = Literal["audio", "full"]
CompileMode = Literal["auto"] | bool

MAX_TEMPERATURE = 100.0  # above this the distribution is uniform for any practical purpose
MAX_REPETITION_PENALTY = 100.0
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class GenerationConfig:
    """What one generation request asks for. Validation raises `InputError` (a `ValueError`) naming the field,
    the value and the allowed range.

    `depth` is checked against the model's number of layers N by `check_model` (the only source of N is the model's
    config); None means all N layers.
    """

    depth: int | None = None  # K: RVQ layers generated per frame, 1..N (bitrate 0.125 kbps x K); None = N
    max_new_frames: int | None = None  # frame budget (80 ms each); None = derived from the text / prompt length
    min_new_frames: int = 0  # audio_end is forbidden before this many frames
    do_sample: bool = True  # False = greedy (argmax) for every channel
    temperature: float = 1.0  # audio layers: softmax temperature; 0 = greedy for the audio layers
    top_p: float = 0.95  # audio layers: nucleus mass kept, in (0, 1]; 1 disables
    top_k: int = 50  # audio layers: keep the k most likely codes; 0 disables
    repetition_penalty: float = 1.1  # audio layers: > 0; codes already in the layer's history are penalised; 1 = off
    control_temperature: float = 1.5  # channel 0 (continue vs audio_end): temperature; 0 = greedy
    control_top_p: float = 1.0  # channel 0: nucleus mass kept, in (0, 1]
    control_top_k: int = 50  # channel 0: top-k; 0 disables
    control_tokens: ControlTokens = "audio"  # "audio": channel 0 chooses between continuing and audio_end only;
    # "full": channel 0 is sampled over the whole text vocabulary (exactly like the released code)
    seed: int | None = None  # seeds this request's random stream; None = a fresh random seed

    def __post_init__(self) -> None:
        _check_int("depth", self.depth, 1, None, optional=True)
        _check_int("max_new_frames", self.max_new_frames, 1, None, optional=True)
        _check_int("min_new_frames", self.min_new_frames, 0, None)
        if self.max_new_frames is not None and self.min_new_frames > self.max_new_frames:
            raise InputError(
                f"min_new_frames ({self.min_new_frames}) must not exceed max_new_frames ({self.max_new_frames})"
            )
        if not isinstance(self.do_sample, bool):
            raise InputError(f"do_sample must be true or false, got {self.do_sample!r}")
        for prefix in ("", "control_"):
            _check_float(f"{prefix}temperature", getattr(self, f"{prefix}temperature"), 0.0, MAX_TEMPERATURE)
            top_p = getattr(self, f"{prefix}top_p")
            _check_float(f"{prefix}top_p", top_p, 0.0, 1.0)
            if top_p == 0.0:
                raise InputError(f"{prefix}top_p must be in (0, 1], got 0")
            _check_int(f"{prefix}top_k", getattr(self, f"{prefix}top_k"), 0, None)
        _check_float("repetition_penalty", self.repetition_penalty, 0.0, MAX_REPETITION_PENALTY)
        if self.repetition_penalty == 0.0:
            raise InputError(f"repetition_penalty must be in (0, {MAX_REPETITION_PENALTY:g}], got 0")
        if self.control_tokens not in ("audio", "full"):
            raise InputError(f"control_tokens must be 'audio' or 'full', got {self.control_tokens!r}")
        _check_int("seed", self.seed, 0, MAX_SEED, optional=True)

    # ------------------------------------------------------------------ derived values
    @property
    def audio_greedy(self) -> bool:
        """True when the audio layers are decoded by argmax."""
        return not self.do_sample or self.temperature == 0.0

    @property
    def control_greedy(self) -> bool:
        """True when channel 0 is decoded by argmax."""
        return not self.do_sample or self.control_temperature == 0.0

    @property
    def greedy(self) -> bool:
        """True when every channel is decoded by argmax (the result does not depend on the seed)."""
        return self.audio_greedy and self.control_greedy

    def resolved_depth(self, n_vq: int) -> int:
        """The depth K for a model with `n_vq` layers (checks the range)."""
        self.check_model(n_vq)
        return n_vq if self.depth is None else self.depth

    def check_model(self, n_vq: int) -> None:
        """Checks the depth against the model's number of layers."""
        if self.depth is not None and self.depth > n_vq:
            raise InputError(f"depth must be in 1..{n_vq} for this model, got {self.depth}")

    def with_overrides(self, **overrides: Any) -> GenerationConfig:
        """A copy with some fields replaced; unknown names raise `InputError` listing the allowed ones.

        None means "keep the current value" (so options that were not given can be passed through as None); use
        `dataclasses.replace` to set a field to None.
        """
        names = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise InputError(f"unknown generation settings {unknown}; allowed: {sorted(names)}")
        changes = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **changes) if changes else self

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of every setting, in declaration order."""
        return tuple(f.name for f in fields(cls))


def _check_int(name: str, value: Any, low: int, high: int | None, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise InputError(f"{name} must be {bound}, got {value}")


def _check_float(name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise InputError(f"{name} must be in [{low:g}, {high:g}], got {value:g}")


@dataclass(frozen=True)
class EngineConfig:
    """How the engine is sized and run. Validation raises `InputError` naming the field."""

    max_slots: int = 8  # S: requests generated together (one row of every batched tensor each)
    max_rows: int = 2048  # R: temporal cache rows per slot = prompt rows + generated frames (+ sync_every)
    max_queue: int = 64  # requests waiting for a slot; `submit` raises QueueFull beyond this
    prefill_chunk: int = 256  # prompt rows per prefill forward (a request's prompt is cut at fixed multiples of this)
    prefill_budget: int = 512  # prompt rows prefilled between two frames at most (whole chunks, at least one): how
    # long admitting new requests may delay the running ones
    sync_every: int = 4  # frames between host reads of the generated frames and end-of-speech flags (>= 1)
    compile: CompileMode = "auto"  # "auto": CUDA graphs on CUDA, eager on CPU; True: also torch.compile; False: eager
    buckets: tuple[int, ...] | None = None  # batch sizes a frame runs at; None = (max_slots,) on CPU (bit-exact
    # batch invariance), powers of two up to max_slots on CUDA (a lone request does not pay for every slot)
    cpu_prepack: bool = True  # on the CPU (eager): run the depth side with oneDNN-prepacked weights (about 2x faster
    # batched frames; one more copy of those weights), see `cat_tts.generation.units.prepacked_view`
    compile_cache: str | None = None  # directory of PyTorch's on-disk compile caches (None: CAT_TTS_COMPILE_CACHE or
    # PyTorch's default); a second start with the same configuration skips most of the compile time

    def __post_init__(self) -> None:
        for name, low in (
            ("max_slots", 1),
            ("max_rows", 8),
            ("max_queue", 0),
            ("prefill_chunk", 1),
            ("sync_every", 1),
            ("prefill_budget", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.compile not in ("auto", True, False):
            raise InputError(f"compile must be 'auto', True or False, got {self.compile!r}")
        if self.buckets is not None:
            if not self.buckets or any(not isinstance(b, int) or not 1 <= b <= self.max_slots for b in self.buckets):
                raise InputError(f"buckets must be batch sizes in 1..max_slots={self.max_slots}, got {self.buckets}")
            if self.max_slots not in self.buckets:
                raise InputError(f"buckets must include max_slots={self.max_slots}, got {self.buckets}")
