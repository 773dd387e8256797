"""Progressive Sequence Dropout depth sampler: both depth ranges, p = 0 is the plain model."""

from __future__ import annotations

import pytest
import torch

from cat_tts.model import CatTTSConfig, CatTTSModel, sample_depths
from cat_tts.model.psd import DEPTH_RANGES, depth_probabilities

# 99.99% quantiles of chi-square with 30 and 31 degrees of freedom (scipy.stats.chi2.ppf(0.9999, df)).
CHI2_9999 = {30: 67.6, 31: 69.1}


def test_p0_keeps_every_layer_in_both_ranges():
    g = torch.Generator().manual_seed(0)
    for depth_range in DEPTH_RANGES:
        assert torch.all(sample_depths(1000, 32, 0.0, g, depth_range=depth_range) == 32)


def test_p1_paper_range_never_keeps_the_last_layer_and_the_inclusive_range_does():
    g = torch.Generator().manual_seed(0)
    paper = sample_depths(5000, 32, 1.0, g)
    assert paper.min() >= 1 and paper.max() <= 31
    inclusive = sample_depths(5000, 32, 1.0, g, depth_range="1..N")
    assert inclusive.min() >= 1 and inclusive.max() == 32
    assert 0 < float((inclusive == 32).float().mean()) < 0.1  # about 1/32, like every other depth


@pytest.mark.parametrize("depth_range", DEPTH_RANGES)
@pytest.mark.parametrize("p", [0.6, 1.0])
def test_distribution_matches_definition(depth_range, p):
    n, draws = 32, 200_000
    d = sample_depths(draws, n, p, torch.Generator().manual_seed(1), depth_range=depth_range)
    counts = torch.bincount(d, minlength=n + 1).double()
    # the expectation written out by hand (not through depth_probabilities)
    top = n - 1 if depth_range == "1..N-1" else n
    prob = torch.zeros(n + 1, dtype=torch.float64)
    for k in range(1, top + 1):
        prob[k] += p / top
    prob[n] += 1 - p
    torch.testing.assert_close(depth_probabilities(n, p, depth_range), prob)
    expected = prob * draws
    assert counts[0] == 0
    support = expected > 0
    assert torch.all(counts[~support] == 0)  # at p = 1 with the paper's range: depth N never occurs
    std = (draws * prob * (1 - prob)).sqrt()
    assert torch.all((counts[support] - expected[support]).abs() <= 5 * std[support] + 1e-9)
    chi2 = float(((counts[support] - expected[support]) ** 2 / expected[support]).sum())
    assert chi2 < CHI2_9999[int(support.sum()) - 1], chi2


def test_p0_depths_give_the_plain_model():
    torch.manual_seed(0)
    model = CatTTSModel(CatTTSConfig.tiny()).eval()
    n = model.config.n_vq
    ids = torch.randint(0, 500, (2, 6, 1 + n))
    ids[..., 1:] = torch.randint(0, 1024, (2, 6, n))
    labels = ids.roll(-1, dims=1)
    labels[:, -1] = -100
    for depth_range in DEPTH_RANGES:
        depths = sample_depths(2, n, 0.0, torch.Generator().manual_seed(2), depth_range=depth_range)
        with torch.no_grad():
            plain = model(ids, None, labels)
            dropped = model(ids, None, labels, depths=depths)
        torch.testing.assert_close(dropped.loss, plain.loss, rtol=0, atol=0)
        torch.testing.assert_close(dropped.channel_losses, plain.channel_losses, rtol=0, atol=0)


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
    with pytest.raises(ValueError, match=r"depth_range must be one of 1\.\.N-1 \| 1\.\.N, got '0\.\.N'"):
        sample_depths(4, 32, 0.5, depth_range="0..N")
    assert torch.all(sample_depths(4, 1, 1.0) == 1)
    assert torch.all(sample_depths(4, 1, 1.0, depth_range="1..N") == 1)
