"""Where checkpoints come from and how their weights are read: one place for the model, the codec, the pipeline
and the demo.

* `DEFAULT_MODEL` / `DEFAULT_CODEC`: the released hub ids, defined once for every entry point.
* `resolve_checkpoint(ref, kind)`: a local directory or a hub id -> a local directory of the right kind, or a
  `ModelLoadError` that says what was wrong (no such directory, a file, the other kind of checkpoint, the hub
  unreachable) and how to fix it.
* `resolve_dtype(requested, device, recorded, kind)`: the one meaning of `dtype="auto"` and of the dtype names.
* `SafetensorsCheckpoint` / `read_safetensors`: the one safetensors reader. It reads tensor by tensor with plain
  file reads (no memory map), straight into a destination tensor that already lives on its device in its dtype,
  so loading a model never holds more than the model itself plus one bounded staging buffer. Damaged files
  (truncated, bad header) raise `DamagedCheckpointError` naming the file.

Only safetensors are read: no pickle, no `torch.load`, never `trust_remote_code`. This module does not import
torch at import time (the CLIs import it for their defaults before parsing arguments).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cat_tts.errors import CheckpointError, InputError, ModelLoadError

if TYPE_CHECKING:
    import numpy as np
    import torch

DEFAULT_MODEL = "OpenMOSS-Team/MOSS-TTS-Local-Transformer"  # the released CAT-TTS weights (with its tokenizer)
DEFAULT_CODEC = "OpenMOSS-Team/MOSS-Audio-Tokenizer"  # the released CAT codec weights

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

CheckpointKind = Literal["model", "codec", "qwen3"]

# What each kind is called in messages, and how a user passes it.
_KIND_NAMES: dict[str, str] = {
    "model": "CAT-TTS model (MOSS-TTS-Local-Transformer)",
    "codec": "CAT codec (MOSS-Audio-Tokenizer)",
    "qwen3": "Qwen3 language model",
}
_KIND_USAGE: dict[str, str] = {
    "model": "pass it as the model (--model DIR, CatTTS.from_pretrained(model=DIR), CatTTSModel.from_pretrained)",
    "codec": "pass it as the codec (--codec DIR, CatTTS.from_pretrained(codec=DIR), CatCodec.from_pretrained)",
    "qwen3": "start a CAT-TTS model from it with CatTTSModel.from_qwen3 (or `model.init: qwen3:DIR` in training)",
}
# Files fetched from the hub per kind: weights, configs and (model, qwen3) tokenizer files; never pickles.
_HUB_PATTERNS: dict[str, list[str]] = {
    "model": ["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model"],
    "codec": [CONFIG_FILE, "*.safetensors", INDEX_FILE],
    "qwen3": ["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model"],
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")

OFFLINE_HINT = (
    "To run without the hub, pass local directories: --model DIR --codec DIR "
    "(CatTTS.from_pretrained(model=DIR, codec=DIR)); `python -m cat_tts.tools.make_tiny OUT` writes tiny random "
    "ones (OUT/model, OUT/codec) for offline plumbing checks"
)


class CheckpointNotFoundError(ModelLoadError, FileNotFoundError):
    """A local checkpoint directory, or a file it must hold, does not exist (also a `FileNotFoundError`)."""


class WrongCheckpointKindError(ModelLoadError):
    """A directory holds another kind of checkpoint than the one asked for (e.g. the codec given as the model)."""


class HubUnavailableError(ModelLoadError):
    """A hub id could not be fetched (no network, offline mode, unknown or private repository)."""


class DamagedCheckpointError(CheckpointError):
    """A checkpoint file cannot be read: truncated, a corrupt header, or keys stored twice."""


# ---------------------------------------------------------------------------------------------------------------
# Checkpoint references


def _check_kind(kind: str) -> None:
    if kind not in _KIND_NAMES:
        raise ValueError(f"kind must be one of {sorted(_KIND_NAMES)}, got {kind!r}")


def read_config_json(directory: str | Path) -> dict[str, Any]:
    """The parsed `config.json` of a checkpoint directory.

    Raises:
        CheckpointNotFoundError: the directory has no config.json.
        DamagedCheckpointError: config.json is not a JSON object.
    """
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointNotFoundError(f"{directory} has no {CONFIG_FILE}: expected a checkpoint directory")
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DamagedCheckpointError(f"{path} is not valid JSON ({err}); the file is damaged: fetch it again") from err
    if not isinstance(fields, dict):
        raise DamagedCheckpointError(f"{path} holds a {type(fields).__name__}, expected a JSON object")
    return fields


def checkpoint_kind(config: dict[str, Any]) -> CheckpointKind | None:
    """Which kind of checkpoint a `config.json` describes: "model", "codec", "qwen3", or None (unknown).

    The CAT-TTS model's config has model_type "moss_tts_delay" and a nested `language_config`; the codec's has
    model_type "speech_tokenizer" and its stage lists (`encoder_kwargs`, `quantizer_kwargs`, ...); a Qwen3
    causal LM has model_type "qwen3".
    """
    model_type = config.get("model_type")
    if model_type == "moss_tts_delay" or "language_config" in config:
        return "model"
    if model_type == "speech_tokenizer" or {"encoder_kwargs", "quantizer_kwargs"} <= config.keys():
        return "codec"
    if model_type == "qwen3":
        return "qwen3"
    return None


def _looks_like_hub_id(ref: str | Path) -> bool:
    """'owner/name' given as a string (a `Path` always means a local directory)."""
    return isinstance(ref, str) and _HUB_ID.match(ref) is not None


def resolve_checkpoint(ref: str | Path, kind: CheckpointKind) -> Path:
    """A checkpoint reference (local directory or hub id) -> the local directory that holds it.

    A local directory is used as it is; a string of the form 'owner/name' that is not a local path is fetched
    from the Hugging Face hub (configs, safetensors and tokenizer files only; the cached snapshot is reused).
    The directory's config.json must describe a checkpoint of `kind` (an unknown config is left to the loader).

    Args:
        ref: a directory, or a hub id such as `DEFAULT_MODEL`.
        kind: "model" (CAT-TTS / MOSS-TTS-Local-Transformer), "codec" (CAT / MOSS-Audio-Tokenizer) or "qwen3"
            (a Qwen3 causal LM for `CatTTSModel.from_qwen3`).

    Returns:
        The local directory.

    Raises:
        CheckpointNotFoundError: a local path that does not exist, or a directory without config.json.
        ModelLoadError: a file given instead of a directory.
        WrongCheckpointKindError: the directory holds another kind of checkpoint (the message names it).
        HubUnavailableError: a hub id that could not be fetched (the message says how to pass local directories).
        DamagedCheckpointError: config.json is not valid JSON.
    """
    _check_kind(kind)
    what = _KIND_NAMES[kind]
    path = Path(ref).expanduser()
    if path.is_dir():
        directory = path
    elif path.exists():
        hint = f" (here: {path.parent})" if path.name == CONFIG_FILE or path.suffix == ".safetensors" else ""
        raise ModelLoadError(
            f"{path} is a file, not a directory: pass the {what} checkpoint directory that holds {CONFIG_FILE}{hint}"
        )
    elif not _looks_like_hub_id(ref):
        raise CheckpointNotFoundError(f"{kind} directory {str(ref)!r} does not exist")
    else:
        directory = _download(str(ref), kind)
    if not (directory / CONFIG_FILE).is_file():
        inner = next((d for d in (directory / "model", directory / kind) if (d / CONFIG_FILE).is_file()), None)
        hint = f"; {inner} has one (a training checkpoint's export?): pass that directory" if inner else ""
        raise CheckpointNotFoundError(
            f"{directory} has no {CONFIG_FILE}: expected a {what} checkpoint directory (config.json + safetensors)"
            + hint
        )
    config = read_config_json(directory)
    found = checkpoint_kind(config)
    if found is not None and found != kind:
        raise WrongCheckpointKindError(
            f"{directory} holds a {_KIND_NAMES[found]} (config.json model_type {config.get('model_type')!r}), "
            f"not a {what}: {_KIND_USAGE[found]}"
        )
    return directory


def _download(repo_id: str, kind: str) -> Path:
    """Fetch (or reuse the cached snapshot of) a hub repository."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:  # a required dependency; only a broken install lacks it
        raise HubUnavailableError(
            f"{repo_id!r} is not a local directory and huggingface_hub is not installed. " + OFFLINE_HINT
        ) from err
    try:
        return Path(snapshot_download(repo_id=repo_id, allow_patterns=_HUB_PATTERNS[kind]))
    except Exception as err:  # network down, offline mode, unknown/private repo, disk full: one answer for all
        first_line = (str(err).strip().splitlines() or [""])[0][:200]
        reason = f"{type(err).__name__}: {first_line}" if first_line else type(err).__name__
        if type(err).__name__ in ("RepositoryNotFoundError", "GatedRepoError"):
            raise HubUnavailableError(
                f"{repo_id!r} is not a local directory, and the Hugging Face hub has no accessible repository of "
                f"that name ({reason}): check the spelling, log in for a private repository, or pass a local "
                f"{kind} directory. " + OFFLINE_HINT
            ) from err
        raise HubUnavailableError(
            f"{repo_id!r} is not a local directory and could not be fetched from the Hugging Face hub ({reason}). "
            + OFFLINE_HINT
        ) from err


