"""The one safetensors reader of cat-tts: checkpoint files -> tensors, never more memory than needed.

* `SafetensorsFile` / `SafetensorsCheckpoint`: read tensor by tensor with plain positioned file reads (no memory
  map), straight into a destination tensor that already lives on its device in its dtype, so loading a model
  never holds more than the model itself plus one bounded staging buffer (docs/notes/coldstart.md).
* `read_safetensors(files, mmap=...)`: every tensor of small files, read, or memory-mapped (views of the file,
  paged in when first used).
* `checkpoint_files(directory)`: which files of a checkpoint directory hold its weights.

Damaged files (truncated, bad header, a key in two shards) raise `DamagedCheckpointError` naming the file. Only
safetensors are read: no pickle, no `torch.load`. This module does not import torch at import time.
"""

from __future__ import annotations

import json
import mmap
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cat_tts.weights.errors import CheckpointNotFoundError, DamagedCheckpointError

if TYPE_CHECKING:
    import numpy as np
    import torch

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
STAGING_BYTES = 16 * 2**20  # host staging buffer for reads that convert dtype or go to another device
_MAX_HEADER_BYTES = 100 * 2**20  # the format's own limit on the JSON header
_HAS_PREADV = hasattr(os, "preadv")  # positioned reads into a buffer (Linux, macOS, BSD)


