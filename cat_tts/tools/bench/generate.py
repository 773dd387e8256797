"""Generation speed: KV-cached frame loop vs a naive recompute-the-depth-sequence loop, plus streaming TTFA.

    python -m cat_tts.tools.bench generate [--depths 1,8,16,32] [--batches 1,8] [--frames 4] [--naive-frames 1]

Random weights at the released depth-transformer size: depth transformer 4 x 1536 (FFN 8960, 16/8 heads of
128), shared input adapter and 33 output adapters of width 2048, 32 audio heads of 1025 codes. The temporal
transformer keeps the released width (2048, Qwen3-1.7B layer shape) but only `--temporal-layers` layers
(default 1 instead of 28) and a `--text-vocab` text vocabulary (default 8192 instead of 155648): the temporal
step is the same in both loops and is not what is compared. Both loops share the temporal KV cache and the
sampler; they differ in the depth loop only:

* ours (`cat_tts.generation`): K+1 depth steps per frame, each feeding one new position against the depth
  KV cache; output adapter + head only for the sampled position; channel 0 chooses gen-slot vs audio_end.
* naive (the released code's algorithm): at every depth step the depth transformer re-runs the whole growing
  sequence, the output adapter + norm run on every position, and channel 0 uses the full text head.

Decoding is greedy in both (the sampler is not what is compared); every sequence is forced to run the same
number of frames. Times are the best of the timed frames (the shared machine's load adds noise, never
speed). Time-to-first-audio streams one utterance through `CatTTS.stream` with a tiny codec and
the tiny tokenizer: it covers reference encoding, prompt prefill, the first frame and its decode.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cat_tts.tools.bench import sync


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--depths", default="1,8,16,32", help="comma-separated depths K (default 1,8,16,32)")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes (default 1,8)")
    parser.add_argument("--frames", type=int, default=4, help="timed frames per run of the cached loop (4)")
    parser.add_argument("--naive-frames", type=int, default=2, help="timed frames per run of the naive loop (2)")
    parser.add_argument("--prompt-rows", type=int, default=64, help="prompt length in rows (64)")
    parser.add_argument("--temporal-layers", type=int, default=1, help="temporal layers (released: 28)")
    parser.add_argument("--text-vocab", type=int, default=8192, help="text vocabulary (released: 155648)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda (default: cuda if any)"
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="weights dtype")
    parser.add_argument("--quick", action="store_true", help="tiny widths: a smoke test of the harness only")
    parser.add_argument("--no-ttfa", action="store_true", help="skip the streaming time-to-first-audio run")


def _config(args: argparse.Namespace):
    from cat_tts.model import CatTTSConfig
    from cat_tts.model.config import tiny_token_ids

    ids = tiny_token_ids()  # the make_tiny tokenizer's special ids
    if args.quick:
        lang = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16)
        sizes = dict(additional_mlp_ffn_hidden_size=64, local_hidden_size=48, local_ffn_hidden_size=96)
    else:
        lang = dict(
            hidden_size=2048, intermediate_size=6144, num_attention_heads=16, num_key_value_heads=8, head_dim=128
        )
        sizes = dict(additional_mlp_ffn_hidden_size=2048, local_hidden_size=1536, local_ffn_hidden_size=8960)
    language = dict(
        vocab_size=max(512, args.text_vocab),
        num_hidden_layers=args.temporal_layers,
        max_position_embeddings=4096,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        **lang,
    )
    return CatTTSConfig(language_config=language, n_vq=32, audio_vocab_size=1024, local_num_layers=4, **sizes, **ids)


def _build_model(args: argparse.Namespace):
    from cat_tts.model import CatTTSModel

    config = _config(args)
    with torch.device("meta"):
        model = CatTTSModel(config, attn_implementation="sdpa")
    model = model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * (p.shape[-1] ** -0.5 if "embed" not in name else 1.0))
            else:
                p.fill_(1.0)
    from cat_tts.model.checkpoint import reset_rotary

    reset_rotary(model.temporal, torch.device("cpu"))
    return model.to(device=args.device, dtype=getattr(torch, args.dtype)).eval()


def _prompt(model, batch: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    n = model.config.n_vq
    grid = torch.randint(0, 1024, (batch, rows, 1 + n), generator=gen)
    grid[..., 0] = torch.randint(0, 500, (batch, rows), generator=gen)
    grid[:, -1, 0] = model.config.token_ids.audio_start
    grid[:, -1, 1:] = model.config.audio_pad_code
    return grid.to(model.device), torch.ones(batch, rows, dtype=torch.long, device=model.device)


@torch.inference_mode()
def _time_cached(model, grid, mask, depth: int, frames: int) -> float:
    """Seconds per frame step of the cached loop (prefill excluded), best of the timed frames."""
    from cat_tts.generation import GenerationConfig, iter_frames

    cfg = GenerationConfig(depth=depth, max_new_frames=frames + 1, min_new_frames=frames + 1, do_sample=False)
    times = []
    t = time.perf_counter()
    for step in iter_frames(model, grid, mask, cfg):
        sync(grid.device)
        now = time.perf_counter()
        if step.index > 0:  # the first step includes lazy allocations; time the rest
            times.append(now - t)
        t = now
    return float(np.min(times))


@torch.inference_mode()
def _time_naive(model, grid, mask, depth: int, frames: int) -> float:
    """Seconds per frame step of the released code's algorithm (recompute the depth sequence), best of `frames`."""
    from transformers import DynamicCache

    pad = model.config.audio_pad_code
    cache = DynamicCache()
    pos = mask.cumsum(-1) - 1
    h = model.temporal(
        inputs_embeds=model.embed_frames(grid, depth), attention_mask=mask, position_ids=pos, past_key_values=cache
    ).last_hidden_state[:, -1]
    b = grid.shape[0]
    times = []
    for _ in range(frames):
        start = time.perf_counter()
        xs = [model.depth_input(h)]  # [B, Dd] per position
        toks = []
        for c in range(depth + 1):
            y = model.depth(torch.stack(xs, dim=1))  # [B, c+1, Dd], recomputed from scratch
            z = model.head_norms[c](model.depth_output[c](y))  # adapters on every position, as upstream
            logits = model.heads[c](z[:, -1])  # channel 0: the full text head
            if c > 0:
                logits[:, pad] = float("-inf")
            tok = logits.argmax(-1)
            toks.append(tok)
            xs.append(model.depth_input(model.channel_embedding(c, tok)))
        row = torch.full((b, 1, grid.shape[-1]), pad, dtype=torch.long, device=grid.device)
        row[:, 0, : depth + 1] = torch.stack(toks, dim=-1)
        row[:, 0, 0] = model.config.token_ids.audio_assistant_gen_slot
        mask = torch.cat([mask, mask.new_ones(b, 1)], dim=1)
        h = model.temporal(
            inputs_embeds=model.embed_frames(row, depth),
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1)[:, -1:],
            past_key_values=cache,
        ).last_hidden_state[:, -1]
        sync(grid.device)
        times.append(time.perf_counter() - start)
    return float(np.min(times))


