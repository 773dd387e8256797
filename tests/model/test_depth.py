"""Depth transformer: always causal (eager and sdpa), KV cache == one pass, implementations agree."""

from __future__ import annotations

import pytest
import torch

from cat_tts.model import CatTTSConfig, DepthTransformer


@pytest.fixture(scope="module")
def depth() -> DepthTransformer:
    torch.manual_seed(0)
    module = DepthTransformer(CatTTSConfig.tiny(), "sdpa").eval()
    for p in module.parameters():  # non-trivial norms
        torch.nn.init.normal_(p, std=0.3) if p.dim() > 1 else torch.nn.init.uniform_(p, 0.5, 1.5)
    return module


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_later_positions_never_change_earlier_outputs(depth, attn):
    depth.set_attn_implementation(attn)
    x = torch.randn(3, 33, 48)
    for j in (1, 7, 32):
        y = x.clone()
        y[:, j:] = torch.randn_like(y[:, j:])
        with torch.no_grad():
            a, b = depth(x), depth(y)
        torch.testing.assert_close(a[:, :j], b[:, :j], atol=1e-6, rtol=0)
        assert not torch.allclose(a[:, j:], b[:, j:])
    depth.set_attn_implementation("sdpa")


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_no_gradient_flows_from_the_future(depth, attn):
    depth.set_attn_implementation(attn)
    x = torch.randn(2, 10, 48, requires_grad=True)
    depth(x)[:, 4].sum().backward()
    assert x.grad[:, 5:].abs().max() == 0
    assert x.grad[:, :5].abs().min() >= 0 and x.grad[:, :5].abs().sum() > 0
    depth.set_attn_implementation("sdpa")


def test_eager_equals_sdpa(depth):
    x = torch.randn(4, 33, 48)
    with torch.no_grad():
        depth.set_attn_implementation("eager")
        a = depth(x)
        depth.set_attn_implementation("sdpa")
        b = depth(x)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_static_steps_equal_one_pass_and_a_new_frame_overwrites_the_last(depth, attn):
    """`step` (one position at a tensor index into a preallocated cache: the engine's form) gives the teacher-forced
    outputs; the next frame restarts at position 0 over the same buffers and is unaffected by the previous one."""
    depth.set_attn_implementation(attn)
    cache = depth.new_cache(3, torch.float32, "cpu")
    with torch.no_grad():
        for seed in (0, 1):  # two frames through the same cache
            x = torch.randn(3, 33, 48, generator=torch.Generator().manual_seed(seed))
            full = depth(x)
            steps = torch.stack([depth.step(x[:, i], cache, torch.tensor(i)) for i in range(33)], dim=1)
            torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)
    assert len(cache.keys) == len(depth.layers) and cache.keys[0].shape == (
        3,
        depth.layers[0].self_attn.num_kv_heads,
        33,
        depth.layers[0].self_attn.head_dim,
    )
    depth.set_attn_implementation("sdpa")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_flash_attention_2_is_causal_and_matches_sdpa():
    pytest.importorskip("flash_attn")
    torch.manual_seed(0)
    module = DepthTransformer(CatTTSConfig.tiny(), "sdpa").cuda().to(torch.bfloat16).eval()
    x = torch.randn(4, 33, 48, device="cuda", dtype=torch.bfloat16)
    y = x.clone()
    y[:, 10:] = torch.randn_like(y[:, 10:])
    with torch.no_grad():
        ref = module(x)
        module.set_attn_implementation("flash_attention_2")
        a, b = module(x), module(y)
        cache = module.new_cache(4, torch.bfloat16, "cuda")
        steps = torch.stack([module.step(x[:, i], cache, torch.tensor(i, device="cuda")) for i in range(33)], dim=1)
    torch.testing.assert_close(a, ref, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(a[:, :10], b[:, :10], atol=0, rtol=0)
    torch.testing.assert_close(steps, a, atol=2e-2, rtol=2e-2)
