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


def write_prepared(out, utterances: list[Utterance]):
    """Writes utterances (random codes, no audio) as one prepared shard, in the format `prepare` writes."""
    import json
    from pathlib import Path

    from cat_tts.data.prepare import write_shard

    records = {
        "id": [u.id for u in utterances],
        "text": [u.text for u in utterances],
        "speaker": [u.speaker for u in utterances],
        "language": [u.language for u in utterances],
        "fields": [json.dumps(u.fields) for u in utterances],
        "manifest_index": list(range(len(utterances))),
        "codes": [u.codes.numpy().astype(np.int16) for u in utterances],
        "num_frames": [u.codes.shape[1] for u in utterances],
        "duration": [u.codes.shape[1] / 12.5 for u in utterances],
        "ref_codes": [np.zeros((u.codes.shape[0], 0), dtype=np.int16) for u in utterances],
        "ref_num_frames": [0 for _ in utterances],
    }
    stats = {"rows": len(utterances), "kept": len(utterances), "seconds": sum(records["duration"]), "skipped": []}
    write_shard(Path(out) / "shards", "rank00000-of-00001-00000", records, stats)
    return Path(out)
