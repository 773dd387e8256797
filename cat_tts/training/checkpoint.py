"""Training checkpoints: atomic, verified on resume, and exported in Hugging Face format.

Layout of a run directory:

    RUN_DIR/checkpoints/step-00000100/
        deepspeed/            DeepSpeed's state: model, optimizer (fp32 master weights), scheduler (its own files)
        trainer_state.json    step, data position (epoch, batch), tokens seen
        rng/rank00000.json    Python / NumPy generator state of each rank (+ .safetensors: torch CPU/CUDA states)
        config.yaml           the resolved TrainConfig
        model/                Hugging Face-format export (safetensors + config + tokenizer): from_pretrained loads it
        manifest.json         every other file with its size and SHA-256; written last
    RUN_DIR/model/            the final model (same format)

A checkpoint is written under a hidden temporary name; when every rank has finished, rank 0 writes the
manifest (atomically) and renames the directory, so a directory named `step-*` is complete when written.
`--resume` trusts a checkpoint only if its manifest is present and every listed file has its size and checksum
(disk errors, a truncated copy, a file edited or deleted later): it takes the newest intact checkpoint, and moves
each damaged newer one aside (`step-*.damaged`), naming it and the reason. A checkpoint without a manifest, or
without its trainer state, is incomplete. Rotation keeps the last `run.keep_last` checkpoints and only ever
deletes checkpoints older than the one just written (which is intact), so the last intact checkpoint survives.

The `deepspeed/` files are DeepSpeed's own (pickled) state: `--resume` reads only files this training
code wrote into the run directory. Models are shared as the `model/` export (safetensors only).
"""

from __future__ import annotations

import contextlib
import hashlib
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
from safetensors.torch import save_file

from cat_tts.errors import CheckpointError
from cat_tts.files import atomic_write
from cat_tts.weights import read_safetensors

logger = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step-(\d{8})$")
DEEPSPEED_TAG = "state"
MANIFEST = "manifest.json"  # written last: {"format", "step", "files": {relative path: {"bytes", "sha256"}}}
TRAINER_STATE = "trainer_state.json"
MANIFEST_FORMAT = 1


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    """The directory of the checkpoint of optimizer step `step`."""
    return Path(run_dir) / "checkpoints" / f"step-{step:08d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Every `step-*` checkpoint directory of a run (intact or not), oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    return sorted(found, key=_step_of)


def _step_of(path: Path) -> int:
    return int(_STEP_DIR.match(path.name).group(1))


def remove_incomplete(run_dir: str | Path) -> None:
    """Deletes temporary checkpoint directories left by an interrupted save (rank 0 only)."""
    root = Path(run_dir) / "checkpoints"
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".") and (p.name.endswith(".tmp") or p.name.endswith(".old")):
                logger.info("removing the incomplete checkpoint %s (an interrupted save)", p)
                shutil.rmtree(p, ignore_errors=True)


# ---------------------------------------------------------------------------- manifest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: str | Path, step: int) -> Path:
    """Lists every file of a checkpoint directory with its size and SHA-256 in `manifest.json` (atomically).

    Args:
        directory: the checkpoint directory (everything else must already be written).
        step: the checkpoint's optimizer step.

    Returns:
        The manifest path.
    """
    directory = Path(directory)
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel == MANIFEST:
            continue
        files[rel] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    with atomic_write(directory / MANIFEST) as tmp:
        tmp.write_text(json.dumps({"format": MANIFEST_FORMAT, "step": step, "files": files}, indent=1), "utf-8")
    return directory / MANIFEST


