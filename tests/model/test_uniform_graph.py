"""Rank-uniform execution (`CatTTSModel.uniform_graph`): same loss and gradients as the normal mode, and a module
call sequence (forward and backward) that does not depend on the batch's PSD depths or labels."""

from __future__ import annotations

import pytest
import torch

from cat_tts.model.tiny import build_tiny_model

from .conftest import make_batch


@pytest.fixture()
def model():
    return build_tiny_model(seed=0)


def _loss_and_grads(model, ids, mask, labels, depths, uniform, chunks=1, return_logits=False):
    model.uniform_graph = uniform
    model.uniform_loss_chunks = chunks
    model.zero_grad(set_to_none=True)
    out = model(ids, attention_mask=mask, labels=labels, depths=depths, return_logits=return_logits)
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    model.uniform_graph = False
    return out, grads


def _mixed_batch(config, seed=0):
    ids, mask, labels = make_batch(config, batch=4, frames=6, seed=seed, pad_left=1)
    depths = torch.tensor([1, 5, 3, 5])  # mixed depths; no sample reaches layers 6..32
    return ids, mask, labels, depths


@pytest.mark.parametrize("chunks,return_logits", [(1, False), (3, False), (1, True)])
def test_uniform_mode_gives_the_same_loss_and_gradients(model, chunks, return_logits):
    ids, mask, labels, depths = _mixed_batch(model.config)
    ref, ref_grads = _loss_and_grads(model, ids, mask, labels, depths, uniform=False, return_logits=return_logits)
    out, grads = _loss_and_grads(
        model, ids, mask, labels, depths, uniform=True, chunks=chunks, return_logits=return_logits
    )
    torch.testing.assert_close(out.loss, ref.loss, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.channel_losses, ref.channel_losses, rtol=0, atol=1e-6)
    assert torch.equal(out.channel_counts, ref.channel_counts)
    for name, g in grads.items():
        assert g is not None, f"uniform mode left {name} without a gradient"
        expected = ref_grads[name] if ref_grads[name] is not None else torch.zeros_like(g)
        torch.testing.assert_close(g, expected, rtol=0, atol=1e-6, msg=name)
    # The normal mode really truncates: the heads of layers nobody keeps are never used there.
    assert ref_grads["heads.6.weight"] is None and ref_grads["depth_output.32.down_proj.weight"] is None
    if return_logits:
        for c in range(model.config.num_channels):
            torch.testing.assert_close(out.logits[c], ref.logits[c], rtol=0, atol=1e-6)
            assert torch.equal(out.logit_rows[c], ref.logit_rows[c])


def test_uniform_mode_with_nothing_supervised_still_reaches_every_parameter(model):
    ids, mask, labels, depths = _mixed_batch(model.config)
    labels = torch.full_like(labels, -100)
    out, grads = _loss_and_grads(model, ids, mask, labels, depths, uniform=True)
    assert float(out.loss.detach()) == 0.0
    assert all(g is not None and not g.any() for g in grads.values())


def _call_trace(model, batch, uniform):
    """Names of the modules in the order their forward and backward hooks fire."""
    trace: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_pre_hook(lambda m, a, n=name: trace.append("fwd " + n)))
            handles.append(module.register_full_backward_pre_hook(lambda m, g, n=name: trace.append("bwd " + n)))
    try:
        _loss_and_grads(model, *batch, uniform=uniform)
    finally:
        for h in handles:
            h.remove()
    return trace


@pytest.mark.filterwarnings("ignore:.*backward hook")
@pytest.mark.filterwarnings("ignore:Full backward hook")
def test_uniform_mode_calls_the_same_modules_in_the_same_order_for_any_batch(model):
    a = _mixed_batch(model.config, seed=0)
    ids, mask, labels = make_batch(model.config, batch=3, frames=5, seed=7)
    labels[0, :, 9:] = -100  # ragged supervision on top of the depths
    b = (ids, mask, labels, torch.tensor([2, 31, 7]))
    assert _call_trace(model, a, uniform=False) != _call_trace(model, b, uniform=False)  # data-dependent
    trace_a, trace_b = _call_trace(model, a, uniform=True), _call_trace(model, b, uniform=True)
    assert trace_a == trace_b
    assert sum(t.startswith("bwd heads.") for t in trace_a) == model.config.num_channels
