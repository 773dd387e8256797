"""CatTTSModel forward/loss: against a slow obvious reference, PSD properties, causality, shapes and errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cat_tts.model import CatTTSConfig, CatTTSModel
from cat_tts.model.tiny import build_tiny_model

from .conftest import make_batch


def reference_forward(model: CatTTSModel, ids, mask, labels, depths=None):
    """The plain model written as slowly and obviously as possible.

    Every frame runs the full 1+N-position depth sequence; entries are masked afterwards. Returns per-channel
    mean losses (NaN where a channel has no kept label) and dense logits [B, T, V_c].
    """
    cfg = model.config
    b_size, t_size, n_ch = ids.shape
    depths = [cfg.n_vq] * b_size if depths is None else [int(d) for d in depths]
    emb = torch.zeros(b_size, t_size, cfg.hidden_size)
    for b in range(b_size):
        emb[b] = model.embeddings[0](ids[b, :, 0])
        for c in range(1, depths[b] + 1):
            emb[b] = emb[b] + model.embeddings[c](ids[b, :, c])
    h = model.temporal(inputs_embeds=emb, attention_mask=mask).last_hidden_state
    kept = torch.zeros(b_size, t_size, n_ch, dtype=torch.bool)
    for b in range(b_size):
        for t in range(t_size):
            for c in range(n_ch):
                lab = int(labels[b, t, c])
                kept[b, t, c] = lab != -100 and not (c > 0 and lab == cfg.audio_pad_code) and c <= depths[b]
    logits = [torch.zeros(b_size, t_size, cfg.channel_vocab_size(c)) for c in range(n_ch)]
    for b in range(b_size):
        for t in range(t_size):
            seq = [h[b, t]]
            for i in range(1, n_ch):
                if kept[b, t, i - 1]:
                    seq.append(model.embeddings[i - 1](labels[b, t, i - 1]))
                else:
                    seq.append(torch.zeros(cfg.hidden_size))
            out = model.depth(model.depth_input(torch.stack(seq)[None]))[0]  # [C, Dd]
            for c in range(n_ch):
                logits[c][b, t] = model.channel_logits(c, out[c])
    losses = []
    for c in range(n_ch):
        k = kept[..., c]
        losses.append(F.cross_entropy(logits[c][k], labels[..., c][k]) if k.any() else torch.tensor(float("nan")))
    return torch.stack(losses), logits, kept


@pytest.mark.parametrize("depths", [None, [32, 32], [3, 17], [1, 31]])
def test_forward_matches_slow_reference(tiny_model, tiny_config, depths):
    ids, mask, labels = make_batch(tiny_config, batch=2, frames=6, pad_left=1)
    d = None if depths is None else torch.tensor(depths)
    with torch.no_grad():
        out = tiny_model(ids, mask, labels, depths=d)
        ref_losses, ref_logits, kept = reference_forward(tiny_model, ids, mask, labels, depths)
    present = ~torch.isnan(ref_losses)
    assert torch.equal(out.channel_counts > 0, present)
    assert torch.equal(out.channel_counts, kept.sum(dim=(0, 1)))
    torch.testing.assert_close(out.channel_losses[present], ref_losses[present], atol=1e-5, rtol=1e-5)
    assert torch.all(out.channel_losses[~present] == 0)
    torch.testing.assert_close(out.loss, ref_losses[present].mean(), atol=1e-5, rtol=1e-5)
    for c in range(tiny_config.num_channels):
        dense = out.dense_logits(c)
        computed = ~torch.isnan(dense[..., 0])
        assert torch.equal(computed, kept[..., c]), f"channel {c}: logits computed exactly on kept rows"
        torch.testing.assert_close(dense[computed], ref_logits[c][computed], atol=1e-5, rtol=1e-5)


def test_depths_none_equals_full_depth_equals_int(tiny_model, tiny_config):
    ids, mask, labels = make_batch(tiny_config, seed=1)
    with torch.no_grad():
        a = tiny_model(ids, mask, labels)
        b = tiny_model(ids, mask, labels, depths=torch.full((2,), tiny_config.n_vq))
        c = tiny_model(ids, mask, labels, depths=tiny_config.n_vq)
    assert torch.equal(a.loss, b.loss) and torch.equal(a.loss, c.loss)
    assert torch.equal(a.channel_losses, b.channel_losses)


def test_sample_kept_at_depth_ignores_its_dropped_layers(tiny_model, tiny_config):
    ids, mask, labels = make_batch(tiny_config, batch=2, seed=2)
    depths = torch.tensor([5, 32])
    ids2, labels2 = ids.clone(), labels.clone()
    g = torch.Generator().manual_seed(9)
    ids2[0, :, 6:] = torch.randint(0, 1024, ids2[0, :, 6:].shape, generator=g)
    labels2[0, :, 6:] = torch.randint(0, 1024, labels2[0, :, 6:].shape, generator=g)
    with torch.no_grad():
        a = tiny_model(ids, mask, labels, depths=depths)
        b = tiny_model(ids2, mask, labels2, depths=depths)
    torch.testing.assert_close(a.loss, b.loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.channel_losses, b.channel_losses, atol=1e-6, rtol=0)
    for ch in range(tiny_config.num_channels):
        torch.testing.assert_close(a.logits[ch], b.logits[ch], atol=1e-6, rtol=0)


def test_dropped_layers_receive_no_gradient(tiny_config):
    model = build_tiny_model(seed=3)
    model.train()
    ids, mask, labels = make_batch(tiny_config, batch=1, seed=3)
    k = 5
    out = model(ids, mask, labels, depths=torch.tensor([k]))
    out.loss.backward()
    for c in range(1, tiny_config.num_channels):
        if c > k:
            assert model.embeddings[c].weight.grad is None, f"embedding of dropped layer {c} got a gradient"
            assert model.heads[c].weight.grad is None, f"head of dropped layer {c} got a gradient"
            assert model.depth_output[c].down_proj.weight.grad is None
        else:
            assert model.heads[c].weight.grad is not None and model.heads[c].weight.grad.abs().sum() > 0
    assert model.embeddings[k].weight.grad.abs().sum() > 0  # layer k still feeds the temporal input


def test_loss_is_uniform_mean_over_present_channels(tiny_model, tiny_config):
    ids, mask, labels = make_batch(tiny_config, batch=2, seed=4)
    labels[..., 7] = -100  # channel 7 absent from the batch
    with torch.no_grad():
        out = tiny_model(ids, mask, labels, depths=torch.tensor([3, 20]))
    counts = out.channel_counts
    assert counts[7] == 0 and counts[21:].sum() == 0 and counts[:4].min() > 0
    assert not torch.isnan(out.loss)
    present = counts > 0
    torch.testing.assert_close(out.loss, out.channel_losses[present].mean())
    # channel 2 mixes both samples; channel 10 only sample 1: the means are over (sample, frame) pairs
    assert counts[2] > counts[10] > 0


def test_return_logits_false_gives_the_same_loss(tiny_model, tiny_config):
    ids, mask, labels = make_batch(tiny_config, seed=17)
    with torch.no_grad():
        a = tiny_model(ids, mask, labels, depths=torch.tensor([2, 30]))
        b = tiny_model(ids, mask, labels, depths=torch.tensor([2, 30]), return_logits=False)
    assert b.logits is None and b.logit_rows is None
    assert torch.equal(a.loss, b.loss) and torch.equal(a.channel_counts, b.channel_counts)


def test_no_labels_kept_gives_zero_loss_with_gradient(tiny_config):
    model = build_tiny_model(seed=5)
    ids, mask, labels = make_batch(tiny_config, seed=5)
    labels[:] = -100
    out = model(ids, mask, labels)
    assert out.loss.item() == 0.0 and out.channel_counts.sum() == 0
    out.loss.backward()  # no error


def test_pad_code_is_never_a_target(tiny_model, tiny_config):
    ids, mask, labels = make_batch(tiny_config, seed=6)
    labels2 = labels.clone()
    labels2[0, 3, 4] = tiny_config.audio_pad_code
    labels2[0, 3, 5] = -100
    labels3 = labels.clone()
    labels3[0, 3, 4] = -100
    labels3[0, 3, 5] = -100
    with torch.no_grad():
        a = tiny_model(ids, mask, labels2)
        b = tiny_model(ids, mask, labels3)
    assert torch.equal(a.channel_counts, b.channel_counts)
    torch.testing.assert_close(a.loss, b.loss, atol=0, rtol=0)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_temporal_causality(tiny_config, attn):
    model = build_tiny_model(seed=7)
    model.set_attn_implementation(attn)
    ids, mask, labels = make_batch(tiny_config, batch=1, frames=8, seed=7)
    labels[:] = labels.clamp(min=0)  # supervise every entry
    labels[..., 1:] = labels[..., 1:] % tiny_config.audio_vocab_size
    t0 = 4
    ids2, labels2 = ids.clone(), labels.clone()
    ids2[:, t0 + 1 :] = (ids2[:, t0 + 1 :] + 7) % 500
    labels2[:, t0 + 1 :] = (labels2[:, t0 + 1 :] + 11) % 500
    with torch.no_grad():
        a, b = model(ids, mask, labels), model(ids2, mask, labels2)
    for c in range(tiny_config.num_channels):
        da, db = a.dense_logits(c), b.dense_logits(c)
        torch.testing.assert_close(da[:, : t0 + 1], db[:, : t0 + 1], atol=1e-6, rtol=0)
        assert not torch.allclose(da[:, t0 + 1 :], db[:, t0 + 1 :])


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_depth_causality_through_the_model(tiny_config, attn):
    """Channel c's logits depend on the labels of channels < c only (never on later layers)."""
    model = build_tiny_model(seed=8)
    model.set_attn_implementation(attn)
    ids, mask, labels = make_batch(tiny_config, batch=1, frames=5, seed=8)
    labels[:] = labels.clamp(min=0) % tiny_config.audio_vocab_size
    j = 9
    labels2 = labels.clone()
    labels2[..., j:] = (labels2[..., j:] + 5) % tiny_config.audio_vocab_size
    with torch.no_grad():
        a, b = model(ids, mask, labels), model(ids, mask, labels2)
    for c in range(j + 1):
        torch.testing.assert_close(a.logits[c], b.logits[c], atol=1e-6, rtol=0)
    assert not torch.allclose(a.logits[j + 1], b.logits[j + 1])


