"""Progressive Sequence Dropout depth sampler."""

from __future__ import annotations

import pytest
import torch

from cat_tts.model import sample_depths


def test_p0_keeps_every_layer_and_p1_never_does():
    g = torch.Generator().manual_seed(0)
    assert torch.all(sample_depths(1000, 32, 0.0, g) == 32)
    d = sample_depths(5000, 32, 1.0, g)
    assert d.min() >= 1 and d.max() <= 31


def test_distribution_matches_definition():
    n, p, draws = 32, 0.6, 200_000
    d = sample_depths(draws, n, p, torch.Generator().manual_seed(1))
    counts = torch.bincount(d, minlength=n + 1).double()
    expected = torch.full((n + 1,), p / (n - 1) * draws, dtype=torch.float64)
    expected[0] = 0
    expected[n] = (1 - p) * draws
    assert counts[0] == 0
    # every count within 5 binomial standard deviations of its expectation
    prob = expected / draws
    std = (draws * prob * (1 - prob)).sqrt()
    assert torch.all((counts[1:] - expected[1:]).abs() <= 5 * std[1:] + 1e-9)
    # and a chi-square statistic well under the 99.99% quantile of chi2(31) (~ 66)
    chi2 = ((counts[1:] - expected[1:]) ** 2 / expected[1:]).sum()
    assert chi2 < 66


def test_reproducible_with_a_generator_and_independent_per_sample():
    a = sample_depths(64, 32, 0.5, torch.Generator().manual_seed(3))
    b = sample_depths(64, 32, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert len(set(a.tolist())) > 5


def test_invalid_arguments():
    with pytest.raises(ValueError, match="p must be in"):
        sample_depths(4, 32, 1.5)
    with pytest.raises(ValueError, match="n_vq"):
        sample_depths(4, 0, 0.5)
    assert torch.all(sample_depths(4, 1, 1.0) == 1)
