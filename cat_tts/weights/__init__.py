"""Weights: where checkpoints come from, which dtype they load in, and the one safetensors reader.

| module        | owns                                                                                    |
|---------------|-----------------------------------------------------------------------------------------|
| `resolve`     | `DEFAULT_MODEL` / `DEFAULT_CODEC`, `resolve_checkpoint` (directory or hub id -> local    |
|               | directory of the right kind), `read_config_json`, `checkpoint_kind`                     |
| `dtype`       | `resolve_dtype` (the one meaning of "auto"), `parse_dtype`, `DTYPE_CHOICES`, `dtype_name` |
| `safetensors` | `SafetensorsFile` / `SafetensorsCheckpoint` / `read_safetensors`, `checkpoint_files`     |
| `errors`      | `CheckpointNotFoundError`, `WrongCheckpointKindError`, `HubUnavailableError`,           |
|               | `DamagedCheckpointError`                                                                |

Import the names from this package (`from cat_tts.weights import DEFAULT_MODEL, resolve_checkpoint`). Nothing here
imports torch at import time: the CLIs read the defaults before parsing their arguments.
"""

from cat_tts.weights.dtype import DTYPE_CHOICES, dtype_name, parse_dtype, recorded_dtype, resolve_dtype
from cat_tts.weights.errors import (
    CheckpointNotFoundError,
    DamagedCheckpointError,
    HubUnavailableError,
    WrongCheckpointKindError,
)
from cat_tts.weights.resolve import (
    CONFIG_FILE,
    DEFAULT_CODEC,
    DEFAULT_MODEL,
    OFFLINE_HINT,
    CheckpointKind,
    checkpoint_kind,
    is_hub_id,
    read_config_json,
    resolve_checkpoint,
)
from cat_tts.weights.safetensors import (
    INDEX_FILE,
    SINGLE_FILE,
    STAGING_BYTES,
    SafetensorsCheckpoint,
    SafetensorsFile,
    TensorInfo,
    checkpoint_files,
    read_safetensors,
)

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_CODEC",
    "DEFAULT_MODEL",
    "DTYPE_CHOICES",
    "INDEX_FILE",
    "OFFLINE_HINT",
    "SINGLE_FILE",
    "STAGING_BYTES",
    "CheckpointKind",
    "CheckpointNotFoundError",
    "DamagedCheckpointError",
    "HubUnavailableError",
    "SafetensorsCheckpoint",
    "SafetensorsFile",
    "TensorInfo",
    "WrongCheckpointKindError",
    "checkpoint_files",
    "checkpoint_kind",
    "dtype_name",
    "is_hub_id",
    "parse_dtype",
    "read_config_json",
    "read_safetensors",
    "recorded_dtype",
    "resolve_checkpoint",
    "resolve_dtype",
]
