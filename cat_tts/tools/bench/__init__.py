"""Benchmarks: `python -m cat_tts.tools.bench SUBCOMMAND ...`.

Each subcommand lives in its own module of this package and exposes two functions:
    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> dict      # the measured numbers, also printed as a table

Figures are reported as ratios against a baseline measured in the same run, never as absolute
promises: the machine decides the absolute numbers.
"""

from __future__ import annotations

import torch

# subcommand name -> module (relative to this package) implementing it
SUBCOMMANDS: dict[str, str] = {
    "train-step": "train_step",  # issue: model core (forward+backward at p=0 vs p=1)
    "codec": "codec",  # issue: codec (encode/decode RTF, streaming first-chunk latency)
    "generate": "generate",  # issue: generation (ms/frame: eager vs compiled / CUDA graphs, or vs a naive loop)
    "engine": "engine",  # issue: inference engine (N concurrent requests vs one after another)
    "train": "train",  # issue: training (tokens/s and peak memory, p=0 vs p=1)
}


def sync(device: torch.device | str) -> None:
    """Waits for the device's queued work, so wall-clock timings cover it (no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
