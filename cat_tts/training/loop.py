"""The training loop: an explicit loop over a DeepSpeed engine.

    check the run directory and data -> setup (distributed, seeds) -> [pick the newest intact checkpoint]
    -> model + tokenizer (the run's prompt layout recorded in its config) -> batch stream -> AdamW + warmup/cosine
    -> DeepSpeed -> [resume] -> for each optimizer step: grad_accum micro-batches (forward, finite check,
    backward, step)
    -> log (rank 0) -> checkpoint every run.save_every and at the end -> final Hugging Face export

Runs as one process (CPU or one GPU; a single-process gloo/NCCL group is created) or under the
`deepspeed` / `torchrun` launchers (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT set).
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import resource
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cat_tts.errors import CheckpointError, InputError, UserError
from cat_tts.training.checkpoint import (
    find_resume_checkpoint,
    list_checkpoints,
    load_checkpoint,
    remove_incomplete,
    save_checkpoint,
)
from cat_tts.training.config import TrainConfig
from cat_tts.training.deepspeed_config import build_deepspeed_config, resolve_precision
from cat_tts.training.schedule import warmup_cosine

logger = logging.getLogger(__name__)

# Channels whose loss is logged besides the total: control/text (0) and a few RVQ layers.
LOGGED_LAYERS = (1, 2, 4, 8, 16, 32)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; names the step and the batch's utterance ids."""

    def __init__(self, step: int, ids: list[str], value: float) -> None:
        self.step, self.ids, self.value = step, ids, value
        shown = ", ".join(ids[:20]) + (f", ... ({len(ids)} in all)" if len(ids) > 20 else "")
        super().__init__(f"non-finite loss ({value}) at step {step} on samples [{shown}]; nothing was saved for it")


@dataclass
class TrainResult:
    """What a finished run reports."""

    run_dir: Path
    step: int  # optimizer steps done (including resumed ones)
    losses: dict[int, float] = field(default_factory=dict)  # step -> mean loss, for the steps this call ran
    checkpoint: Path | None = None  # the last checkpoint written
    model_dir: Path | None = None  # the final Hugging Face export


