"""Random-weight models and prompts shared by the generation benchmarks (`generate`, `engine`).

The default model has the released depth-transformer size (4 blocks of width 1536, FFN 8960, 16/8 heads of 128;
the shared input adapter and 33 output adapters of width 2048; 32 audio heads of 1025 codes) with a shortened
temporal transformer (the released width 2048 and Qwen3-1.7B block shape, but `--temporal-blocks` blocks and a
`--text-vocab` text vocabulary) so that CPU runs stay short; `--released` restores all 28 blocks and the 155648-token
vocabulary (the real model's size, for GPU runs); `--quick` shrinks every width (a smoke test of the harness).
"""

from __future__ import annotations

import argparse

import torch

from cat_tts.codec import CodecConfig
from cat_tts.model import CatTTSConfig, CatTTSModel
from cat_tts.model.config import tiny_token_ids

RELEASED_TEMPORAL_BLOCKS = 28
RELEASED_TEXT_VOCAB = 155648
FRAME_SECONDS = 1.0 / CodecConfig.released().frame_rate  # audio per generated frame (80 ms for the CAT codec)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model options every generation benchmark takes."""
    parser.add_argument("--temporal-blocks", type=int, default=1, help="temporal transformer blocks (released: 28)")
    parser.add_argument("--text-vocab", type=int, default=8192, help="text vocabulary (released: 155648)")
    parser.add_argument("--released", action="store_true", help="the released sizes: 28 temporal blocks, full vocab")
    parser.add_argument("--quick", action="store_true", help="tiny widths: a smoke test of the harness only")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda (default: cuda if any)"
    )
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16"], help="default: bf16 on CUDA, fp32")


def model_config(args: argparse.Namespace) -> CatTTSConfig:
    """The benchmark model's config (see the module docstring)."""
    blocks = RELEASED_TEMPORAL_BLOCKS if args.released else args.temporal_blocks
    vocab = RELEASED_TEXT_VOCAB if args.released else args.text_vocab
    if args.quick:
        lang = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16)
        sizes = dict(additional_mlp_ffn_hidden_size=64, local_hidden_size=48, local_ffn_hidden_size=96)
    else:
        lang = dict(
            hidden_size=2048, intermediate_size=6144, num_attention_heads=16, num_key_value_heads=8, head_dim=128
        )
        sizes = dict(additional_mlp_ffn_hidden_size=2048, local_hidden_size=1536, local_ffn_hidden_size=8960)
    language = dict(
        vocab_size=max(512, vocab),
        num_hidden_layers=blocks,
        max_position_embeddings=40960,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        **lang,
    )
    return CatTTSConfig(
        language_config=language, n_vq=32, audio_vocab_size=1024, local_num_layers=4, **sizes, **tiny_token_ids()
    )


def dtype_of(args: argparse.Namespace) -> torch.dtype:
    """The weights' dtype: --dtype, else bf16 on CUDA and fp32 on the CPU."""
    if args.dtype:
        return getattr(torch, args.dtype)
    return torch.bfloat16 if torch.device(args.device).type == "cuda" else torch.float32


@torch.no_grad()
def build_model(args: argparse.Namespace) -> CatTTSModel:
    """A random-weight model built straight on the target device in the target dtype (no CPU copy).

    Matrices are drawn with std 1/sqrt(fan_in) (embeddings std 1) so activations keep a sane scale at any depth.
    """
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with torch.device("meta"):
        model = CatTTSModel(model_config(args), attn_implementation="sdpa")
    model = model.to_empty(device=device).to(dtype_of(args))
    gen = torch.Generator(device=device).manual_seed(0)
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            std = 1.0 if "embed" in name else p.shape[-1] ** -0.5
            p.normal_(0.0, std, generator=gen)
        else:
            p.fill_(1.0)
    from cat_tts.model.temporal import reset_rotary

    reset_rotary(model.temporal, device)
    return model.eval()


def random_prompt(model: CatTTSModel, rows: int, seed: int = 1) -> torch.Tensor:
    """A `[T, 1+N]` prompt grid of random text ids and codes, ending with an `audio_start` row (CPU)."""
    gen = torch.Generator().manual_seed(seed)
    n = model.config.n_vq
    grid = torch.randint(0, 1024, (rows, 1 + n), generator=gen)
    grid[:, 0] = torch.randint(0, 500, (rows,), generator=gen)
    grid[-1, 0] = model.config.token_ids.audio_start
    grid[-1, 1:] = model.config.audio_pad_code
    return grid


def describe(model: CatTTSModel, args: argparse.Namespace) -> str:
    """One line naming the benchmark model."""
    params = sum(p.numel() for p in model.parameters())
    what = "QUICK: tiny widths, harness smoke test only" if args.quick else "released depth transformer"
    return (
        f"random weights, {params / 1e6:.0f}M parameters, {model.dtype}, {args.device}, "
        f"{torch.get_num_threads()} CPU threads; temporal: {model.config.language_config.num_hidden_layers} block(s), "
        f"text vocab {model.config.vocab_size} ({what})"
    )
