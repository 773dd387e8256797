"""The training loop: an explicit loop over a model wrapped by DeepSpeed (`ds_model`).

    check the run directory -> lock it (one writer per run) -> check the data -> [pick the newest intact
    checkpoint; refuse a changed config unless allowed] -> setup (distributed, seeds) -> model + tokenizer (the
    run's prompt layout recorded in its config) -> batch stream -> AdamW + warmup/cosine -> DeepSpeed -> [resume]
    -> for each optimizer step: grad_accum micro-batches (forward, finite check, backward, step)
    -> log (rank 0) -> checkpoint every run.save_every and at the end -> final Hugging Face export

Runs as one process (CPU or one GPU; a single-process gloo/NCCL group is created) or under the
`deepspeed` / `torchrun` launchers (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT set). The process that
owns the run directory (rank 0) holds its lock (`cat_tts.training.lock`) while the run lives.

Modules: `build` (model, tokenizer, optimizer, batches), `distributed` (process group, rank-uniform graphs),
`metrics` (what is logged), `checkpoint` (save, verify, resume, export), `lock` (one writer per run).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cat_tts.cli import check_writable_dir
from cat_tts.data.dataset import find_shards
from cat_tts.errors import InputError
from cat_tts.files import atomic_write, read_yaml
from cat_tts.training.build import (
    build_model,
    build_optimizer,
    build_stream,
    load_tokenizer,
    record_prompt_layout,
    seed_everything,
)
from cat_tts.training.checkpoint import (
    export_model,
    find_resume_checkpoint,
    list_checkpoints,
    load_checkpoint,
    remove_incomplete,
    save_checkpoint,
)
from cat_tts.training.config import TrainConfig, config_changes
from cat_tts.training.deepspeed_config import build_deepspeed_config, resolve_precision
from cat_tts.training.distributed import broadcast, gated_forward, setup_distributed, use_uniform_graph
from cat_tts.training.lock import RunLock, owns_run_dir
from cat_tts.training.metrics import METRICS_FILE, MetricsLogger, channel_losses, peak_memory_gb, truncate_metrics
from cat_tts.training.schedule import warmup_cosine

logger = logging.getLogger(__name__)

ALLOW_CONFIG_CHANGE_FLAG = "--allow-config-change"  # how train.py names `allow_config_change` in messages


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; names the step and the batch's utterance ids."""

    def __init__(self, step: int, ids: list[str], value: float) -> None:
        self.step, self.ids, self.value = step, ids, value
        shown = ", ".join(ids[:20]) + (f", ... ({len(ids)} in all)" if len(ids) > 20 else "")
        super().__init__(f"non-finite loss ({value}) at step {step} on samples [{shown}]; nothing was saved for it")


class ConfigChangedError(InputError):
    """`--resume` with a config whose training fields differ from the checkpoint's (the message lists them)."""


@dataclass
class TrainResult:
    """What a finished run reports."""

    run_dir: Path
    step: int  # optimizer steps done (including resumed ones)
    losses: dict[int, float] = field(default_factory=dict)  # step -> mean loss, for the steps this call ran
    checkpoint: Path | None = None  # the last checkpoint written
    model_dir: Path | None = None  # the final Hugging Face export


def check_run_contents(cfg: TrainConfig, run_dir: Path, resume: bool) -> None:
    """Checks, before any work, that a new run does not reuse a run directory and that the data exists.

    Raises:
        InputError: existing checkpoints without `resume`, missing data.
    """
    if not resume and list_checkpoints(run_dir):
        raise InputError(f"{run_dir} already holds checkpoints; pass --resume to continue it or choose another --out")
    if cfg.data.path is None:
        raise InputError("no training data: pass --data DIR (a directory made by `python -m cat_tts.data.prepare`)")
    find_shards(cfg.data.path)