def _torch_dtypes() -> dict[str, torch.dtype]:
    import torch

    table = {
        "F64": torch.float64,
        "F32": torch.float32,
        "F16": torch.float16,
        "BF16": torch.bfloat16,
        "I64": torch.int64,
        "I32": torch.int32,
        "I16": torch.int16,
        "I8": torch.int8,
        "U8": torch.uint8,
        "BOOL": torch.bool,
    }
    for code, name in (("U16", "uint16"), ("U32", "uint32"), ("U64", "uint64"), ("F8_E4M3", "float8_e4m3fn"),
                       ("F8_E5M2", "float8_e5m2")):  # fmt: skip
        if hasattr(torch, name):
            table[code] = getattr(torch, name)
    return table


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies in a safetensors file (from the header; no data read)."""

    dtype: torch.dtype  # stored element type
    shape: tuple[int, ...]  # stored shape
    offset: int  # absolute byte offset of the first element in the file
    nbytes: int  # bytes of data (numel x element size)


def checkpoint_files(directory: str | Path) -> list[Path]:
    """The safetensors files of a checkpoint directory: the shards its index lists, else `model.safetensors`,
    else every `*.safetensors` file.

    Raises:
        CheckpointNotFoundError: no safetensors in the directory, or shards listed by the index are absent.
        DamagedCheckpointError: the index is not valid JSON.
    """
    directory = Path(directory)
    index = directory / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
            raise DamagedCheckpointError(f"{index} is not a valid safetensors index ({err})") from err
        files = [directory / name for name in sorted(set(weight_map.values()))]
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise CheckpointNotFoundError(f"{index} lists shards that are not in {directory}: {absent}")
        return files
    if (directory / SINGLE_FILE).is_file():
        return [directory / SINGLE_FILE]
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise CheckpointNotFoundError(
            f"no safetensors weights in {directory} (only safetensors are loaded; .bin/.pt pickles are refused)"
        )
    return files


class SafetensorsFile:
    """One safetensors file, read tensor by tensor with positioned file reads (no memory map).

    The header is parsed and checked when the file is opened (every tensor's byte range must lie inside the
    file), so a truncated download fails before any weight is read. Use as a context manager or call `close`.

    Args:
        path: the `.safetensors` file.

    Raises:
        CheckpointNotFoundError: the file does not exist.
        DamagedCheckpointError: the header is corrupt or the file is shorter than the header says.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointNotFoundError(f"safetensors file {self.path} does not exist")
        self._file = open(self.path, "rb", buffering=0)  # noqa: SIM115 - closed by close()/__exit__
        try:
            self.metadata, self.entries = self._parse_header()
        except BaseException:
            self._file.close()
            raise
        self._staging: torch.Tensor | None = None  # [STAGING_BYTES] uint8, created on the first converting read

    def _damaged(self, reason: str) -> DamagedCheckpointError:
        return DamagedCheckpointError(
            f"{self.path} is not a readable safetensors file: {reason}. The download or copy is probably "
            "incomplete or corrupt: fetch the file again"
        )

    def _parse_header(self) -> tuple[dict[str, str], dict[str, TensorInfo]]:
        size = os.fstat(self._file.fileno()).st_size
        head = self._file.read(8)
        if len(head) < 8:
            raise self._damaged(f"only {size} bytes long")
        header_len = int.from_bytes(head, "little")
        if header_len > _MAX_HEADER_BYTES or 8 + header_len > size:
            raise self._damaged(f"the header claims {header_len} bytes but the file has {size}")
        try:
            header = json.loads(self._file.read(header_len).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise self._damaged(f"corrupt header ({err})") from err
        if not isinstance(header, dict):
            raise self._damaged("the header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        dtypes = _torch_dtypes()
        data_start = 8 + header_len
        entries: dict[str, TensorInfo] = {}
        for key, spec in header.items():
            try:
                code, shape, (begin, end) = spec["dtype"], tuple(int(d) for d in spec["shape"]), spec["data_offsets"]
            except (KeyError, TypeError, ValueError) as err:
                raise self._damaged(f"bad header entry for {key!r} ({err})") from err
            if code not in dtypes:
                raise self._damaged(f"tensor {key!r} has dtype {code!r}, which cat-tts does not read")
            numel = 1
            for dim in shape:
                numel *= dim
            nbytes = numel * dtypes[code].itemsize
            if min(shape, default=0) < 0 or begin < 0 or end - begin != nbytes:
                raise self._damaged(f"tensor {key!r}: data offsets {[begin, end]} do not fit its shape {list(shape)}")
            if data_start + end > size:
                raise self._damaged(
                    f"tensor {key!r} ends at byte {data_start + end} but the file has only {size} bytes (truncated)"
                )
            entries[key] = TensorInfo(dtypes[code], shape, data_start + begin, nbytes)
        ordered = dict(sorted(entries.items(), key=lambda item: item[1].offset))  # sequential reads
        return metadata, ordered

    # ---- mapping-like access ----
    def keys(self) -> list[str]:
        """Tensor names in file order."""
        return list(self.entries)

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    # ---- reading ----
    def _read_into(self, offset: int, buffer: np.ndarray) -> None:
        """Fill `buffer` (a writable uint8 array) with the file's bytes from `offset`."""
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view):
            if _HAS_PREADV:
                got = os.preadv(self._file.fileno(), [view[done:]], offset + done)
            else:  # Windows: seek + read
                self._file.seek(offset + done)
                got = self._file.readinto(view[done:])
            if not got:
                raise self._damaged(f"unexpected end of file at byte {offset + done}")
            done += got

    def read(self, key: str, out: torch.Tensor | None = None) -> torch.Tensor:
        """Read one tensor.

        Args:
            key: the stored name.
            out: where to put it (any device and floating dtype, same shape). On the CPU with the stored dtype
                the bytes are read straight into it; otherwise they pass through a host staging buffer of at
                most `STAGING_BYTES` (pinned when `out` is on CUDA) and are converted on copy. Default: a new
                CPU tensor of the stored dtype.

        Returns:
            `out`, or the new tensor.

        Raises:
            KeyError: no such tensor.
            ValueError: `out` has another shape.
            DamagedCheckpointError: the file ends early.
        """
        import torch

        info = self.entries[key]
        if out is None:
            out = torch.empty(info.shape, dtype=info.dtype)
        elif tuple(out.shape) != info.shape:
            raise ValueError(f"{self.path}: {key} is stored with shape {list(info.shape)}, not {list(out.shape)}")
        if info.nbytes == 0:
            return out
        if sys.byteorder != "little":  # safetensors is little-endian; no supported platform is big-endian
            raise DamagedCheckpointError("reading safetensors on a big-endian machine is not supported")
        direct = out.device.type == "cpu" and out.dtype == info.dtype and out.is_contiguous()
        if direct:
            self._read_into(info.offset, _byte_view(out))
            return out
        target = out if out.is_contiguous() else torch.empty_like(out, memory_format=torch.contiguous_format)
        flat = target.detach().view(-1)
        pinned = out.device.type == "cuda"
        staging = self._staging_buffer(pinned)
        step = max(1, STAGING_BYTES // info.dtype.itemsize)
        with torch.no_grad():
            for start in range(0, flat.numel(), step):
                count = min(step, flat.numel() - start)
                piece = staging[: count * info.dtype.itemsize]
                self._read_into(info.offset + start * info.dtype.itemsize, piece.numpy())
                flat[start : start + count].copy_(piece.view(info.dtype))  # converts dtype / moves device
            if target is not out:
                out.copy_(target)
        return out

    def _staging_buffer(self, pinned: bool) -> torch.Tensor:
        import torch

        if self._staging is None or self._staging.is_pinned() != pinned:
            self._staging = torch.empty(STAGING_BYTES, dtype=torch.uint8, pin_memory=pinned)
        return self._staging

    def map_all(self) -> dict[str, torch.Tensor]:
        """Every tensor as a view of a private memory map of the file (pages are read when first touched).

        The mapping is copy-on-write (`MAP_PRIVATE`): writing to a tensor never changes the file. A tensor whose
        data is not aligned to its element size (not written by the safetensors library, which pads the header)
        is read instead.
        """
        import torch

        if sys.byteorder != "little":
            raise DamagedCheckpointError("reading safetensors on a big-endian machine is not supported")
        if not self.entries:
            return {}
        mapped = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_COPY)  # stays valid after the file closes
        tensors: dict[str, torch.Tensor] = {}
        for key, info in self.entries.items():
            if info.nbytes == 0 or info.offset % info.dtype.itemsize:
                tensors[key] = self.read(key)
                continue
            count = info.nbytes // info.dtype.itemsize
            flat = torch.frombuffer(mapped, dtype=info.dtype, count=count, offset=info.offset)  # keeps `mapped` alive
            tensors[key] = flat.view(info.shape)
        return tensors

    def close(self) -> None:
        self._staging = None
        self._file.close()

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _byte_view(tensor: torch.Tensor) -> np.ndarray:
    """The bytes of a contiguous CPU tensor as a writable uint8 array sharing its memory."""
    import torch

    return tensor.detach().reshape(-1).view(torch.uint8).numpy()


class SafetensorsCheckpoint:
    """The safetensors files of one checkpoint (single file or shards) as one mapping name -> tensor.

    Nothing is read until `read` is called; shapes and dtypes come from the headers. Use as a context manager.

    Args:
        files: the checkpoint's files (see `checkpoint_files`).

    Raises:
        DamagedCheckpointError: a file is damaged, or a name is stored in more than one file.
    """

    def __init__(self, files: Sequence[str | Path]) -> None:
        self.files: list[SafetensorsFile] = []
        self._where: dict[str, SafetensorsFile] = {}
        try:
            twice: list[str] = []
            for path in files:
                handle = SafetensorsFile(path)
                self.files.append(handle)
                for key in handle.keys():
                    if key in self._where:
                        twice.append(f"{key} ({self._where[key].path.name}, {handle.path.name})")
                    else:
                        self._where[key] = handle
            if twice:
                shown = ", ".join(twice[:10]) + (f", ... ({len(twice) - 10} more)" if len(twice) > 10 else "")
                raise DamagedCheckpointError(f"keys stored in more than one shard: {shown}")
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_directory(cls, directory: str | Path) -> SafetensorsCheckpoint:
        """Open the safetensors of a checkpoint directory (index shards, model.safetensors, or all *.safetensors)."""
        return cls(checkpoint_files(directory))

    def keys(self) -> list[str]:
        """Stored names, file by file in file order."""
        return list(self._where)

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def info(self, key: str) -> TensorInfo:
        """Stored dtype, shape and location of one tensor."""
        return self._where[key].entries[key]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Stored name -> stored shape, for every tensor."""
        return {key: handle.entries[key].shape for key, handle in self._where.items()}

    def read(self, key: str, out: torch.Tensor | None = None) -> torch.Tensor:
        """Read one tensor (see `SafetensorsFile.read`)."""
        return self._where[key].read(key, out)

    def close(self) -> None:
        for handle in self.files:
            handle.close()

    def __enter__(self) -> SafetensorsCheckpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_safetensors(files: str | Path | Iterable[str | Path], mmap: bool = False) -> dict[str, torch.Tensor]:
    """Read every tensor of one or more safetensors files into a dict (for small files, or memory-mapped).

    Args:
        files: a file or several (the shards of one checkpoint).
        mmap: map the files instead of reading them: the tensors are views of a private (copy-on-write) mapping
            of the file, paged in when first used (nothing is read now; the page cache holds the data; writing
            to a tensor never changes the file). For weights kept on the CPU as stored.

    Returns:
        Stored name -> CPU tensor of the stored dtype.

    Raises:
        CheckpointNotFoundError / DamagedCheckpointError: a missing or damaged file, or a name stored twice.
    """
    paths = [Path(files)] if isinstance(files, (str, Path)) else [Path(f) for f in files]
    with SafetensorsCheckpoint(paths) as checkpoint:  # checks every header (and duplicates) first
        if not mmap:
            return {key: checkpoint.read(key) for key in checkpoint.keys()}
        tensors: dict[str, torch.Tensor] = {}
        for handle in checkpoint.files:
            tensors.update(handle.map_all())
        return tensors