def verify_checkpoint(directory: str | Path) -> str | None:
    """Checks a checkpoint against its manifest.

    Args:
        directory: a `step-*` checkpoint directory.

    Returns:
        None when the checkpoint is intact, else the reason it is not (one line, naming the file).
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        if not (directory / TRAINER_STATE).is_file():
            return f"incomplete: no {MANIFEST} and no {TRAINER_STATE}"
        return f"incomplete: no {MANIFEST} (the save did not finish, or an older cat-tts wrote it)"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
        step = int(manifest["step"])
        if not isinstance(files, dict):
            raise TypeError("files is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{MANIFEST} is damaged ({type(err).__name__}: {err})"
    if TRAINER_STATE not in files:
        return f"incomplete: its manifest lists no {TRAINER_STATE}"
    for rel, entry in sorted(files.items()):
        path = directory / rel
        if not path.is_file():
            return f"{rel} is missing"
        size = path.stat().st_size
        if size != entry.get("bytes"):
            return f"{rel} has {size} bytes, the manifest says {entry.get('bytes')} (truncated or overwritten)"
        if _sha256(path) != entry.get("sha256"):
            return f"{rel} does not match its checksum (damaged or edited)"
    try:
        state = json.loads((directory / TRAINER_STATE).read_text(encoding="utf-8"))
        if int(state["step"]) != step or not isinstance(state["data"], dict):
            raise ValueError(f"step {state['step']} in a manifest of step {step}")
    except (ValueError, KeyError, TypeError) as err:
        return f"{TRAINER_STATE} is unusable ({type(err).__name__}: {err})"
    if _STEP_DIR.match(directory.name) and _step_of(directory) != step:
        return f"the manifest is of step {step}, not {_step_of(directory)}"
    return None


def _set_aside(path: Path) -> Path:
    """Renames a damaged checkpoint to `step-N.damaged` (`.damaged-2`, ... if taken), out of resume and rotation."""
    target = path.with_name(f"{path.name}.damaged")
    k = 2
    while target.exists():
        target = path.with_name(f"{path.name}.damaged-{k}")
        k += 1
    os.replace(path, target)
    return target


def find_resume_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest intact checkpoint of a run (rank 0 only; it may move damaged checkpoints aside).

    Checkpoints are verified newest first. When an intact one is found, every damaged newer one is renamed to
    `step-N.damaged` and reported (a warning naming its path and what is wrong); nothing is deleted.

    Args:
        run_dir: the run directory.

    Returns:
        The checkpoint directory, or None when the run has no checkpoint at all.

    Raises:
        CheckpointError: checkpoints exist but none is intact (one line naming each and its problem); nothing is
            moved then.
    """
    damaged: list[tuple[Path, str]] = []
    for ckpt in reversed(list_checkpoints(run_dir)):
        problem = verify_checkpoint(ckpt)
        if problem is None:
            for path, reason in damaged:
                moved = _set_aside(path)
                logger.warning(
                    "checkpoint %s is damaged: %s; moved it to %s and resuming from %s instead",
                    path,
                    reason,
                    moved.name,
                    ckpt,
                )
            return ckpt
        damaged.append((ckpt, problem))
    if damaged:
        listing = "; ".join(f"{path} ({reason})" for path, reason in damaged)
        raise CheckpointError(
            f"no intact checkpoint to resume from: {listing}. Start a new run (another --out), or start one from a "
            "checkpoint's model export with --init RUN_DIR/checkpoints/step-N"
        )
    return None