# ---------------------------------------------------------------------------------------------------------------
# dtypes

DTYPE_CHOICES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")  # accepted dtype names


def _dtype_table() -> dict[str, torch.dtype]:
    import torch

    return {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }


def parse_dtype(name: str | torch.dtype) -> torch.dtype | None:
    """A dtype name (or dtype) -> torch dtype; None for "auto".

    Raises:
        InputError: for any other name or a dtype that is not float32/bfloat16/float16.
    """
    table = _dtype_table()
    if not isinstance(name, str):
        if name in table.values():
            return name
        raise InputError(f"dtype must be float32, bfloat16 or float16 (or 'auto'), got {name}")
    key = name.strip().lower().removeprefix("torch.")
    if key == "auto":
        return None
    if key not in table:
        raise InputError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPE_CHOICES)}")
    return table[key]


def recorded_dtype(config: dict[str, Any]) -> str | None:
    """The dtype a checkpoint's config.json records (`dtype`, or the older `torch_dtype`), or None."""
    value = config.get("dtype") or config.get("torch_dtype")
    return value if isinstance(value, str) else None


def resolve_dtype(
    requested: str | torch.dtype | None,
    device: torch.device | str,
    recorded: str | None = None,
    kind: Literal["model", "codec"] = "model",
) -> torch.dtype:
    """The dtype to load a model or codec in: what was asked for, else the one sensible default.

    `None` and "auto" mean:

    | kind  | device | dtype                                                                                  |
    |-------|--------|----------------------------------------------------------------------------------------|
    | model | cuda   | the recorded dtype when it is a half type (bfloat16, float16) the GPU runs natively;   |
    |       |        | otherwise bfloat16 (float32 on GPUs without bfloat16)                                  |
    | model | other  | float32 (half-precision matmuls are slow or inexact on CPUs)                           |
    | codec | any    | float32 (the released codec is float32, and so is the official runtime)                |

    An explicit name or dtype is always honoured.

    Args:
        requested: None, "auto", a name (float32/fp32, bfloat16/bf16, float16/fp16) or a torch dtype.
        device: where the weights will live.
        recorded: the checkpoint's recorded dtype name (config.json `dtype` / `torch_dtype`; see
            `recorded_dtype`), if any.
        kind: "model" or "codec".

    Returns:
        The torch dtype.

    Raises:
        InputError: an unknown dtype name (the message lists the allowed ones).
    """
    import torch

    if kind not in ("model", "codec"):
        raise ValueError(f"kind must be 'model' or 'codec', got {kind!r}")
    chosen = parse_dtype(requested) if requested is not None else None
    if chosen is not None:
        return chosen
    device = torch.device(device)
    if kind == "codec" or device.type != "cuda":
        return torch.float32
    try:
        stored = parse_dtype(recorded) if recorded else None
    except InputError:  # an exotic recorded dtype: fall back to the default
        stored = None
    bf16_ok = _cuda_supports_bf16()
    if stored == torch.float16 or (stored == torch.bfloat16 and bf16_ok):
        return stored
    return torch.bfloat16 if bf16_ok else torch.float32