def test_eager_and_sdpa_compute_the_same_function(tiny_config):
    model = build_tiny_model(seed=10)
    ids, mask, labels = make_batch(tiny_config, pad_left=2, seed=10)
    with torch.no_grad():
        model.set_attn_implementation("sdpa")
        a = model(ids, mask, labels)
        model.set_attn_implementation("eager")
        b = model(ids, mask, labels)
    torch.testing.assert_close(a.channel_losses, b.channel_losses, atol=1e-5, rtol=1e-5)


def test_embed_frames_sums_kept_layers(tiny_model, tiny_config):
    ids, _, _ = make_batch(tiny_config, seed=11)
    with torch.no_grad():
        full = tiny_model.embed_frames(ids)
        k3 = tiny_model.embed_frames(ids, 3)
        mixed = tiny_model.embed_frames(ids, torch.tensor([3, 32]))
        manual = tiny_model.channel_embedding(0, ids[..., 0])
        for c in range(1, 4):
            manual = manual + tiny_model.channel_embedding(c, ids[..., c])
    torch.testing.assert_close(k3, manual)
    torch.testing.assert_close(mixed[0], k3[0])
    torch.testing.assert_close(mixed[1], full[1])


def test_forward_without_labels_returns_temporal_states(tiny_model, tiny_config):
    ids, mask, _ = make_batch(tiny_config, seed=12)
    with torch.no_grad():
        out = tiny_model(ids, mask)
        h = tiny_model.temporal(inputs_embeds=tiny_model.embed_frames(ids), attention_mask=mask).last_hidden_state
    assert out.loss is None and out.logits is None
    torch.testing.assert_close(out.hidden_states, h)


