"""The engine computes the released model's function: golden frames of the official code, cached == recomputed."""

from __future__ import annotations

import pytest
import torch

from cat_tts.errors import InputError
from cat_tts.generation import Engine, EngineConfig, GenerationConfig, generate

AUDIO_END = 504
GEN_SLOT = 506


def _golden_prefix(rows: torch.Tensor, k: int) -> torch.Tensor:
    """Official rows before the first audio_end, channel 0 + layers 1..K (the defined part)."""
    ends = (rows[:, 0] == AUDIO_END).nonzero()
    n = int(ends[0]) if len(ends) else rows.shape[0]
    return rows[:n, : 1 + k]


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)


@torch.inference_mode()
def naive_generate(model, input_ids, mask, depth, frames, control_tokens="full"):
    """Greedy reference without any cache: every frame re-runs the temporal model on the whole sequence and
    every depth step re-runs the depth transformer on the whole growing frame sequence (like upstream).

    Returns, per sequence, the `[F_b, 1+K]` frames before its first audio_end.
    """
    ids = model.config.token_ids
    pad = model.config.audio_pad_code
    seq, mask = input_ids.clone(), mask.long().clone()
    b = seq.shape[0]
    done = torch.zeros(b, dtype=torch.bool)
    out = [[] for _ in range(b)]
    for _ in range(frames):
        h = model.temporal(
            inputs_embeds=model.embed_frames(seq, depth), attention_mask=mask, position_ids=_positions(mask)
        ).last_hidden_state[:, -1]
        xs = [model.depth_input(h)]
        toks = []
        for c in range(depth + 1):
            y = model.depth(torch.stack(xs, dim=1))[:, -1]  # recompute all positions
            logits = model.channel_logits(c, y)
            if c == 0 and control_tokens == "audio":
                keep = torch.full_like(logits, float("-inf"))
                keep[:, [GEN_SLOT, AUDIO_END]] = 0
                logits = logits + keep
            if c > 0:
                logits[:, pad] = float("-inf")
            tok = logits.argmax(-1)
            toks.append(tok)
            xs.append(model.depth_input(model.channel_embedding(c, tok)))
        frame = torch.stack(toks, dim=-1)  # [B, 1+K]
        for i in range(b):
            if not done[i]:
                if frame[i, 0] == ids.audio_end:
                    done[i] = True
                else:
                    out[i].append(frame[i])
        if done.all():
            break
        row = torch.full((b, 1, seq.shape[-1]), pad, dtype=torch.long)
        row[:, 0, : depth + 1] = frame
        row[done, 0, 0] = ids.audio_end
        row[done, 0, 1:] = pad
        seq = torch.cat([seq, row], dim=1)
        mask = torch.cat([mask, torch.ones(b, 1, dtype=torch.long)], dim=1)
    return [torch.stack(o) if o else torch.zeros(0, depth + 1, dtype=torch.long) for o in out]


@pytest.mark.parametrize("prompt", ["clone", "continuation"])
@pytest.mark.parametrize("k", [1, 12, 32])
def test_greedy_full_control_matches_official_frames(golden_model, golden, prompt, k):
    out = golden_model.generate(
        golden[f"grid_{prompt}"][None], depth=k, max_new_frames=20, do_sample=False, control_tokens="full"
    )
    expected = _golden_prefix(golden[f"gen_{prompt}_k{k}"], k)
    assert out.frames.shape == (1, expected.shape[0], 1 + k)
    assert torch.equal(out.frames[0], expected)
    assert int(out.lengths[0]) == expected.shape[0]
    ended = bool((golden[f"gen_{prompt}_k{k}"][:, 0] == AUDIO_END).any())
    assert bool(out.finished[0]) == ended


