"""torch.compile(fullgraph=True) of the engine's frame units: the same frames as eager, no recompilation."""

from __future__ import annotations

import pytest

from cat_tts.generation import Engine, EngineConfig, GenerationConfig

CONFIG = dict(max_slots=4, max_rows=160, prefill_chunk=32, sync_every=2)


def _schedule(engine: Engine, golden) -> tuple[list, int]:
    """Requests at K = 1 and 32 (greedy and seeded sampling) joining and leaving while frames run."""
    specs = [
        (golden["grid_clone"], GenerationConfig(depth=1, max_new_frames=24, min_new_frames=24, do_sample=False)),
        (golden["grid_plain"], GenerationConfig(depth=32, max_new_frames=9, min_new_frames=9, do_sample=False)),
        (golden["grid_continuation"], GenerationConfig(depth=32, max_new_frames=10, min_new_frames=10, seed=3)),
        (golden["grid_clone"][:50], GenerationConfig(depth=1, max_new_frames=8, min_new_frames=8, seed=4)),
        (golden["grid_plain"], GenerationConfig(depth=17, max_new_frames=6, min_new_frames=6, do_sample=False)),
    ]
    requests = [engine.submit(*specs[0]), engine.submit(*specs[1])]
    steps = 0
    while not all(r.done for r in requests) or len(requests) < len(specs):
        engine.step()
        steps += 1
        if steps in (3, 6, 11) and len(requests) < len(specs):
            requests.append(engine.submit(*specs[len(requests)]))
    return [r.frames for r in requests], engine.stats().frame_steps


@pytest.mark.slow  # ~1 min of CPU compilation; CI runs the slow tier too
def test_compiled_frames_equal_eager_frames_and_nothing_recompiles(golden_model, golden):
    import torch._dynamo

    eager, _ = _schedule(Engine(golden_model, EngineConfig(**CONFIG, compile=False)), golden)
    torch._dynamo.reset()
    compiled_engine = Engine(golden_model, EngineConfig(**CONFIG, compile=True))
    assert compiled_engine.runner.uses_compile
    compiled_engine.warmup()  # compiles the control, code and temporal units once
    with torch._dynamo.config.patch(error_on_recompile=True):  # any recompilation from here on raises
        compiled, frames_run = _schedule(compiled_engine, golden)
    assert frames_run >= 20
    assert compiled_engine.stats().requests_failed == 0
    for a, b in zip(eager, compiled, strict=True):
        assert a.shape == b.shape and a.shape[0] > 0
        assert torch.equal(a, b)
