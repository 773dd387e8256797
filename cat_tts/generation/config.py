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
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import numpy as np

from cat_tts.codec.config import KBPS_PER_LAYER
from cat_tts.errors import FieldError

ControlTokens = Literal["audio", "full"]
CompileMode = Literal["auto", "graphs"] | bool
Depth = int | Literal["auto"]

MAX_TEMPERATURE = 100.0  # above this the distribution is uniform for any practical purpose
MAX_REPETITION_PENALTY = 100.0
MAX_SEED = 2**63 - 1

FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # the smallest normal float32 (1.2e-38)


def _stored(default: Any, dtype: type) -> Any:
    """A setting the engine keeps in a slot tensor of `dtype` (see `STORAGE`)."""
    return field(default=default, metadata={"storage": dtype})


@dataclass(frozen=True)
class GenerationConfig:
    """What one generation request asks for. Validation raises `FieldError` (an `InputError`) naming the field,
    the value and the allowed range; a config that validates can always be loaded into an engine slot.

    The depth is checked against the model's number of layers N by `depth_range` (the only source of N is the model's
    config). `bitrate_kbps` is another way to give the depth (0.125 kbps per layer): it is turned into `depth` here.
    """

    depth: Depth | None = _stored(None, np.int64)  # K: RVQ layers generated per frame, 1..N (0.125 kbps each);
    # None = N; "auto" = chosen by the engine from its load, within min_depth..max_depth (the highest that keeps every
    # stream in real time)
    bitrate_kbps: float | Literal["auto"] | None = None  # the depth as a bitrate (rounded to the nearest layer); not
    # together with depth; sets `depth` on construction
    min_depth: int | None = None  # depth "auto": the lowest depth the engine may choose (default 1)
    max_depth: int | None = None  # depth "auto": the highest depth the engine may choose (default N)
    max_new_frames: int | None = _stored(None, np.int64)  # frame budget (80 ms each); None = from the text / prompt
    min_new_frames: int = _stored(0, np.int64)  # audio_end is forbidden before this many frames
    do_sample: bool = True  # False = greedy (argmax) for every channel
    temperature: float = _stored(1.0, np.float32)  # audio layers: softmax temperature; 0 = greedy for the audio layers
    top_p: float = _stored(0.95, np.float32)  # audio layers: nucleus mass kept, in (0, 1]; 1 disables
    top_k: int = _stored(50, np.int64)  # audio layers: keep the k most likely codes; 0 disables
    repetition_penalty: float = _stored(1.1, np.float32)  # audio layers: > 0; penalises codes already in the layer's
    # history; 1 = off
    control_temperature: float = _stored(1.5, np.float32)  # channel 0 (continue vs audio_end): temperature; 0 = greedy
    control_top_p: float = _stored(1.0, np.float32)  # channel 0: nucleus mass kept, in (0, 1]
    control_top_k: int = _stored(50, np.int64)  # channel 0: top-k; 0 disables
    control_tokens: ControlTokens = "audio"  # "audio": channel 0 chooses between continuing and audio_end only;
    # "full": channel 0 is sampled over the whole text vocabulary (exactly like the released code)
    seed: int | None = _stored(None, np.int64)  # seeds this request's random stream; None = a fresh random seed

    def __post_init__(self) -> None:
        if self.bitrate_kbps is not None:  # kept (errors about the depth then name it); `depth` follows from it
            depth = _depth_of_bitrate(self.bitrate_kbps)
            if self.depth is not None and self.depth != depth:
                raise FieldError("bitrate_kbps", f"bitrate_kbps {self.bitrate_kbps!r} is depth {depth}, but depth "
                                 f"{self.depth!r} was given too: give one of them")  # fmt: skip
            object.__setattr__(self, "depth", depth)
        if self.depth != "auto":
            _check_int("depth", self.depth, 1, optional=True)
        for name in ("min_depth", "max_depth"):
            value = getattr(self, name)
            if value is not None and self.depth != "auto":
                raise FieldError(name, f'{name} applies to depth "auto" only (the depth asked is {self.depth})')
            _check_int(name, value, 1, optional=True)
        if self.min_depth is not None and self.max_depth is not None and self.min_depth > self.max_depth:
            raise FieldError("min_depth", f"min_depth ({self.min_depth}) must not exceed max_depth ({self.max_depth})")
        _check_int("max_new_frames", self.max_new_frames, 1, optional=True)
        _check_int("min_new_frames", self.min_new_frames, 0)
        if self.max_new_frames is not None and self.min_new_frames > self.max_new_frames:
            raise FieldError(
                "min_new_frames",
                f"min_new_frames ({self.min_new_frames}) must not exceed max_new_frames ({self.max_new_frames})",
            )
        if not isinstance(self.do_sample, bool):
            raise FieldError("do_sample", f"do_sample must be true or false, got {self.do_sample!r}")
        for prefix in ("", "control_"):
            _check_float(f"{prefix}temperature", getattr(self, f"{prefix}temperature"), 0.0, MAX_TEMPERATURE)
            _check_float(f"{prefix}top_p", getattr(self, f"{prefix}top_p"), 0.0, 1.0, zero=False)
            _check_int(f"{prefix}top_k", getattr(self, f"{prefix}top_k"), 0)
        _check_float("repetition_penalty", self.repetition_penalty, 0.0, MAX_REPETITION_PENALTY, zero=False)
        if self.control_tokens not in ("audio", "full"):
            raise FieldError("control_tokens", f"control_tokens must be 'audio' or 'full', got {self.control_tokens!r}")
        _check_int("seed", self.seed, 0, optional=True)

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

    def depth_range(self, n_vq: int) -> tuple[int, int]:
        """The depths the request accepts for a model with `n_vq` layers: (K, K) for a fixed depth, (N, N) when none is
        given, (min_depth or 1, max_depth or N) for "auto". The one check of a depth against the model.

        Raises:
            FieldError: a depth (or max_depth) above N.
        """
        if self.depth == "auto":
            low, high = self.min_depth or 1, self.max_depth or n_vq
            if high > n_vq:
                raise FieldError("max_depth", f"max_depth must be in 1..{n_vq} for this model, got {high}")
            return min(low, high), high
        depth = n_vq if self.depth is None else self.depth
        if depth > n_vq and self.bitrate_kbps is not None:
            raise FieldError("bitrate_kbps", f"bitrate_kbps must be at most {n_vq * KBPS_PER_LAYER:g} for this model "
                             f"({n_vq} layers of {KBPS_PER_LAYER:g} kbps), got {self.bitrate_kbps:g}")  # fmt: skip
        if depth > n_vq:
            raise FieldError("depth", f"depth must be in 1..{n_vq} for this model, got {depth}")
        return depth, depth

    def with_overrides(self, **overrides: Any) -> GenerationConfig:
        """A copy with some fields replaced; unknown names raise `FieldError` listing the allowed ones.

        None means "keep the current value" (so options that were not given can be passed through as None); use
        `dataclasses.replace` to set a field to None. A depth or bitrate given here replaces the other.
        """
        names = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise FieldError(unknown[0], f"unknown generation settings {unknown}; allowed: {sorted(names)}")
        changes = {k: v for k, v in overrides.items() if v is not None}
        if "bitrate_kbps" in changes:  # the one given replaces the other
            changes.setdefault("depth", None)
        elif "depth" in changes:
            changes["bitrate_kbps"] = None
        if changes.get("depth") not in (None, "auto") or changes.get("bitrate_kbps") not in (None, "auto"):
            changes.update(min_depth=None, max_depth=None)
        return replace(self, **changes) if changes else self

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of every setting, in declaration order."""
        return tuple(f.name for f in fields(cls))


# How the engine stores each per-request setting in its slot tensors (`cat_tts.generation.slots.SlotState` allocates
# them with these dtypes). Validation checks every value against its storage type, so a value that passes can always
# be loaded into a slot: integers within the dtype's range, floats finite and not rounded to 0 in float32.
STORAGE: dict[str, type] = {f.name: f.metadata["storage"] for f in fields(GenerationConfig) if "storage" in f.metadata}


def _finite(value: Any) -> bool:
    """A finite real number (never raises: an integer too large for a float is not finite here)."""
    try:
        return not isinstance(value, bool) and isinstance(value, (int, float, np.number)) and math.isfinite(value)
    except OverflowError:
        return False


def _depth_of_bitrate(kbps: Any) -> Depth:
    if kbps == "auto":
        return "auto"
    if not _finite(kbps) or kbps <= 0:
        raise FieldError("bitrate_kbps", f'bitrate_kbps must be a positive number or "auto", got {kbps!r}')
    depth = round(kbps / KBPS_PER_LAYER)
    if depth < 1:
        raise FieldError("bitrate_kbps", f"bitrate_kbps must be at least {KBPS_PER_LAYER:g} (one layer), got {kbps:g}")
    return depth


def _shown(value: Any) -> str:
    """A value as a message shows it: its repr, shortened when long (a 400-digit integer says how long it is)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"


