"""Progressive Sequence Dropout (PSD): per-sample depth sampling for training.

With probability `p` a sample keeps a uniform random prefix of K in {1, ..., N-1} RVQ layers, otherwise
all N. A sample kept at depth K contributes layers 1..K to the temporal input sum, runs the depth
transformer over K+1 positions only, and is supervised on channels 0..K only (see `CatTTSModel.forward`).
"""

from __future__ import annotations

import torch


def sample_depths(
    batch_size: int,
    n_vq: int,
    p: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.LongTensor:
    """Draw one depth per sample.

    Args:
        batch_size: number of samples B.
        n_vq: number of RVQ layers N (N >= 1).
        p: probability of truncating a sample, in [0, 1]. p = 0 keeps every sample at N.
        generator: random generator (for reproducibility); torch's default generator when None.
        device: device of the returned tensor (the draw itself happens on the CPU).

    Returns:
        LongTensor `[B]` with values in 1..N: with probability p uniform over 1..N-1, else N.
        With N = 1 there is nothing to drop and every depth is 1.

    Raises:
        ValueError: for p outside [0, 1], a negative batch size or n_vq < 1.
    """
    if not (0.0 <= p <= 1.0):
        raise ValueError(f"PSD probability p must be in [0, 1], got {p}")
    if batch_size < 0:
        raise ValueError(f"batch_size must be >= 0, got {batch_size}")
    if n_vq < 1:
        raise ValueError(f"n_vq must be >= 1, got {n_vq}")
    depths = torch.full((batch_size,), n_vq, dtype=torch.long)
    if n_vq == 1 or p == 0.0 or batch_size == 0:
        return depths.to(device) if device is not None else depths
    truncate = torch.rand(batch_size, generator=generator) < p  # [B]
    short = torch.randint(1, n_vq, (batch_size,), generator=generator)  # uniform over 1..N-1
    depths = torch.where(truncate, short, depths)
    return depths.to(device) if device is not None else depths
