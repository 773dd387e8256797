"""What a run is made of: seeds, the model, its tokenizer, the optimizer and the stream of batches."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer

from cat_tts.data.collate import BatchStream, Collator
from cat_tts.data.dataset import PreparedDataset
from cat_tts.data.samples import SampleBuilder
from cat_tts.errors import CheckpointError, UserError
from cat_tts.model import CatTTSConfig, CatTTSModel
from cat_tts.text.tiny_tokenizer import build_tiny_tokenizer
from cat_tts.training.config import TrainConfig

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(cfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    """The model named by `cfg.model`, in fp32 on `device` (DeepSpeed makes the bf16 copy on GPU)."""
    m = cfg.model
    attn = None if m.attn_implementation == "auto" else m.attn_implementation  # None: FA2 when installed, else sdpa
    if m.init is None:
        model = CatTTSModel(CatTTSConfig.from_preset(m.preset), attn_implementation=attn)
    elif m.init.startswith("qwen3:"):
        source = m.init[len("qwen3:") :]
        preset = CatTTSConfig.from_preset(m.preset)
        model = CatTTSModel.from_qwen3(source, preset, dtype=torch.float32, attn_implementation=attn)
    else:
        model = CatTTSModel.from_pretrained(
            _checkpoint_model_dir(m.init), dtype=torch.float32, attn_implementation=attn
        )
    if m.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model.to(device=device, dtype=torch.float32)


def _checkpoint_model_dir(init: str) -> str:
    """A cat-tts training checkpoint (`.../step-N`) or run directory stands for its Hugging Face export."""
    path = Path(init)
    for candidate in (path / "model", path):
        if (candidate / "config.json").is_file():
            return str(candidate)
    return init  # a hub id, or a directory from_pretrained will report on


def load_tokenizer(cfg: TrainConfig) -> Any:
    """`model.tokenizer`, else the tokenizer stored with `model.init`, else (tiny preset) the tiny tokenizer."""
    m = cfg.model
    path = m.tokenizer
    if path is None and m.init is not None:
        path = m.init[len("qwen3:") :] if m.init.startswith("qwen3:") else _checkpoint_model_dir(m.init)
    if path is None:
        if m.preset != "tiny":
            raise UserError(f"model.tokenizer is required for a random init of the {m.preset} preset")
        return build_tiny_tokenizer()
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:  # not a tokenizer directory, unknown hub id, ...
        raise CheckpointError(f"could not load the tokenizer from {path!r}: {str(err).splitlines()[0][:300]}") from err


def record_prompt_layout(model: torch.nn.Module, cfg: TrainConfig) -> None:
    """Writes the run's prompt layout into the model's config, so that every export records it.

    Inference builds its prompts in the layout of the model's config (`PromptBuilder.for_model`); a model
    trained in another layout than its `model.init` checkpoint's is told so in the log.
    """
    before = getattr(model.config, "prompt_layout", None)
    layout = cfg.data.prompt_layout
    if cfg.model.init is not None and not cfg.model.init.startswith("qwen3:") and before != layout:
        logger.warning(
            "model.init %s was trained with the %r prompt layout; this run trains the %r layout (data.prompt_layout), "
            "and its exports record %r",
            cfg.model.init,
            before,
            layout,
            layout,
        )
    model.config.prompt_layout = layout


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; matrices are decayed, vectors (norm weights) are not."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.AdamW(
        groups,
        lr=cfg.optim.lr,
        betas=(cfg.optim.beta1, cfg.optim.beta2),
        eps=cfg.optim.eps,
        foreach=device.type == "cuda",
    )


def build_stream(cfg: TrainConfig, model: torch.nn.Module, tokenizer: Any, rank: int, world: int) -> Any:
    config = model.config
    ids = config.token_ids
    builder = SampleBuilder(tokenizer, ids, config.n_vq, cfg.data.prompt_layout)
    collator = Collator(ids.pad, ids.audio_pad_code, config.n_vq, cfg.psd.p, cfg.psd.depth_range)
    return BatchStream(
        PreparedDataset(cfg.data.path),
        builder,
        collator,
        budget=cfg.data.tokens_per_batch,
        max_frames=cfg.data.max_frames,
        max_reference_frames=cfg.data.max_reference_frames,
        seed=cfg.run.seed,
        rank=rank,
        world_size=world,
        num_workers=cfg.data.num_workers,
    )
