"""Weights I/O: the official MOSS-TTS-Local-Transformer format, strict loading, saving, and `from_qwen3`.

The official format (and the one we write) is a directory with `config.json` (model_type
"moss_tts_delay") and safetensors, either one `model.safetensors` or shards listed in
`model.safetensors.index.json`. Official key names map onto our module names by prefix
(`official_to_internal` / `internal_to_official`, the one conversion table):

    model.embedding_list.{c}.            <-> embeddings.{c}.
    model.language_model.                <-> temporal.
    local_transformer.                   <-> depth.
    speech_embedding_to_local_mlp.       <-> depth_input.
    local_to_speech_embedding_mlps.{c}.  <-> depth_output.{c}.
    layer_norm_before_lm_heads.{c}.      <-> head_norms.{c}.
    lm_heads.{c}.                        <-> heads.{c}.

Two special cases:
* `model.language_model.embed_tokens.weight` is Qwen3's own token table, which the official model keeps
  but never uses (inputs are always given as embeddings). We do not keep a second table: our temporal
  model's `embed_tokens` IS the text-channel table `embeddings.0`. On load the checkpoint's copy is
  dropped (it does not change the function); on save we write the text-channel table under that name so
  that readers expecting every official key find it.
* Non-parameter buffers some checkpoints carry (`...rotary_emb.inv_freq`, `...position_ids`) are skipped.

Loading builds the model on the meta device, materialises it on the target device in the target dtype and
reads the checkpoint tensor by tensor into the parameters (`cat_tts.weights.SafetensorsCheckpoint`): peak host
memory is the model itself on the CPU, near zero beyond a staging buffer on a GPU. Only safetensors are read
(no pickle); no remote code is ever run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import save_file

from cat_tts.errors import CheckpointError
from cat_tts.model.config import OFFICIAL_ARCHITECTURE, CatTTSConfig
from cat_tts.model.temporal import ARCHITECTURE_FIELDS, read_qwen3_config, reset_rotary
from cat_tts.weights import (
    CONFIG_FILE,
    INDEX_FILE,
    SINGLE_FILE,
    SafetensorsCheckpoint,
    checkpoint_files,
    read_config_json,
    recorded_dtype,
    resolve_checkpoint,
    resolve_dtype,
)

if TYPE_CHECKING:
    from cat_tts.model.tts import CatTTSModel

logger = logging.getLogger(__name__)

# (official prefix, internal prefix)
KEY_PREFIXES: tuple[tuple[str, str], ...] = (
    ("model.embedding_list.", "embeddings."),
    ("model.language_model.", "temporal."),
    ("local_transformer.", "depth."),
    ("speech_embedding_to_local_mlp.", "depth_input."),
    ("local_to_speech_embedding_mlps.", "depth_output."),
    ("layer_norm_before_lm_heads.", "head_norms."),
    ("lm_heads.", "heads."),
)
UNUSED_QWEN_EMBEDDING = "model.language_model.embed_tokens.weight"  # official, unused: dropped on load
TEXT_EMBEDDING_ALIAS = "temporal.embed_tokens.weight"  # internal alias of embeddings.0.weight
SKIPPED_SUFFIXES = ("rotary_emb.inv_freq", "rotary_emb.original_inv_freq", "position_ids")
__all__ = ["CheckpointError", "checkpoint_files", "load_pretrained", "load_weights", "resolve_directory"]


def is_skipped_key(key: str) -> bool:
    """True for checkpoint entries that are not parameters of the function (buffers, the unused Qwen table)."""
    return key == UNUSED_QWEN_EMBEDDING or key.endswith(SKIPPED_SUFFIXES)


def official_to_internal(key: str) -> str | None:
    """Map an official key onto our parameter name; None when the key belongs to no known module."""
    for official, internal in KEY_PREFIXES:
        if key.startswith(official):
            return internal + key[len(official) :]
    return None


def internal_to_official(name: str) -> str:
    """Map one of our parameter names onto the official key."""
    for official, internal in KEY_PREFIXES:
        if name.startswith(internal):
            return official + name[len(internal) :]
    raise KeyError(f"no official name for parameter {name!r}")


# ---------------------------------------------------------------------- directories and files
def resolve_directory(path_or_hub_id: str | Path) -> Path:
    """The local directory of a CAT-TTS model checkpoint (see `cat_tts.weights.resolve_checkpoint`)."""
    return resolve_checkpoint(path_or_hub_id, "model")


def read_config(directory: Path) -> CatTTSConfig:
    """Read `config.json` of a CAT-TTS / MOSS-TTS-Local-Transformer directory."""
    fields = read_config_json(directory)
    config_path = directory / CONFIG_FILE
    model_type = fields.pop("model_type", None)
    if model_type != CatTTSConfig.model_type:
        raise CheckpointError(
            f"{config_path} has model_type {model_type!r}; expected {CatTTSConfig.model_type!r} "
            "(a MOSS-TTS-Local-Transformer checkpoint). For a Qwen3 LM use CatTTSModel.from_qwen3."
        )
    return CatTTSConfig(**fields)


def _name_list(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def load_weights(model: CatTTSModel, directory: Path) -> None:
    """Strictly load official-format weights into `model`, tensor by tensor, converting dtype on the way.

    Every stored shape is checked against the model (from the safetensors headers) before any weight is read.
    Each tensor is then read straight into its parameter wherever that lives (see `SafetensorsFile.read`):
    no shard is ever held in memory as a whole, so the host peak is the model itself (on the CPU) plus one
    bounded staging buffer.

    Raises:
        CheckpointError: naming missing keys, unexpected keys and shape mismatches (official names).
    """
    params = dict(model.named_parameters(remove_duplicate=False))
    expected = {name for name in params if name != TEXT_EMBEDDING_ALIAS}
    with SafetensorsCheckpoint(checkpoint_files(directory)) as checkpoint:
        plan: list[tuple[str, str]] = []  # (stored key, parameter name)
        unexpected: list[str] = []
        mismatched: list[str] = []
        for key, shape in checkpoint.shapes().items():
            if is_skipped_key(key):
                continue
            name = official_to_internal(key)
            if name is None or name not in expected:
                unexpected.append(key)
                continue
            if shape != tuple(params[name].shape):
                mismatched.append(f"{key}: checkpoint {shape} vs model {tuple(params[name].shape)}")
                continue
            plan.append((key, name))
        missing = sorted(internal_to_official(name) for name in expected - {name for _, name in plan})
        if missing or unexpected or mismatched:
            parts = []
            if missing:
                parts.append(f"missing weights ({len(missing)}): {_name_list(missing)}")
            if unexpected:
                parts.append(f"unexpected weights ({len(unexpected)}): {_name_list(sorted(unexpected))}")
            if mismatched:
                parts.append(f"shape mismatches ({len(mismatched)}): {_name_list(mismatched)}")
            raise CheckpointError(f"checkpoint {directory} does not match the model config: " + "; ".join(parts))
        with torch.no_grad():
            for key, name in plan:
                checkpoint.read(key, out=params[name])


def load_pretrained(
    cls: type[CatTTSModel],
    path_or_hub_id: str | Path,
    dtype: torch.dtype | str | None = None,
    attn_implementation: str | None = None,
    device: torch.device | str | None = None,
) -> CatTTSModel:
    """Build the model from a checkpoint's config.json and load its weights strictly (CatTTSModel.from_pretrained).

    The model is built on the meta device (no random init), materialised directly on `device` in the resolved
    dtype, and filled tensor by tensor (`load_weights`): peak host memory is the model itself when loading to
    the CPU, and one staging buffer when loading to a GPU.

    Args:
        path_or_hub_id: checkpoint directory or hub id.
        dtype: None / "auto" (see `cat_tts.weights.resolve_dtype`: float32 on CPU, bfloat16 on CUDA unless the
            checkpoint records float16), a name ("bf16", "float32", ...) or a torch dtype.
        attn_implementation: see `CatTTSModel`.
        device: where the parameters are created (default CPU).
    """
    directory = resolve_directory(path_or_hub_id)
    config = read_config(directory)
    device = torch.device(device if device is not None else "cpu")
    dtype = resolve_dtype(dtype, device, recorded=recorded_dtype(read_config_json(directory)), kind="model")
    with torch.device("meta"):  # no random init of weights that are about to be overwritten
        model = cls(config, attn_implementation=attn_implementation)
    model = model.to(dtype=dtype)
    model.to_empty(device=device)
    reset_rotary(model.temporal, device)
    load_weights(model, directory)
    return model.eval()


def save_pretrained(model: CatTTSModel, directory: str | Path, max_shard_size: int = 5 * 1024**3) -> Path:
    """Write `config.json` and safetensors with official key names (see CatTTSModel.save_pretrained)."""
    if max_shard_size <= 0:
        raise ValueError(f"max_shard_size must be > 0 bytes, got {max_shard_size}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in [*directory.glob("model*.safetensors"), directory / INDEX_FILE]:
        stale.unlink(missing_ok=True)

    config = model.config.to_dict()
    config["architectures"] = [OFFICIAL_ARCHITECTURE]
    config["dtype"] = str(model.dtype).removeprefix("torch.")
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    tensors: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():  # shared tables listed once
        if name == TEXT_EMBEDDING_ALIAS:
            continue
        tensors[internal_to_official(name)] = param.detach().to("cpu").contiguous()
    tensors[UNUSED_QWEN_EMBEDDING] = model.embeddings[0].weight.detach().to("cpu").clone()

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_size:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    metadata = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(directory / SINGLE_FILE), metadata=metadata)
        return directory
    weight_map = {}
    total = 0
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(directory / name), metadata=metadata)
        for key, tensor in shard.items():
            weight_map[key] = name
            total += tensor.numel() * tensor.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return directory


# ---------------------------------------------------------------------- from_qwen3
def _qwen3_to_internal(key: str) -> str | None:
    """Map a Qwen3ForCausalLM key onto our temporal/text-embedding names (None = not used)."""
    if key == "model.embed_tokens.weight":
        return "embeddings.0.weight"
    if key.startswith("model."):
        return "temporal." + key[len("model.") :]
    return None


def load_from_qwen3(
    cls: type[CatTTSModel],
    path_or_hub_id: str | Path,
    config: CatTTSConfig,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
) -> CatTTSModel:
    """New model with temporal weights and text embedding from a Qwen3 causal LM (CatTTSModel.from_qwen3)."""
    directory = resolve_checkpoint(path_or_hub_id, "qwen3")
    qwen = read_qwen3_config(directory)
    lc = config.language_config
    differences = [
        f"{field}: Qwen3 {getattr(qwen, field, None)} vs config {getattr(lc, field, None)}"
        for field in ARCHITECTURE_FIELDS
        if getattr(qwen, field, None) != getattr(lc, field, None)
    ]
    if differences:
        raise CheckpointError(
            f"the Qwen3 checkpoint {directory} does not match config.language_config: " + "; ".join(differences)
        )
    model = cls(config, attn_implementation=attn_implementation).to(dtype=dtype or torch.float32)
    params = dict(model.named_parameters(remove_duplicate=False))
    expected = {name for name in params if name.startswith("temporal.") and name != TEXT_EMBEDDING_ALIAS}
    loaded: set[str] = set()
    unexpected: list[str] = []
    with SafetensorsCheckpoint(checkpoint_files(directory)) as checkpoint, torch.no_grad():
        for key, shape in checkpoint.shapes().items():
            if key == "lm_head.weight" or key.endswith(SKIPPED_SUFFIXES):
                continue  # the CAT-TTS text head is trained from scratch on the depth output
            name = _qwen3_to_internal(key)
            if name is None or name not in params or name == TEXT_EMBEDDING_ALIAS:
                unexpected.append(key)
                continue
            param = params[name]
            if name == "embeddings.0.weight":
                rows = min(shape[0], param.shape[0])
                if shape[1] != param.shape[1]:
                    raise CheckpointError(f"{key}: width {shape[1]} != {param.shape[1]}")
                param[:rows].copy_(checkpoint.read(key)[:rows])
                if rows < param.shape[0]:
                    logger.info("text embedding rows %d..%d keep their fresh init", rows, param.shape[0] - 1)
                continue
            if shape != tuple(param.shape):
                raise CheckpointError(f"{key}: checkpoint {shape} vs model {tuple(param.shape)}")
            checkpoint.read(key, out=param)
            loaded.add(name)
    missing = sorted(expected - loaded)
    if missing or unexpected:
        raise CheckpointError(
            f"Qwen3 checkpoint {directory}: missing {_name_list(missing)}; unexpected {_name_list(sorted(unexpected))}"
        )
    return model