# ---------------------------------------------------------------------------- setup


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup_distributed() -> tuple[int, int, torch.device]:
    """Initialises torch.distributed through DeepSpeed (a one-process group when not launched).

    Returns:
        (rank, world_size, device).
    """
    if not torch.cuda.is_available():
        # DeepSpeed must pick its CPU accelerator before it is imported.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    try:
        import deepspeed
    except ImportError as err:
        raise ImportError("training needs DeepSpeed: pip install 'cat-tts[train]'") from err
    if "RANK" not in os.environ:
        os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"})
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    if not torch.cuda.is_available():
        # CPU runs (tests, smoke checks) use plain gloo collectives: skip the one-off C++ build of DeepSpeed's
        # shared-memory all-reduce kernel, which only speeds up large CPU-only jobs.
        # (`import deepspeed.comm.torch as m` would bind the torch package: deepspeed.comm re-exports it.)
        importlib.import_module("deepspeed.comm.torch")
        sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
    return torch.distributed.get_rank(), torch.distributed.get_world_size(), device


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(cfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    """The model named by `cfg.model`, in fp32 on `device` (DeepSpeed makes the bf16 copy on GPU)."""
    from cat_tts.model import CatTTSConfig, CatTTSModel

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
        from cat_tts.text.tiny_tokenizer import build_tiny_tokenizer

        return build_tiny_tokenizer()
    from transformers import AutoTokenizer

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


def check_run_dir(cfg: TrainConfig, resume: bool) -> Path:
    """Checks, before any work, that the run directory can be written and the data exists.

    Returns:
        The run directory (created if needed).

    Raises:
        InputError: an unwritable or file `run.out`, existing checkpoints without `resume`, missing data.
    """
    from cat_tts.cli import check_writable_dir
    from cat_tts.data.dataset import find_shards

    run_dir = check_writable_dir(cfg.run.out, "--out")
    if not resume and list_checkpoints(run_dir):
        raise InputError(f"{run_dir} already holds checkpoints; pass --resume to continue it or choose another --out")
    if cfg.data.path is None:
        raise InputError("no training data: pass --data DIR (a directory made by `python -m cat_tts.data.prepare`)")
    find_shards(cfg.data.path)
    return run_dir


def _broadcast(value: Any) -> Any:
    """Rank 0's `value` on every rank (a picklable object)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


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
    from cat_tts.data.collate import BatchStream, Collator
    from cat_tts.data.dataset import PreparedDataset
    from cat_tts.data.samples import SampleBuilder

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


def _truncate_metrics(path: Path, step: int) -> None:
    """Drops metrics.jsonl records after `step` (written by an interrupted run past its last checkpoint)."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


class _Logger:
    """Rank-0 sinks: a log line, RUN_DIR/metrics.jsonl, TensorBoard, and a tqdm bar."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, start: int, enabled: bool, progress: bool) -> None:
        self.enabled = enabled
        self.bar = self.tb = self.jsonl = None
        if not enabled:
            return
        from tqdm import tqdm

        self.jsonl = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")
        if cfg.run.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start + 1)
            except ImportError:
                logger.warning("tensorboard is not installed (pip install 'cat-tts[train]'); TensorBoard logs are off")
        self.bar = tqdm(
            total=cfg.run.max_steps, initial=start, unit="step", desc="train", disable=not progress, dynamic_ncols=True
        )

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k.replace("loss_", "loss/"), v, record["step"])
        msg = (
            f"step {record['step']} loss {record['loss']:.4f} lr {record['lr']:.3g} "
            f"grad_norm {record['grad_norm']:.3g} "
            f"tok/s {record['tokens_per_s']:.0f} frames/s {record['frames_per_s']:.0f} "
            f"peak {record['peak_memory_gb']:.2f} GB"
        )
        logger.info(msg)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2g}")

    def close(self) -> None:
        for sink in (self.bar, self.tb, self.jsonl):
            if sink is not None:
                sink.close()


# ----------------------------------------------------------------------------- loop


class _GradientGate(torch.autograd.Function):
    """Identity on all parameters whose backward releases every gradient at once, in parameter order."""

    @staticmethod
    def forward(ctx: Any, *params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(p.view_as(p) for p in params)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return grads  # unused parameters arrive as zeros (autograd materialises missing gradients)


def gated_forward(model: torch.nn.Module, **inputs: Any) -> Any:
    """`model(**inputs)` with a graph whose gradient hooks fire identically on every rank.

    Progressive Sequence Dropout makes the graph data-dependent: a rank whose batch keeps at most K layers
    never touches the heads of layers > K, and the order in which parameters' gradients become ready
    depends on the batch. ZeRO-1/2 reduce gradients in that order (bucketed by the gradient hooks), so
    ranks with different graphs would sum mismatched slices. Routing every parameter through one identity
    function fixes both: its backward runs last and hands out every gradient (zeros for unused ones) in
    the same parameter order on all ranks.
    """
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad], strict=True)
    gated = _GradientGate.apply(*params)
    return torch.func.functional_call(model, dict(zip(names, gated, strict=True)), args=(), kwargs=inputs)


def use_uniform_graph(model: torch.nn.Module, cfg: TrainConfig) -> None:
    """Switch `model` to its rank-uniform forward, as ZeRO-3 needs.

    ZeRO-3 all-gathers each module's parameters when the module is called (forward, and again in the
    backward pass) and reduce-scatters gradients in the order they become ready: these are collectives, so
    every rank must call the same modules in the same order. Progressive Sequence Dropout makes the normal
    forward depend on each batch's depths; `CatTTSModel.uniform_graph` makes it batch-independent (same loss
    and gradients). Single-process ZeRO-3 needs it too: with the normal forward its gradient norm (clipping)
    and update went wrong under gradient accumulation (docs/notes/train.md). The text head's loss is split
    into a fixed number of row chunks so that at most about `loss_chunk_elements` logits live at once for a
    micro-batch of `data.tokens_per_batch` frames.
    """
    model.uniform_graph = True
    text_vocab = model.config.channel_vocab_size(0)
    model.uniform_loss_chunks = max(1, math.ceil(cfg.data.tokens_per_batch * text_vocab / model.loss_chunk_elements))


def train(
    cfg: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Trains according to `cfg` (see the module docstring).

    Args:
        cfg: the resolved training config.
        resume: continue from the newest intact checkpoint in `cfg.run.out` (damaged newer ones are reported and
            moved aside; see `cat_tts.training.checkpoint`).
        progress: show a progress bar (rank 0).
        on_step: called as `on_step(step, loss)` after every optimizer step (and after its checkpoint, if any).

    Returns:
        The `TrainResult`.

    Raises:
        NonFiniteLossError: when the loss becomes NaN/inf (nothing is saved for that step).
        UserError: for a bad config, data, run directory or init checkpoint; CheckpointError (a UserError) when
            `resume` finds checkpoints but none is intact.
    """
    cfg.validate()
    run_dir = check_run_dir(cfg, resume)  # before any work: a bad --out or --data fails at once
    rank, world, device = setup_distributed()
    import deepspeed

    ckpt = None
    if resume:
        ckpt = _broadcast(find_resume_checkpoint(run_dir) if rank == 0 else None)
        if ckpt is None:
            logger.warning("--resume: no checkpoint in %s yet, starting from the beginning", run_dir)
    if rank == 0:
        remove_incomplete(run_dir)

    seed_everything(cfg.run.seed)
    tokenizer = load_tokenizer(cfg)
    model = build_model(cfg, device)
    record_prompt_layout(model, cfg)
    if cfg.deepspeed.zero_stage == 3:
        use_uniform_graph(model, cfg)
    stream = build_stream(cfg, model, tokenizer, rank, world)
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = build_optimizer(model, cfg, device)
    scheduler = warmup_cosine(optimizer, cfg.optim.warmup_steps, cfg.decay_steps, cfg.optim.min_lr_ratio)
    ds_config = build_deepspeed_config(cfg, device.type)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config, dist_init_required=False
    )
    precision = resolve_precision(cfg.deepspeed.precision, device.type)

    step, tokens_seen = 0, 0

    def save(at_step: int) -> Path:
        """Writes the checkpoint of `at_step` (engine, data position, token count, config, export)."""
        return save_checkpoint(
            engine,
            run_dir,
            at_step,
            {"data": stream.state_dict(), "tokens_seen": tokens_seen},
            cfg.to_yaml(),
            tokenizer=tokenizer,
            export=cfg.run.export,
            keep_last=cfg.run.keep_last,
        )

    if ckpt is not None:
        state = load_checkpoint(engine, ckpt)
        step, tokens_seen = int(state["step"]), int(state.get("tokens_seen", 0))
        stream.load_state_dict(state["data"])
        if rank == 0:
            _truncate_metrics(run_dir / "metrics.jsonl", step)  # records of steps the resumed run will redo
            logger.info("resumed from %s at step %d", ckpt, step)
    if rank == 0:
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
        if cfg.psd.p == 1.0 and cfg.psd.depth_range == "1..N-1":
            # With the paper's range no sample keeps all N layers at p = 1: layer N never gets a loss, so a model
            # trained from scratch cannot generate it (a fine-tuned one keeps layer N as in model.init).
            logger.warning(
                "psd.p = 1.0 with psd.depth_range = 1..N-1 (the paper's): every sample keeps at most %d of %d "
                "layers, so layer %d is never trained; set psd.depth_range: 1..N (as the shipped configs do) to "
                "train every layer",
                model.n_vq - 1,
                model.n_vq,
                model.n_vq,
            )
        logger.info(
            "training %.1fM parameters on %d rank(s), %s, ZeRO-%d, %s, %s prompt layout, PSD p=%.2f over %s, "
            "from step %d to %d",
            n_params / 1e6,
            world,
            device.type,
            cfg.deepspeed.zero_stage,
            precision,
            cfg.data.prompt_layout,
            cfg.psd.p,
            cfg.psd.depth_range,
            step,
            cfg.run.max_steps,
        )

    sinks = _Logger(run_dir, cfg, step, enabled=rank == 0, progress=progress)
    result = TrainResult(run_dir=run_dir, step=step)
    batches = iter(stream)
    grad_accum = cfg.deepspeed.grad_accum
    last_saved = step if ckpt is not None else -1
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        while step < cfg.run.max_steps:
            t0 = time.perf_counter()
            engine.train()
            losses, channel_losses = [], []
            rows = frames = 0
            for _ in range(grad_accum):
                batch = next(batches).to(device)
                inputs = {
                    "input_ids": batch.input_ids,
                    "attention_mask": batch.attention_mask,
                    "labels": batch.labels,
                    "depths": batch.depths,
                    "return_logits": False,  # the loss is all we need: no [R, V] logits kept alive
                }
                if world > 1 and cfg.deepspeed.zero_stage < 3:
                    out = gated_forward(engine.module, **inputs)  # rank-independent gradient order
                else:
                    out = engine(**inputs)
                loss = out.loss
                bad = torch.tensor([0.0 if torch.isfinite(loss.detach()).item() else 1.0], device=device)
                if world > 1:
                    torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
                if bad.item() > 0:
                    raise NonFiniteLossError(step + 1, batch.ids, float(loss.detach().float().item()))
                engine.backward(loss)
                engine.step()
                logged = loss.detach().float().reshape(1)
                if world > 1:  # the logged loss is the mean over ranks
                    torch.distributed.all_reduce(logged)
                    logged /= world
                losses.append(float(logged.item()))
                if getattr(out, "channel_losses", None) is not None:
                    counts = out.channel_counts.detach().float().cpu()  # [1+N]
                    channel_losses.append((out.channel_losses.detach().float().cpu() * counts, counts))
                rows += batch.num_rows
                frames += batch.num_frames
            step += 1
            tokens_seen += rows * world
            elapsed = time.perf_counter() - t0
            mean_loss = sum(losses) / len(losses)
            result.losses[step] = mean_loss
            result.step = step
            sinks.step()
            if rank == 0 and (step % cfg.run.log_every == 0 or step == cfg.run.max_steps):
                grad_norm = engine.get_global_grad_norm()
                record: dict[str, Any] = {
                    "step": step,
                    "loss": mean_loss,
                    "lr": float(engine.get_lr()[0]),
                    "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                    "tokens_per_s": rows * world / elapsed,
                    "frames_per_s": frames * world / elapsed,
                    "peak_memory_gb": _peak_memory_gb(device),
                    "tokens_seen": tokens_seen,
                    "epoch": stream.epoch,
                }
                if channel_losses:
                    sums = torch.stack([s for s, _ in channel_losses]).sum(0)  # [1+N]
                    counts = torch.stack([c for _, c in channel_losses]).sum(0)  # [1+N]
                    per_channel = torch.where(counts > 0, sums / counts.clamp(min=1), torch.nan)  # token-weighted
                    record["loss_control"] = float(per_channel[0])
                    for layer in LOGGED_LAYERS:
                        if layer < per_channel.numel() and math.isfinite(float(per_channel[layer])):
                            record[f"loss_layer{layer:02d}"] = float(per_channel[layer])
                sinks.log(record)
            if step % cfg.run.save_every == 0 or step == cfg.run.max_steps:
                result.checkpoint = save(step)
                last_saved = step
            if on_step is not None:
                on_step(step, mean_loss)
        if step != last_saved and step > 0:  # resumed at (or past) max_steps: make sure the end is saved
            result.checkpoint = save(step)
        if cfg.run.export:
            from cat_tts.training.checkpoint import export_model

            final = run_dir / "model"
            export_model(engine.module, tokenizer, final, zero_stage=cfg.deepspeed.zero_stage)
            result.model_dir = final
    finally:
        sinks.close()
    return result
