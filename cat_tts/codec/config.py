"""Configuration of the CAT codec (MOSS-Audio-Tokenizer), read from a checkpoint's `config.json`.

The module stack is data: `encoder` and `decoder` are ordered lists of stages, each either a patch
(re)shaping step or a causal transformer. The released checkpoint's json is the only trustworthy source
of that list (the upstream constructor defaults describe a different decoder), so `CodecConfig.from_dict`
reads every stage from the file and `CodecConfig.released()` spells out the released json verbatim.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Bitrate of one RVQ layer of the released CAT codec: 12.5 frames/s x 10 bits (1024 codes) = 125 bit/s.
KBPS_PER_LAYER = 0.125


def bitrate_kbps(num_layers: int) -> float:
    """Bitrate in kbit/s of decoding `num_layers` RVQ layers of the released CAT codec (4 kbps at 32)."""
    return KBPS_PER_LAYER * num_layers


# Top-level keys of the official config.json that carry no architectural meaning.
_METADATA_KEYS = {
    "architectures",
    "auto_map",
    "model_type",
    "version",
    "transformers_version",
    "dtype",
    "torch_dtype",
    "code_dim",  # equals quantizer output_dim; the modules read the quantizer's own field
    "reversed_decoder_kwargs",  # present in the released json, never used by the model
    "return_dict",
    "output_hidden_states",
    "output_attentions",
}


def _check_positive(name: str, value: int | float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class PatchConfig:
    """A parameter-free patch stage: folds `patch_size` time steps into channels (encoder) or back (decoder)."""

    patch_size: int  # time steps per patch; the stage changes the frame rate by this factor

    def __post_init__(self) -> None:
        _check_positive("patch_size", self.patch_size)

    def to_dict(self) -> dict[str, Any]:
        return {"module_type": "PatchedPretransform", "patch_size": self.patch_size}


@dataclass(frozen=True)
class TransformerConfig:
    """One causal transformer stage: optional input projection, `num_layers` pre-norm blocks, optional output
    projection. Only the variant used by the released codec is implemented; other values raise."""

    input_dimension: int  # channels entering the stage (an input projection exists when != d_model)
    output_dimension: int  # channels leaving the stage (an output projection exists when != d_model)
    d_model: int  # residual stream width
    num_heads: int  # attention heads; head dim = d_model / num_heads (must be even for RoPE)
    num_layers: int  # transformer blocks
    dim_feedforward: int  # hidden width of the 2-layer GELU MLP
    max_period: float = 10000.0  # RoPE base period
    layer_scale: float = 0.01  # LayerScale init value (the checkpoint stores the learned vectors)
    causal: bool = True  # only causal stages are supported
    norm: str = "layer_norm"  # only LayerNorm (eps 1e-5) is supported
    positional_embedding: str = "rope"  # only interleaved-pair RoPE is supported
    gating: str = "none"  # only the plain (non-gated) MLP is supported
    conv_layout: bool = True  # stored by upstream; stages always take and return [B, C, T]

    def __post_init__(self) -> None:
        for name in ("input_dimension", "output_dimension", "d_model", "num_heads", "num_layers", "dim_feedforward"):
            _check_positive(name, getattr(self, name))
        _check_positive("max_period", self.max_period)
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        if (self.d_model // self.num_heads) % 2:
            raise ValueError(f"head dim d_model/num_heads = {self.d_model // self.num_heads} must be even for RoPE")
        supported = {"causal": True, "norm": "layer_norm", "positional_embedding": "rope", "gating": "none"}
        for name, allowed in supported.items():
            if getattr(self, name) != allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not supported; allowed: {allowed!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        return {
            "module_type": "Transformer",
            "causal": self.causal,
            "conv_layout": self.conv_layout,
            "d_model": self.d_model,
            "dim_feedforward": self.dim_feedforward,
            "gating": self.gating,
            "input_dimension": self.input_dimension,
            "layer_scale": self.layer_scale,
            "max_period": self.max_period,
            "norm": self.norm,
            "num_heads": self.num_heads,
            "num_layers": self.num_layers,
            "output_dimension": self.output_dimension,
            "positional_embedding": self.positional_embedding,
        }


StageConfig = PatchConfig | TransformerConfig


@dataclass(frozen=True)
class QuantizerConfig:
    """Residual LFQ: project to `rvq_dim`, then `num_quantizers` residual layers of `codebook_size` codes,
    each selecting by cosine similarity in a `codebook_dim`-dim space."""

    input_dim: int = 768  # channels of the encoder output
    rvq_dim: int = 512  # width of the residual stream inside the quantizer
    output_dim: int = 768  # channels handed to the decoder
    num_quantizers: int = 32  # RVQ layers
    codebook_size: int = 1024  # codes per layer
    codebook_dim: int = 8  # width of each codebook vector
    quantizer_type: str = "rlfq"  # "rlfq" (or its alias "random_prefix_rlfq"); plain VQ is not supported

    def __post_init__(self) -> None:
        for name in ("input_dim", "rvq_dim", "output_dim", "num_quantizers", "codebook_size", "codebook_dim"):
            _check_positive(name, getattr(self, name))
        if self.quantizer_type not in ("rlfq", "random_prefix_rlfq"):
            raise ValueError(
                f"quantizer_type={self.quantizer_type!r} is not supported; allowed: 'rlfq', 'random_prefix_rlfq'"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "codebook_dim": self.codebook_dim,
            "codebook_size": self.codebook_size,
            "input_dim": self.input_dim,
            "num_quantizers": self.num_quantizers,
            "output_dim": self.output_dim,
            "quantizer_type": self.quantizer_type,
            "rvq_dim": self.rvq_dim,
        }


def _stage_from_dict(spec: dict[str, Any], where: str) -> StageConfig:
    spec = dict(spec)
    kind = spec.pop("module_type", None)
    try:
        if kind == "PatchedPretransform":
            return PatchConfig(**spec)
        if kind == "Transformer":
            return TransformerConfig(**spec)
    except TypeError as err:  # unknown or missing keys
        raise ValueError(f"{where}: {err}") from None
    raise ValueError(f"{where}: module_type={kind!r} is not supported; allowed: 'PatchedPretransform', 'Transformer'")


@dataclass(frozen=True)
class CodecConfig:
    """The whole codec: waveform rate, encoder and decoder stage lists, quantizer, attention window.

    Every transformer attends causally over a sliding window of `context_duration` seconds, converted to
    steps at the stage's own rate (`contexts()`); the window applies offline as well as when streaming.
    """

    sample_rate: int = 24000  # Hz, mono
    downsample_rate: int = 1920  # samples per codec frame (product of the encoder patch sizes)
    context_duration: float = 10.0  # seconds of causal attention window at every stage
    encoder: tuple[StageConfig, ...] = ()  # encoder stages in execution order (waveform -> latent)
    decoder: tuple[StageConfig, ...] = ()  # decoder stages in execution order (latent -> waveform)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)

    def __post_init__(self) -> None:
        _check_positive("sample_rate", self.sample_rate)
        _check_positive("downsample_rate", self.downsample_rate)
        _check_positive("context_duration", self.context_duration)
        if not self.encoder or not self.decoder:
            raise ValueError("encoder and decoder must each list at least one stage")
        down = math.prod(s.patch_size for s in self.encoder if isinstance(s, PatchConfig))
        up = math.prod(s.patch_size for s in self.decoder if isinstance(s, PatchConfig))
        if down != self.downsample_rate or up != self.downsample_rate:
            raise ValueError(
                f"downsample_rate={self.downsample_rate} must equal the product of the encoder patch sizes ({down}) "
                f"and of the decoder patch sizes ({up})"
            )
        self._check_widths()
        for name, ctx in zip(("encoder", "decoder"), self.contexts(), strict=True):
            for i, c in ctx.items():
                if c < 1:
                    raise ValueError(
                        f"context_duration={self.context_duration} s gives an empty attention window at {name}.{i}"
                    )

    def _check_widths(self) -> None:
        # Channels flowing through the stack: 1 (mono waveform) -> ... -> quantizer.input_dim, and back.
        channels = 1
        for i, stage in enumerate(self.encoder):
            channels = self._next_width(channels, stage, f"encoder.{i}", down=True)
        if channels != self.quantizer.input_dim:
            raise ValueError(
                f"encoder output has {channels} channels but quantizer.input_dim={self.quantizer.input_dim}"
            )
        channels = self.quantizer.output_dim
        for i, stage in enumerate(self.decoder):
            channels = self._next_width(channels, stage, f"decoder.{i}", down=False)
        if channels != 1:
            raise ValueError(f"decoder output has {channels} channels; expected 1 (mono waveform)")

    @staticmethod
    def _next_width(channels: int, stage: StageConfig, where: str, down: bool) -> int:
        if isinstance(stage, PatchConfig):
            if down:
                return channels * stage.patch_size
            if channels % stage.patch_size:
                raise ValueError(f"{where}: {channels} channels are not divisible by patch_size={stage.patch_size}")
            return channels // stage.patch_size
        if stage.input_dimension != channels:
            raise ValueError(f"{where}: input_dimension={stage.input_dimension} but {channels} channels arrive")
        return stage.output_dimension

    # ---- derived values ----
    @property
    def frame_rate(self) -> float:
        """Codec frames per second (12.5 for the release)."""
        return self.sample_rate / self.downsample_rate

    @property
    def num_quantizers(self) -> int:
        return self.quantizer.num_quantizers

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    def contexts(self) -> tuple[dict[int, int], dict[int, int]]:
        """Attention window (in steps) of every transformer stage, keyed by stage index, for encoder and decoder.

        The rate starts at the waveform rate, is divided by each encoder patch size and multiplied by each
        decoder patch size; a transformer's window is `int(rate * context_duration)` at its input rate.
        """
        rate = float(self.sample_rate)
        enc: dict[int, int] = {}
        for i, stage in enumerate(self.encoder):
            if isinstance(stage, TransformerConfig):
                enc[i] = int(rate * self.context_duration)
            else:
                rate /= stage.patch_size
        dec: dict[int, int] = {}
        for i, stage in enumerate(self.decoder):
            if isinstance(stage, TransformerConfig):
                dec[i] = int(rate * self.context_duration)
            else:
                rate *= stage.patch_size
        return enc, dec

    # ---- (de)serialisation in the official config.json format ----
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CodecConfig:
        """Build from the official `config.json` dictionary (stage lists included); unknown keys raise."""
        d = dict(d)
        rate = d.pop("sampling_rate", None)
        alias = d.pop("sample_rate", None)
        if rate is None:
            rate = alias if alias is not None else 24000
        elif alias is not None and alias != rate:
            raise ValueError(f"config has sampling_rate={rate} but sample_rate={alias}")
        for key in ("encoder_kwargs", "decoder_kwargs", "quantizer_kwargs"):
            if key not in d:
                raise ValueError(f"codec config.json lacks {key!r}: build from the checkpoint's own config.json")
        q = dict(d.pop("quantizer_kwargs"))
        top_type = d.pop("quantizer_type", None)
        q.setdefault("quantizer_type", top_type or "rlfq")
        q.setdefault("rvq_dim", q.get("input_dim", 768))
        q.setdefault("output_dim", q.get("input_dim", 768))
        try:
            quantizer = QuantizerConfig(**q)
        except TypeError as err:
            raise ValueError(f"quantizer_kwargs: {err}") from None
        encoder = tuple(_stage_from_dict(s, f"encoder_kwargs[{i}]") for i, s in enumerate(d.pop("encoder_kwargs")))
        decoder = tuple(_stage_from_dict(s, f"decoder_kwargs[{i}]") for i, s in enumerate(d.pop("decoder_kwargs")))
        downsample_rate = d.pop("downsample_rate", 1920)
        context = d.pop("causal_transformer_context_duration", 10.0)
        unknown = sorted(k for k in d if k not in _METADATA_KEYS)
        if unknown:
            raise ValueError(f"unknown keys in codec config: {unknown}")
        return cls(
            sample_rate=int(rate),
            downsample_rate=int(downsample_rate),
            context_duration=float(context),
            encoder=encoder,
            decoder=decoder,
            quantizer=quantizer,
        )

    @classmethod
    def from_json(cls, path: str | Path) -> CodecConfig:
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict[str, Any]:
        """The official `config.json` dictionary (readable by upstream and by `from_dict`)."""
        context: float | int = self.context_duration
        if float(context).is_integer():
            context = int(context)
        return {
            "architectures": ["MossAudioTokenizerModel"],
            "model_type": "speech_tokenizer",
            "sampling_rate": self.sample_rate,
            "sample_rate": self.sample_rate,
            "downsample_rate": self.downsample_rate,
            "causal_transformer_context_duration": context,
            "code_dim": self.quantizer.output_dim,
            "encoder_kwargs": [s.to_dict() for s in self.encoder],
            "decoder_kwargs": [s.to_dict() for s in self.decoder],
            "quantizer_type": self.quantizer.quantizer_type,
            "quantizer_kwargs": self.quantizer.to_dict(),
            "dtype": "float32",
        }

    def save_json(self, path: str | Path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")

    # ---- presets ----
    @classmethod
    def released(cls) -> CodecConfig:
        """The released MOSS-Audio-Tokenizer (1.77 B parameters): 24 kHz, 12.5 Hz, 32 x 1024 codes, 10 s window."""

        def tf(i: int, o: int, d: int, layers: int) -> TransformerConfig:
            heads, ffn = (20, 5120) if d == 1280 else (12, 3072)
            return TransformerConfig(i, o, d, heads, layers, ffn)

        p240, p2 = PatchConfig(240), PatchConfig(2)
        encoder = (p240, tf(240, 384, 768, 12), p2, tf(768, 384, 768, 12), p2, tf(768, 640, 768, 12), p2)
        encoder += (tf(1280, 768, 1280, 32),)
        decoder = (tf(768, 1280, 1280, 32), p2, tf(640, 768, 768, 12), p2, tf(384, 768, 768, 12), p2)
        decoder += (tf(384, 240, 768, 12), p240)
        return cls(encoder=encoder, decoder=decoder, quantizer=QuantizerConfig())

    @classmethod
    def tiny(cls, context_duration: float = 0.4) -> CodecConfig:
        """A tiny codec for tests: the real 24 kHz rate, patch structure (240, 2, 2, 2) and 32 x 1024 codes,
        with narrow one- or two-layer transformers. The default 0.4 s window (5 frames at 12.5 Hz) is short so
        test sequences exceed it at every stage."""

        def tf(i: int, o: int, d: int, layers: int = 1) -> TransformerConfig:
            return TransformerConfig(i, o, d, num_heads=2, num_layers=layers, dim_feedforward=2 * d)

        p240, p2 = PatchConfig(240), PatchConfig(2)
        # Some stages have input_dimension == d_model or output_dimension == d_model, like the release,
        # so both "projection present" and "projection absent" paths are exercised.
        encoder = (p240, tf(240, 16, 32), p2, tf(32, 16, 32), p2, tf(32, 24, 32), p2, tf(48, 32, 48, 2))
        decoder = (tf(32, 48, 48, 2), p2, tf(24, 32, 32), p2, tf(16, 32, 32), p2, tf(16, 240, 32), p240)
        quantizer = QuantizerConfig(input_dim=32, rvq_dim=16, output_dim=32)
        return cls(context_duration=context_duration, encoder=encoder, decoder=decoder, quantizer=quantizer)