def test_greedy_batch_with_left_padding_matches_official(golden_model, golden):
    out = golden_model.generate(
        golden["batch_input_ids"],
        golden["batch_attention_mask"],
        depth=12,
        max_new_frames=20,
        do_sample=False,
        control_tokens="full",
    )
    for b in range(2):
        expected = _golden_prefix(golden["gen_batch_k12"][b], 12)
        assert int(out.lengths[b]) == expected.shape[0]
        assert torch.equal(out.frames[b, : expected.shape[0]], expected)
    # rows past a sequence's length are padding
    short = int(out.lengths.argmin())
    assert (out.frames[short, int(out.lengths[short]) :, 1:] == golden_model.config.audio_pad_code).all()


@pytest.mark.parametrize("prefill_chunk", [7, 256])
@pytest.mark.parametrize("k", [1, 7, 32])
@pytest.mark.parametrize("control", ["full", "audio"])
def test_cached_generation_equals_recomputed_from_scratch(golden_model, golden, k, control, prefill_chunk):
    grid = golden["grid_clone"][None]
    mask = torch.ones(grid.shape[:2], dtype=torch.long)
    engine = Engine(golden_model, EngineConfig(max_slots=2, max_rows=128, prefill_chunk=prefill_chunk))
    out = generate(golden_model, grid, None, depth=k, max_new_frames=12, do_sample=False, control_tokens=control,
                   engine=engine)  # fmt: skip
    (expected,) = naive_generate(golden_model, grid, mask, k, 12, control)
    assert torch.equal(out.frames[0, : int(out.lengths[0])], expected)


@pytest.mark.parametrize("k", [3, 32])
def test_cached_batch_generation_equals_recomputed_from_scratch(golden_model, golden, k):
    ids, mask = golden["batch_input_ids"], golden["batch_attention_mask"]
    out = golden_model.generate(ids, mask, depth=k, max_new_frames=10, do_sample=False, control_tokens="full")
    expected = naive_generate(golden_model, ids, mask, k, 10)
    for b in range(2):
        assert torch.equal(out.frames[b, : int(out.lengths[b])], expected[b])


def test_a_frame_costs_one_single_position_depth_step_per_channel(golden_model, golden):
    calls = []
    depth = golden_model.depth
    original = depth.step

    def spy(x, cache, position):
        calls.append((x.shape, int(position)))
        return original(x, cache, position)

    depth.step = spy
    try:
        out = golden_model.generate(golden["grid_clone"][None], depth=16, max_new_frames=5, min_new_frames=5, seed=0)
    finally:
        del depth.step
    assert out.steps == 5
    assert [p for _, p in calls] == list(range(17)) * 5  # positions 0..K, one new position per call
    assert all(shape == calls[0][0] for shape, _ in calls)  # static shapes: [slots, Dd] every time


def test_audio_control_never_computes_the_text_head(golden_model, golden):
    head = golden_model.heads[0]

    def forbidden(*_):
        raise AssertionError("full text head computed")

    head.forward = forbidden
    try:
        out = golden_model.generate(golden["grid_clone"][None], depth=4, max_new_frames=6, seed=0)
    finally:
        del head.forward
    rows = out.frames[0, : int(out.lengths[0])]
    assert (rows[:, 0] == GEN_SLOT).all()


def test_sampling_never_emits_the_pad_code_and_respects_min_frames(golden_model, golden):
    pad = golden_model.config.audio_pad_code
    out = golden_model.generate(
        golden["grid_clone"][None], depth=32, max_new_frames=6, min_new_frames=6, temperature=50.0, top_k=0,
        top_p=1.0, repetition_penalty=1.0, seed=3,
    )  # fmt: skip
    assert int(out.lengths[0]) == 6 and not bool(out.finished[0])
    codes = out.frames[0, :, 1:]
    assert (codes >= 0).all() and (codes < pad).all()
    assert codes.unique().numel() > 20  # really sampled over the vocabulary


def test_budget_stops_a_runaway_generation(golden_model, golden):
    out = golden_model.generate(
        golden["grid_continuation"][None], depth=1, max_new_frames=3, do_sample=False, control_tokens="full"
    )
    assert out.frames.shape == (1, 3, 2) and int(out.lengths[0]) == 3 and not bool(out.finished[0])
    assert out.codes.shape == (1, 1, 3)


