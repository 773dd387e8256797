"""Helpers of the data/training tests: an in-memory stand-in for a prepared dataset."""

from __future__ import annotations

import numpy as np
import torch

from cat_tts.data.dataset import Utterance

N_VQ = 32


class MemoryDataset:
    """Same interface as `PreparedDataset`, held in memory (random codes)."""

    def __init__(self, utterances: list[Utterance]) -> None:
        self.utterances = utterances
        self.num_frames = np.asarray([u.codes.shape[1] for u in utterances], dtype=np.int64)
        self.ref_frames = np.asarray([0 if u.ref_codes is None else u.ref_codes.shape[1] for u in utterances])
        self.speakers = [u.speaker for u in utterances]
        self.texts = [u.text for u in utterances]
        self.ids = [u.id for u in utterances]

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, i: int) -> Utterance:
        return self.utterances[int(i)]


def make_utterances(n: int, seed: int = 0, min_frames: int = 3, max_frames: int = 20, speakers: int = 3):
    g = torch.Generator().manual_seed(seed)
    words = ["the quick brown fox", "hello world", "she sells sea shells", "one two three", "a b c d e f"]
    out = []
    for i in range(n):
        t = int(torch.randint(min_frames, max_frames + 1, (1,), generator=g))
        out.append(
            Utterance(
                id=f"u{i}",
                text=words[i % len(words)] + f" {i}",
                codes=torch.randint(0, 1024, (N_VQ, t), generator=g),
                speaker=f"s{i % speakers}",
            )
        )
    return out
