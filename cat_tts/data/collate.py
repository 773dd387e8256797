"""Token-budget batches with length bucketing, Progressive Sequence Dropout depths, and the batch stream.

A micro-batch holds as many samples as fit `budget >= samples x longest sample` (rows = text tokens +
frames, i.e. the padded grid size, which is what memory scales with). Samples are bucketed by length
inside pools of shuffled samples so padding stays small while batch order stays random.

Everything random is derived from `(seed, epoch, batch index)`, so the stream can be resumed exactly from
`(epoch, position)` without storing generator states, and every rank builds the same epoch plan.

Shapes: B samples of a batch, R rows (longest sample), N RVQ layers, U utterances of the dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cat_tts.data.samples import SampleBuilder, TrainingSample
from cat_tts.errors import InputError
from cat_tts.model import IGNORE_INDEX
from cat_tts.model.psd import PAPER_DEPTH_RANGE, check_depth_range, sample_depths

logger = logging.getLogger(__name__)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(x) for x in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


@dataclass
class Batch:
    """One collated micro-batch."""

    input_ids: torch.Tensor  # [B, R, 1+N]
    attention_mask: torch.Tensor  # [B, R] bool, False on padding rows
    labels: torch.Tensor  # [B, R, 1+N], IGNORE_INDEX on padding and unsupervised entries
    depths: torch.Tensor  # [B] PSD depth K of each sample (N = all layers)
    ids: list[str]  # utterance ids, for error messages
    num_rows: int  # real (non-padding) rows in the batch
    num_frames: int  # supervised audio frames in the batch

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.input_ids.to(device, non_blocking=True),
            self.attention_mask.to(device, non_blocking=True),
            self.labels.to(device, non_blocking=True),
            self.depths.to(device, non_blocking=True),
            self.ids,
            self.num_rows,
            self.num_frames,
        )


class Collator:
    """Right-pads samples into a batch and draws their PSD depths (`cat_tts.model.psd.sample_depths`).

    Args:
        pad_id: text pad token (channel 0 of padding rows).
        audio_pad_code: audio pad code (channels 1..N of padding rows).
        n_vq: RVQ layers N.
        p: PSD probability (0 = always all N layers).
        depth_range: where a truncated sample's depth K is drawn from: "1..N-1" (the paper) or "1..N".
    """

    def __init__(
        self, pad_id: int, audio_pad_code: int, n_vq: int, p: float, depth_range: str = PAPER_DEPTH_RANGE
    ) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p = {p} is invalid; allowed: 0.0 .. 1.0")
        self.pad_id = pad_id
        self.audio_pad_code = audio_pad_code
        self.n_vq = n_vq
        self.p = p
        self.depth_range = check_depth_range(depth_range)

    def __call__(self, samples: Sequence[TrainingSample], generator: torch.Generator) -> Batch:
        if not samples:
            raise ValueError("cannot collate an empty batch")
        b, r = len(samples), max(s.input_ids.shape[0] for s in samples)
        width = 1 + self.n_vq
        input_ids = torch.full((b, r, width), self.audio_pad_code, dtype=torch.long)  # [B, R, 1+N]
        input_ids[:, :, 0] = self.pad_id
        labels = torch.full((b, r, width), IGNORE_INDEX, dtype=torch.long)  # [B, R, 1+N]
        mask = torch.zeros(b, r, dtype=torch.bool)  # [B, R]
        for i, s in enumerate(samples):
            n = s.input_ids.shape[0]
            input_ids[i, :n] = s.input_ids
            labels[i, :n] = s.labels
            mask[i, :n] = True
        depths = sample_depths(b, self.n_vq, self.p, generator, depth_range=self.depth_range)  # [B]
        return Batch(
            input_ids=input_ids,
            attention_mask=mask,
            labels=labels,
            depths=depths,
            ids=[s.id for s in samples],
            num_rows=int(mask.sum()),
            num_frames=sum(s.num_frames for s in samples),
        )


def plan_batches(
    lengths: np.ndarray, budget: int, seed: int, epoch: int, pool_batches: int = 50
) -> tuple[list[list[int]], int]:
    """Groups sample indices into token-budget batches for one epoch.

    Samples are shuffled, cut into pools of about `pool_batches` batches, sorted by length inside each pool,
    packed greedily (`count x longest <= budget`), and the batches are shuffled.

    Args:
        lengths: `[U]` rows per sample; negative = leave the sample out.
        budget: the token budget of one batch.
        seed, epoch: determine the plan (the same on every rank).
        pool_batches: pool size in batches of typical length (larger = less padding, less randomness).

    Returns:
        `(batches, too_long)`: lists of indices, and the number of samples longer than the budget (left out).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    rng = np.random.default_rng(_seed(seed, epoch, 0))
    usable = np.flatnonzero(lengths >= 0)
    fits = usable[lengths[usable] <= budget]
    too_long = len(usable) - len(fits)
    order = fits[rng.permutation(len(fits))]
    if len(order) == 0:
        return [], too_long
    typical = max(1, budget // max(1, int(np.median(lengths[order]))))
    pool = max(1, typical * pool_batches)
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        current: list[int] = []
        longest = 0
        for idx in chunk.tolist():
            new_longest = max(longest, int(lengths[idx]))
            if current and (len(current) + 1) * new_longest > budget:
                batches.append(current)
                current, new_longest = [], int(lengths[idx])
            current.append(idx)
            longest = new_longest
        if current:
            batches.append(current)
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm], too_long


