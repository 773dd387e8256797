"""Where a frame's time goes: `torch.profiler` over a few frame steps of the engine, per mode.

    python -m cat_tts.tools.bench profile [--modes eager,default] [--batch 1] [--depth 32] [--frames 8] [--top 15]
                                          [--released] [--device cuda]

For each mode (`cat_tts.tools.bench.modes.MODES`) one engine of `--batch` slots runs `--batch` requests through its
public API; the caller's thread drives it (`request.stream()` without a background thread), an untimed pass pays the
first-use costs, and the profiler records from the first audio of the timed requests to their end. Reported per mode
and per frame step: the wall time under the profiler (profiling adds overhead), the device time (the sum of the
kernels' own times: how busy the GPU was), the kernel launches, and the top kernels (CUDA) and top operators (own CPU
time) with their calls and milliseconds per frame and their share of the total. A wall time far above the device
time means the step is bound by launches and host work, not by the GPU.
"""

from __future__ import annotations

import argparse
import gc
import time

import torch

from cat_tts.tools.bench import save_partial
from cat_tts.tools.bench.models import FRAME_SECONDS, add_model_arguments, build_model, describe, random_prompt
from cat_tts.tools.bench.modes import MODES, engine_config, parse_modes, slot_rows

CHUNK_TIMEOUT_S = 1800.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--modes", default="eager,default", help=f"engine modes ({', '.join(MODES)}; eager,default)")
    parser.add_argument("--batch", type=int, default=1, help="requests generated together (1)")
    parser.add_argument("--depth", type=int, default=32, help="depth K (32)")
    parser.add_argument("--frames", type=int, default=8, help="frames per request (8; those after the first audio "
                        "are profiled)")  # fmt: skip
    parser.add_argument("--prompt-rows", type=int, default=64, help="prompt length in rows (64)")
    parser.add_argument("--top", type=int, default=15, help="kernels and operators listed per mode (15)")
    add_model_arguments(parser)


def _run(engine, model, args: argparse.Namespace, frames: int, profiler=None) -> tuple[int, float]:
    """Runs `--batch` requests of `frames` frames; with a profiler, starts it at the first audio. Returns the frames
    and seconds after the first audio."""
    from cat_tts.generation import GenerationConfig

    config = GenerationConfig(depth=args.depth, min_new_frames=frames)
    requests = [engine.submit(random_prompt(model, args.prompt_rows, seed=i), config.with_overrides(seed=i),
                              max_new_frames=frames) for i in range(args.batch)]  # fmt: skip
    pieces = requests[0].stream(timeout=CHUNK_TIMEOUT_S)
    next(pieces)  # the first audio: prefill and the first frames are behind
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    if profiler is not None:
        profiler.start()
    start = time.perf_counter()
    timed = sum(piece.shape[0] for piece in pieces)  # drives the engine (no background thread) to the end
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    seconds = time.perf_counter() - start
    if profiler is not None:
        profiler.stop()
    for request in requests[1:]:
        request.result(timeout=CHUNK_TIMEOUT_S)
    return timed, seconds


def _tables(profiler, frames: int, top: int, cuda: bool) -> dict:
    """Per-frame totals and the top kernels / operators of a finished profile."""
    events = profiler.key_averages()
    kernels = [e for e in events if cuda and str(e.device_type).endswith("CUDA")]
    ops = [e for e in events if not str(e.device_type).endswith("CUDA")]
    device_us = sum(e.self_device_time_total for e in kernels)
    cpu_us = sum(e.self_cpu_time_total for e in ops)

    def rows(items, key, total) -> list[dict]:
        items = sorted(items, key=key, reverse=True)[:top]
        return [{"name": e.key, "calls_per_frame": e.count / frames, "ms_per_frame": key(e) / 1e3 / frames,
                 "share": key(e) / total if total else 0.0} for e in items]  # fmt: skip

    return {
        "device_ms_per_frame": device_us / 1e3 / frames,
        "kernels_per_frame": sum(e.count for e in kernels) / frames,
        "cpu_ops_ms_per_frame": cpu_us / 1e3 / frames,
        "top_kernels": rows(kernels, lambda e: e.self_device_time_total, device_us),
        "top_ops": rows(ops, lambda e: e.self_cpu_time_total, cpu_us),
    }


@torch.inference_mode()
def profile_mode(model, mode: str, args: argparse.Namespace) -> dict:
    from torch.profiler import ProfilerActivity, profile

    from cat_tts.generation import Engine

    cuda = model.device.type == "cuda"
    rows = slot_rows(args.prompt_rows + args.frames + 16)
    engine = Engine(model, engine_config(mode, max_slots=args.batch, max_rows=rows, max_queue=args.batch,
                                         buckets=(args.batch,)))  # fmt: skip
    try:
        _run(engine, model, args, 2)  # untimed: capture, compilation, first-use allocations
        unprofiled_frames, unprofiled_s = _run(engine, model, args, args.frames)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        profiler = profile(activities=activities)
        frames, seconds = _run(engine, model, args, args.frames, profiler)
    finally:
        engine.close()
        del engine
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    if frames < 1:
        raise SystemExit("--frames leaves no frame after the first audio to profile: raise it")
    return {
        "mode": mode,
        "frames": frames,
        "wall_ms_per_frame": unprofiled_s * 1e3 / max(unprofiled_frames, 1),
        "profiled_wall_ms_per_frame": seconds * 1e3 / frames,
        **_tables(profiler, frames, args.top, cuda),
    }


def run(args: argparse.Namespace) -> dict:
    modes = parse_modes(args.modes)
    if args.batch < 1 or args.frames < 2:
        raise SystemExit("--batch must be >= 1 and --frames >= 2")
    model = build_model(args)
    result = {"model": describe(model, args), "batch": args.batch, "depth": args.depth, "modes": []}
    print(result["model"], flush=True)
    for mode in modes:
        p = profile_mode(model, mode, args)
        result["modes"].append(p)
        save_partial(args, result)
        print(f"\n{mode}: batch {args.batch}, K={args.depth}, {p['frames']} frames profiled; per frame: wall "
              f"{p['wall_ms_per_frame']:.2f} ms (under the profiler {p['profiled_wall_ms_per_frame']:.2f} ms, RTF "
              f"{p['wall_ms_per_frame'] / 1e3 / FRAME_SECONDS:.3f}), device {p['device_ms_per_frame']:.2f} ms in "
              f"{p['kernels_per_frame']:.0f} kernels, operators' own CPU time {p['cpu_ops_ms_per_frame']:.2f} ms",
              flush=True)  # fmt: skip
        for title, key in (("kernels (device time)", "top_kernels"), ("operators (own CPU time)", "top_ops")):
            if p[key]:
                print(f"  top {title}:  ms/frame  calls/frame  share")
                for r in p[key]:
                    print(f"    {r['ms_per_frame']:8.3f} {r['calls_per_frame']:8.1f} {100 * r['share']:6.1f}%  "
                          f"{r['name'][:100]}")  # fmt: skip
    return result
