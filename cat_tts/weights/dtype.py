"""The dtype policy: the one meaning of `dtype="auto"` and of the dtype names, for the model and the codec.

This module does not import torch at import time (`DTYPE_CHOICES` is read by the CLIs before parsing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from cat_tts.errors import InputError

if TYPE_CHECKING:
    import torch

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
