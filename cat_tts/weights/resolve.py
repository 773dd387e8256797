"""Where checkpoints come from: a local directory or a hub id -> a local directory of the right kind.

* `DEFAULT_MODEL` / `DEFAULT_CODEC`: the released hub ids, defined once for every entry point.
* `resolve_checkpoint(ref, kind)`: a local directory or a hub id -> a local directory of the right kind, or a
  `ModelLoadError` that says what was wrong (no such directory, a file, the other kind of checkpoint, the hub
  unreachable) and how to fix it.
* `read_config_json` / `checkpoint_kind`: a checkpoint's config.json and which kind of checkpoint it describes.

Only configs, safetensors and tokenizer files are fetched from the hub: no pickles, never `trust_remote_code`.
This module does not import torch (the CLIs import it for their defaults before parsing arguments).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from cat_tts.errors import ModelLoadError
from cat_tts.weights.errors import (
    CheckpointNotFoundError,
    DamagedCheckpointError,
    HubUnavailableError,
    WrongCheckpointKindError,
)
from cat_tts.weights.safetensors import INDEX_FILE

DEFAULT_MODEL = "OpenMOSS-Team/MOSS-TTS-Local-Transformer"  # the released CAT-TTS weights (with its tokenizer)
DEFAULT_CODEC = "OpenMOSS-Team/MOSS-Audio-Tokenizer"  # the released CAT codec weights

CONFIG_FILE = "config.json"

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


def is_hub_id(ref: str | Path) -> bool:
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
    elif not is_hub_id(ref):
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
