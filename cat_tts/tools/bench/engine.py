"""Continuous batching: N concurrent requests on one engine vs the same N requests one after another.

    python -m cat_tts.tools.bench engine [--concurrency 1,4,8,16] [--depths 8,32] [--frames 16] [--released]
                                         [--device cuda] [--compile auto]

For each depth K and concurrency N, the same N requests (random prompts of different lengths, sampling with the
released settings, each forced to `--frames` frames) run twice in the same process:

* `concurrent`: all N submitted at once to an engine of N slots (they share every frame step);
* `sequential`: one after another on an engine of one slot (the best a one-request-at-a-time server does).

Reported per run: aggregate frames/s (N x frames / wall time), the aggregate real-time factor (wall time / seconds of
audio produced; < 1 is faster than real time), and the time to first audio frame of each request measured from the
moment all N were submitted (what N clients arriving together see; p50 and p95), plus the ratio of the two
aggregate rates. Audio decode is not included (see `bench codec` and `bench serve`).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from cat_tts.tools.bench import sync
from cat_tts.tools.bench.models import FRAME_SECONDS, add_model_arguments, build_model, describe, random_prompt


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concurrency", default="1,4,8,16", help="comma-separated request counts N (1,4,8,16)")
    parser.add_argument("--depths", default="8,32", help="comma-separated depths K (default 8,32)")
    parser.add_argument("--frames", type=int, default=16, help="frames generated per request (16)")
    parser.add_argument("--prompt-rows", type=int, default=64, help="mean prompt length in rows (64; +-25%%)")
    parser.add_argument("--compile", default="auto", choices=["auto", "on", "off"], help="engine compilation")
    parser.add_argument("--no-sequential", action="store_true", help="skip the one-after-another baseline")
    add_model_arguments(parser)


def _compile_mode(name: str):
    return {"auto": "auto", "on": True, "off": False}[name]


@torch.inference_mode()
def serve(model, n: int, slots: int, depth: int, args: argparse.Namespace) -> dict:
    """Submits n requests at once to an engine of `slots` slots; returns wall time and per-request latency."""
    from cat_tts.generation import Engine, EngineConfig, GenerationConfig

    rows = int(args.prompt_rows * 1.25) + args.frames + 16
    config = EngineConfig(max_slots=slots, max_rows=rows, max_queue=n, compile=_compile_mode(args.compile))
    engine = Engine(model, config)
    engine.warmup()
    cfg = GenerationConfig(depth=depth, max_new_frames=args.frames, min_new_frames=args.frames)
    lengths = [int(args.prompt_rows * (0.75 + 0.5 * i / max(n - 1, 1))) for i in range(n)]
    prompts = [random_prompt(model, t, seed=i) for i, t in enumerate(lengths)]
    # Untimed pass over the same prompt shapes: first-use costs (kernel selection for each prefill length, lazy
    # allocations) are paid here, not by whichever configuration happens to run first.
    for request in [engine.submit(p, cfg.with_overrides(max_new_frames=2, min_new_frames=2)) for p in prompts]:
        request.result()
    sync(model.device)
    warm_steps = engine.stats().frame_steps
    start = time.perf_counter()
    requests = [engine.submit(p, cfg.with_overrides(seed=i)) for i, p in enumerate(prompts)]
    while not all(r.done for r in requests):
        engine.step()
    sync(model.device)
    wall = time.perf_counter() - start
    first = [r.first_frame_at - start for r in requests]
    frames = sum(r.num_frames for r in requests)
    return {
        "wall_s": wall,
        "frames": frames,
        "frames_per_s": frames / wall,
        "rtf": wall / (frames * FRAME_SECONDS),
        "ttfa_p50_ms": statistics.median(first) * 1e3,
        "ttfa_p95_ms": float(np.percentile(first, 95)) * 1e3,
        "steps": engine.stats().frame_steps - warm_steps,
        "cuda_graphs": engine.uses_cuda_graphs,
    }


def run(args: argparse.Namespace) -> dict:
    counts = [int(x) for x in args.concurrency.split(",")]
    depths = [int(x) for x in args.depths.split(",")]
    model = build_model(args)
    print(describe(model, args), flush=True)
    print(f"{'K':>3} {'N':>3} {'concurrent fr/s':>15} {'sequential fr/s':>15} {'ratio':>6} {'agg RTF':>8} "
          f"{'TTFA p50 ms':>11} {'TTFA p95 ms':>11} {'seq TTFA p50':>12} {'seq TTFA p95':>12}", flush=True)  # fmt: skip
    rows = []
    for k in depths:
        for n in counts:
            concurrent = serve(model, n, n, k, args)
            sequential = None if args.no_sequential else serve(model, n, 1, k, args)
            row = {"depth": k, "concurrency": n, "concurrent": concurrent, "sequential": sequential}
            ratio = concurrent["frames_per_s"] / sequential["frames_per_s"] if sequential else float("nan")
            row["ratio"] = ratio
            rows.append(row)
            seq = sequential or {"frames_per_s": float("nan"), "ttfa_p50_ms": float("nan"), "ttfa_p95_ms": float("nan")}
            print(f"{k:>3} {n:>3} {concurrent['frames_per_s']:>15.2f} {seq['frames_per_s']:>15.2f} {ratio:>5.2f}x "
                  f"{concurrent['rtf']:>8.3f} {concurrent['ttfa_p50_ms']:>11.0f} {concurrent['ttfa_p95_ms']:>11.0f} "
                  f"{seq['ttfa_p50_ms']:>12.0f} {seq['ttfa_p95_ms']:>12.0f}", flush=True)  # fmt: skip
    return {"model": describe(model, args), "frames_per_request": args.frames, "rows": rows}
