"""Speaker similarity (SIM): WavLM-Large + ECAPA-TDNN speaker embeddings, cosine between output and prompt.

This is the speaker-verification model of the Seed-TTS-Eval protocol (UniSpeech, checkpoint
`wavlm_large_finetune.pth`, fine-tuned backbone + ECAPA-TDNN head, 256-d embeddings at 16 kHz),
re-implemented here:

* backbone: transformers' `WavLMModel` (the checkpoint's `feature_extract.model.*` keys use the original
  WavLM names and are renamed by `convert_wavlm_key`);
* input: the 16 kHz waveform is normalised to zero mean / unit variance over the whole utterance
  (layer norm, eps 1e-5) because the WavLM-Large configuration asks for it;
* features: a softmax-weighted sum (learned `feature_weight`) of all backbone hidden states (the input of
  every transformer layer plus the final layer-normed output: 25 for WavLM-Large), then instance norm;
* head: ECAPA-TDNN (`EcapaTdnn`); module attribute names mirror the checkpoint's key layout so the head
  loads without renaming.

Loading is strict: every tensor of the checkpoint must be used except the training-only
`loss_calculator.*` head, and every parameter must be loaded; otherwise `CheckpointError` lists the
missing and unexpected keys.

Checkpoint safety: the released file is a PyTorch pickle. We never unpickle it with the general
unpickler (that can run arbitrary code). `load_checkpoint_tensors` uses `torch.load(weights_only=True)`,
PyTorch's restricted unpickler that only rebuilds tensors and plain containers and refuses every other
object, and `convert_checkpoint` writes the tensors once to a safetensors file, which later runs load
without any unpickling.

Shapes: B batch, S samples (16 kHz), T backbone frames (50 per second), D backbone width, C channels,
E embedding size, L number of mixed hidden states.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from cat_tts.errors import CheckpointError
from cat_tts.files import atomic_write
from cat_tts.weights import read_safetensors
from eval.seedtts.audio import SCORING_RATE, read_audio, resample_sinc

logger = logging.getLogger(__name__)

OFFICIAL_SHA256 = "51f07e3b94d9e0262a6a675ef5a087be3dd09e8c62e9d886827f44f82fe7f94b"
"""sha256 of the released `wavlm_large_finetune.pth` (1,301,926,579 bytes)."""

BACKBONE_PREFIX = "feature_extract.model."
IGNORED_PREFIXES = ("loss_calculator.",)  # training-only speaker-classification head


# A speaker-verification checkpoint that is unsafe, unreadable or does not match the model raises cat-tts's one
# `CheckpointError` (imported above, so `from eval.seedtts.sim import CheckpointError` keeps working).


# ----------------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class EcapaConfig:
    """Sizes of the ECAPA-TDNN head (defaults: the UniSpeech `ECAPA_TDNN_SMALL` on WavLM-Large)."""

    feat_dim: int = 1024  # width D of the backbone hidden states fed to the head
    num_features: int = 25  # L: hidden states mixed by `feature_weight` (layer inputs + final output)
    channels: int = 512  # C of the first conv and the three SE-Res2 blocks
    final_channels: int = 1536  # channels after the 1x1 conv that merges the three blocks
    emb_dim: int = 256  # E: speaker embedding size
    attention_channels: int = 128  # bottleneck of the attentive statistics pooling
    se_bottleneck: int = 128  # bottleneck of the squeeze-excitation units
    scale: int = 8  # Res2Net scale (number of channel groups)

    def __post_init__(self) -> None:
        for name in (
            "feat_dim",
            "num_features",
            "channels",
            "final_channels",
            "emb_dim",
            "attention_channels",
            "se_bottleneck",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"EcapaConfig.{name} must be a positive integer, got {value!r}")
        if self.scale < 2 or self.channels % self.scale:
            raise ValueError(f"EcapaConfig.scale must be >= 2 and divide channels={self.channels}, got {self.scale!r}")


def _wavlm_large_backbone() -> dict[str, Any]:
    """transformers `WavLMConfig` arguments of WavLM-Large (as in the original checkpoint's configuration)."""
    return dict(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        conv_dim=(512,) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_bias=False,
        feat_extract_norm="layer",
        feat_extract_activation="gelu",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=128,
        num_conv_pos_embedding_groups=16,
        num_buckets=320,
        max_bucket_distance=800,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        final_dropout=0.0,
        layerdrop=0.0,
        mask_time_prob=0.05,
    )


@dataclass
class SpeakerEncoderConfig:
    """WavLM backbone + ECAPA-TDNN head."""

    backbone: dict[str, Any] = field(default_factory=_wavlm_large_backbone)  # transformers WavLMConfig arguments
    head: EcapaConfig = field(default_factory=EcapaConfig)  # ECAPA-TDNN sizes
    normalize_waveform: bool = True  # zero-mean/unit-variance waveform before the backbone (WavLM-Large: yes)
    sample_rate: int = SCORING_RATE  # rate the model runs at (Hz); inputs are resampled to it

    def __post_init__(self) -> None:
        if isinstance(self.head, dict):
            self.head = EcapaConfig(**self.head)
        layers = self.backbone.get("num_hidden_layers")
        if layers is not None and layers + 1 != self.head.num_features:
            raise ValueError(
                f"head.num_features must be backbone num_hidden_layers + 1 = {layers + 1}, got {self.head.num_features}"
            )
        if self.backbone.get("hidden_size") not in (None, self.head.feat_dim):
            raise ValueError(
                f"head.feat_dim must equal backbone hidden_size={self.backbone['hidden_size']}, "
                f"got {self.head.feat_dim}"
            )
        if self.sample_rate != SCORING_RATE:
            raise ValueError(f"sample_rate must be {SCORING_RATE} (the checkpoint's rate), got {self.sample_rate}")

    @classmethod
    def wavlm_large(cls) -> SpeakerEncoderConfig:
        """The Seed-TTS-Eval model (`wavlm_large_finetune.pth`)."""
        return cls()

    @classmethod
    def tiny(cls) -> SpeakerEncoderConfig:
        """A tiny random model for tests (same structure; also the size of the committed golden checkpoint)."""
        backbone = dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            hidden_act="gelu",
            layer_norm_eps=1e-5,
            conv_dim=(16, 16, 16),
            conv_kernel=(10, 3, 2),
            conv_stride=(5, 2, 2),
            conv_bias=False,
            feat_extract_norm="layer",
            feat_extract_activation="gelu",
            do_stable_layer_norm=True,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2,
            num_buckets=32,
            max_bucket_distance=64,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            activation_dropout=0.0,
            feat_proj_dropout=0.0,
            final_dropout=0.0,
            layerdrop=0.0,
            mask_time_prob=0.05,
        )
        head = EcapaConfig(
            feat_dim=32,
            num_features=3,
            channels=16,
            final_channels=24,
            emb_dim=8,
            attention_channels=8,
            se_bottleneck=128,
            scale=8,
        )
        return cls(backbone=backbone, head=head)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (stored next to converted checkpoints)."""
        return {
            "backbone": dict(self.backbone),
            "head": asdict(self.head),
            "normalize_waveform": self.normalize_waveform,
            "sample_rate": self.sample_rate,
        }


# ----------------------------------------------------------------------------------------------------------------------
# ECAPA-TDNN head (attribute names follow the checkpoint's keys)


class ConvReluBn(nn.Module):
    """Conv1d -> ReLU -> BatchNorm1d.  [B, C_in, T] -> [B, C_out, T]"""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 1, padding: int = 0, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel_size, padding=padding, dilation=dilation)
        self.bn = nn.BatchNorm1d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class Res2Conv(nn.Module):
    """Res2Net dilated conv: C channels in `scale` groups; group i (i < scale-1) sees the output of group i-1.

    [B, C, T] -> [B, C, T]; the last group is passed through unchanged.
    """

    def __init__(self, channels: int, scale: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.width = channels // scale
        n = scale - 1
        pad = dilation * (kernel_size - 1) // 2
        self.convs = nn.ModuleList(
            nn.Conv1d(self.width, self.width, kernel_size, padding=pad, dilation=dilation) for _ in range(n)
        )
        self.bns = nn.ModuleList(nn.BatchNorm1d(self.width) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = torch.split(x, self.width, dim=1)  # scale x [B, C/scale, T]
        outs = []
        y = None
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            y = groups[i] if i == 0 else y + groups[i]
            y = bn(F.relu(conv(y)))
            outs.append(y)
        outs.append(groups[-1])
        return torch.cat(outs, dim=1)


class SqueezeExcite(nn.Module):
    """Channel gates from the time-averaged input.  [B, C, T] -> [B, C, T]"""

    def __init__(self, channels: int, bottleneck: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(channels, bottleneck)
        self.linear2 = nn.Linear(bottleneck, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.linear2(F.relu(self.linear1(x.mean(dim=2)))))  # [B, C]
        return x * gate[:, :, None]


class SERes2Block(nn.Module):
    """1x1 conv -> Res2 dilated conv -> 1x1 conv -> squeeze-excitation, plus the identity.  [B, C, T] -> [B, C, T]"""

    def __init__(self, channels: int, scale: int, dilation: int, se_bottleneck: int) -> None:
        super().__init__()
        self.Conv1dReluBn1 = ConvReluBn(channels, channels)
        self.Res2Conv1dReluBn = Res2Conv(channels, scale, kernel_size=3, dilation=dilation)
        self.Conv1dReluBn2 = ConvReluBn(channels, channels)
        self.SE_Connect = SqueezeExcite(channels, se_bottleneck)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.Conv1dReluBn2(self.Res2Conv1dReluBn(self.Conv1dReluBn1(x)))
        return x + self.SE_Connect(y)


class AttentiveStatsPool(nn.Module):
    """Attention-weighted mean and standard deviation over time.  [B, C, T] -> [B, 2C]"""

    def __init__(self, channels: int, attention_channels: int) -> None:
        super().__init__()
        self.linear1 = nn.Conv1d(channels, attention_channels, kernel_size=1)
        self.linear2 = nn.Conv1d(attention_channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.softmax(self.linear2(torch.tanh(self.linear1(x))), dim=2)  # [B, C, T], sums to 1 over T
        mean = (alpha * x).sum(dim=2)  # [B, C]
        var = (alpha * x * x).sum(dim=2) - mean * mean
        return torch.cat([mean, var.clamp(min=1e-9).sqrt()], dim=1)


class EcapaTdnn(nn.Module):
    """ECAPA-TDNN over mixed backbone features.

    Input: the stacked backbone hidden states [L, B, T, D]; output: embeddings [B, E].
    """

    def __init__(self, config: EcapaConfig) -> None:
        super().__init__()
        c = config.channels
        self.config = config
        self.feature_weight = nn.Parameter(torch.zeros(config.num_features))
        self.layer1 = ConvReluBn(config.feat_dim, c, kernel_size=5, padding=2)
        self.layer2 = SERes2Block(c, config.scale, dilation=2, se_bottleneck=config.se_bottleneck)
        self.layer3 = SERes2Block(c, config.scale, dilation=3, se_bottleneck=config.se_bottleneck)
        self.layer4 = SERes2Block(c, config.scale, dilation=4, se_bottleneck=config.se_bottleneck)
        self.conv = nn.Conv1d(3 * c, config.final_channels, kernel_size=1)
        self.pooling = AttentiveStatsPool(config.final_channels, config.attention_channels)
        self.bn = nn.BatchNorm1d(2 * config.final_channels)
        self.linear = nn.Linear(2 * config.final_channels, config.emb_dim)

    def mix_features(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Softmax-weighted sum of the hidden states, then instance norm.  [L, B, T, D] -> [B, D, T]"""
        if hidden_states.shape[0] != self.config.num_features:
            raise ValueError(f"expected {self.config.num_features} hidden states, got {hidden_states.shape[0]}")
        w = torch.softmax(self.feature_weight, dim=0)  # [L]
        x = (w[:, None, None, None] * hidden_states).sum(dim=0)  # [B, T, D]
        x = x.transpose(1, 2) + 1e-6  # [B, D, T]
        return F.instance_norm(x, eps=1e-5)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = self.mix_features(hidden_states)  # [B, D, T]
        out1 = self.layer1(x)  # [B, C, T]
        out2 = self.layer2(out1)
        out3 = self.layer3(out2)
        out4 = self.layer4(out3)
        x = F.relu(self.conv(torch.cat([out2, out3, out4], dim=1)))  # [B, final, T]
        return self.linear(self.bn(self.pooling(x)))  # [B, E]


