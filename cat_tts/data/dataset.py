"""Reading the shards written by `cat_tts.data.prepare`.

Shapes: K = 32 codec layers, T frames.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cat_tts.errors import InputError


@dataclass
class Utterance:
    """One prepared utterance."""

    id: str
    text: str
    codes: torch.Tensor  # [K, T] int64
    speaker: str | None = None
    language: str | None = None
    ref_codes: torch.Tensor | None = None  # [K, T'] int64, an explicit reference clip (manifest `ref_audio`)
    fields: dict[str, Any] = field(default_factory=dict)  # other user-message fields of the chat layout


def find_shards(path: str | Path) -> tuple[Path, list[str]]:
    """The complete shards of a prepared directory (cheap: no data is read).

    Args:
        path: the `--out` directory of `cat_tts.data.prepare` (or its `shards/` subdirectory).

    Returns:
        `(shard directory, shard names)`.

    Raises:
        InputError: the directory does not exist, or holds no complete shard.
    """
    root = Path(path)
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise InputError(
            f"the prepared data directory {root} {what}; create it with `python -m cat_tts.data.prepare MANIFEST "
            f"--codec PATH --out {root}`"
        )
    shard_dir = root / "shards" if (root / "shards").is_dir() else root
    names = sorted(p.stem for p in shard_dir.glob("rank*.json") if (shard_dir / p.stem).is_dir())
    if not names:
        raise InputError(
            f"no prepared shards in {root}; create them with `python -m cat_tts.data.prepare MANIFEST "
            f"--codec PATH --out {root}`"
        )
    return shard_dir, names


class PreparedDataset:
    """All complete shards of a prepared directory, as one indexable dataset.

    Args:
        path: the `--out` directory of `cat_tts.data.prepare` (or its `shards/` subdirectory).

    Raises:
        InputError: if the directory holds no complete shard.
    """

    def __init__(self, path: str | Path) -> None:
        try:
            from datasets import concatenate_datasets, load_from_disk
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("reading prepared data needs `datasets`: pip install 'cat-tts[train]'") from err
        root = Path(path)
        shard_dir, names = find_shards(root)
        parts = [load_from_disk(str(shard_dir / n)) for n in names]
        self.path = root
        self._ds = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
        self._np = self._ds.select_columns(["codes", "ref_codes"]).with_format("numpy")
        self._meta = self._ds.select_columns(["id", "text", "speaker", "language", "fields"])
        lengths = self._ds.select_columns(["num_frames", "ref_num_frames"]).with_format("numpy")
        self.num_frames = np.asarray(lengths["num_frames"], dtype=np.int64)  # [N] frames per utterance
        self.ref_frames = np.asarray(lengths["ref_num_frames"], dtype=np.int64)  # [N] frames of explicit references
        self.speakers: list[str | None] = list(self._ds["speaker"])
        self.texts: list[str] = list(self._ds["text"])
        self.ids: list[str] = list(self._ds["id"])

    def __len__(self) -> int:
        return len(self._ds)

    def __getitem__(self, i: int) -> Utterance:
        row = self._meta[int(i)]
        arrays = self._np[int(i)]
        codes = torch.from_numpy(np.asarray(arrays["codes"], dtype=np.int64))  # [K, T]
        ref = np.asarray(arrays["ref_codes"], dtype=np.int64)
        return Utterance(
            id=row["id"],
            text=row["text"],
            codes=codes,
            speaker=row["speaker"],
            language=row["language"],
            ref_codes=torch.from_numpy(ref) if ref.ndim == 2 and ref.shape[1] > 0 else None,
            fields=json.loads(row["fields"]) if row["fields"] else {},
        )
