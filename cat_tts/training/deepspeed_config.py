"""The DeepSpeed JSON, generated from a `TrainConfig` so batch size, accumulation, clipping and precision
have one source. `python train.py --config X.yaml --print-deepspeed` prints it; `configs/deepspeed/` holds
the generated files for the shipped configs (a test keeps them in sync).

Batches are built by token budget, so one micro-batch holds a variable number of samples: DeepSpeed's
`train_micro_batch_size_per_gpu` is set to 1 and counts micro-batches, not samples. The real batch size
is `data.tokens_per_batch x deepspeed.grad_accum x world size` tokens (at most).
"""

from __future__ import annotations

import json
from typing import Any

from cat_tts.errors import UserError
from cat_tts.training.config import TrainConfig


def resolve_precision(precision: str, device_type: str) -> str:
    """ "auto" -> "bf16" on CUDA, "fp32" elsewhere; rejects bf16 on CPU-only training."""
    if precision == "auto":
        return "bf16" if device_type == "cuda" else "fp32"
    if precision == "bf16" and device_type != "cuda":
        raise UserError("deepspeed.precision = 'bf16' needs a CUDA device; use 'fp32' (or 'auto') on CPU")
    return precision


def build_deepspeed_config(cfg: TrainConfig, device_type: str = "cuda") -> dict[str, Any]:
    """The DeepSpeed config dict for `cfg` on `device_type` ("cuda" or "cpu").

    bf16 runs keep fp32 master weights and optimizer state inside the ZeRO optimizer; the model's
    own parameters are bf16 copies used for forward and backward.
    """
    precision = resolve_precision(cfg.deepspeed.precision, device_type)
    stage = cfg.deepspeed.zero_stage
    zero: dict[str, Any] = {"stage": stage}
    if stage >= 1:
        zero.update(
            {
                "contiguous_gradients": True,
                "overlap_comm": device_type == "cuda",
                "reduce_scatter": True,
                "reduce_bucket_size": 200_000_000,
                "allgather_bucket_size": 200_000_000,
            }
        )
    if stage == 3:
        zero.update(
            {
                "stage3_gather_16bit_weights_on_model_save": True,
                "stage3_prefetch_bucket_size": cfg.deepspeed.stage3_prefetch_bucket_size,
                "stage3_param_persistence_threshold": cfg.deepspeed.stage3_param_persistence_threshold,
            }
        )
    if cfg.deepspeed.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": device_type == "cuda"}
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": cfg.deepspeed.grad_accum,
        "gradient_clipping": cfg.optim.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": False},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,  # we log ourselves (rank 0)
        "wall_clock_breakdown": False,
    }
    return config


def deepspeed_config_json(cfg: TrainConfig, device_type: str = "cuda") -> str:
    """`build_deepspeed_config` as the JSON text written to `configs/deepspeed/`."""
    return json.dumps(build_deepspeed_config(cfg, device_type), indent=2) + "\n"
