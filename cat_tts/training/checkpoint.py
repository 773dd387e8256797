"""Training checkpoints: atomic, complete, resumable, and exported in Hugging Face format.

Layout of a run directory:

    RUN_DIR/checkpoints/step-00000100/
        deepspeed/            engine state: model, optimizer (fp32 master weights), scheduler (DeepSpeed files)
        trainer_state.json    step, data position (epoch, batch), tokens seen
        rng/rank00000.json    Python / NumPy generator state of each rank (+ .safetensors: torch CPU/CUDA states)
        config.yaml           the resolved TrainConfig
        model/                Hugging Face-format export (safetensors + config + tokenizer): from_pretrained loads it
    RUN_DIR/model/            the final model (same format)

A checkpoint is written under a hidden temporary name and renamed when every rank has finished, so a
directory named `step-*` is always complete; `--resume` takes the newest one. Only the last
`run.keep_last` are kept.

The `deepspeed/` files are DeepSpeed's own (pickled) state: `--resume` reads only files this training
code wrote into the run directory. Models are shared as the `model/` export (safetensors only).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step-(\d{8})$")
DEEPSPEED_TAG = "state"


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:08d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [
        p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name) and (p / "trainer_state.json").exists()
    ]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def remove_incomplete(run_dir: str | Path) -> None:
    """Deletes temporary checkpoint directories left by an interrupted save (rank 0 only)."""
    root = Path(run_dir) / "checkpoints"
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".") and p.name.endswith(".tmp"):
                logger.info("removing incomplete checkpoint %s", p)
                shutil.rmtree(p, ignore_errors=True)


# ---------------------------------------------------------------------------- RNG


def rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """All generator states of this process, as (JSON-able dict, tensors)."""
    py = random.getstate()
    np_state = np.random.get_state()
    meta = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }
    tensors = {"torch_cpu": torch.get_rng_state(), "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64))}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    return meta, tensors


def set_rng_state(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Restores what `rng_state` returned."""
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available() and meta.get("cuda_devices"):
        states = [tensors[f"torch_cuda_{i}"] for i in range(meta["cuda_devices"]) if f"torch_cuda_{i}" in tensors]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


# ------------------------------------------------------------------ save / load


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def export_model(model: torch.nn.Module, tokenizer: Any, out_dir: str | Path, zero_stage: int = 0) -> Path:
    """Writes a Hugging Face-format model directory (safetensors + config + tokenizer). Call on every rank.

    Under ZeRO-3 the weights are gathered first; only rank 0 writes.
    """
    out_dir = Path(out_dir)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    if zero_stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            if rank == 0:
                model.save_pretrained(out_dir)
    elif rank == 0:
        model.save_pretrained(out_dir)
    if rank == 0 and tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return out_dir


def save_checkpoint(
    engine: Any,
    run_dir: str | Path,
    step: int,
    trainer_state: dict[str, Any],
    config_yaml: str,
    tokenizer: Any = None,
    export: bool = True,
    keep_last: int = 3,
) -> Path:
    """Saves a complete checkpoint atomically (every rank must call it).

    Args:
        engine: the DeepSpeed engine (model, optimizer and scheduler state).
        run_dir: the run directory.
        step: optimizer steps done.
        trainer_state: JSON-able loop state (data position, tokens seen, ...).
        config_yaml: the resolved config.
        tokenizer: saved with the Hugging Face export.
        export: also write the `model/` export.
        keep_last: complete checkpoints to keep.

    Returns:
        The final checkpoint directory.
    """
    from safetensors.torch import save_file

    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    final = checkpoint_dir(run_dir, step)
    tmp = final.parent / f".{final.name}.tmp"
    if rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    _barrier()
    engine.save_checkpoint(str(tmp / "deepspeed"), tag=DEEPSPEED_TAG, save_latest=False)
    meta, tensors = rng_state()
    (tmp / "rng").mkdir(exist_ok=True)
    (tmp / "rng" / f"rank{rank:05d}.json").write_text(json.dumps(meta))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "rng" / f"rank{rank:05d}.safetensors"))
    if export:
        stage = engine.zero_optimization_stage() if hasattr(engine, "zero_optimization_stage") else 0
        export_model(engine.module, tokenizer, tmp / "model", zero_stage=stage)
    _barrier()
    if rank == 0:
        (tmp / "config.yaml").write_text(config_yaml)
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step, **trainer_state}, indent=2))
        if final.exists():  # saving the same step twice (e.g. a resumed run that saves at once)
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def load_checkpoint(engine: Any, ckpt: str | Path) -> dict[str, Any]:
    """Restores engine state and this rank's RNG state from a complete checkpoint; returns the trainer state."""
    from safetensors.torch import load_file

    ckpt = Path(ckpt)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    load_path, _ = engine.load_checkpoint(
        str(ckpt / "deepspeed"), tag=DEEPSPEED_TAG, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    if load_path is None:
        raise FileNotFoundError(f"DeepSpeed could not load the engine state from {ckpt / 'deepspeed'}")
    state = json.loads((ckpt / "trainer_state.json").read_text())
    rng_json = ckpt / "rng" / f"rank{rank:05d}.json"
    if rng_json.exists():
        set_rng_state(json.loads(rng_json.read_text()), load_file(str(rng_json.with_suffix(".safetensors"))))
    else:
        logger.warning("no RNG state for rank %d in %s (different world size?)", rank, ckpt)
    return state
