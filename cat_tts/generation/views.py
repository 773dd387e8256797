"""Views of the model for inference: the same parameters, arranged for fewer or faster matrix products. The model
itself is untouched (still trainable and savable; checkpoints unchanged).

* `packed_view` (CUDA): the depth side's q/k/v projections and SwiGLU gate/up projections stacked into one matrix each
  (`qkv_proj`, `gate_up_proj`): a frame runs 33 depth positions, each through 4 blocks and an output adapter, so this
  removes about 400 kernel launches per frame (~0.5 ms inside a CUDA graph at ~1.3 us each). The temporal step's
  28 blocks would save ~84 launches (~0.1 ms) and go through transformers' Qwen3 code: not packed.
* `prepacked_view` (CPU): oneDNN-prepacked depth weights. A frame runs ~35 matmuls per depth position with a handful
  of rows; the BLAS path repacks each (large) weight on every call, which with several rows costs more than the
  matmul itself, while with one row plain matrix-vector products are faster. The runner measures both at warm-up and
  prepacks only the buckets where it wins.
"""

from __future__ import annotations

import copy
import logging
import warnings
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from cat_tts.model import CatTTSModel

logger = logging.getLogger(__name__)

# Per model: its prepacked view and, per (bucket, device type), whether it was measured faster. Engines built over the
# same model (`CatTTSModel.generate` builds one per call) reuse both instead of packing and measuring again.
_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
DECISIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def shared_prepacked_view(model: CatTTSModel) -> CatTTSModel:
    """`prepacked_view(model)`, built once per model."""
    if model not in _VIEWS:
        _VIEWS[model] = prepacked_view(model)
    return _VIEWS[model]


def prepacked_view(model: CatTTSModel) -> CatTTSModel:
    """A view of `model` for CPU inference whose depth-side linear layers hold oneDNN-prepacked weights.

    Prepacked once, a batch of 8 costs about as much as one row (measured on the 2-core CI machine at the released
    depth size: 3.7 vs 8.2 ms per 1536x8960 matmul); a single row is faster without it. The view shares every other
    parameter with `model`, which is left untouched (still trainable and savable); the prepacked copies cost the depth
    side's weights once more (~2.5 GB in fp32 at the released size).

    Returns:
        The view, or `model` itself where oneDNN cannot run the model's dtype here.
    """
    if model.dtype not in (torch.float32, torch.bfloat16) or not torch.backends.mkldnn.is_available():
        return model
    try:
        with warnings.catch_warnings():  # torch.utils.mkldnn is TorchScript-based; its deprecation notice is noise here
            warnings.simplefilter("ignore", DeprecationWarning)
            from torch.utils.mkldnn import MkldnnLinear

        probe = MkldnnLinear(nn.Linear(8, 8, bias=False).to(model.dtype), model.dtype)
        probe(torch.zeros(2, 8, dtype=model.dtype))  # bf16 needs CPU support: fall back where it is missing
    except (RuntimeError, ImportError) as err:
        logger.info("oneDNN prepacking unavailable for %s (%s): plain matmuls", model.dtype, err)
        return model

    def swap(module: nn.Module) -> nn.Module:
        return MkldnnLinear(module, model.dtype) if isinstance(module, nn.Linear) else module

    return _depth_side_view(model, swap, text_head=False)


def packed_view(model: CatTTSModel) -> CatTTSModel:
    """A view of `model` whose depth-side attention and SwiGLU modules carry stacked projections (`qkv_proj`,
    `gate_up_proj`: copies of the stacked weights, one more copy of those weights in memory)."""

    def stacked(*linears: nn.Linear) -> nn.Linear:
        weight = torch.cat([lin.weight.detach() for lin in linears])  # [sum of outputs, in]
        out = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device=weight.device, dtype=weight.dtype)
        out.weight = nn.Parameter(weight, requires_grad=False)
        return out

    def pack(module: nn.Module) -> nn.Module:
        # the depth attention and SwiGLU modules declare the stacked slot (`qkv_proj`, `gate_up_proj`: None)
        if hasattr(module, "qkv_proj") and hasattr(module, "q_proj"):
            object.__setattr__(module, "qkv_proj", stacked(module.q_proj, module.k_proj, module.v_proj))
        elif hasattr(module, "gate_up_proj") and hasattr(module, "gate_proj"):
            object.__setattr__(module, "gate_up_proj", stacked(module.gate_proj, module.up_proj))
        return module

    return _depth_side_view(model, pack, text_head=True)


def _depth_side_view(model: CatTTSModel, change: Callable[[nn.Module], nn.Module], text_head: bool) -> CatTTSModel:
    """A shallow copy of `model` whose depth side (`depth`, `depth_input`, `depth_output`, the audio heads; the text
    head too with `text_head`) is cloned module by module (sharing parameters and buffers, each clone with its own
    child table and attributes) and passed through `change`, children first."""

    def clone(module: nn.Module) -> nn.Module:
        copied = copy.copy(module)  # a new __dict__: attributes set on the copy do not reach the model
        copied._modules = {name: clone(child) for name, child in module._modules.items()}
        return change(copied)

    view = copy.copy(model)
    view._modules = dict(model._modules)
    for name in ("depth", "depth_input", "depth_output"):
        view._modules[name] = clone(model._modules[name])
    heads = copy.copy(model.heads)  # the text head's rows are read by the control step: prepacking keeps it dense
    heads._modules = {n: h if n == "0" and not text_head else clone(h) for n, h in model.heads._modules.items()}
    view._modules["heads"] = heads
    return view
