"""Frame-step speed of the inference engine: eager vs compiled (CUDA graphs / torch.compile), or vs a naive loop.

    python -m cat_tts.tools.bench generate [--depths 1,8,16,32] [--batches 1,8] [--frames 8] [--compile] [--naive]
                                           [--released] [--device cuda]

Per batch size B and depth K: B requests fill B engine slots (random prompts, sampling with the released settings,
every request forced to the same number of frames); after warm-up, each frame step is timed with the device
synchronised, and the median is reported as ms/frame, frames/s (B x 1000 / ms) and the real-time factor of one
stream (ms per frame / 80 ms of audio per frame). Columns:

* `eager`: the engine's units run op by op (`EngineConfig(compile=False)`);
* with `--compile`: on CUDA, `graphs` (the units captured as CUDA graphs, `compile="auto"`) and `compiled`
  (torch.compile(fullgraph=True) + CUDA graphs, `compile=True`; skip it with `--no-inductor`); on the CPU,
  `compiled` (torch.compile);
* with `--naive` (the default when `--compile` is not given): the released code's algorithm, which re-runs the
  whole growing depth sequence at every depth step and the full text head for channel 0 (greedy).

The model is random (see `cat_tts.tools.bench.models`): `--released` for the real sizes on a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cat_tts.tools.bench import sync
from cat_tts.tools.bench.models import FRAME_SECONDS, add_model_arguments, build_model, describe, random_prompt


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--depths", default="1,8,16,32", help="comma-separated depths K (default 1,8,16,32)")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes (default 1,8)")
    parser.add_argument("--frames", type=int, default=8, help="timed frames per run (8)")
    parser.add_argument("--warmup-frames", type=int, default=3, help="untimed frames before timing (3)")
    parser.add_argument("--prompt-rows", type=int, default=64, help="prompt length in rows (64)")
    parser.add_argument("--compile", action="store_true", help="compare eager with compiled (graphs / compile)")
    parser.add_argument("--no-inductor", action="store_true", help="with --compile on CUDA: CUDA graphs only")
    parser.add_argument("--naive", action="store_true", help="also time the naive loop (default without --compile)")
    parser.add_argument("--naive-frames", type=int, default=2, help="timed frames of the naive loop (2)")
    add_model_arguments(parser)


def modes(args: argparse.Namespace) -> dict[str, object]:
    """Column name -> `EngineConfig.compile` value."""
    out: dict[str, object] = {"eager": False}
    if args.compile:
        if torch.device(args.device).type == "cuda":
            out["graphs"] = "auto"
            if not args.no_inductor:
                out["compiled"] = True
        else:
            out["compiled"] = True
    return out


@torch.inference_mode()
def time_engine(model, compile_mode, batch: int, depth: int, args: argparse.Namespace) -> dict:
    """Median seconds per frame step of `batch` requests at depth K, and the warm-up (compile/capture) time."""
    from cat_tts.generation import Engine, EngineConfig, GenerationConfig, RequestState

    frames = args.warmup_frames + args.frames
    rows = args.prompt_rows + frames + 16
    engine = Engine(model, EngineConfig(max_slots=batch, max_rows=rows, compile=compile_mode, buckets=(batch,)))
    start = time.perf_counter()
    engine.warmup()
    warmup_s = time.perf_counter() - start
    cfg = GenerationConfig(depth=depth, max_new_frames=frames, min_new_frames=frames)
    requests = [engine.submit(random_prompt(model, args.prompt_rows, seed=i), cfg.with_overrides(seed=i))
                for i in range(batch)]  # fmt: skip
    while any(r.state != RequestState.RUNNING for r in requests):  # prefill (the first frame may run with it)
        engine.step()
    times = []
    while not all(r.done for r in requests):
        sync(model.device)
        t = time.perf_counter()
        engine.step()
        sync(model.device)
        times.append(time.perf_counter() - t)
    timed = times[args.warmup_frames :] or times
    return {"s_per_frame": statistics.median(timed), "warmup_s": warmup_s, "graphs": engine.uses_cuda_graphs}


@torch.inference_mode()
def time_naive(model, batch: int, depth: int, args: argparse.Namespace) -> float:
    """Median seconds per frame of the released code's algorithm (recompute the depth sequence), greedy."""
    from transformers import DynamicCache

    grid = torch.stack([random_prompt(model, args.prompt_rows, seed=i) for i in range(batch)]).to(model.device)
    mask = torch.ones(grid.shape[:2], dtype=torch.long, device=model.device)
    pad = model.config.audio_pad_code
    cache = DynamicCache()
    h = model.temporal(
        inputs_embeds=model.embed_frames(grid, depth), attention_mask=mask, past_key_values=cache
    ).last_hidden_state[:, -1]
    times = []
    for _ in range(args.naive_frames + 1):
        sync(model.device)
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
        row = torch.full((batch, 1, grid.shape[-1]), pad, dtype=torch.long, device=grid.device)
        row[:, 0, : depth + 1] = torch.stack(toks, dim=-1)
        row[:, 0, 0] = model.config.token_ids.audio_assistant_gen_slot
        mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
        h = model.temporal(
            inputs_embeds=model.embed_frames(row, depth),
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1)[:, -1:],
            past_key_values=cache,
        ).last_hidden_state[:, -1]
        sync(model.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def run(args: argparse.Namespace) -> dict:
    depths = [int(x) for x in args.depths.split(",")]
    batches = [int(x) for x in args.batches.split(",")]
    naive = args.naive or not args.compile
    model = build_model(args)
    print(describe(model, args), flush=True)
    columns = modes(args)
    head = " ".join(f"{name + ' ms':>12}" for name in columns) + (f" {'naive ms':>10}" if naive else "")
    print(f"{'batch':>5} {'K':>3} {head} {'best frames/s':>13} {'RTF (1 stream)':>14} {'speedup':>8}", flush=True)
    rows = []
    for b in batches:
        for k in depths:
            row: dict = {"batch": b, "depth": k}
            for name, mode in columns.items():
                timing = time_engine(model, mode, b, k, args)
                row[f"{name}_ms_per_frame"] = timing["s_per_frame"] * 1e3
                row[f"{name}_warmup_s"] = timing["warmup_s"]
            if naive:
                row["naive_ms_per_frame"] = time_naive(model, b, k, args) * 1e3
            best = min(row[f"{name}_ms_per_frame"] for name in columns)
            row["best_frames_per_s"] = b * 1e3 / best
            row["rtf_per_stream"] = best / 1e3 / FRAME_SECONDS
            baseline = row["naive_ms_per_frame"] if naive else row["eager_ms_per_frame"]
            row["speedup"] = baseline / best
            rows.append(row)
            cells = " ".join(f"{row[f'{name}_ms_per_frame']:>12.2f}" for name in columns)
            if naive:
                cells += f" {row['naive_ms_per_frame']:>10.1f}"
            print(f"{b:>5} {k:>3} {cells} {row['best_frames_per_s']:>13.1f} {row['rtf_per_stream']:>14.3f} "
                  f"{row['speedup']:>7.1f}x", flush=True)  # fmt: skip
    return {"model": describe(model, args), "columns": list(columns) + (["naive"] if naive else []), "rows": rows}