def choose_references(speakers: Sequence[str | None], explicit: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """Chat layout: for each utterance, another utterance of the same speaker to serve as reference.

    Returns:
        `[U]` indices; -1 = no reference (no speaker label, or the speaker's only utterance); -2 = use the
        utterance's own explicit reference clip (manifest `ref_audio`).
    """
    rng = np.random.default_rng(_seed(seed, epoch, 1))
    by_speaker: dict[str, list[int]] = {}
    for i, s in enumerate(speakers):
        if s is not None:
            by_speaker.setdefault(s, []).append(i)
    out = np.full(len(speakers), -1, dtype=np.int64)
    for i, s in enumerate(speakers):
        if explicit[i] > 0:
            out[i] = -2
        elif s is not None and len(by_speaker[s]) > 1:
            others = by_speaker[s]
            j = others[int(rng.integers(len(others) - 1))]
            out[i] = j if j != i else others[-1]  # uniform over the others
    return out


class _EpochBatches(torch.utils.data.Dataset):
    """Map-style view of one rank's batches of one epoch, starting at `position` (for DataLoader workers)."""

    def __init__(
        self,
        stream: BatchStream,
        epoch: int,
        batches: list[list[int]],
        refs: np.ndarray | None,
        start: int,
        offsets: list[int],
    ) -> None:
        self.stream, self.epoch, self.batches, self.refs = stream, epoch, batches, refs
        self.start, self.offsets = start, offsets

    def __len__(self) -> int:
        return len(self.batches) - self.start

    def __getitem__(self, i: int) -> Batch:
        k = self.start + i
        samples = [self.stream.sample(j, self.refs) for j in self.batches[k]]
        gen = torch.Generator().manual_seed(_seed(self.stream.seed, self.epoch, 2, self.offsets[k]))
        return self.stream.collator(samples, gen)


class BatchStream:
    """Endless, resumable stream of one rank's micro-batches.

    Args:
        dataset: a `PreparedDataset` (or any object with `num_frames`, `ref_frames`, `speakers`, `texts`,
            `ids`, `__len__` and `__getitem__ -> Utterance`).
        builder: the `SampleBuilder` (its prompt layout).
        collator: the `Collator`.
        budget: token budget per micro-batch.
        max_frames: longer utterances are left out.
        max_reference_frames: chat layout: references are cut to this many frames.
        seed: seeds batch order, references and PSD depths.
        rank, world_size: every rank takes an equal share of each epoch's batches.
        num_workers: DataLoader workers building batches.
    """

    def __init__(
        self,
        dataset: Any,
        builder: SampleBuilder,
        collator: Collator,
        budget: int,
        max_frames: int,
        max_reference_frames: int = 250,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
    ) -> None:
        self.dataset, self.builder, self.collator = dataset, builder, collator
        self.budget, self.max_frames, self.max_reference_frames = budget, max_frames, max_reference_frames
        self.seed, self.rank, self.world_size, self.num_workers = seed, rank, world_size, num_workers
        self.epoch = 0
        self.position = 0  # batches of the current epoch this rank has consumed
        tokenized = builder.tokenizer(list(dataset.texts), add_special_tokens=False)["input_ids"]
        self.text_tokens = np.asarray([len(t) for t in tokenized], dtype=np.int64)  # [U]
        self.frames = np.asarray(dataset.num_frames, dtype=np.int64)  # [U]
        self.too_long_frames = int((self.frames > max_frames).sum())
        if self.too_long_frames:
            logger.info("leaving out %d utterances longer than %d frames", self.too_long_frames, max_frames)

    # ------------------------------------------------------------------ plan

    def _plan(self, epoch: int) -> tuple[list[list[int]], np.ndarray | None, list[int]]:
        refs = None
        ref_frames = np.zeros(len(self.frames), dtype=np.int64)
        if self.builder.layout == "chat":
            refs = choose_references(self.dataset.speakers, np.asarray(self.dataset.ref_frames), self.seed, epoch)
            own = np.asarray(self.dataset.ref_frames, dtype=np.int64)
            ref_frames = np.where(refs == -2, own, np.where(refs >= 0, self.frames[np.maximum(refs, 0)], 0))
            ref_frames = np.minimum(ref_frames, self.max_reference_frames)
        lengths = np.asarray(
            [
                self.builder.estimate_rows(int(t), int(f), int(r))
                for t, f, r in zip(self.text_tokens, self.frames, ref_frames, strict=True)
            ],
            dtype=np.int64,
        )
        lengths[self.frames > self.max_frames] = -1
        batches, too_long = plan_batches(lengths, self.budget, self.seed, epoch)
        if too_long and epoch == 0:
            logger.warning("%d samples do not fit data.tokens_per_batch = %d and are left out", too_long, self.budget)
        per_rank = len(batches) // self.world_size
        if per_rank == 0:
            raise InputError(
                f"the dataset gives {len(batches)} batch(es) per epoch, fewer than the {self.world_size} rank(s); "
                "use more data or a smaller data.tokens_per_batch"
            )
        offsets = list(range(self.rank, per_rank * self.world_size, self.world_size))
        return [batches[k] for k in offsets], refs, offsets

    def batches_per_epoch(self) -> int:
        return len(self._plan(self.epoch)[0])

    def sample(self, index: int, refs: np.ndarray | None) -> TrainingSample:
        utt = self.dataset[index]
        reference = None
        if refs is not None:
            if refs[index] == -2:
                reference = utt.ref_codes
            elif refs[index] >= 0:
                reference = self.dataset[int(refs[index])].codes
            if reference is not None:
                reference = reference[:, : self.max_reference_frames]
        return self.builder.build(utt, reference)

    # ----------------------------------------------------------- iteration

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("world_size", self.world_size) != self.world_size:
            logger.warning(
                "resuming with %d ranks instead of %d: the data order differs from the original run",
                self.world_size,
                state["world_size"],
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def __iter__(self) -> Iterator[Batch]:
        while True:
            batches, refs, offsets = self._plan(self.epoch)
            if self.position < len(batches):
                view = _EpochBatches(self, self.epoch, batches, refs, self.position, offsets)
                loader = torch.utils.data.DataLoader(
                    view,
                    batch_size=None,
                    shuffle=False,
                    num_workers=self.num_workers,
                    persistent_workers=False,
                    pin_memory=torch.cuda.is_available(),
                )
                for batch in loader:
                    self.position += 1
                    yield batch
            self.epoch += 1
            self.position = 0
