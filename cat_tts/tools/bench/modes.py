"""The engine modes the benchmarks compare: one table from a mode's name to its `EngineConfig` settings.

A new engine path is one line here; every benchmark that takes `--modes` (generate, engine, profile) then offers it.
"""

from __future__ import annotations

from typing import Any

from cat_tts.errors import InputError
from cat_tts.generation import EngineConfig

ROWS_STEP = 128  # slot sizes (EngineConfig.max_rows) are multiples of this

# mode name -> EngineConfig fields that select it (sizes such as max_slots are the benchmark's own)
MODES: dict[str, dict[str, Any]] = {
    "eager": {"compile": False},  # the frame runs op by op
    "graphs": {"compile": "graphs"},  # CUDA: the eager frame captured as CUDA graphs, no compiler (CPU: eager)
    "default": {"compile": "auto"},  # what a user gets (CUDA: the whole frame compiled + one CUDA graph; CPU: eager)
    "compiled": {"compile": True},  # torch.compile everywhere (+ CUDA graphs on CUDA)
}


def parse_modes(text: str) -> list[str]:
    """Mode names from a comma-separated option value, checked against `MODES`.

    Raises:
        InputError: an unknown or missing name (the message lists the known ones).
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODES]
    if unknown or not names:
        raise InputError(f"--modes: unknown mode(s) {unknown or [text]}; known: {', '.join(MODES)}")
    return names


def engine_config(mode: str, **sizes: Any) -> EngineConfig:
    """The `EngineConfig` of a mode with the benchmark's sizes (max_slots, max_rows, ...)."""
    return EngineConfig(**{**sizes, **MODES[mode]})


def slot_rows(rows: int) -> int:
    """A slot size of at least `rows` rows, rounded up to a multiple of `ROWS_STEP`: benchmarks whose requests fit
    the same size build engines of the same shapes, so a compiled frame is found in the compile cache by the next."""
    return -(-rows // ROWS_STEP) * ROWS_STEP
