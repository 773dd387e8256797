"""Residual LFQ quantizer of the CAT codec.

Shapes: B batch, T frames, C encoder/decoder channels, R residual width (rvq_dim), E codebook dim,
K quantizer layers, V codebook size.

Encode: project the encoder output to R channels, then for each layer k: map the (masked) residual to E
channels, pick the code whose L2-normalised vector is nearest to the L2-normalised projection (largest cosine),
map the *raw* codebook vector back to R channels and subtract it from the residual. The loop is sequential, so
encoding k layers gives the first k of the full encoding.

Decode: sum the back-projected raw codebook vectors of the given layers only (prefix decoding: absent layers
contribute nothing, they are not code 0), then project R -> C.

All 1x1 projections are weight-normalised convolutions, `W = g * v / ||v||` (norm over all but the output axis);
the parameters keep the names `weight_g` / `weight_v`. Everything here runs in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cat_tts.codec.config import QuantizerConfig


class WeightNormConv1x1(nn.Module):
    """A weight-normalised kernel-size-1 convolution with bias: [B, I, T] -> [B, O, T]."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(out_channels, 1, 1))
        self.weight_v = nn.Parameter(torch.empty(out_channels, in_channels, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        nn.init.normal_(self.weight_v, std=in_channels**-0.5)

    @property
    def weight(self) -> torch.Tensor:
        """The effective [O, I, 1] weight."""
        return torch._weight_norm(self.weight_v, self.weight_g, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight, self.bias)


class LFQLayer(nn.Module):
    """One quantizer layer: R -> E projection, cosine code selection, raw codebook vector, E -> R projection."""

    def __init__(self, config: QuantizerConfig) -> None:
        super().__init__()
        r, e = config.rvq_dim, config.codebook_dim
        self.in_proj = WeightNormConv1x1(r, e) if r != e else None
        self.out_proj = WeightNormConv1x1(e, r) if r != e else None
        self.codebook = nn.Embedding(config.codebook_size, e)

    def quantize(self, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pick codes for a residual and return what they subtract from it.

        Args:
            residual: [B, R, T] float32.

        Returns:
            (codes [B, T] int64 with the largest cosine similarity, back-projected vectors [B, R, T] float32).
        """
        z = (residual if self.in_proj is None else self.in_proj(residual)).float()  # [B, E, T]
        b, e, t = z.shape
        flat = F.normalize(z.transpose(1, 2).reshape(b * t, e))  # [B*T, E]
        book = F.normalize(self.codebook.weight.float())  # [V, E]
        # Squared distance between unit vectors, written out in full rather than as a plain cosine: the codes
        # must match the reference bit for bit, and near-ties are decided by the arithmetic.
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ book.t() + book.pow(2).sum(1, keepdim=True).t()
        codes = (-dist).max(dim=1).indices.reshape(b, t)  # [B, T]
        raw = F.embedding(codes, self.codebook.weight).transpose(1, 2).float()  # [B, E, T]
        # The reference subtracts the straight-through value z + (raw - z): equal to raw up to rounding, kept
        # in this form because the rounding feeds the next layers' selections.
        zq = z + (raw - z)
        return codes, (zq if self.out_proj is None else self.out_proj(zq)).float()

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, T] -> back-projected raw codebook vectors [B, R, T] (float32)."""
        z = F.embedding(codes, self.codebook.weight).transpose(1, 2).float()  # [B, E, T]
        return z if self.out_proj is None else self.out_proj(z)


class ResidualLFQ(nn.Module):
    """Residual LFQ over `config.num_quantizers` layers (see the module docstring)."""

    def __init__(self, config: QuantizerConfig) -> None:
        super().__init__()
        self.config = config
        self.input_proj = (
            WeightNormConv1x1(config.input_dim, config.rvq_dim) if config.input_dim != config.rvq_dim else None
        )
        self.output_proj = (
            WeightNormConv1x1(config.rvq_dim, config.output_dim) if config.rvq_dim != config.output_dim else None
        )
        self.quantizers = nn.ModuleList(LFQLayer(config) for _ in range(config.num_quantizers))

    def encode(
        self, latent: torch.Tensor, lengths: torch.Tensor | None = None, num_layers: int | None = None
    ) -> torch.Tensor:
        """Quantize the encoder output.

        Args:
            latent: [B, C, T] encoder output.
            lengths: [B] valid frames per item (frames past it get meaningless codes and do not touch the
                residual); None = all valid.
            num_layers: how many layers to compute (default all); the result is a prefix of the full one.

        Returns:
            codes [B, K, T] int64.
        """
        k = self.config.num_quantizers if num_layers is None else num_layers
        latent = latent.float()
        z = latent if self.input_proj is None else self.input_proj(latent)  # [B, R, T]
        b, _, t = z.shape
        if lengths is None:
            mask = torch.ones(b, 1, t, dtype=z.dtype, device=z.device)
        else:
            mask = (torch.arange(t, device=z.device).view(1, t) < lengths.view(b, 1)).unsqueeze(1).to(z.dtype)
        residual = z.float()
        codes = []
        for layer in self.quantizers[:k]:
            layer_codes, update = layer.quantize(residual * mask)  # [B, T], [B, R, T]
            residual = residual - update * mask
            codes.append(layer_codes)
        return torch.stack(codes, dim=1)  # [B, K, T]

    def decode(self, codes: torch.Tensor, depths: torch.Tensor | None = None) -> torch.Tensor:
        """Codes of the first k layers -> decoder input.

        Args:
            codes: [B, k, T] (k <= num_quantizers: the first k layers).
            depths: [B] layers to use per item (1..k): item b sums only its first depths[b] layers, exactly as if
                its codes had depths[b] layers (a skipped term is not added, not added as zero). None = k.

        Returns:
            [B, C, T] float32.
        """
        b, k, t = codes.shape
        z = torch.zeros(b, self.config.rvq_dim, t, dtype=torch.float32, device=codes.device)
        for i in range(k):
            term = self.quantizers[i].embed(codes[:, i])  # [B, R, T]
            if depths is None:
                z = z + term
            else:  # rows past their depth keep z itself (bit for bit), never z + out_proj(something)
                z = torch.where((depths > i).view(b, 1, 1), z + term, z)
        return z if self.output_proj is None else self.output_proj(z)  # [B, C, T]
