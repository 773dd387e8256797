"""A request the engine cannot run fails alone: validation matches what the slot tensors hold, admission and prefill
are guarded per request, and a frame that fails is retried without the requests that just joined."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cat_tts.errors import FieldError
from cat_tts.generation import Engine, EngineConfig, EngineError, GenerationConfig, RequestState
from cat_tts.generation.config import FLOAT32_TINY

CONFIG = EngineConfig(max_slots=8, max_rows=160, prefill_chunk=16, sync_every=3, batch_invariant=True)
POISON = 666  # the seed that marks the faulty request


def _seven(golden):
    grids = [golden["grid_clone"], golden["grid_continuation"], golden["grid_plain"]]
    return [
        (
            grids[i % 3],
            GenerationConfig(
                depth=[1, 5, 32, 7, 12, 3, 20][i],
                max_new_frames=6 + i,
                min_new_frames=6 + i,
                do_sample=i % 2 == 0,
                seed=200 + i,
            ),
        )  # fmt: skip
        for i in range(7)
    ]


def _alone(golden_model, golden):
    return [Engine(golden_model, CONFIG).submit(g, c).result() for g, c in _seven(golden)]


@pytest.fixture(scope="module")
def alone(golden_model, golden):
    return _alone(golden_model, golden)


def _run_with_poison(engine, golden, poison_cfg):
    """Seven requests running, then a faulty one joins; returns (the seven, the faulty one)."""
    seven = [engine.submit(g, c) for g, c in _seven(golden)]
    for _ in range(3):
        engine.step()
    poison = engine.submit(golden["grid_clone"], poison_cfg)
    for request in seven:
        request.result()
    return seven, poison


@pytest.mark.parametrize("where", ["setup_slot", "prefill_chunk", "frame"])
def test_a_faulty_request_injected_into_a_running_batch_of_seven_fails_alone(golden_model, golden, alone, where,
                                                                             monkeypatch):  # fmt: skip
    engine = Engine(golden_model, CONFIG)
    runner = engine.runner
    original = getattr(runner, where)

    def poisoned_slot() -> int | None:
        return next((r.slot for r in engine._slots if r is not None and r.seed == POISON), None)

    def faulty(*args, **kwargs):
        if where == "frame":  # the shared frame raises while the faulty request's slot is in it
            slot = poisoned_slot()
            if slot is not None and bool(runner.state.active[slot]):
                raise RuntimeError("simulated fault of one request")
        else:
            request = args[-1]
            if request.seed == POISON:
                raise OverflowError("simulated fault of one request")
        return original(*args, **kwargs)

    monkeypatch.setattr(runner, where, faulty)
    seven, poison = _run_with_poison(engine, golden, GenerationConfig(depth=4, max_new_frames=20, seed=POISON))
    assert poison.state == RequestState.FAILED
    with pytest.raises(EngineError, match="simulated fault"):
        poison.result()
    for request, expected in zip(seven, alone, strict=True):
        assert request.state == RequestState.FINISHED
        assert torch.equal(request.frames, expected)  # the frames it produces alone
    stats = engine.stats()
    assert stats.requests_failed == 1 and stats.requests_finished == 7 and stats.active_requests == 0
    # and the engine keeps serving
    after = engine.submit(golden["grid_plain"], GenerationConfig(depth=2, max_new_frames=3, min_new_frames=3))
    assert after.result().shape == (3, 3)


@pytest.mark.parametrize(
    "field, value",
    [
        ("top_k", 2**63),
        ("control_top_k", 2**64),
        ("seed", 2**63),
        ("max_new_frames", 2**63),
        ("min_new_frames", -1),
        ("repetition_penalty", 1e-46),  # 0 in float32: a division by zero
        ("temperature", 1e-46),  # 0 in float32 would be greedy, not what was asked
        ("top_p", 1e-300),
        ("control_temperature", float("inf")),
        ("top_p", float("nan")),
        ("depth", 0),
    ],
)
def test_values_the_slot_tensors_cannot_hold_are_refused_naming_the_field(field, value):
    with pytest.raises(FieldError) as err:
        GenerationConfig(**{field: value})
    assert err.value.field == field and field in str(err.value)


def test_the_extreme_values_that_validate_load_and_run(golden_model, golden):
    """Every value at the edge of its storage type runs: nothing overflows when a slot is loaded."""
    extreme = GenerationConfig(
        depth=3, top_k=2**63 - 1, control_top_k=2**63 - 1, seed=2**63 - 1, temperature=float(np.float32(FLOAT32_TINY)),
        repetition_penalty=100.0, top_p=FLOAT32_TINY, control_temperature=100.0, max_new_frames=5, min_new_frames=5,
    )  # fmt: skip
    engine = Engine(golden_model, EngineConfig(max_slots=2, max_rows=160))
    request = engine.submit(golden["grid_clone"], extreme)
    frames = request.result()
    assert request.state == RequestState.FINISHED and frames.shape == (5, 4)
    assert int(frames[:, 1:].max()) < golden_model.config.audio_pad_code


def test_a_pool_whose_caches_cannot_fit_in_memory_is_refused_before_allocating(golden_model, monkeypatch):
    from cat_tts.generation import runner

    need = runner.cache_bytes(golden_model, EngineConfig(max_slots=4, max_rows=160))
    assert need == 4 * runner.cache_bytes(golden_model, EngineConfig(max_slots=1, max_rows=160))  # linear in slots
    monkeypatch.setattr(runner.os, "sysconf", lambda name: 1 if name == "SC_PAGE_SIZE" else need - 1)
    with pytest.raises(FieldError) as err:
        Engine(golden_model, EngineConfig(max_slots=4, max_rows=160))
    assert err.value.field == "max_slots" and "GiB" in str(err.value)


def test_errors_about_values_name_the_field_the_caller_gave():
    with pytest.raises(FieldError) as err:  # a bitrate above the model's is about the bitrate, not the depth
        GenerationConfig(bitrate_kbps=4.2).depth_range(32)
    assert err.value.field == "bitrate_kbps" and "at most 4" in str(err.value)
    for field, value in (("temperature", 10**400), ("top_k", 10**400), ("seed", -(10**400))):
        with pytest.raises(FieldError) as err:
            GenerationConfig(**{field: value})
        assert err.value.field == field and len(str(err.value)) < 200  # no overflow, no 400-digit message
    assert GenerationConfig(bitrate_kbps=2.0).with_overrides(depth=5).depth == 5  # the one given replaces the other
    assert GenerationConfig(depth=5).with_overrides(bitrate_kbps=1.0).depth == 8
    assert GenerationConfig(depth=8, bitrate_kbps=1.0).depth == 8  # both given and agreeing (a copy of a config)
    with pytest.raises(FieldError) as err:  # both given and disagreeing
        GenerationConfig(depth=8, bitrate_kbps=2.0)
    assert err.value.field == "bitrate_kbps" and "depth 16" in str(err.value)