def test_bad_inputs_raise_clear_errors(tiny_model, tiny_config):
    ids, mask, labels = make_batch(tiny_config, seed=13)
    with pytest.raises(ValueError, match="input_ids must be"):
        tiny_model(ids[..., :5], mask)
    with pytest.raises(ValueError, match="depths must be in 1..32"):
        tiny_model(ids, mask, labels, depths=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="depth must be in"):
        tiny_model.embed_frames(ids, 33)
    bad = labels.clone()
    bad[0, 4, 3] = 2000
    with pytest.raises(ValueError, match="outside their channel's vocabulary"):
        tiny_model(ids, mask, bad)


def test_bf16_instantiation_and_forward(tiny_config):
    model = build_tiny_model(seed=14).to(torch.bfloat16)
    ids, mask, labels = make_batch(tiny_config, seed=14)
    out = model(ids, mask, labels, depths=torch.tensor([4, 32]))
    assert out.logits[1].dtype == torch.bfloat16
    assert torch.isfinite(out.loss) and out.loss.dtype == torch.float32
    out.loss.backward()
    assert model.heads[1].weight.grad.dtype == torch.bfloat16


def test_model_works_with_a_small_config_variant():
    """A non-preset config (few layers, small vocab) builds and trains one step."""
    cfg = CatTTSConfig.tiny()
    cfg.n_vq = 4
    cfg.audio_vocab_size = 16
    cfg.audio_pad_code = 16
    model = CatTTSModel(cfg)
    ids = torch.randint(0, 16, (2, 5, 5))
    labels = ids.clone()
    out = model(ids, None, labels, depths=torch.tensor([1, 4]))
    out.loss.backward()
    assert out.channel_counts.tolist() == [10, 10, 5, 5, 5]


