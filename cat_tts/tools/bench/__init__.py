"""Benchmarks: `python -m cat_tts.tools.bench SUBCOMMAND ...`.

Each subcommand lives in its own module of this package and exposes two functions:
    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> dict      # the measured numbers, also printed as a table

Figures are reported as ratios against a baseline measured in the same run, never as absolute
promises: the machine decides the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from cat_tts.files import atomic_write

# subcommand name -> module (relative to this package) implementing it
SUBCOMMANDS: dict[str, str] = {
    "train-step": "train_step",  # issue: model core (forward+backward at p=0 vs p=1)
    "codec": "codec",  # issue: codec (encode/decode RTF, streaming first-chunk latency)
    "generate": "generate",  # issue 17: frame step (ms/frame) per engine mode, batch size and depth
    "engine": "engine",  # issue 17: Seed-TTS-Eval-shaped concurrent requests on the engine (RTF, TTFA, stalls)
    "profile": "profile",  # issue 17: where a frame's time goes (torch.profiler: top kernels / ops per frame)
    "floor": "floor",  # issue 17: a lone CPU frame vs its matrix-vector floor; a lone request in a multi-slot engine
    "train": "train",  # issue: training (tokens/s and peak memory, p=0 vs p=1)
}


def sync(device: torch.device | str) -> None:
    """Waits for the device's queued work, so wall-clock timings cover it (no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def save_partial(args: argparse.Namespace, result: dict) -> None:
    """Writes the results so far to `--json` (marked `"complete": false`), so that a run stopped by a time limit
    keeps what it finished. No-op without `--json`."""
    path = getattr(args, "json", None)
    if path:
        write_json(path, {**result, "complete": False})


def write_json(path: str | Path, result: dict) -> None:
    """Writes a result atomically (a reader never sees half a file); NaN and infinities become null."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(_finite(result), indent=1) + "\n")


def _finite(value):
    """NaN and infinities become null (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
