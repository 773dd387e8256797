"""The engine on CUDA: one captured graph per frame gives the eager frames, the default (compiled + captured) path
gives the eager greedy frames, requests stay batch-invariant with `batch_invariant`, bf16 runs, and device memory
returns to its level. Skipped without a GPU (run by scripts/gpu_check.sh)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from cat_tts.generation import Engine, EngineConfig, GenerationConfig

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(scope="module")
def cuda_model(golden_model):
    import copy

    return copy.deepcopy(golden_model).to("cuda")


def _specs(golden):
    grids = [golden["grid_clone"], golden["grid_continuation"], golden["grid_plain"], golden["grid_clone"][:50]]
    return [
        (
            grids[i % 4],
            GenerationConfig(
                depth=[1, 32, 12, 5, 20, 3][i],
                max_new_frames=6 + 2 * i,
                min_new_frames=4,
                do_sample=i % 2 == 1,
                seed=10 + i,
            ),
        )  # fmt: skip
        for i in range(6)
    ]


def _run(engine, golden):
    specs = _specs(golden)
    requests = [engine.submit(*specs[0]), engine.submit(*specs[1])]
    step = 0
    while not all(r.done for r in requests) or len(requests) < len(specs):
        engine.step()
        step += 1
        if step % 3 == 0 and len(requests) < len(specs):
            requests.append(engine.submit(*specs[len(requests)]))
    return [r.frames for r in requests]


CONFIG = dict(max_slots=4, max_rows=160, prefill_chunk=32, sync_every=3)


def test_one_graph_per_frame_gives_the_eager_frames(cuda_model, golden, monkeypatch):
    eager = _run(Engine(cuda_model, EngineConfig(**CONFIG, compile=False)), golden)
    graphed_engine = Engine(cuda_model, EngineConfig(**CONFIG, compile="graphs"))
    runner = graphed_engine.runner
    assert runner.uses_cuda_graphs and not runner.uses_compile and runner.buckets == (1, 2, 4)
    graphed_engine.warmup()
    assert set(runner._graphs) == {(b, runner.k_bucket(k)) for b in (1, 2, 4) for k in range(1, 33)}
    replays, frames = [], []
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", lambda self, f=torch.cuda.CUDAGraph.replay: replays.append(1)
                        or f(self))  # fmt: skip
    original = runner.frame
    monkeypatch.setattr(runner, "frame", lambda *a: frames.append(1) or original(*a))
    graphed = _run(graphed_engine, golden)
    assert len(replays) == len(frames) > 20  # one replay per frame: the whole frame is one graph
    for a, b in zip(eager, graphed, strict=True):
        assert a.shape == b.shape and torch.equal(a, b)


def test_the_default_compiled_and_captured_frame_gives_the_eager_greedy_frames(cuda_model, golden):
    specs = [(g, replace(c, do_sample=False)) for g, c in _specs(golden)]
    eager = [Engine(cuda_model, EngineConfig(**CONFIG, compile=False)).submit(*s).result() for s in specs]
    engine = Engine(cuda_model, EngineConfig(**CONFIG))  # compile="auto": torch.compile + one CUDA graph per frame
    assert engine.runner.uses_cuda_graphs and engine.runner.uses_compile
    engine.warmup()
    fast = [engine.submit(*s).result() for s in specs]
    for a, b in zip(eager, fast, strict=True):
        assert a.shape == b.shape and torch.equal(a, b)


@pytest.mark.parametrize("sampled", [False, True])
def test_a_request_is_batch_invariant_on_cuda_at_a_fixed_bucket(cuda_model, golden, sampled):
    config = EngineConfig(max_slots=8, max_rows=160, prefill_chunk=16, sync_every=3, batch_invariant=True)
    cfg = GenerationConfig(depth=12, max_new_frames=12, min_new_frames=12, do_sample=sampled, seed=7)
    alone = Engine(cuda_model, config).submit(golden["grid_clone"], cfg).result()
    engine = Engine(cuda_model, config)
    others = [engine.submit(g, c) for g, c in _specs(golden)[:4]]
    target = engine.submit(golden["grid_clone"], cfg)
    late = [engine.submit(g, c) for g, c in _specs(golden)[4:]]
    assert torch.equal(target.result(), alone)
    for r in others + late:
        r.result()


def test_bf16_engine_generates_the_requested_frames(cuda_model, golden):
    model = cuda_model.to(torch.bfloat16)
    try:
        out = model.generate(golden["grid_clone"][None], depth=32, max_new_frames=8, min_new_frames=8, seed=0)
        assert out.frames.shape == (1, 8, 33) and int(out.lengths[0]) == 8
    finally:
        cuda_model.to(torch.float32)


def test_device_memory_returns_to_its_level_after_cancellations(cuda_model, golden):
    engine = Engine(cuda_model, EngineConfig(max_slots=4, max_rows=160))
    engine.warmup()
    engine.submit(golden["grid_plain"], GenerationConfig(depth=4, max_new_frames=3)).result()
    torch.cuda.synchronize()
    level = torch.cuda.memory_allocated()
    requests = [engine.submit(g, c) for g, c in _specs(golden)]
    for _ in range(5):
        engine.step()
    for r in requests[::2]:
        r.cancel()
    for r in requests:
        r.result()
    del requests
    torch.cuda.synchronize()
    assert engine.stats().active_requests == 0
    assert torch.cuda.memory_allocated() == level