def test_seeded_sampling_is_reproducible_and_the_seed_matters(golden_model, golden):
    grid, mask = golden["batch_input_ids"], golden["batch_attention_mask"]
    kw = dict(depth=8, max_new_frames=8, min_new_frames=8, temperature=1.5, top_k=0, top_p=1.0)
    a = golden_model.generate(grid, mask, seed=123, **kw)
    b = golden_model.generate(grid, mask, seed=123, **kw)
    c = golden_model.generate(grid, mask, seed=124, **kw)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.lengths, b.lengths)
    assert not torch.equal(a.frames, c.frames)
    # row b of a seeded batch uses seed + b, and a request's draws do not depend on its neighbours
    alone = golden_model.generate(grid[1:], mask[1:], seed=124, **kw)
    assert torch.equal(a.frames[1, : int(a.lengths[1])], alone.frames[0, : int(alone.lengths[0])])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(depth=0), "depth"),
        (dict(depth=33), "depth"),
        (dict(max_new_frames=0), "max_new_frames"),
        (dict(top_p=0.0), "top_p"),
        (dict(temperature=-1.0), "temperature"),
        (dict(min_new_frames=5, max_new_frames=2), "min_new_frames"),
        (dict(control_tokens="text"), "control_tokens"),
        (dict(beams=2), "unknown generation settings"),
    ],
)
def test_invalid_generation_arguments_raise_clear_errors(golden_model, golden, kwargs, match):
    with pytest.raises(InputError, match=match):
        golden_model.generate(golden["grid_plain"][None], **kwargs)


def test_generate_accepts_a_config_and_overrides(golden_model, golden):
    cfg = GenerationConfig(depth=2, max_new_frames=4, do_sample=False)
    out = generate(golden_model, golden["grid_plain"][None], None, cfg)
    out2 = golden_model.generate(golden["grid_plain"][None], config=GenerationConfig(), depth=2, max_new_frames=4,
                                 do_sample=False)  # fmt: skip
    assert torch.equal(out.frames, out2.frames)


def test_the_packed_projection_view_gives_the_same_frames_and_leaves_the_model_alone(golden_model, golden):
    """The view CUDA engines run (stacked q/k/v and gate/up products) computes the same frames; the model keeps its
    parameters, modules and state dict."""
    from cat_tts.generation.views import packed_view

    keys = list(golden_model.state_dict())
    view = packed_view(golden_model)
    assert view.depth.layers[0].self_attn.qkv_proj is not None and view.depth_input.gate_up_proj is not None
    assert golden_model.depth.layers[0].self_attn.qkv_proj is None and golden_model.depth_input.gate_up_proj is None
    assert list(golden_model.state_dict()) == keys
    config = GenerationConfig(depth=32, max_new_frames=20, do_sample=False, control_tokens="full")
    cfg = EngineConfig(max_slots=2, max_rows=128)
    packed = Engine(view, cfg).submit(golden["grid_clone"], config).result()
    assert torch.equal(packed, _golden_prefix(golden["gen_clone_k32"], 32))  # the official frames


@pytest.mark.parametrize("prefill_chunk", [7, 64])
@pytest.mark.parametrize("k", [1, 32])
def test_fixed_size_prefill_chunks_give_the_frames_of_the_exact_prefill(golden_model, golden, k, prefill_chunk):
    """The static prefill compiled engines run (chunks padded to a fixed size, slot/length/depth in device buffers,
    attention over the whole slot under a mask) fills the cache as the exact-size prefill does."""
    config = GenerationConfig(depth=k, max_new_frames=10, min_new_frames=10, do_sample=False)
    cfg = EngineConfig(max_slots=2, max_rows=128, prefill_chunk=prefill_chunk)
    exact = Engine(golden_model, cfg)
    static = Engine(golden_model, cfg)
    static.runner.static_prefill = True
    for grid in (golden["grid_clone"], golden["grid_continuation"][:50]):
        expected = exact.submit(grid, config).result()
        assert torch.equal(static.submit(grid, config).result(), expected)
