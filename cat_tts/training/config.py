"""Training configuration: nested dataclasses that map 1:1 onto the YAML files in `configs/`.

A YAML file holds the sections below (each optional; missing fields keep their defaults). Unknown
sections or keys are an error, so a typo never silently falls back to a default. Command-line
overrides use dotted names: `--set optim.lr=1e-4 --set data.tokens_per_batch=8192`. Every problem is a
`cat_tts.errors.UserError` naming the field, the value and what is allowed.

Renamed fields that are still read, with a warning: `data.format` (now `data.prompt_layout`) and its value
"continuation" (now "plain": "continuation" only names an inference prompt mode).

The DeepSpeed JSON is generated from this config (`cat_tts.training.deepspeed_config`), so batch size,
accumulation, clipping and precision have one source.
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cat_tts.errors import InputError, UserError
from cat_tts.files import read_yaml
from cat_tts.model.psd import DEPTH_RANGES, PAPER_DEPTH_RANGE
from cat_tts.text.prompt import DEPRECATED_LAYOUT_NAMES, LAYOUTS, check_layout

logger = logging.getLogger(__name__)

PRESETS = ("tiny", "small", "cat_tts_1_7b")
ATTENTION = ("auto", "sdpa", "flash_attention_2", "eager")
PRECISIONS = ("auto", "bf16", "fp32")
# Old field names -> new ones, still read with a warning.
RENAMED_FIELDS = {("data", "format"): "prompt_layout"}


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise UserError(f"{name} = {value!r} is invalid; allowed: {allowed}")


@dataclass
class ModelSection:
    """Which model to train and how to start it."""

    # architecture for a random init or an init from a Qwen3 LM: "tiny" (tests), "small", "cat_tts_1_7b" (the paper)
    preset: str = "tiny"
    # start point: None = random init from `preset`; "qwen3:PATH_OR_ID" = temporal transformer from a Qwen3 causal
    # LM (the paper's recipe); any other value = a CAT-TTS checkpoint (the official release, a cat-tts export, or a
    # cat-tts run / training checkpoint directory, whose `model/` export is used)
    init: str | None = None
    # tokenizer directory or hub id; None = the one stored with `init` (the Qwen3 LM or the checkpoint)
    tokenizer: str | None = None
    # attention kernel of the temporal transformer; "auto" = FlashAttention-2 on GPU when installed, else sdpa
    attn_implementation: str = "auto"
    # recompute temporal-transformer activations in backward (less memory, ~30% more compute)
    gradient_checkpointing: bool = False

    def validate(self) -> None:
        _check(self.preset in PRESETS, "model.preset", self.preset, " | ".join(PRESETS))
        _check(
            self.attn_implementation in ATTENTION,
            "model.attn_implementation",
            self.attn_implementation,
            " | ".join(ATTENTION),
        )
        if self.init is not None:
            _check(
                bool(self.init.strip()) and self.init != "qwen3:",
                "model.init",
                self.init,
                "null, 'qwen3:PATH_OR_ID' or a checkpoint path / hub id",
            )


@dataclass
class DataSection:
    """Where the prepared shards are and how they become batches."""

    # prepared dataset directory (output of `python -m cat_tts.data.prepare`); `train.py --data` overrides it
    path: str | None = None
    # prompt layout of the samples, recorded in the exported model's config so that inference builds the same grids:
    # "plain" = text tokens, then the frames (the paper's format, training from a Qwen3 LM);
    # "chat" = the official chat format with a reference clip of the same speaker (fine-tuning the release)
    prompt_layout: str = "plain"
    # token budget of one micro-batch on one rank: samples x longest sample (rows = text tokens + frames)
    tokens_per_batch: int = 4096
    # utterances with more frames than this are left out of training (12.5 frames per second)
    max_frames: int = 750
    # chat layout: the longest reference clip in frames (a longer one is cut to its first frames)
    max_reference_frames: int = 250
    # DataLoader worker processes building batches (0 = in the training process)
    num_workers: int = 0

    def validate(self) -> None:
        if self.prompt_layout in DEPRECATED_LAYOUT_NAMES:
            self.prompt_layout = check_layout(self.prompt_layout, "data.prompt_layout")  # the new name, with a warning
        _check(self.prompt_layout in LAYOUTS, "data.prompt_layout", self.prompt_layout, " | ".join(LAYOUTS))
        _check(self.tokens_per_batch >= 16, "data.tokens_per_batch", self.tokens_per_batch, ">= 16")
        _check(self.max_frames >= 1, "data.max_frames", self.max_frames, ">= 1")
        _check(self.max_reference_frames >= 1, "data.max_reference_frames", self.max_reference_frames, ">= 1")
        _check(self.num_workers >= 0, "data.num_workers", self.num_workers, ">= 0")


@dataclass
class PSDSection:
    """Progressive Sequence Dropout: which RVQ depth each training sample keeps."""

    # probability that a sample keeps a random prefix of K layers (drawn from depth_range) instead of all N layers;
    # the paper uses 1.0; 0 = the plain model (every sample keeps all N)
    p: float = 1.0
    # where K is drawn from (uniformly) when dropout fires: "1..N-1" = the paper (at p = 1 layer N is then never
    # trained); "1..N" = every depth, so that at p = 1 every layer is trained (the shipped recipes use it)
    depth_range: str = PAPER_DEPTH_RANGE

    def validate(self) -> None:
        _check(0.0 <= self.p <= 1.0, "psd.p", self.p, "0.0 .. 1.0")
        _check(self.depth_range in DEPTH_RANGES, "psd.depth_range", self.depth_range, " | ".join(DEPTH_RANGES))


@dataclass
class OptimSection:
    """AdamW with linear warmup and cosine decay, and gradient clipping."""

    lr: float = 2e-4  # peak learning rate (the paper: 2e-4 from Qwen3; fine-tuning: ~1e-5)
    min_lr_ratio: float = 0.1  # the cosine ends at lr * min_lr_ratio
    warmup_steps: int = 1000  # optimizer steps of linear warmup from 0 to lr
    # optimizer steps over which the cosine decays; None = run.max_steps (keep it fixed when resuming a longer run)
    decay_steps: int | None = None
    weight_decay: float = 0.1  # decoupled weight decay on matrices (norm weights are not decayed)
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.95  # AdamW second-moment decay
    eps: float = 1e-8  # AdamW epsilon
    grad_clip: float = 1.0  # clip the global gradient norm to this value (0 = no clipping)

    def validate(self) -> None:
        _check(self.lr > 0, "optim.lr", self.lr, "> 0")
        _check(0.0 <= self.min_lr_ratio <= 1.0, "optim.min_lr_ratio", self.min_lr_ratio, "0.0 .. 1.0")
        _check(self.warmup_steps >= 0, "optim.warmup_steps", self.warmup_steps, ">= 0")
        if self.decay_steps is not None:
            _check(self.decay_steps >= 1, "optim.decay_steps", self.decay_steps, ">= 1 or null")
        _check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, ">= 0")
        _check(0.0 <= self.beta1 < 1.0, "optim.beta1", self.beta1, "0.0 <= beta1 < 1.0")
        _check(0.0 <= self.beta2 < 1.0, "optim.beta2", self.beta2, "0.0 <= beta2 < 1.0")
        _check(self.eps > 0, "optim.eps", self.eps, "> 0")
        _check(self.grad_clip >= 0, "optim.grad_clip", self.grad_clip, ">= 0")


@dataclass
class DeepSpeedSection:
    """How DeepSpeed shards the model state and accumulates gradients."""

    # ZeRO stage: 2 shards optimizer state and gradients (default); 3 also the weights (large runs; with several
    # ranks the model runs in its rank-uniform mode, see docs/notes/train.md)
    zero_stage: int = 2
    # micro-batches accumulated per optimizer step (global batch = tokens_per_batch x grad_accum x ranks)
    grad_accum: int = 1
    # "auto" = bf16 with fp32 master weights on GPU, fp32 on CPU
    precision: str = "auto"
    # keep the optimizer state in CPU memory (ZeRO-Offload) to fit larger models on fewer GPUs
    offload_optimizer: bool = False
    # ZeRO-3 only: parameters with fewer elements than this stay whole on every rank (never all-gathered)
    stage3_param_persistence_threshold: int = 100_000
    # ZeRO-3 only: parameter elements fetched ahead along the recorded module order (0 = fetch on use only)
    stage3_prefetch_bucket_size: int = 50_000_000

    def validate(self) -> None:
        _check(self.zero_stage in (0, 1, 2, 3), "deepspeed.zero_stage", self.zero_stage, "0, 1, 2 or 3")
        _check(self.grad_accum >= 1, "deepspeed.grad_accum", self.grad_accum, ">= 1")
        _check(self.precision in PRECISIONS, "deepspeed.precision", self.precision, " | ".join(PRECISIONS))
        _check(
            self.stage3_param_persistence_threshold >= 0,
            "deepspeed.stage3_param_persistence_threshold",
            self.stage3_param_persistence_threshold,
            ">= 0",
        )
        _check(
            self.stage3_prefetch_bucket_size >= 0,
            "deepspeed.stage3_prefetch_bucket_size",
            self.stage3_prefetch_bucket_size,
            ">= 0",
        )


@dataclass
class RunSection:
    """Length, output, checkpoints and logging of one run."""

    out: str = "runs/default"  # run directory: checkpoints/, metrics.jsonl, tensorboard/
    max_steps: int = 1000  # optimizer steps of the whole run (a resumed run continues up to it)
    save_every: int = 500  # checkpoint every this many optimizer steps (and always at the end)
    keep_last: int = 3  # complete checkpoints kept in the run directory (older ones are deleted)
    log_every: int = 10  # a log line and a metrics.jsonl record every this many optimizer steps
    seed: int = 0  # seeds the weights of a random init, the batch order and the PSD depths
    export: bool = True  # also write a Hugging Face-format model directory into every checkpoint
    tensorboard: bool = True  # write TensorBoard event files under RUN_DIR/tensorboard

    def validate(self) -> None:
        _check(self.max_steps >= 1, "run.max_steps", self.max_steps, ">= 1")
        _check(self.save_every >= 1, "run.save_every", self.save_every, ">= 1")
        _check(self.keep_last >= 1, "run.keep_last", self.keep_last, ">= 1")
        _check(self.log_every >= 1, "run.log_every", self.log_every, ">= 1")


@dataclass
class TrainConfig:
    """Everything a training run needs; `configs/*.yaml` map onto it section by section."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    psd: PSDSection = field(default_factory=PSDSection)
    optim: OptimSection = field(default_factory=OptimSection)
    deepspeed: DeepSpeedSection = field(default_factory=DeepSpeedSection)
    run: RunSection = field(default_factory=RunSection)

    def validate(self) -> TrainConfig:
        """Checks every section; raises UserError naming the field, its value and the allowed range."""
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate()
        return self

    @property
    def decay_steps(self) -> int:
        """Optimizer steps of the cosine schedule."""
        return self.optim.decay_steps if self.optim.decay_steps is not None else self.run.max_steps

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Builds a config from nested dicts; unknown sections or keys raise UserError."""
        return _from_dict(cls, _renamed(data or {}), "").validate()

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Reads a YAML file (see `configs/`).

        Raises:
            UserError: the file is missing, not UTF-8 or not valid YAML (one line naming the file and line), or a
                field is unknown or invalid (naming the file and the field).
        """
        path = Path(path)
        if path.is_dir():
            raise InputError(f"the config {path} is a directory; pass a YAML file such as configs/tiny.yaml")
        data = read_yaml(path, what="config")  # syntax and encoding errors name the file and line
        if data is not None and not isinstance(data, dict):
            raise UserError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
        try:
            return cls.from_dict(data or {})
        except UserError as err:
            raise UserError(f"{path}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def with_overrides(self, overrides: list[str]) -> TrainConfig:
        """Returns a copy with `section.field=value` overrides applied (values parsed as YAML scalars).

        Raises:
            UserError: for a malformed override, an unknown name or a value of the wrong type.
        """
        data = self.to_dict()
        for item in overrides:
            name, sep, raw = item.partition("=")
            parts = name.strip().split(".")
            if not sep or len(parts) != 2 or not all(parts):
                raise UserError(f"override {item!r} must look like section.field=value (e.g. optim.lr=1e-4)")
            section, key = parts
            key = _new_name(section, key)
            if section not in data:
                raise UserError(f"override {item!r}: unknown section {section!r}; known: {', '.join(data)}")
            if key not in data[section]:
                raise UserError(f"override {item!r}: unknown field {section}.{key}; known: {', '.join(data[section])}")
            data[section][key] = yaml.safe_load(raw) if raw.strip() else None
        return TrainConfig.from_dict(data)


# Fields a resumed run may change without asking: they change neither what is trained nor how (where the run
# lives, how long it goes on, how often it logs and saves, how batches are loaded). Changing `run.max_steps` while
# `optim.decay_steps` is null changes the cosine's length: that is reported as a change of optim.decay_steps.
RESUME_FREE_FIELDS = frozenset(
    {
        "run.out",
        "run.max_steps",
        "run.save_every",
        "run.keep_last",
        "run.log_every",
        "run.export",
        "run.tensorboard",
        "data.num_workers",
    }
)


def config_changes(saved: dict[str, Any], current: TrainConfig) -> tuple[list[str], list[str]]:
    """What differs between a checkpoint's saved config and the config of the run that resumes it.

    Args:
        saved: the checkpoint's `config.yaml`, parsed (older files with renamed fields are read too).
        current: the resuming run's config.

    Returns:
        (changes that alter the training, changes of `RESUME_FREE_FIELDS`), each as "section.field: old -> new",
        in config order. The cosine's effective length is compared as `optim.decay_steps`.
    """
    before = _flatten(_renamed(saved) if isinstance(saved, dict) else {})
    after = _flatten(current.to_dict())
    for flat, max_steps in ((before, before.get("run.max_steps")), (after, current.run.max_steps)):
        if flat.get("optim.decay_steps") is None:
            flat["optim.decay_steps"] = f"null (= run.max_steps {max_steps})"
    absent = "(absent)"
    training, free = [], []
    for name in [*after, *(k for k in before if k not in after)]:
        old, new = before.get(name, absent), after.get(name, absent)
        if old != new:
            (free if name in RESUME_FREE_FIELDS else training).append(f"{name}: {_show(old)} -> {_show(new)}")
    return training, free


def _flatten(data: dict[str, Any]) -> dict[str, Any]:
    """{"optim": {"lr": 1e-4}} -> {"optim.lr": 1e-4}."""
    return {
        f"{section}.{key}": value
        for section, fields in data.items()
        if isinstance(fields, dict)
        for key, value in fields.items()
    }


def _show(value: Any) -> str:
    return (
        "null"
        if value is None
        else value
        if isinstance(value, str)
        else yaml.safe_dump(value).strip().removesuffix("\n...")
    )


def _new_name(section: str, key: str) -> str:
    """The current name of field `section.key` (an old name is mapped, with a warning)."""
    new = RENAMED_FIELDS.get((section, key))
    if new is None:
        return key
    logger.warning("%s.%s is the old name of %s.%s; write %s", section, key, section, new, new)
    return new


def _renamed(data: Any) -> Any:
    """`data` with old field names replaced by the current ones (see `RENAMED_FIELDS`)."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for (section, old), new in RENAMED_FIELDS.items():
        fields = out.get(section)
        if isinstance(fields, dict) and old in fields:
            if new in fields:
                raise UserError(f"{section}.{old} is the old name of {section}.{new}; give only {new}")
            fields = dict(fields)
            fields[_new_name(section, old)] = fields.pop(old)
            out[section] = fields
    return out


def _from_dict(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise UserError(f"{prefix or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"section {prefix!r}" if prefix else "the config"
        raise UserError(f"unknown key(s) {unknown} in {where}; known: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        full = f"{prefix}.{name}" if prefix else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _from_dict(hint, value or {}, full)
        else:
            kwargs[name] = _coerce(value, hint, full)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Checks a YAML scalar against a field type (int -> float is allowed; '1e-4' strings are parsed)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
    if hint is float:
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is str:
        if isinstance(value, str):
            return value
    raise UserError(f"{name} = {value!r} has the wrong type; expected {getattr(hint, '__name__', hint)}")
