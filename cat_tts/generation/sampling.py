"""Sampling as pure functions over logits (no model state).

Shapes: M rows being sampled (batch entries), V vocabulary of the channel.

The processors follow the Hugging Face semantics the released generation code uses, in its order:
repetition penalty -> temperature -> top-k -> top-p -> multinomial draw (or argmax when greedy).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    """How one channel group (control or audio) is sampled.

    Defaults are the released model's audio settings (model card: 1.0 / 0.95 / 50 / 1.1).
    """

    temperature: float = 1.0  # softmax temperature; <= 0 means greedy (argmax, no other processor applies)
    top_p: float = 0.95  # nucleus mass kept, in (0, 1]; 1 disables
    top_k: int = 50  # keep the k most likely tokens, >= 0; 0 disables
    repetition_penalty: float = 1.1  # > 0; logits of tokens seen in the channel's history are divided (if > 0)
    # or multiplied (if < 0) by it; 1 disables

    def __post_init__(self) -> None:
        if not (self.temperature == self.temperature) or self.temperature > 100:
            raise ValueError(f"temperature must be a number <= 100 (<= 0 for greedy), got {self.temperature}")
        if not (0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables), got {self.top_k}")
        if not (0.0 < self.repetition_penalty <= 100.0):
            raise ValueError(f"repetition_penalty must be in (0, 100], got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        """True when this group is decoded by argmax."""
        return self.temperature <= 0


# Official defaults of the released generation code.
AUDIO_DEFAULTS = SamplingParams(temperature=1.0, top_p=0.95, top_k=50, repetition_penalty=1.1)
CONTROL_DEFAULTS = SamplingParams(temperature=1.5, top_p=1.0, top_k=50, repetition_penalty=1.0)


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Penalises every token already present in the history.

    Args:
        logits: `[M, V]` float.
        seen: `[M, V]` bool, True where the token occurs in that row's history.
        penalty: divides positive logits and multiplies negative ones.

    Returns:
        New `[M, V]` logits.
    """
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


def apply_top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keeps the logits >= the k-th largest of each row (ties kept); others become -inf."""
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # [M, 1]
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filter: drops the least likely tokens whose total probability is <= 1 - top_p.

    The most likely token is always kept.
    """
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=False)  # ascending, [M, V]
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1.0 - top_p)
    remove_sorted[..., -1] = False
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def process_logits(logits: torch.Tensor, params: SamplingParams, seen: torch.Tensor | None = None) -> torch.Tensor:
    """Applies the processors of `params` in the official order (no-op when greedy)."""
    if params.greedy:
        return logits
    if seen is not None:
        logits = apply_repetition_penalty(logits, seen, params.repetition_penalty)
    logits = logits / params.temperature
    logits = apply_top_k(logits, params.top_k)
    return apply_top_p(logits, params.top_p)


def draw(logits: torch.Tensor, greedy: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Picks one token per row: argmax when greedy, else a multinomial draw from softmax(logits).

    Args:
        logits: `[M, V]` processed logits (-inf = forbidden).
        greedy: argmax instead of sampling.
        generator: torch random generator for reproducible draws.

    Returns:
        LongTensor `[M]`.
    """
    if greedy:
        return logits.argmax(dim=-1)
    probs = logits.float().softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def sample(
    logits: torch.Tensor,
    params: SamplingParams,
    seen: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Processes and draws in one call: `draw(process_logits(...))`."""
    return draw(process_logits(logits, params, seen), params.greedy, generator)