def resume_point(cfg: TrainConfig, run_dir: Path, allow_config_change: bool) -> Path | None:
    """The checkpoint to resume from, checked against the config (the run directory's owner only).

    Fields that change neither what is trained nor how (`config.RESUME_FREE_FIELDS`: run length, logging, saving,
    loader workers) may change freely and are logged. Any other change (the learning rate, the data, the batch...)
    is refused unless `allow_config_change`, because a resumed run that silently trains differently from the run
    it continues cannot be compared or reproduced; allowed changes are logged as a warning.

    Raises:
        ConfigChangedError: naming every changed field as "section.field: old -> new".
        CheckpointError: checkpoints exist but none is intact.
    """
    ckpt = find_resume_checkpoint(run_dir)
    if ckpt is None:
        logger.warning("--resume: no checkpoint in %s yet, starting from the beginning", run_dir)
        return None
    saved_path = ckpt / "config.yaml"
    if not saved_path.is_file():
        logger.warning("%s has no config.yaml: the config is not compared with the checkpoint's", ckpt)
        return ckpt
    training, free = config_changes(read_yaml(saved_path, what="checkpoint config") or {}, cfg)
    if free:
        logger.info("--resume: changed since %s: %s", ckpt.name, "; ".join(free))
    if training and not allow_config_change:
        raise ConfigChangedError(
            f"--resume: the config differs from checkpoint {ckpt} in {'; '.join(training)}. Resume with the "
            f"checkpoint's values, or pass {ALLOW_CONFIG_CHANGE_FLAG} to continue with the new ones"
        )
    if training:
        logger.warning("--resume: continuing %s with a changed config: %s", ckpt, "; ".join(training))
    return ckpt


def train(
    cfg: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    allow_config_change: bool = False,
) -> TrainResult:
    """Trains according to `cfg` (see the module docstring).

    Args:
        cfg: the resolved training config.
        resume: continue from the newest intact checkpoint in `cfg.run.out` (damaged newer ones are reported and
            moved aside; see `cat_tts.training.checkpoint`).
        progress: show a progress bar (rank 0).
        on_step: called as `on_step(step, loss)` after every optimizer step (and after its checkpoint, if any).
        allow_config_change: with `resume`, continue even when training fields of the config differ from the
            checkpoint's (see `resume_point`).

    Returns:
        The `TrainResult`.

    Raises:
        NonFiniteLossError: when the loss becomes NaN/inf (nothing is saved for that step).
        RunDirectoryBusyError: another run holds `cfg.run.out` (naming its pid).
        ConfigChangedError: `resume` with a changed config, without `allow_config_change`.
        UserError: for a bad config, data, run directory or init checkpoint; CheckpointError (a UserError) when
            `resume` finds checkpoints but none is intact.
    """
    cfg.validate()
    run_dir = check_writable_dir(cfg.run.out, "--out")  # before any work: a bad --out fails at once
    lock = RunLock(run_dir, "--out").acquire() if owns_run_dir() else None
    try:
        check_run_contents(cfg, run_dir, resume)
        ckpt = resume_point(cfg, run_dir, allow_config_change) if resume and lock is not None else None
        return _run(cfg, run_dir, ckpt, resume, progress, on_step)
    finally:
        if lock is not None:
            lock.release()


def _run(
    cfg: TrainConfig,
    run_dir: Path,
    ckpt: Path | None,
    resume: bool,
    progress: bool,
    on_step: Callable[[int, float], None] | None,
) -> TrainResult:
    """The run itself, once the run directory is locked and the resume point chosen (on rank 0)."""
    rank, world, device = setup_distributed()
    import deepspeed

    if resume:
        ckpt = broadcast(ckpt)  # rank 0 chose it before the process group existed
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
    ds_model, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config, dist_init_required=False
    )
    precision = resolve_precision(cfg.deepspeed.precision, device.type)

    step, tokens_seen = 0, 0

    def save(at_step: int) -> Path:
        """Writes the checkpoint of `at_step` (DeepSpeed state, data position, token count, config, export)."""
        return save_checkpoint(
            ds_model,
            run_dir,
            at_step,
            {"data": stream.state_dict(), "tokens_seen": tokens_seen},
            cfg.to_yaml(),
            tokenizer=tokenizer,
            export=cfg.run.export,
            keep_last=cfg.run.keep_last,
        )

    if ckpt is not None:
        state = load_checkpoint(ds_model, ckpt)
        step, tokens_seen = int(state["step"]), int(state.get("tokens_seen", 0))
        stream.load_state_dict(state["data"])
        if rank == 0:
            truncate_metrics(run_dir / METRICS_FILE, step)  # records of steps the resumed run will redo
            logger.info("resumed from %s at step %d", ckpt, step)
    if rank == 0:
        with atomic_write(run_dir / "config.yaml") as tmp:
            tmp.write_text(cfg.to_yaml(), encoding="utf-8")
        _warn_untrained_layer(cfg, model.n_vq)
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

    sinks = MetricsLogger(run_dir, cfg, step, enabled=rank == 0, progress=progress)
    result = TrainResult(run_dir=run_dir, step=step)
    batches = iter(stream)
    last_saved = step if ckpt is not None else -1
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        while step < cfg.run.max_steps:
            t0 = time.perf_counter()
            losses, parts, rows, frames = _optimizer_step(ds_model, batches, cfg, world, device, step)
            step += 1
            tokens_seen += rows * world
            elapsed = time.perf_counter() - t0
            mean_loss = sum(losses) / len(losses)
            result.losses[step] = mean_loss
            result.step = step
            sinks.step()
            if rank == 0 and (step % cfg.run.log_every == 0 or step == cfg.run.max_steps):
                grad_norm = ds_model.get_global_grad_norm()
                sinks.log(
                    {
                        "step": step,
                        "loss": mean_loss,
                        "lr": float(ds_model.get_lr()[0]),
                        "grad_norm": float(grad_norm) if grad_norm is not None else None,
                        "tokens_per_s": rows * world / elapsed,
                        "frames_per_s": frames * world / elapsed,
                        "peak_memory_gb": peak_memory_gb(device),
                        "tokens_seen": tokens_seen,
                        "epoch": stream.epoch,
                        **channel_losses(parts),
                    }
                )
            if step % cfg.run.save_every == 0 or step == cfg.run.max_steps:
                result.checkpoint = save(step)
                last_saved = step
            if on_step is not None:
                on_step(step, mean_loss)
        if step != last_saved and step > 0:  # resumed at (or past) max_steps: make sure the end is saved
            result.checkpoint = save(step)
        if cfg.run.export:
            final = run_dir / "model"
            export_model(ds_model.module, tokenizer, final, zero_stage=cfg.deepspeed.zero_stage)
            result.model_dir = final
    finally:
        sinks.close()
    return result


