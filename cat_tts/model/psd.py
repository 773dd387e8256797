"""Progressive Sequence Dropout (PSD): per-sample depth sampling for training.

With probability `p` a sample keeps a uniform random prefix of K RVQ layers, otherwise all N. K is drawn
from one of two ranges:

* "1..N-1" (the paper): a truncated sample never keeps all N layers. At p = 1 layer N is then never
  supervised (and its embedding never enters the temporal input), so a model trained from scratch this way
  cannot generate layer N.
* "1..N": every depth, N included, is equally likely when dropout fires; at p = 1 every layer is trained and
  the mean kept depth is (N+1)/2 instead of N/2.

A sample kept at depth K contributes layers 1..K to the temporal input sum, runs the depth transformer over
K+1 positions only, and is supervised on channels 0..K only (see `CatTTSModel.forward`).

Shapes: B samples, N RVQ layers of the grid, K kept depth of one sample.
"""

from __future__ import annotations

import torch

# The ranges K is drawn from when dropout fires; the first is the paper's.
DEPTH_RANGES = ("1..N-1", "1..N")
PAPER_DEPTH_RANGE = DEPTH_RANGES[0]


def check_depth_range(depth_range: str) -> str:
    """Returns `depth_range` if it is one of `DEPTH_RANGES`; raises ValueError naming the allowed values."""
    if depth_range not in DEPTH_RANGES:
        raise ValueError(f"PSD depth_range must be one of {' | '.join(DEPTH_RANGES)}, got {depth_range!r}")
    return depth_range


def depth_probabilities(n_vq: int, p: float, depth_range: str = PAPER_DEPTH_RANGE) -> torch.Tensor:
    """The distribution `sample_depths` draws from: float64 `[N+1]`, entry K = P(depth = K) (entry 0 is 0).

    Args:
        n_vq: number of RVQ layers N (N >= 1).
        p: probability of truncating a sample, in [0, 1].
        depth_range: "1..N-1" (the paper) or "1..N".
    """
    _check(n_vq, p, depth_range)
    probs = torch.zeros(n_vq + 1, dtype=torch.float64)
    top = n_vq if depth_range == "1..N" or n_vq == 1 else n_vq - 1  # the largest K a truncated sample can keep
    probs[1 : top + 1] += p / top
    probs[n_vq] += 1.0 - p
    return probs


def sample_depths(
    batch_size: int,
    n_vq: int,
    p: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    depth_range: str = PAPER_DEPTH_RANGE,
) -> torch.LongTensor:
    """Draw one depth per sample.

    Args:
        batch_size: number of samples B.
        n_vq: number of RVQ layers N (N >= 1).
        p: probability of truncating a sample, in [0, 1]. p = 0 keeps every sample at N (the plain model).
        generator: random generator (for reproducibility); torch's default generator when None.
        device: device of the returned tensor (the draw itself happens on the CPU).
        depth_range: where a truncated sample's K is drawn from: "1..N-1" (the paper, default) or "1..N".

    Returns:
        LongTensor `[B]` with values in 1..N: with probability p uniform over `depth_range`, else N.
        With N = 1 there is nothing to drop and every depth is 1.

    Raises:
        ValueError: for p outside [0, 1], an unknown depth range, a negative batch size or n_vq < 1.
    """
    _check(n_vq, p, depth_range)
    if batch_size < 0:
        raise ValueError(f"batch_size must be >= 0, got {batch_size}")
    depths = torch.full((batch_size,), n_vq, dtype=torch.long)  # [B]
    if n_vq == 1 or p == 0.0 or batch_size == 0:
        return depths.to(device) if device is not None else depths
    top = n_vq if depth_range == "1..N" else n_vq - 1
    truncate = torch.rand(batch_size, generator=generator) < p  # [B]
    short = torch.randint(1, top + 1, (batch_size,), generator=generator)  # [B], uniform over 1..top
    depths = torch.where(truncate, short, depths)
    return depths.to(device) if device is not None else depths


def _check(n_vq: int, p: float, depth_range: str) -> None:
    if not (0.0 <= p <= 1.0):
        raise ValueError(f"PSD probability p must be in [0, 1], got {p}")
    if n_vq < 1:
        raise ValueError(f"n_vq must be >= 1, got {n_vq}")
    check_depth_range(depth_range)