def _linear_fit(ks: list[int], ms: list[float]) -> tuple[float, float, float]:
    """Least-squares ms = a + b (K+1); returns (a, b, R^2)."""
    x = np.array([k + 1 for k in ks], dtype=np.float64)
    y = np.array(ms, dtype=np.float64)
    b, a = np.polyfit(x, y, 1)
    pred = a + b * x
    ss = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - pred) ** 2).sum()) / ss if ss > 0 else 1.0
    return float(a), float(b), r2


@torch.inference_mode()
def _ttfa(model, depth: int) -> dict:
    """Streaming latency of one utterance with a voice encoded beforehand (`encode_reference`, reused)."""
    from cat_tts.codec.config import CodecConfig
    from cat_tts.codec.tiny import random_codec
    from cat_tts.inference import CatTTS
    from cat_tts.text.tiny_tokenizer import build_tiny_tokenizer

    tts = CatTTS(model, random_codec(CodecConfig.tiny(), seed=0, device=model.device).eval(), build_tiny_tokenizer())
    t = np.arange(3 * 24000) / 24000
    start = time.perf_counter()
    voice = tts.encode_reference(((0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 24000))
    encode = time.perf_counter() - start
    kw = dict(depth=depth, do_sample=False, min_new_frames=2, max_new_frames=2, first_chunk_frames=1)
    text = "Hello there, this is a test."
    next(tts.stream(text, voice, **kw))  # warm-up
    best = {"first_frame_s": float("inf"), "first_audio_s": float("inf")}
    for _ in range(3):  # best of 3
        first_frame: list[float] = []
        start = time.perf_counter()
        stream = tts.stream(text, voice, on_frame=lambda s, f=first_frame: f.append(time.perf_counter()), **kw)
        next(stream)
        best["first_audio_s"] = min(best["first_audio_s"], time.perf_counter() - start)
        best["first_frame_s"] = min(best["first_frame_s"], first_frame[0] - start)
        stream.close()
    return {"reference_encode_s": encode, **best}


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    depths = [int(x) for x in args.depths.split(",")]
    batches = [int(x) for x in args.batches.split(",")]
    model = _build_model(args)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"random weights, {params / 1e6:.0f}M parameters, {args.dtype}, {torch.get_num_threads()} threads; "
        f"temporal: {args.temporal_layers} layer(s), text vocab {model.config.vocab_size}"
        + (" (QUICK: tiny widths, harness smoke test only)" if args.quick else "")
    )
    rows = []
    print(f"{'batch':>5} {'K':>3} {'ours ms/frame':>14} {'naive ms/frame':>15} {'ours frames/s':>14} "
          f"{'naive frames/s':>15} {'speedup':>8}", flush=True)  # fmt: skip
    for b in batches:
        grid, mask = _prompt(model, b, args.prompt_rows)
        for k in depths:
            ours = _time_cached(model, grid, mask, k, args.frames)
            naive = _time_naive(model, grid, mask, k, args.naive_frames)
            rows.append(
                {
                    "batch": b,
                    "depth": k,
                    "ours_ms_per_frame": ours * 1e3,
                    "naive_ms_per_frame": naive * 1e3,
                    "ours_frames_per_s": b / ours,
                    "naive_frames_per_s": b / naive,
                    "speedup": naive / ours,
                }
            )
            r = rows[-1]
            print(
                f"{r['batch']:>5} {r['depth']:>3} {r['ours_ms_per_frame']:>14.1f} {r['naive_ms_per_frame']:>15.1f} "
                f"{r['ours_frames_per_s']:>14.2f} {r['naive_frames_per_s']:>15.2f} {r['speedup']:>7.1f}x",
                flush=True,
            )
    fits = {}
    for b in batches:
        sel = [r for r in rows if r["batch"] == b]
        if len(sel) >= 3:
            ks = [r["depth"] for r in sel]
            for name in ("ours", "naive"):
                a, slope, r2 = _linear_fit(ks, [r[f"{name}_ms_per_frame"] for r in sel])
                fits[f"batch{b}_{name}"] = {"intercept_ms": a, "ms_per_depth_step": slope, "r2": r2}
            f_ours, f_naive = fits[f"batch{b}_ours"], fits[f"batch{b}_naive"]
            print(
                f"batch {b}: ours ms/frame = {f_ours['intercept_ms']:.1f} + {f_ours['ms_per_depth_step']:.2f} x (K+1) "
                f"(linear fit R^2 {f_ours['r2']:.3f}); naive linear fit R^2 {f_naive['r2']:.3f}"
            )
    result: dict = {"rows": rows, "linear_fits": fits, "parameters": params, "threads": torch.get_num_threads()}
    if not args.no_ttfa:
        ttfa = {k: _ttfa(model, k) for k in sorted({depths[0], depths[-1]})}
        for k, s in ttfa.items():
            print(
                f"streaming, batch 1, K={k}: first frame after {s['first_frame_s'] * 1e3:.0f} ms, first audio after "
                f"{s['first_audio_s'] * 1e3:.0f} ms (voice encoded beforehand in "
                f"{s['reference_encode_s'] * 1e3:.0f} ms; tiny codec, shortened temporal)"
            )
        result["ttfa"] = ttfa
    return result
