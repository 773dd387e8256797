"""Tensor sampling: per-row settings follow the Hugging Face processors, the Gumbel-max draw has the target
distribution, and the counter-based noise depends only on (seed, frame, channel, token)."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from cat_tts.errors import InputError
from cat_tts.generation import GenerationConfig
from cat_tts.generation.sampling import (
    apply_repetition_penalty,
    filter_top_k_top_p,
    gumbel_noise,
    mix32,
    sample_rows,
    seed_key,
    token_hashes,
)


def _logits(seed=0, m=4, v=37):
    return torch.randn(m, v, generator=torch.Generator().manual_seed(seed)) * 3


def _hf(logits, temperature, top_k, top_p, history=None, penalty=1.0):
    out = logits.clone()
    procs = [RepetitionPenaltyLogitsProcessor(penalty)] if history is not None else []
    procs.append(TemperatureLogitsWarper(temperature))
    if top_k:
        procs.append(TopKLogitsWarper(top_k))
    if top_p < 1:
        procs.append(TopPLogitsWarper(top_p))
    for proc in procs:
        out = proc(history, out)
    return out


def test_repetition_penalty_matches_hf_per_row():
    logits = _logits()
    history = torch.randint(0, 37, (4, 9), generator=torch.Generator().manual_seed(1))
    seen = torch.zeros(4, 37, dtype=torch.bool).scatter_(1, history, True)
    penalties = torch.tensor([1.3, 1.0, 2.0, 0.7])
    got = apply_repetition_penalty(logits, seen, penalties)
    for row, p in enumerate(penalties.tolist()):
        expected = RepetitionPenaltyLogitsProcessor(p)(history[row : row + 1], logits[row : row + 1].clone())
        assert torch.allclose(got[row : row + 1], expected)


@pytest.mark.parametrize("seed", range(4))
def test_top_k_top_p_per_row_match_hf(seed):
    logits = _logits(seed=seed, m=6, v=50)
    logits[0, :3] = 2.0  # ties at the top-k boundary are kept by both
    top_k = torch.tensor([1, 5, 0, 50, 10, 0])
    top_p = torch.tensor([1.0, 0.5, 0.95, 0.999, 0.05, 1.0])
    got = filter_top_k_top_p(logits, top_k, top_p)
    for row in range(6):
        expected = _hf(logits[row : row + 1], 1.0, int(top_k[row]), float(top_p[row]))
        assert torch.equal(got[row : row + 1], expected), row


def test_full_processor_chain_matches_hf_order():
    logits = _logits(seed=5)
    history = torch.randint(0, 37, (4, 6), generator=torch.Generator().manual_seed(2))
    seen = torch.zeros(4, 37, dtype=torch.bool).scatter_(1, history, True)
    expected = _hf(logits, 0.7, 10, 0.9, history, 1.1)
    z = apply_repetition_penalty(logits, seen, torch.full((4,), 1.1)) / 0.7
    got = filter_top_k_top_p(z, torch.full((4,), 10), torch.full((4,), 0.9))
    assert torch.allclose(got, expected)


def test_greedy_rows_are_plain_argmax_whatever_the_other_settings():
    logits = _logits(m=4)
    greedy = torch.tensor([True, False, True, False])
    noise = gumbel_noise(torch.arange(4), torch.zeros(4, dtype=torch.long), torch.tensor(1), token_hashes(37, "cpu"))
    seen = torch.ones_like(logits, dtype=torch.bool)
    out = sample_rows(logits, greedy, torch.full((4,), 5.0), torch.full((4,), 3), torch.full((4,), 0.5), noise, seen,
                      torch.full((4,), 9.0))  # fmt: skip
    assert torch.equal(out[greedy], logits.argmax(-1)[greedy])


@pytest.mark.parametrize("top_k, top_p, temperature", [(0, 1.0, 1.0), (5, 1.0, 0.8), (0, 0.8, 1.3), (6, 0.9, 1.0)])
def test_gumbel_max_draws_follow_the_target_distribution(top_k, top_p, temperature):
    """Chi-square: many independent frames' draws of one row against the HF-processed softmax."""
    v, n = 12, 20000
    logits = torch.randn(1, v, generator=torch.Generator().manual_seed(42)) * 1.5
    target = _hf(logits, temperature, top_k, top_p).softmax(-1)[0]
    frames = torch.arange(n)  # n draws of the same request at n frames: independent noise
    noise = gumbel_noise(torch.full((n,), seed_key(7)), frames, torch.tensor(3), token_hashes(v, "cpu"))
    rows = logits.expand(n, v)
    draws = sample_rows(rows, torch.zeros(n, dtype=torch.bool), torch.full((n,), temperature), torch.full((n,), top_k),
                        torch.full((n,), top_p), noise)  # fmt: skip
    counts = torch.bincount(draws, minlength=v).double()
    support = target > 0
    assert counts[~support].sum() == 0  # filtered tokens are never drawn
    expected = target[support].double() / target[support].double().sum() * n
    _, p_value = chisquare(counts[support].numpy(), expected.numpy())
    assert p_value > 1e-3


def test_noise_depends_only_on_seed_frame_channel_and_token():
    tokens = token_hashes(64, "cpu")
    keys = torch.tensor([seed_key(1), seed_key(2), seed_key(1)])
    frames = torch.tensor([5, 5, 5])
    a = gumbel_noise(keys, frames, torch.tensor(3), tokens)
    assert torch.equal(a[0], a[2]) and not torch.equal(a[0], a[1])  # same (seed, frame, channel): same noise
    assert not torch.equal(a, gumbel_noise(keys, frames + 1, torch.tensor(3), tokens))
    assert not torch.equal(a, gumbel_noise(keys, frames, torch.tensor(4), tokens))
    alone = gumbel_noise(keys[:1], frames[:1], torch.tensor(3), tokens)
    assert torch.equal(alone[0], a[0])  # a row's noise does not depend on the other rows
    assert seed_key(2**40 + 1) != seed_key(1)  # the high bits of a seed matter
    assert torch.isfinite(a).all()


def test_hash_is_the_same_on_python_ints_and_tensors():
    values = [0, 1, 2**31 - 1, 2**32 - 1, 123456789]
    assert torch.equal(mix32(torch.tensor(values)), torch.tensor([mix32(x) for x in values]))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"control_temperature": -1.0}, "control_temperature"),
        ({"min_new_frames": 10, "max_new_frames": 5}, "min_new_frames"),
        ({"depth": 0}, "depth"),
        ({"depth": True}, "depth"),
        ({"seed": -1}, "seed"),
        ({"do_sample": "yes"}, "do_sample"),
    ],
)
def test_invalid_settings_name_the_field(kwargs, field):
    with pytest.raises(InputError, match=field):
        GenerationConfig(**kwargs)


def test_zero_temperature_is_greedy_and_overrides_keep_unset_fields():
    assert GenerationConfig(temperature=0.0, control_temperature=0.0).greedy
    assert GenerationConfig(do_sample=False).greedy
    cfg = GenerationConfig(depth=8, seed=3).with_overrides(depth=None, temperature=0.5)
    assert cfg.depth == 8 and cfg.seed == 3 and cfg.temperature == 0.5
    with pytest.raises(InputError, match="unknown generation settings"):
        cfg.with_overrides(beam_size=2)