def _cuda_supports_bf16() -> bool:
    """True unless a visible GPU lacks native bfloat16 (pre-Ampere). Without CUDA the load itself will fail with
    its own message; the answer then describes a current GPU."""
    import torch

    try:
        return not torch.cuda.is_available() or bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # older torch without `including_emulation`
        return bool(torch.cuda.is_bf16_supported())
    except (RuntimeError, AssertionError):  # a broken driver: the load reports the device problem itself
        return True


def dtype_name(dtype: torch.dtype) -> str:
    """'bfloat16' for torch.bfloat16 (for messages and start-up lines)."""
    return str(dtype).removeprefix("torch.")


# ---------------------------------------------------------------------------------------------------------------
# safetensors

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
        mmap: map the files instead of reading them: the tensors are views of the file, paged in when first
            used (nothing is read now; the page cache holds the data). For weights kept on the CPU as stored.

    Returns:
        Stored name -> CPU tensor of the stored dtype.

    Raises:
        CheckpointNotFoundError / DamagedCheckpointError: a missing or damaged file, or a name stored twice.
    """
    paths = [Path(files)] if isinstance(files, (str, Path)) else [Path(f) for f in files]
    with SafetensorsCheckpoint(paths) as checkpoint:  # checks every header (and duplicates) first
        if not mmap:
            return {key: checkpoint.read(key) for key in checkpoint.keys()}
    from safetensors import SafetensorError, safe_open

    tensors: dict[str, torch.Tensor] = {}
    for path in paths:
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                for key in handle.keys():
                    tensors[key] = handle.get_tensor(key)
        except SafetensorError as err:
            raise DamagedCheckpointError(f"{path} is not a readable safetensors file: {err}") from err
    return tensors
