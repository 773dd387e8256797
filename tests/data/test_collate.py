"""Token-budget batching, bucketing, PSD depths, reference choice and the resumable batch stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from memory_dataset import N_VQ, MemoryDataset, make_utterances

from cat_tts.data.collate import BatchStream, Collator, choose_references, plan_batches
from cat_tts.data.samples import SampleBuilder, TrainingSample
from cat_tts.model import IGNORE_INDEX as IGNORE


def test_plan_respects_the_budget_and_uses_every_fitting_sample_once():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 120, size=500)
    lengths[[3, 77]] = 1000  # longer than the budget
    lengths[10] = -1  # filtered out
    batches, too_long = plan_batches(lengths, budget=400, seed=1, epoch=0)
    assert too_long == 2
    flat = [i for b in batches for i in b]
    assert sorted(flat) == sorted(set(range(500)) - {3, 77, 10})
    for b in batches:  # padded size (samples x longest) within the budget
        assert len(b) * max(lengths[i] for i in b) <= 400


def test_plan_is_deterministic_per_epoch_and_buckets_lengths():
    lengths = np.random.default_rng(1).integers(5, 200, size=2000)
    a, _ = plan_batches(lengths, 800, seed=3, epoch=0)
    b, _ = plan_batches(lengths, 800, seed=3, epoch=0)
    c, _ = plan_batches(lengths, 800, seed=3, epoch=1)
    assert a == b and a != c

    def padding(batches):
        padded = sum(len(x) * max(lengths[i] for i in x) for x in batches)
        return 1 - sum(lengths[i] for x in batches for i in x) / padded

    # the same batch sizes drawn without bucketing waste far more rows
    perm = np.random.default_rng(0).permutation(len(lengths))
    sizes = [len(x) for x in a]
    unbucketed = np.split(perm, np.cumsum(sizes)[:-1])
    assert padding(a) < 0.1 < padding(unbucketed)


def _samples(n, rows=(3, 5)):
    out = []
    for i in range(n):
        r = rows[i % len(rows)]
        out.append(
            TrainingSample(f"s{i}", torch.randint(0, 500, (r, 1 + N_VQ)), torch.randint(0, 1024, (r, 1 + N_VQ)), r)
        )
    return out


def test_collator_right_pads_and_masks():
    coll = Collator(pad_id=500, audio_pad_code=1024, n_vq=N_VQ, p=0.0)
    batch = coll(_samples(2), torch.Generator().manual_seed(0))
    assert batch.input_ids.shape == (2, 5, 1 + N_VQ)
    assert batch.attention_mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert (batch.input_ids[0, 3:, 0] == 500).all() and (batch.input_ids[0, 3:, 1:] == 1024).all()
    assert (batch.labels[0, 3:] == IGNORE).all()
    assert batch.num_rows == 8 and batch.ids == ["s0", "s1"]
    assert (batch.depths == N_VQ).all()  # p = 0: every sample keeps all layers


@pytest.mark.parametrize("depth_range", ["1..N-1", "1..N"])
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_collator_depth_distribution_matches_p_and_range(p, depth_range):
    coll = Collator(pad_id=500, audio_pad_code=1024, n_vq=N_VQ, p=p, depth_range=depth_range)
    gen = torch.Generator().manual_seed(123)
    depths = torch.cat([coll(_samples(8), gen).depths for _ in range(2500)])  # 20000 draws
    assert depths.min() >= 1 and depths.max() <= N_VQ
    if p == 0:
        assert (depths == N_VQ).all()  # the plain model
        return
    # expected counts: a truncated depth is uniform over 1..top, the rest keep all N layers
    top = N_VQ - 1 if depth_range == "1..N-1" else N_VQ
    prob = torch.zeros(N_VQ + 1, dtype=torch.float64)
    prob[1 : top + 1] = p / top
    prob[N_VQ] += 1 - p
    counts = torch.bincount(depths, minlength=N_VQ + 1).double()
    support = prob > 0
    assert (counts[~support] == 0).all()  # p = 1 with the paper's range: never all N layers
    expected = prob[support] * depths.numel()
    chi2 = float(((counts[support] - expected) ** 2 / expected).sum())
    assert chi2 < {30: 62.2, 31: 63.6}[int(support.sum()) - 1]  # chi-square quantile at p-value 0.0005


def test_references_come_from_the_same_speaker_and_never_the_utterance_itself():
    speakers = ["a", "b", "a", "a", None, "c", "b"]
    explicit = np.array([0, 0, 0, 0, 0, 0, 7])
    refs = choose_references(speakers, explicit, seed=0, epoch=0)
    assert refs[4] == -1 and refs[5] == -1  # no label / only utterance of its speaker
    assert refs[6] == -2  # explicit reference wins
    for i in (0, 1, 2, 3):
        assert refs[i] != i and speakers[refs[i]] == speakers[i]
    # every other utterance of the speaker is chosen over many epochs
    seen = {int(choose_references(speakers, explicit, seed=0, epoch=e)[0]) for e in range(50)}
    assert seen == {2, 3}


def _stream(dataset, tokenizer, token_ids, layout="plain", **kw):
    builder = SampleBuilder(tokenizer, token_ids, N_VQ, layout)
    coll = Collator(token_ids.pad, token_ids.audio_pad_code, N_VQ, p=0.5)
    return BatchStream(dataset, builder, coll, budget=kw.pop("budget", 120), max_frames=18, seed=7, **kw)


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_stream_resumes_exactly_across_epochs(memory_dataset, tokenizer, token_ids):
    s = _stream(memory_dataset, tokenizer, token_ids)
    per_epoch = s.batches_per_epoch()
    total = per_epoch + 5
    reference = _take(iter(s), total)
    s2 = _stream(memory_dataset, tokenizer, token_ids)
    it2 = iter(s2)
    _take(it2, per_epoch - 2)
    state = s2.state_dict()
    s3 = _stream(memory_dataset, tokenizer, token_ids)
    s3.load_state_dict(state)
    resumed = _take(iter(s3), total - (per_epoch - 2))
    for a, b in zip(reference[per_epoch - 2 :], resumed, strict=True):
        assert a.ids == b.ids
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
        assert torch.equal(a.depths, b.depths)
    # utterances longer than max_frames never appear; the budget holds for every batch
    long_ids = {u.id for u in memory_dataset.utterances if u.codes.shape[1] > 18}
    assert long_ids and not long_ids & {i for b in reference for i in b.ids}
    assert all(b.input_ids.shape[0] * b.input_ids.shape[1] <= 120 for b in reference)


def test_ranks_get_disjoint_equal_shares(memory_dataset, tokenizer, token_ids):
    shares = []
    for rank in range(2):
        s = _stream(memory_dataset, tokenizer, token_ids, rank=rank, world_size=2)
        shares.append([tuple(b.ids) for b in _take(iter(s), s.batches_per_epoch())])
    assert len(shares[0]) == len(shares[1]) > 0
    assert not {i for b in shares[0] for i in b} & {i for b in shares[1] for i in b}


def test_chat_stream_pairs_each_utterance_with_a_same_speaker_reference(tokenizer, token_ids):
    ds = MemoryDataset(make_utterances(12, seed=3, max_frames=8, speakers=3))
    s = _stream(ds, tokenizer, token_ids, layout="chat", budget=400)
    for batch in _take(iter(s), s.batches_per_epoch()):
        for b in range(len(batch.ids)):
            rows = batch.input_ids[b][batch.attention_mask[b]]
            ref = rows[rows[:, 0] == token_ids.audio_user_slot][:, 1:].t()  # [N, T']
            own = ds[int(batch.ids[b][1:])]
            others = [u for u in ds.utterances if u.speaker == own.speaker and u.id != own.id]
            assert any(torch.equal(ref, u.codes) for u in others)


def test_stream_errors_when_the_data_is_too_small_for_the_ranks(tokenizer, token_ids):
    ds = MemoryDataset(make_utterances(1))
    s = _stream(ds, tokenizer, token_ids, rank=0, world_size=4)
    with pytest.raises(ValueError, match="fewer than the 4 rank"):
        next(iter(s))