def rotate_checkpoints(run_dir: str | Path, newest: Path, keep_last: int) -> list[Path]:
    """Deletes old checkpoints so that `keep_last` remain; only checkpoints older than `newest` are deleted.

    Args:
        run_dir: the run directory.
        newest: the checkpoint just written (intact: its manifest was computed from its files).
        keep_last: checkpoints to keep, `newest` included (>= 1).

    Returns:
        The deleted directories.
    """
    older = [p for p in list_checkpoints(run_dir) if _step_of(p) < _step_of(newest)]
    doomed = older[: max(0, len(older) - (keep_last - 1))]
    for old in doomed:
        shutil.rmtree(old, ignore_errors=True)
    return doomed


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

    Under ZeRO-3 the weights are gathered first; only rank 0 writes. The directory is written under a temporary
    name and renamed into place (replacing an older export), so `out_dir` never holds a partial model.
    """
    out_dir = Path(out_dir)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    gathered = contextlib.nullcontext()
    if zero_stage == 3:
        import deepspeed

        gathered = deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)
    with gathered:
        if rank == 0:
            with atomic_write(out_dir) as tmp:
                model.save_pretrained(tmp)
                if tokenizer is not None:
                    tokenizer.save_pretrained(tmp)
    return out_dir


def save_checkpoint(
    ds_model: Any,
    run_dir: str | Path,
    step: int,
    trainer_state: dict[str, Any],
    config_yaml: str,
    tokenizer: Any = None,
    export: bool = True,
    keep_last: int = 3,
) -> Path:
    """Saves a complete checkpoint atomically, with its manifest, then rotates old ones (every rank must call it).

    Args:
        ds_model: the model as wrapped by `deepspeed.initialize` (model, optimizer and scheduler state).
        run_dir: the run directory.
        step: optimizer steps done.
        trainer_state: JSON-able loop state (data position, tokens seen, ...).
        config_yaml: the resolved config.
        tokenizer: saved with the Hugging Face export.
        export: also write the `model/` export.
        keep_last: checkpoints to keep (the new one included).

    Returns:
        The final checkpoint directory.
    """
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    final = checkpoint_dir(run_dir, step)
    tmp = final.parent / f".{final.name}.tmp"
    if rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    _barrier()
    ds_model.save_checkpoint(str(tmp / "deepspeed"), tag=DEEPSPEED_TAG, save_latest=False)
    meta, tensors = rng_state()
    (tmp / "rng").mkdir(exist_ok=True)
    (tmp / "rng" / f"rank{rank:05d}.json").write_text(json.dumps(meta))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "rng" / f"rank{rank:05d}.safetensors"))
    if export:
        stage = ds_model.zero_optimization_stage() if hasattr(ds_model, "zero_optimization_stage") else 0
        export_model(ds_model.module, tokenizer, tmp / "model", zero_stage=stage)
    _barrier()
    if rank == 0:
        (tmp / "config.yaml").write_text(config_yaml)
        (tmp / TRAINER_STATE).write_text(json.dumps({"step": step, **trainer_state}, indent=2))
        write_manifest(tmp, step)  # last: a directory with a valid manifest holds everything listed in it
        if final.exists():  # saving the same step twice (a resumed run that saves at once): swap, then delete
            old = final.parent / f".{final.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        rotate_checkpoints(run_dir, final, keep_last)
    _barrier()
    return final


def load_checkpoint(ds_model: Any, ckpt: str | Path) -> dict[str, Any]:
    """Restores the DeepSpeed state (model, optimizer, scheduler) and this rank's RNG state from a verified
    checkpoint; returns the trainer state.

    Raises:
        CheckpointError: naming the checkpoint, when DeepSpeed or the RNG state cannot be loaded from it.
    """
    ckpt = Path(ckpt)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    try:
        load_path, _ = ds_model.load_checkpoint(
            str(ckpt / "deepspeed"), tag=DEEPSPEED_TAG, load_optimizer_states=True, load_lr_scheduler_states=True
        )
    except Exception as err:  # DeepSpeed raises anything from pickle/zip/KeyError to RuntimeError on a bad file
        raise CheckpointError(
            f"could not load the DeepSpeed state of checkpoint {ckpt / 'deepspeed'}: {type(err).__name__}: "
            f"{str(err).splitlines()[0][:300] if str(err) else ''}"
        ) from err
    if load_path is None:
        raise CheckpointError(f"DeepSpeed found no state in {ckpt / 'deepspeed'}")
    try:
        state = json.loads((ckpt / TRAINER_STATE).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"could not read {ckpt / TRAINER_STATE}: {err}") from err
    rng_json = ckpt / "rng" / f"rank{rank:05d}.json"
    if rng_json.exists():
        try:
            set_rng_state(json.loads(rng_json.read_text()), read_safetensors(rng_json.with_suffix(".safetensors")))
        except Exception as err:  # JSON, safetensors header or generator-state errors
            raise CheckpointError(f"could not restore the RNG state {rng_json}: {type(err).__name__}: {err}") from err
    else:
        logger.warning("no RNG state for rank %d in %s (different world size?)", rank, ckpt)
    return state