def test_cached_depth_steps_reproduce_teacher_forced_logits(tiny_model, tiny_config):
    """The generation building blocks (to_depth, depth_step over a DepthKVCache, channel_embedding, channel_logits)
    run one channel at a time give the logits of the teacher-forced forward."""
    ids, mask, labels = make_batch(tiny_config, batch=2, frames=4, seed=15)
    labels[:] = labels.clamp(min=0) % tiny_config.audio_vocab_size
    with torch.no_grad():
        out = tiny_model(ids, mask, labels)
        h = out.hidden_states.reshape(-1, tiny_config.hidden_size)  # [B*T, D]
        flat_labels = labels.reshape(-1, tiny_config.num_channels)
        cache = tiny_model.new_depth_cache(h.shape[0])
        y = tiny_model.depth_step(tiny_model.to_depth(h), cache, torch.tensor(0))  # [B*T, Dd]
        for c in range(tiny_config.num_channels):
            if c > 0:
                emb = tiny_model.channel_embedding(c - 1, flat_labels[:, c - 1])
                y = tiny_model.depth_step(tiny_model.to_depth(emb), cache, torch.tensor(c))
            step_logits = tiny_model.channel_logits(c, y).view(2, 4, -1)
            torch.testing.assert_close(step_logits, out.dense_logits(c), atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_config):
    ids, mask, labels = make_batch(tiny_config, seed=16)
    grads = []
    for checkpointing in (False, True):
        model = build_tiny_model(seed=16).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        model(ids, mask, labels, depths=torch.tensor([6, 32])).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5)


def test_release_preset_has_the_checkpoint_parameter_count():
    """3,060,606,464 parameters in the official checkpoint, minus the unused Qwen3 token table we do not keep."""
    with torch.device("meta"):
        model = CatTTSModel(CatTTSConfig.cat_tts_1_7b())
    assert sum(p.numel() for p in model.parameters()) == 3_060_606_464 - 318_767_104
    assert sum(p.numel() for p in model.depth.parameters()) == 202_914_304


def test_chunked_loss_gives_the_same_loss_and_gradients(tiny_config, monkeypatch):
    """With return_logits=False, big channels compute their loss in recomputed row chunks: same numbers."""
    ids, mask, labels = make_batch(tiny_config, batch=2, frames=6, seed=18)
    import cat_tts.model.loss as loss_module

    original = loss_module._chunked_loss_sum
    results = []
    for chunk_elements in (2**40, 3 * 1025):
        monkeypatch.setattr(
            loss_module, "_chunked_loss_sum", original
        )  # never chunk / chunks of 3 audio rows (1 text row)
        model = build_tiny_model(seed=18).train()
        model.loss_chunk_elements = chunk_elements
        calls: list[int] = []

        def counting(model, channel, h, target, _calls=calls, _chunked=loss_module._chunked_loss_sum):
            _calls.append(channel)
            return _chunked(model, channel, h, target)

        monkeypatch.setattr(loss_module, "_chunked_loss_sum", counting)
        out = model(ids, mask, labels, depths=torch.tensor([9, 32]), return_logits=False)
        if chunk_elements == 2**40:
            assert calls == []
        else:  # the text channel and the audio channels with more than 3 kept rows go through chunks
            assert 0 in calls and len(calls) > tiny_config.num_channels // 2
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out.loss.detach(), out.channel_losses.detach(), grads))
    (loss_a, ch_a, grads_a), (loss_b, ch_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ch_a, ch_b, atol=1e-5, rtol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-6, rtol=1e-5)
