"""Parameter names: ours <-> the official MOSS-Audio-Tokenizer checkpoint, and strict loading.

Our modules use plain names (`layers.3.attn.qkv.weight`, `weight_g`); the official checkpoint nests the blocks
under `transformer.`, stores the fused QKV as a list of one (`self_attn.in_projs.0`), wraps LayerScale vectors
in a `.scale` and spells weight norm with PyTorch's parametrizations (`parametrizations.weight.original0/1`).
Older spellings accepted on load: `weight_g`/`weight_v`, and `self_attn.in_proj_weight` / `in_proj.weight` /
`out_proj.weight` for the attention projections.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from cat_tts.errors import CheckpointError
from cat_tts.weights import SafetensorsCheckpoint, checkpoint_files, read_safetensors

if TYPE_CHECKING:  # pragma: no cover
    from cat_tts.codec.codec import CatCodec

__all__ = [
    "CheckpointError",
    "from_official_name",
    "from_official_state_dict",
    "load_weights",
    "match_official_keys",
    "to_official_name",
    "to_official_state_dict",
]

# (pattern over our names, replacement giving the official name); applied in order.
_OURS_TO_OFFICIAL: list[tuple[str, str]] = [
    (r"^(encoder|decoder)\.(\d+)\.layers\.", r"\1.\2.transformer.layers."),
    (r"\.attn\.qkv\.weight$", r".self_attn.in_projs.0.weight"),
    (r"\.attn\.out\.weight$", r".self_attn.out_projs.0.weight"),
    (r"\.layer_scale_([12])$", r".layer_scale_\1.scale"),
    (r"\.weight_g$", r".parametrizations.weight.original0"),
    (r"\.weight_v$", r".parametrizations.weight.original1"),
]

# (pattern over official/legacy names, replacement giving ours); applied in order.
_OFFICIAL_TO_OURS: list[tuple[str, str]] = [
    (r"^(encoder|decoder)\.(\d+)\.transformer\.layers\.", r"\1.\2.layers."),
    (r"\.self_attn\.(in_projs\.0\.weight|in_proj\.weight|in_proj_weight)$", r".attn.qkv.weight"),
    (r"\.self_attn\.(out_projs\.0\.weight|out_proj\.weight)$", r".attn.out.weight"),
    (r"\.layer_scale_([12])\.scale$", r".layer_scale_\1"),
    (r"\.parametrizations\.weight\.original0$", r".weight_g"),
    (r"\.parametrizations\.weight\.original1$", r".weight_v"),
]


def _apply(rules: list[tuple[str, str]], name: str) -> str:
    for pattern, repl in rules:
        name = re.sub(pattern, repl, name)
    return name


def to_official_name(name: str) -> str:
    """Our parameter name -> the official checkpoint's key."""
    return _apply(_OURS_TO_OFFICIAL, name)


def from_official_name(name: str) -> str:
    """An official (or legacy-spelled) checkpoint key -> our parameter name."""
    return _apply(_OFFICIAL_TO_OURS, name)


def to_official_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename our state dict to the official key names (tensors made contiguous for safetensors)."""
    return {to_official_name(k): v.contiguous() for k, v in state.items()}


def match_official_keys(
    stored: dict[str, tuple[int, ...]], expected: dict[str, torch.Size], source: str = "checkpoint"
) -> dict[str, str]:
    """Pair the checkpoint's official/legacy keys with our parameter names and check them strictly.

    Only names and shapes are needed (from the safetensors headers), so a mismatch is reported before any
    weight is read.

    Args:
        stored: the checkpoint's stored names -> stored shapes.
        expected: our parameter names -> shapes.
        source: what to call the checkpoint in error messages.

    Returns:
        Our parameter name -> the stored key that holds it.

    Raises:
        CheckpointError: listing missing keys (in the official spelling), unexpected keys (as stored),
            keys given twice under two spellings, and shape mismatches.
    """
    stored_as: dict[str, str] = {}
    duplicated, unexpected = [], []
    for key in stored:
        name = from_official_name(key)
        if name not in expected:
            unexpected.append(key)
        elif name in stored_as:
            duplicated.append(f"{stored_as[name]} / {key}")
        else:
            stored_as[name] = key
    missing = sorted(to_official_name(n) for n in expected if n not in stored_as)
    wrong_shape = [
        f"{key}: stored {tuple(stored[key])}, expected {tuple(expected[n])}"
        for n, key in stored_as.items()
        if tuple(stored[key]) != tuple(expected[n])
    ]
    problems = []
    for title, items in (
        ("missing keys", missing),
        ("unexpected keys", sorted(unexpected)),
        ("keys given under two spellings", duplicated),
        ("shape mismatches", wrong_shape),
    ):
        if items:
            shown = ", ".join(items[:20]) + (f", ... ({len(items) - 20} more)" if len(items) > 20 else "")
            problems.append(f"{len(items)} {title}: {shown}")
    if problems:
        raise CheckpointError(
            f"{source} does not match the codec described by its config.json: "
            + "; ".join(problems)
            + ". Check that config.json and the weights come from the same checkpoint."
        )
    return stored_as


def from_official_state_dict(
    tensors: dict[str, torch.Tensor], expected: dict[str, torch.Size], source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Rename official/legacy keys to ours and check them strictly against the model's parameters.

    Args:
        tensors: the checkpoint's tensors by their stored names.
        expected: our parameter names -> shapes.
        source: what to call the checkpoint in error messages.

    Returns:
        Our state dict.

    Raises:
        CheckpointError: see `match_official_keys`.
    """
    pairs = match_official_keys({k: tuple(v.shape) for k, v in tensors.items()}, expected, source)
    return {name: tensors[key] for name, key in pairs.items()}


def load_weights(model: CatCodec, directory: Path, device: torch.device, dtype: torch.dtype) -> CatCodec:
    """Fill a codec built on the meta device with a checkpoint directory's weights, strictly (names and shapes are
    checked before any weight is read); see `CatCodec.from_pretrained` for the memory behaviour.

    Raises:
        CheckpointError: missing/unexpected keys or shapes (listed), or a damaged file.
    """
    files = checkpoint_files(directory)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if device.type == "cpu" and dtype == torch.float32:
        tensors = read_safetensors(files, mmap=True)  # views of the file: nothing is read yet
        pairs = match_official_keys({k: tuple(v.shape) for k, v in tensors.items()}, expected, str(directory))
        model.load_state_dict({name: tensors[key].float() for name, key in pairs.items()}, strict=True, assign=True)
        return model
    with SafetensorsCheckpoint(files) as checkpoint:
        pairs = match_official_keys(checkpoint.shapes(), expected, str(directory))
        if dtype != torch.float32:
            model.set_dtype(dtype)
        model.to_empty(device=device)
        targets = model.state_dict(keep_vars=True)
        with torch.no_grad():
            for name, key in pairs.items():
                checkpoint.read(key, out=targets[name])
    return model
