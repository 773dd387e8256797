"""Continuous batching: a request's frames do not depend on its neighbours; slots are freed on every path."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest
import torch

from cat_tts.errors import InputError
from cat_tts.generation import (
    Engine,
    EngineClosed,
    EngineConfig,
    EngineError,
    GenerationConfig,
    QueueFull,
    RequestState,
)


def _live_tensors() -> int:
    gc.collect()
    return sum(type(o) in (torch.Tensor, torch.nn.Parameter) for o in gc.get_objects())


CONFIG = EngineConfig(max_slots=8, max_rows=160, prefill_chunk=16, sync_every=3, batch_invariant=True)


def _others(golden):
    """Seven other requests: different prompt lengths, depths, budgets and settings."""
    grids = [golden["grid_clone"], golden["grid_continuation"], golden["grid_plain"]]
    specs = []
    for i in range(7):
        grid = grids[i % 3][: 40 + 7 * i] if i % 2 else grids[i % 3]
        cfg = GenerationConfig(depth=[1, 5, 32, 7, 12, 3, 20][i], max_new_frames=4 + 3 * i, min_new_frames=2,
                               do_sample=i % 3 != 0, seed=100 + i, temperature=0.8 + 0.1 * i)  # fmt: skip
        specs.append((grid, cfg))
    return specs


def _run_mixed(engine, golden, target_grid, target_cfg, cancel_one=True):
    """Runs the target among seven others that join at different frames; one is cancelled mid-flight."""
    others = _others(golden)
    running = [engine.submit(g, c) for g, c in others[:3]]  # already running when the target arrives
    for _ in range(4):
        engine.step()
    target = engine.submit(target_grid, target_cfg)
    late = list(others[3:])
    frame = 0
    while not target.done:
        engine.step()
        frame += 1
        if late and frame % 2 == 0:  # the others join one by one, mid-flight
            running.append(engine.submit(*late.pop(0)))
        if cancel_one and frame == 5:
            running[1].cancel()
    for request in running:
        request.result()
    return target


@pytest.mark.parametrize("sampled", [False, True])
def test_a_request_gives_the_same_frames_alone_and_beside_seven_others(golden_model, golden, sampled):
    cfg = GenerationConfig(depth=12, max_new_frames=15, min_new_frames=15, do_sample=sampled, seed=123)
    alone = Engine(golden_model, CONFIG).submit(golden["grid_clone"], cfg).result()
    mixed = _run_mixed(Engine(golden_model, CONFIG), golden, golden["grid_clone"], cfg)
    assert mixed.frames.shape == alone.shape == (15, 13)
    assert torch.equal(mixed.frames, alone)


def test_requests_of_every_kind_finish_and_free_their_slots(golden_model, golden):
    engine = Engine(golden_model, CONFIG)
    requests = [engine.submit(g, c) for g, c in _others(golden)]
    for request in requests:
        frames = request.result()
        assert request.state == RequestState.FINISHED and request.finish_reason in ("audio_end", "budget")
        assert frames.shape[1] == 1 + request.depth and frames.shape[0] <= request.budget
        assert frames.shape[0] >= min(2, request.budget) or request.finish_reason == "budget"
    stats = engine.stats()
    assert stats.active_requests == 0 and stats.queued_requests == 0 and stats.requests_finished == 7


def test_cancelled_and_failed_requests_free_everything(golden_model, golden):
    engine = Engine(golden_model, CONFIG)
    warm = engine.submit(golden["grid_plain"], GenerationConfig(depth=2, max_new_frames=3))
    warm.result()
    del warm
    gc.collect()
    baseline = _live_tensors()

    refs = []
    requests = [engine.submit(g, c) for g, c in _others(golden)]
    for _ in range(6):
        engine.step()
    live = [r for r in (requests[5], requests[6]) if not r.done]  # the longest ones
    assert live
    for request in live:
        request.cancel()
    queued = engine.submit(golden["grid_plain"], GenerationConfig(depth=3, max_new_frames=50))
    queued.cancel()  # cancelled while still queued
    assert queued.state == RequestState.CANCELLED
    # a failing step (here: the temporal unit raises) fails the requests in flight, and the engine keeps serving
    original = engine.runner.units["temporal"]

    def broken(*args):
        raise RuntimeError("simulated device failure")

    engine.runner.units["temporal"] = broken
    engine.step()
    engine.runner.units["temporal"] = original
    for request in requests:
        assert request.done
        if request.state == RequestState.FAILED:
            with pytest.raises(EngineError, match="simulated device failure"):
                request.result()
    assert sum(r.state == RequestState.FAILED for r in requests) >= 1
    after = engine.submit(golden["grid_clone"], GenerationConfig(depth=4, max_new_frames=5, min_new_frames=5))
    assert after.result().shape == (5, 5)
    stats = engine.stats()
    assert stats.active_requests == 0 and stats.queued_requests == 0
    assert stats.requests_cancelled == len(live) + 1 and stats.requests_failed >= 1

    refs = [weakref.ref(r) for r in requests + [queued, after]]
    del requests, queued, after, request, live
    gc.collect()
    assert all(ref() is None for ref in refs)  # the engine keeps no reference to ended requests
    assert _live_tensors() == baseline  # no tensor left behind


def test_a_full_queue_answers_queue_full_and_a_closed_engine_refuses(golden_model, golden):
    engine = Engine(golden_model, EngineConfig(max_slots=2, max_rows=160, max_queue=1))
    cfg = GenerationConfig(depth=2, max_new_frames=20, min_new_frames=20)
    held = [engine.submit(golden["grid_plain"], cfg) for _ in range(3)]  # 2 slots + 1 waiting
    with pytest.raises(QueueFull, match="slots are busy"):
        engine.submit(golden["grid_plain"], cfg)
    assert not engine.can_admit()
    extra = engine.submit(golden["grid_plain"], cfg, wait=True)  # waits (driving the engine) for room
    engine.close(grace_s=0)
    with pytest.raises(EngineClosed):
        engine.submit(golden["grid_plain"], cfg)
    assert all(r.done for r in held + [extra])
    assert engine.stats().active_requests == 0


def test_close_lets_requests_finish_within_the_grace_period(golden_model, golden):
    engine = Engine(golden_model, EngineConfig(max_slots=2, max_rows=160))
    engine.start()
    request = engine.submit(golden["grid_plain"], GenerationConfig(depth=2, max_new_frames=6, min_new_frames=6))
    engine.close(grace_s=30)
    assert request.state == RequestState.FINISHED and request.num_frames == 6


@pytest.mark.parametrize(
    "prompt, cfg, match",
    [
        (torch.zeros(5, 3, dtype=torch.long), GenerationConfig(), "prompt must be an integer grid"),
        (torch.zeros(5, 33), GenerationConfig(), "integer token ids"),
        (torch.full((5, 33), 10_000), GenerationConfig(), "text ids"),
        (None, GenerationConfig(depth=33), "depth must be in 1..32"),
        (None, GenerationConfig(max_new_frames=1000), "does not fit a slot"),
    ],
)
def test_bad_submissions_raise_input_errors(golden_model, golden, prompt, cfg, match):
    engine = Engine(golden_model, EngineConfig(max_slots=1, max_rows=160))
    with pytest.raises(InputError, match=match):
        engine.submit(golden["grid_plain"] if prompt is None else prompt, cfg)


def test_a_background_thread_serves_concurrent_consumers(golden_model, golden):
    engine = Engine(golden_model, CONFIG)
    cfg = GenerationConfig(depth=6, max_new_frames=10, min_new_frames=10, do_sample=False)
    expected = Engine(golden_model, CONFIG).submit(golden["grid_clone"], cfg).result()
    engine.start()
    results, errors = [None] * 6, []

    def consume(i):
        try:
            results[i] = engine.submit(golden["grid_clone"], cfg).result(timeout=60)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    engine.close()
    assert not errors
    assert all(torch.equal(r, expected) for r in results)
    assert engine.stats().frame_steps < 6 * 10  # they shared frames: fewer steps than one after another
