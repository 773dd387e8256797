"""PSD truncation is real compute truncation: depth-transformer FLOPs scale with K+1 (torch's flop counter)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from cat_tts.model.tiny import build_tiny_model

from .conftest import make_batch


def _step_flops(model, ids, mask, labels, depths, backward: bool = True) -> dict[str, int]:
    counter = FlopCounterMode(display=False)
    with counter:
        out = model(ids, mask, labels, depths=depths)
        if backward:
            out.loss.backward()
    counts = counter.get_flop_counts()
    per_module = {name: sum(ops.values()) for name, ops in counts.items()}
    return {
        "total": counter.get_total_flops(),
        "depth": per_module.get("CatTTSModel.depth", 0),
        "temporal": per_module.get("CatTTSModel.temporal", 0),
    }


@pytest.fixture(scope="module")
def flops_by_depth():
    model = build_tiny_model(seed=0)
    ids, mask, labels = make_batch(model.config, batch=2, frames=4, seed=0)
    labels[:] = labels.clamp(min=0) % model.config.audio_vocab_size  # every entry supervised
    return {k: _step_flops(model, ids, mask, labels, torch.tensor([k, k])) for k in (1, 4, 16, 32)}


def test_depth_flops_are_proportional_to_kept_positions(flops_by_depth):
    full = flops_by_depth[32]["depth"]
    assert full > 0
    for k in (1, 4, 16):
        ratio = flops_by_depth[k]["depth"] / full
        assert ratio == pytest.approx((k + 1) / 33, rel=0.1), f"K={k}: depth FLOP ratio {ratio:.3f}"


def test_truncated_step_costs_fewer_flops_and_temporal_is_unchanged(flops_by_depth):
    totals = [flops_by_depth[k]["total"] for k in (1, 4, 16, 32)]
    assert totals == sorted(totals) and totals[0] < totals[-1] / 3
    assert len({flops_by_depth[k]["temporal"] for k in (1, 4, 16, 32)}) == 1


def test_prompt_rows_cost_no_depth_flops():
    model = build_tiny_model(seed=1)
    ids, mask, labels = make_batch(model.config, batch=1, frames=8, seed=1)
    labels[:] = labels.clamp(min=0) % model.config.audio_vocab_size
    with torch.no_grad():
        base = _step_flops(model, ids, mask, labels, None, backward=False)["depth"]
        labels[:, :4] = -100  # half the frames become prompt rows
        half = _step_flops(model, ids, mask, labels, None, backward=False)["depth"]
        labels[:, 4:, 1:] = -100  # the rest: text-only rows run 1 position instead of 33
        text_only = _step_flops(model, ids, mask, labels, None, backward=False)["depth"]
    assert half == pytest.approx(base / 2, rel=0.05)
    assert text_only == pytest.approx(base / 2 / 33, rel=0.1)