def _optimizer_step(
    ds_model: Any, batches: Any, cfg: TrainConfig, world: int, device: torch.device, step: int
) -> tuple[list[float], list[tuple[torch.Tensor, torch.Tensor]], int, int]:
    """One optimizer step: `deepspeed.grad_accum` micro-batches (forward, finite check, backward, step).

    Returns:
        (the loss of each micro-batch, averaged over ranks; per micro-batch (channel loss x label count, label
        count) `[1+N]` each; rows and frames of this rank's micro-batches).

    Raises:
        NonFiniteLossError: a micro-batch's loss is NaN/inf on any rank (checked before its backward).
    """
    ds_model.train()
    losses: list[float] = []
    parts: list[tuple[torch.Tensor, torch.Tensor]] = []
    rows = frames = 0
    for _ in range(cfg.deepspeed.grad_accum):
        batch = next(batches).to(device)
        inputs = {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "labels": batch.labels,
            "depths": batch.depths,
            "return_logits": False,  # the loss is all we need: no [R, V] logits kept alive
        }
        if world > 1 and cfg.deepspeed.zero_stage < 3:
            out = gated_forward(ds_model.module, **inputs)  # rank-independent gradient order
        else:
            out = ds_model(**inputs)
        loss = out.loss
        bad = torch.tensor([0.0 if torch.isfinite(loss.detach()).item() else 1.0], device=device)
        if world > 1:
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        if bad.item() > 0:
            raise NonFiniteLossError(step + 1, batch.ids, float(loss.detach().float().item()))
        ds_model.backward(loss)
        ds_model.step()
        logged = loss.detach().float().reshape(1)
        if world > 1:  # the logged loss is the mean over ranks
            torch.distributed.all_reduce(logged)
            logged /= world
        losses.append(float(logged.item()))
        if getattr(out, "channel_losses", None) is not None:
            counts = out.channel_counts.detach().float().cpu()  # [1+N]
            parts.append((out.channel_losses.detach().float().cpu() * counts, counts))
        rows += batch.num_rows
        frames += batch.num_frames
    return losses, parts, rows, frames


def _warn_untrained_layer(cfg: TrainConfig, n_vq: int) -> None:
    """With the paper's range no sample keeps all N layers at p = 1: layer N never gets a loss, so a model trained
    from scratch cannot generate it (a fine-tuned one keeps layer N as in model.init)."""
    if cfg.psd.p == 1.0 and cfg.psd.depth_range == "1..N-1":
        logger.warning(
            "psd.p = 1.0 with psd.depth_range = 1..N-1 (the paper's): every sample keeps at most %d of %d layers, so "
            "layer %d is never trained; set psd.depth_range: 1..N (as the shipped configs do) to train every layer",
            n_vq - 1,
            n_vq,
            n_vq,
        )
