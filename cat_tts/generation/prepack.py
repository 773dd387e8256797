"""oneDNN-prepacked weights for the depth side of a frame on the CPU (a view of the model; the model is untouched).

A frame runs ~35 matmuls per depth position with a handful of rows; the BLAS path repacks each (large) weight on every
call, which with several rows costs more than the matmul itself, while with one row plain matrix-vector products are
faster. The runner therefore measures both at warm-up and prepacks only the buckets where it wins.
"""

from __future__ import annotations

import copy
import logging
import warnings
import weakref
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
        if isinstance(module, nn.Linear):
            return MkldnnLinear(module, model.dtype)
        clone = copy.copy(module)  # shares parameters and buffers; gets its own child table
        clone._modules = {name: swap(child) for name, child in module._modules.items()}
        return clone

    view = copy.copy(model)
    view._modules = dict(model._modules)
    for name in ("depth", "depth_input", "depth_output"):
        view._modules[name] = swap(model._modules[name])
    heads = copy.copy(model.heads)  # the text head stays dense: the control step reads rows of its weight
    heads._modules = {name: head if name == "0" else swap(head) for name, head in model.heads._modules.items()}
    view._modules["heads"] = heads
    return view
