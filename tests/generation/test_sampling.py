"""Sampling functions follow the Hugging Face processors the released code uses."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from cat_tts.generation.sampling import (
    SamplingParams,
    apply_repetition_penalty,
    apply_top_k,
    apply_top_p,
    draw,
    process_logits,
    sample,
)


def _logits(seed=0, m=4, v=37):
    return torch.randn(m, v, generator=torch.Generator().manual_seed(seed)) * 3


def test_repetition_penalty_matches_hf():
    logits = _logits()
    history = torch.randint(0, 37, (4, 9), generator=torch.Generator().manual_seed(1))
    seen = torch.zeros(4, 37, dtype=torch.bool).scatter_(1, history, True)
    expected = RepetitionPenaltyLogitsProcessor(1.3)(history, logits.clone())
    assert torch.allclose(apply_repetition_penalty(logits, seen, 1.3), expected)


@pytest.mark.parametrize("k", [1, 5, 36, 50])
def test_top_k_matches_hf(k):
    logits = _logits()
    logits[0, :3] = 2.0  # ties at the boundary are kept by both
    expected = TopKLogitsWarper(top_k=k)(None, logits.clone())
    assert torch.equal(apply_top_k(logits, k), expected)


@pytest.mark.parametrize("p", [0.05, 0.5, 0.95, 0.999])
def test_top_p_matches_hf(p):
    logits = _logits(seed=3)
    expected = TopPLogitsWarper(top_p=p)(None, logits.clone())
    assert torch.equal(apply_top_p(logits, p), expected)


def test_full_processor_chain_matches_hf_order():
    logits = _logits(seed=5)
    history = torch.randint(0, 37, (4, 6), generator=torch.Generator().manual_seed(2))
    seen = torch.zeros(4, 37, dtype=torch.bool).scatter_(1, history, True)
    params = SamplingParams(temperature=0.7, top_p=0.9, top_k=10, repetition_penalty=1.1)
    expected = logits.clone()
    for proc in (
        RepetitionPenaltyLogitsProcessor(1.1),
        TemperatureLogitsWarper(0.7),
        TopKLogitsWarper(10),
        TopPLogitsWarper(0.9),
    ):
        expected = proc(history, expected)
    assert torch.allclose(process_logits(logits, params, seen), expected)


def test_greedy_is_argmax_and_ignores_processors():
    logits = _logits()
    params = SamplingParams(temperature=0.0, top_k=1, repetition_penalty=5.0)
    seen = torch.ones_like(logits, dtype=torch.bool)
    assert torch.equal(process_logits(logits, params, seen), logits)
    assert torch.equal(sample(logits, params, seen), logits.argmax(-1))


def test_seeded_draws_are_reproducible_and_never_pick_forbidden_tokens():
    logits = _logits(m=64)
    logits[:, 7] = float("-inf")
    params = SamplingParams(temperature=2.0, top_p=1.0, top_k=0, repetition_penalty=1.0)
    a = sample(logits, params, generator=torch.Generator().manual_seed(11))
    b = sample(logits, params, generator=torch.Generator().manual_seed(11))
    c = sample(logits, params, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not (a == 7).any()


def test_draw_respects_top_k_support():
    logits = _logits(m=256, v=50)
    filtered = apply_top_k(logits, 3)
    picks = draw(filtered, greedy=False, generator=torch.Generator().manual_seed(0))
    top3 = logits.topk(3, dim=-1).indices
    assert (picks[:, None] == top3).any(dim=1).all()


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"temperature": float("nan")}, "temperature"),
    ],
)
def test_invalid_sampling_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)
