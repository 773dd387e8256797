"""The identity of a codec checkpoint: what it is, not where it lies.

Stored voices are codes of one codec, so the voice store keys them by the codec's identity. A path string would not
do: `tiny/codec`, `./tiny/codec`, `tiny/codec/` and a hub id with its local snapshot are one codec, and two
different codecs can be found at one path over time. The identity is a digest of the checkpoint's `config.json`
(as data: key order and formatting do not count) and of its weights' metadata (every tensor's name, dtype and
shape) plus a sample of every tensor's bytes (its first, middle and last bytes), so a fine-tuned codec with the same
architecture gets another identity. Computing it reads a few KiB per tensor, not the weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cat_tts.weights import SafetensorsFile, checkpoint_files, read_config_json

SAMPLE_BYTES = 64  # bytes read at the start, middle and end of every tensor
IDENTITY_CHARS = 16  # hex digits kept (64 bits)


def codec_identity(directory: str | Path) -> str:
    """`codec-` + 16 hex digits identifying the codec checkpoint in `directory` (a resolved local directory).

    Raises:
        cat_tts.errors.CheckpointError: the directory holds no readable config or weights.
    """
    directory = Path(directory)
    digest = hashlib.sha256()
    config = {k: v for k, v in read_config_json(directory).items() if not k.startswith("_")}  # `_name_or_path`...
    digest.update(json.dumps(config, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    for path in checkpoint_files(directory):
        with SafetensorsFile(path) as weights:
            fd = os.open(path, os.O_RDONLY)
            try:
                for name in sorted(weights.keys()):
                    info = weights.entries[name]
                    digest.update(f"\0{name}\0{info.dtype}\0{tuple(info.shape)}\0".encode())
                    for start in _sample_offsets(info.nbytes):
                        digest.update(os.pread(fd, min(SAMPLE_BYTES, info.nbytes), info.offset + start))
            finally:
                os.close(fd)
    return "codec-" + digest.hexdigest()[:IDENTITY_CHARS]


def _sample_offsets(nbytes: int) -> list[int]:
    last = max(nbytes - SAMPLE_BYTES, 0)
    return sorted({0, last // 2, last})
