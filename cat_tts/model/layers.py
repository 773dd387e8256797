"""Small building blocks shared by the depth transformer and the adapters: RMSNorm and SwiGLU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale: `y = x / sqrt(mean(x^2) + eps) * weight`.

    Args:
        dim: feature size.
        eps: added to the mean square.
        upcast: compute the normalisation in float32 and cast back before the scale (Qwen3 blocks);
            False computes in the input dtype (the checkpoint's pre-head norms).
    """

    def __init__(self, dim: int, eps: float = 1e-6, upcast: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.upcast = upcast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upcast:
            dtype = x.dtype
            x = x.float()
            x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
            return self.weight * x.to(dtype)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return x * self.weight

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, upcast={self.upcast}"


class SwiGLU(nn.Module):
    """Bias-free gated MLP: `y = down(silu(gate(x)) * up(x))`, input, hidden and output widths free.

    Used for the depth transformer FFN and for the adapters between temporal and depth width
    (a zero input vector maps to a zero output: the bias-free map keeps "ignored" inputs at zero).
    """

    def __init__(self, in_features: int, hidden_features: int, out_features: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(in_features, hidden_features, bias=False)
        self.up_proj = nn.Linear(in_features, hidden_features, bias=False)
        self.down_proj = nn.Linear(hidden_features, out_features, bias=False)
        self.gate_up_proj: nn.Module | None = None  # gate and up weights stacked (an inference view, see depth.py)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_proj is not None:
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
            return self.down_proj(F.silu(gate) * up)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