def _check_int(name: str, value: Any, low: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise FieldError(name, f"{name} must be an integer, got {_shown(value)}")
    high = int(np.iinfo(STORAGE.get(name, np.int64)).max)
    if value < low:
        raise FieldError(name, f"{name} must be >= {low}, got {_shown(value)}")
    if value > high:
        raise FieldError(name, f"{name} must be <= {high} (the largest value the engine stores), got {_shown(value)}")


def _check_float(name: str, value: Any, low: float, high: float, zero: bool = True) -> None:
    """A finite number in [low, high] that keeps its meaning in float32: no value but 0 itself rounds to 0 there (a
    temperature of 1e-46 is not greedy, a repetition penalty of 1e-46 is not a division by zero)."""
    if not _finite(value):
        raise FieldError(name, f"{name} must be a finite number, got {_shown(value)}")
    if not low <= value <= high or (value == 0 and not zero):
        bound = f"[{low:g}, {high:g}]" if zero else f"({low:g}, {high:g}]"
        raise FieldError(name, f"{name} must be in {bound}, got {value:g}")
    if value != 0 and abs(value) < FLOAT32_TINY:
        least = "0 or at least" if zero else "at least"
        raise FieldError(name, f"{name} must be {least} {FLOAT32_TINY:.3g} (float32), got {value:g}")


@dataclass(frozen=True)
class EngineConfig:
    """How the engine is sized and run. Validation raises `FieldError` naming the field."""

    max_slots: int = 8  # B: requests generated together (one row of every batched tensor each)
    max_rows: int = 2048  # R: temporal cache rows per slot = prompt rows + generated frames (+ sync_every)
    max_queue: int = 64  # requests waiting for a slot; `submit` raises QueueFull beyond this
    prefill_chunk: int = 256  # prompt rows per prefill forward (a request's prompt is cut at fixed multiples of this)
    prefill_budget: int = 512  # prompt rows prefilled between two frames at most (whole chunks, at least one): how
    # long admitting new requests may delay the running ones
    sync_every: int = 4  # frames between host reads of the generated frames and end-of-speech flags (>= 1); on the
    # CPU the frames are in host memory and are read after every frame (this sizes the window all the same)
    compile: CompileMode = "auto"  # "auto": the fastest correct path of the device (CUDA: the whole frame compiled and
    # captured as one CUDA graph; CPU: eager); True: torch.compile everywhere (+ graphs on CUDA); "graphs": CUDA
    # graphs of the eager frame (no compiler); False: eager
    buckets: tuple[int, ...] | None = None  # batch sizes a frame runs at; None = powers of two up to max_slots (a
    # lone request pays for one slot), or (max_slots,) with batch_invariant
    batch_invariant: bool = False  # every frame runs at max_slots (one bucket): a request's frames are bit-identical
    # alone and in any batch, at the cost of running every slot every frame (a lone request pays for all of them)
    cpu_prepack: bool = True  # on the CPU (eager): oneDNN-prepacked depth weights for the buckets where a measurement
    # at warm-up finds them faster (one more copy of those weights), see `cat_tts.generation.prepack`
    compile_cache: str | None = None  # directory of PyTorch's on-disk compile caches (None: CAT_TTS_COMPILE_CACHE,
    # else a per-user cache directory); a second start with the same configuration skips most of the compile time
    auto_depth_margin: float = 0.8  # depth "auto" keeps the predicted frame time under this share of real time

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
                raise FieldError(name, f"{name} must be an integer >= {low}, got {value!r}")
        if self.compile not in ("auto", "graphs", True, False):
            raise FieldError("compile", f"compile must be 'auto', 'graphs', True or False, got {self.compile!r}")
        if self.buckets is not None:
            if not self.buckets or any(not isinstance(b, int) or not 1 <= b <= self.max_slots for b in self.buckets):
                raise FieldError(
                    "buckets", f"buckets must be batch sizes in 1..max_slots={self.max_slots}, got {self.buckets}"
                )
            if self.max_slots not in self.buckets:
                raise FieldError("buckets", f"buckets must include max_slots={self.max_slots}, got {self.buckets}")
        if not 0 < self.auto_depth_margin <= 1:
            raise FieldError("auto_depth_margin", f"auto_depth_margin must be in (0, 1], got {self.auto_depth_margin}")

    @property
    def resolved_buckets(self) -> tuple[int, ...]:
        """The batch sizes a frame runs at (ascending, the last = max_slots)."""
        if self.batch_invariant:
            return (self.max_slots,)
        if self.buckets is not None:
            return tuple(sorted(set(self.buckets)))
        powers = [2**i for i in range(self.max_slots.bit_length()) if 2**i < self.max_slots]
        return tuple(powers + [self.max_slots])