# ----------------------------------------------------------------------------------------------------------------------
# Full encoder and checkpoint conversion


class SpeakerEncoder(nn.Module):
    """WavLM backbone + ECAPA-TDNN head: 16 kHz waveform [B, S] -> speaker embedding [B, E]."""

    def __init__(self, config: SpeakerEncoderConfig) -> None:
        super().__init__()
        from transformers import WavLMConfig, WavLMModel

        self.config = config
        self.backbone = WavLMModel(WavLMConfig(**config.backbone))
        self.head = EcapaTdnn(config.head)
        self.eval()

    def hidden_states(self, wav: torch.Tensor) -> torch.Tensor:
        """The input of every transformer layer plus the final (layer-normed) output.  [B, S] -> [L, B, T, D]

        Collected with forward pre-hooks rather than `output_hidden_states`, whose last entry has changed
        meaning across transformers versions (final output before vs after the encoder's layer norm).
        """
        if self.config.normalize_waveform:
            wav = F.layer_norm(wav, wav.shape[-1:])  # per utterance, eps 1e-5
        taps: list[torch.Tensor] = []

        def record(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            taps.append(args[0] if args else kwargs["hidden_states"])

        handles = [layer.register_forward_pre_hook(record, with_kwargs=True) for layer in self.backbone.encoder.layers]
        try:
            last = self.backbone(wav).last_hidden_state  # [B, T, D]
        finally:
            for handle in handles:
                handle.remove()
        return torch.stack([*taps, last], dim=0)

    @torch.no_grad()
    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Speaker embeddings of 16 kHz waveforms of equal length (score one utterance per call).  [B, S] -> [B, E]"""
        return self.head(self.hidden_states(wav))


_WAVLM_RENAMES: tuple[tuple[str, str], ...] = (
    # (regex on the original WavLM key, replacement giving the transformers WavLMModel key)
    (r"^feature_extractor\.conv_layers\.(\d+)\.0\.weight$", r"feature_extractor.conv_layers.\1.conv.weight"),
    (
        r"^feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)$",
        r"feature_extractor.conv_layers.\1.layer_norm.\2",
    ),
    (r"^layer_norm\.(weight|bias)$", r"feature_projection.layer_norm.\1"),
    (r"^post_extract_proj\.(weight|bias)$", r"feature_projection.projection.\1"),
    (r"^mask_emb$", r"masked_spec_embed"),
    (r"^encoder\.pos_conv\.0\.bias$", r"encoder.pos_conv_embed.conv.bias"),
    (r"^encoder\.pos_conv\.0\.weight_g$", r"encoder.pos_conv_embed.conv.parametrizations.weight.original0"),
    (r"^encoder\.pos_conv\.0\.weight_v$", r"encoder.pos_conv_embed.conv.parametrizations.weight.original1"),
    (r"^encoder\.layer_norm\.(weight|bias)$", r"encoder.layer_norm.\1"),
    (
        r"^encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.(weight|bias)$",
        r"encoder.layers.\1.attention.\2_proj.\3",
    ),
    (
        r"^encoder\.layers\.(\d+)\.self_attn\.grep_linear\.(weight|bias)$",
        r"encoder.layers.\1.attention.gru_rel_pos_linear.\2",
    ),
    (r"^encoder\.layers\.(\d+)\.self_attn\.grep_a$", r"encoder.layers.\1.attention.gru_rel_pos_const"),
    (
        r"^encoder\.layers\.(\d+)\.self_attn\.relative_attention_bias\.weight$",
        r"encoder.layers.\1.attention.rel_attn_embed.weight",
    ),
    (r"^encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)$", r"encoder.layers.\1.layer_norm.\2"),
    (r"^encoder\.layers\.(\d+)\.fc1\.(weight|bias)$", r"encoder.layers.\1.feed_forward.intermediate_dense.\2"),
    (r"^encoder\.layers\.(\d+)\.fc2\.(weight|bias)$", r"encoder.layers.\1.feed_forward.output_dense.\2"),
    (r"^encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)$", r"encoder.layers.\1.final_layer_norm.\2"),
)
_WAVLM_PATTERNS = tuple((re.compile(p), r) for p, r in _WAVLM_RENAMES)


def convert_wavlm_key(key: str) -> str | None:
    """Rename an original-WavLM key (stored under `feature_extract.model.`) to transformers' name; None if unknown."""
    for pattern, repl in _WAVLM_PATTERNS:
        if pattern.match(key):
            return pattern.sub(repl, key)
    return None


def _describe(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_official_state_dict(model: SpeakerEncoder, state: dict[str, torch.Tensor], assign: bool = False) -> None:
    """Load a state dict in the UniSpeech checkpoint's key layout into `model`, strictly.

    Keys: `feature_extract.model.<original WavLM key>` for the backbone, the head's own keys at the top
    level (`feature_weight`, `layer1..4.*`, `conv.*`, `pooling.*`, `bn.*`, `linear.*`), and the ignored
    training-only `loss_calculator.*`. With `assign=True` the checkpoint's tensors replace the module's
    (use it for a model built on the meta device, which skips the random initialisation).

    Raises:
        CheckpointError: listing every missing key, unexpected key and shape mismatch.
    """
    backbone_sd: dict[str, torch.Tensor] = {}
    head_sd: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    ignored: list[str] = []
    for key, value in state.items():
        if key.startswith(IGNORED_PREFIXES):
            ignored.append(key)
        elif key.startswith(BACKBONE_PREFIX):
            new = convert_wavlm_key(key[len(BACKBONE_PREFIX) :])
            if new is None:
                unexpected.append(key)
            else:
                backbone_sd[new] = value
        else:
            head_sd[key] = value

    problems: list[str] = []
    for prefix, module, sd in (
        ("feature_extract.model. (backbone)", model.backbone, backbone_sd),
        ("head", model.head, head_sd),
    ):
        own = module.state_dict()
        missing = sorted(set(own) - set(sd))
        extra = sorted(set(sd) - set(own))
        if prefix == "head":
            unexpected.extend(extra)
        else:
            unexpected.extend(BACKBONE_PREFIX + k for k in extra)
        if missing:
            problems.append(f"missing {prefix} keys: {_describe(missing)}")
        shapes = [
            f"{k} {tuple(sd[k].shape)} != {tuple(own[k].shape)}"
            for k in sorted(set(own) & set(sd))
            if sd[k].shape != own[k].shape
        ]
        if shapes:
            problems.append(f"shape mismatches ({prefix}): {_describe(shapes)}")
    if unexpected:
        problems.insert(0, f"unexpected keys: {_describe(sorted(unexpected))}")
    if problems:
        raise CheckpointError("speaker-verification checkpoint does not match the model: " + "; ".join(problems))
    model.backbone.load_state_dict(backbone_sd, strict=True, assign=assign)
    model.head.load_state_dict(head_sd, strict=True, assign=assign)
    if ignored:
        logger.info("ignored %d training-only tensors (%s)", len(ignored), _describe(ignored, 3))


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_checkpoint_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the tensors of a speaker-verification checkpoint without running code from the file.

    `.safetensors` files are read directly. PyTorch pickles (`.pth`/`.pt`) are read with
    `torch.load(weights_only=True)`: the restricted unpickler rebuilds only tensors and plain containers
    and raises on any other object instead of importing and calling it. A top-level `{"model": ...}`
    wrapper is unwrapped.

    Raises:
        CheckpointError: missing file, refused or unreadable pickle, or content that is not a flat
            mapping of names to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"speaker-verification checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return read_safetensors(path, mmap=True)  # a damaged file raises a CheckpointError naming it
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError for refused objects, RuntimeError for corrupt archives
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain tensor checkpoint readable by PyTorch's safe "
            f"(weights_only) loader ({err.__class__.__name__}: {str(err).splitlines()[0][:200]}). "
            "Get the original wavlm_large_finetune.pth (check its sha256) or a safetensors conversion of it."
        ) from err
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise CheckpointError(f"{path} does not hold a mapping of parameter names to tensors (or {{'model': ...}})")
    return obj


def convert_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """One-time conversion of `wavlm_large_finetune.pth` to safetensors (the training-only head is dropped).

    The source is read with the safe loader (`load_checkpoint_tensors`); its sha256 is compared with the
    released file's and recorded in the output's metadata.

    Returns:
        The written path.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise CheckpointError(f"speaker-verification checkpoint not found: {src}")
    digest = sha256_file(src)
    if digest != OFFICIAL_SHA256:
        logger.warning("%s has sha256 %s, not the released file's %s", src, digest, OFFICIAL_SHA256)
    tensors = {k: v.contiguous() for k, v in load_checkpoint_tensors(src).items() if not k.startswith(IGNORED_PREFIXES)}
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(dst) as tmp:
        save_file(tensors, str(tmp), metadata={"source": src.name, "source_sha256": digest})
    return dst


class SpeakerSimilarity:
    """Cosine similarity between the speaker embeddings of two audio files (the SIM metric).

    Embeddings of files seen before (prompts are shared across depths) are cached by path.
    """

    def __init__(self, model: SpeakerEncoder, device: str | torch.device = "cpu", name: str = "wavlm-ecapa") -> None:
        self.name = name  # label recorded in the results
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self._cache: dict[Path, torch.Tensor] = {}

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, config: SpeakerEncoderConfig | None = None, device: str | torch.device = "cpu"
    ) -> SpeakerSimilarity:
        """Build the WavLM-Large ECAPA-TDNN model and load `wavlm_large_finetune.pth` (or its safetensors copy).

        Raises:
            CheckpointError: see `load_checkpoint_tensors` and `load_official_state_dict`.
        """
        state = load_checkpoint_tensors(path)
        with torch.device("meta"):  # no random init of ~315M parameters: every tensor comes from the checkpoint
            model = SpeakerEncoder(config or SpeakerEncoderConfig.wavlm_large())
        load_official_state_dict(model, state, assign=True)
        return cls(model, device, name=Path(path).name)

    def embed_waveform(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Embedding of one mono waveform [S] at any rate (resampled to 16 kHz).  Returns [E] (float32, CPU)."""
        wav = resample_sinc(wav.float(), sample_rate, self.model.config.sample_rate)
        return self.model(wav[None].to(self.device))[0].float().cpu()

    def embed_file(self, path: str | Path) -> torch.Tensor:
        """Embedding of an audio file (first channel, native rate read, then resampled).  Returns [E].

        Raises:
            AudioReadError: missing, unreadable or empty file.
        """
        path = Path(path).resolve()
        if path not in self._cache:
            wav, sr = read_audio(path, dtype="float32")
            self._cache[path] = self.embed_waveform(torch.from_numpy(wav), sr)
        return self._cache[path]

    def similarity(self, generated: str | Path, prompt: str | Path) -> float:
        """Cosine similarity (-1..1) between the speaker embeddings of `generated` and `prompt`."""
        a, b = self.embed_file(generated), self.embed_file(prompt)
        return float(F.cosine_similarity(a[None], b[None])[0])
