"""Several ranks as one: the process group, and graphs whose collectives match on every rank.

* `setup_distributed`: torch.distributed through DeepSpeed, a one-process group when not launched.
* `broadcast`: rank 0's value on every rank.
* `gated_forward` (ZeRO-1/2) and `use_uniform_graph` (ZeRO-3): Progressive Sequence Dropout makes each rank's
  graph depend on its batch; these make the gradient reduction (and ZeRO-3's parameter gathering) identical on
  every rank.
"""

from __future__ import annotations

import importlib
import math
import os
import socket
import sys
from typing import Any

import torch

from cat_tts.training.config import TrainConfig


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


def broadcast(value: Any) -> Any:
    """Rank 0's `value` on every rank (a picklable object)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


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
