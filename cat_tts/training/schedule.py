"""Learning-rate schedule: linear warmup to the peak, then a cosine down to `min_lr_ratio` of it."""

from __future__ import annotations

import math

import torch


def lr_factor(step: int, warmup_steps: int, decay_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak learning rate for the optimizer step `step` (0-based).

    Warmup rises linearly over `warmup_steps` (the first step already uses 1/warmup_steps of the peak),
    the cosine then falls from 1 to `min_lr_ratio` at `decay_steps` and stays there.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, decay_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, decay_steps: int, min_lr_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """A `LambdaLR` following `lr_factor`; step it once per optimizer step (DeepSpeed does)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup_steps, decay_steps, min_lr_ratio)
    )
