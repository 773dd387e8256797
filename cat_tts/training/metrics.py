"""What a run reports (rank 0): a log line, `RUN_DIR/metrics.jsonl`, TensorBoard and a progress bar.

`metrics.jsonl` holds one JSON object per logged step (valid JSON: a value that is not known is null, never NaN):

    step, loss, lr, grad_norm, tokens_per_s, frames_per_s, peak_memory_gb, tokens_seen, epoch,
    loss_control, loss_layer01 ... (token-weighted per-channel losses of the step, for LOGGED_LAYERS)

It is appended to as the run goes; a resumed run first drops the records of the steps it will redo.
"""

from __future__ import annotations

import json
import logging
import math
import resource
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from cat_tts.files import JsonlError, atomic_write, read_jsonl
from cat_tts.training.config import TrainConfig

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
# Channels whose loss is logged besides the total: control/text (0) and a few RVQ layers.
LOGGED_LAYERS = (1, 2, 4, 8, 16, 32)


def truncate_metrics(path: Path, step: int) -> None:
    """Drops the records after `step` (written by an interrupted run past its last checkpoint), and a last line
    cut short by a killed write. The file is replaced atomically."""
    if not path.exists():
        return
    kept, dropped_partial = [], 0
    for _, record in read_jsonl(path, errors="return", what="metrics file"):
        if isinstance(record, JsonlError) or not isinstance(record, dict):
            dropped_partial += 1
            continue
        if record.get("step", 0) <= step:
            kept.append(json.dumps(record) + "\n")
    if dropped_partial:
        logger.warning("%s: dropped %d unreadable line(s) (a write cut short by a killed run)", path, dropped_partial)
    with atomic_write(path) as tmp:
        tmp.write_text("".join(kept), encoding="utf-8")


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocations on a GPU, the resident set on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def channel_losses(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """Token-weighted per-channel losses of one optimizer step, for the channels that had labels.

    Args:
        parts: per micro-batch, (channel loss x label count, label count), both `[1+N]`.

    Returns:
        {"loss_control": ..., "loss_layer01": ..., ...} for channel 0 and `LOGGED_LAYERS`.
    """
    if not parts:
        return {}
    sums = torch.stack([s for s, _ in parts]).sum(0)  # [1+N]
    counts = torch.stack([c for _, c in parts]).sum(0)  # [1+N]
    names = {0: "loss_control", **{layer: f"loss_layer{layer:02d}" for layer in LOGGED_LAYERS}}
    return {
        name: float(sums[channel] / counts[channel])
        for channel, name in names.items()
        if channel < counts.numel() and counts[channel] > 0 and math.isfinite(float(sums[channel]))
    }


class MetricsLogger:
    """Rank-0 sinks: a log line, `RUN_DIR/metrics.jsonl`, TensorBoard, and a tqdm bar (a no-op on other ranks)."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, start: int, enabled: bool, progress: bool) -> None:
        self.enabled = enabled
        self.bar = self.tb = self.jsonl = None
        if not enabled:
            return
        self.jsonl = open(run_dir / METRICS_FILE, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
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
        """Writes one step's record (one line, flushed) and shows it."""
        if not self.enabled:
            return
        self.jsonl.write(json.dumps(record, allow_nan=False) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k.replace("loss_", "loss/"), v, record["step"])
        grad_norm = "-" if record["grad_norm"] is None else f"{record['grad_norm']:.3g}"
        logger.info(
            "step %d loss %.4f lr %.3g grad_norm %s tok/s %.0f frames/s %.0f peak %.2f GB",
            record["step"],
            record["loss"],
            record["lr"],
            grad_norm,
            record["tokens_per_s"],
            record["frames_per_s"],
            record["peak_memory_gb"],
        )
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2g}")

    def close(self) -> None:
        for sink in (self.bar, self.tb, self.jsonl):
            if sink is not None:
                sink.close()
