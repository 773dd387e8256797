"""Frame-step speed of the inference engine per mode, batch size and depth.

    python -m cat_tts.tools.bench generate [--batches 1,8,16,32,64] [--depths 8,16,32] [--modes eager,default,compiled]
                                           [--frames 24] [--prompt-rows 64] [--released] [--device cuda]

For each mode (`cat_tts.tools.bench.modes.MODES`: eager, default, compiled, ...) and batch size B, one engine of B
slots runs, through its public API only (submit, stream, start, close): first an untimed pass (B requests of 2 frames
at the largest depth: CUDA graph capture, compilation, first-use allocations; its wall time is `warmup_s`), then for
each depth K, B requests at once (random prompts, sampling with the released settings, each forced to `--frames`
frames). The frame time is measured from when audio arrives, as a user sees it: over the window in which every
request is generating (after the last request's first audio, before the first request's last audio), the time
between two arrivals divided by the frames they delivered, median over the B requests. Reported: ms per frame step,
frames/s (B x 1000 / ms), the real-time factor of one stream (ms per frame / the codec's frame duration) and the
speedup over the first mode listed (the baseline, measured in the same run).

The model is random (see `cat_tts.tools.bench.models`): `--released` for the real sizes on a GPU.
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import time

import torch

from cat_tts.tools.bench import save_partial
from cat_tts.tools.bench.load import StreamTiming, parse_ints, run_clients
from cat_tts.tools.bench.models import FRAME_SECONDS, add_model_arguments, build_model, describe, random_prompt
from cat_tts.tools.bench.modes import MODES, engine_config, parse_modes, slot_rows

CHUNK_TIMEOUT_S = 1800.0  # a request that delivers nothing for this long fails the benchmark instead of hanging it


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batches", default="1,8,16,32,64", help="comma-separated batch sizes (1,8,16,32,64)")
    parser.add_argument("--depths", default="8,16,32", help="comma-separated depths K (8,16,32)")
    parser.add_argument(
        "--modes", default="eager,graphs,default,compiled", help=f"engine modes, first = baseline ({', '.join(MODES)})"
    )
    parser.add_argument("--frames", type=int, default=24, help="frames per request (24); the steady window is timed")
    parser.add_argument("--prompt-rows", type=int, default=64, help="prompt length in rows (64)")
    add_model_arguments(parser)


def run_batch(engine, model, batch: int, depth: int, frames: int, prompt_rows: int) -> list[StreamTiming]:
    """B requests submitted together; returns their audio arrival times (one piece per delivered chunk)."""
    from cat_tts.generation import GenerationConfig

    def one_request(i: int, _: int) -> StreamTiming:
        config = GenerationConfig(depth=depth, min_new_frames=frames, seed=i)
        timing = StreamTiming(sent=time.perf_counter())
        request = engine.submit(random_prompt(model, prompt_rows, seed=i), config, max_new_frames=frames)
        for chunk in request.stream(timeout=CHUNK_TIMEOUT_S):
            timing.arrivals.append(time.perf_counter())
            timing.durations.append(chunk.shape[0] * FRAME_SECONDS)
        return timing

    return run_clients(batch, 1, one_request)["streams"]


def steady_frame_time(streams: list[StreamTiming]) -> tuple[float, int]:
    """(seconds per frame step, frames timed): the median over streams of the time between two arrivals per frame
    delivered between them, over the window in which every stream was generating (see the module docstring); when
    that window holds fewer than two arrivals of every stream (short runs), over each stream's own first to last
    arrival. (nan, 0) when no stream has two arrivals."""
    start = max(s.arrivals[0] for s in streams if s.arrivals)
    end = min(s.arrivals[-1] for s in streams if s.arrivals)
    for low, high in ((start, end), (-math.inf, math.inf)):
        per_stream = []
        for s in streams:
            frames = [round(sum(s.durations[: i + 1]) / FRAME_SECONDS) for i in range(len(s.durations))]  # cumulative
            inside = [i for i, t in enumerate(s.arrivals) if low <= t <= high]
            if len(inside) >= 2 and frames[inside[-1]] > frames[inside[0]]:
                first, last = inside[0], inside[-1]
                per_stream.append(((s.arrivals[last] - s.arrivals[first]) / (frames[last] - frames[first]),
                                   frames[last] - frames[first]))  # fmt: skip
        if per_stream:
            return statistics.median(t for t, _ in per_stream), min(n for _, n in per_stream)
    return math.nan, 0


@torch.inference_mode()
def time_mode(model, mode: str, batch: int, depths: list[int], args: argparse.Namespace) -> tuple[float, list[dict]]:
    """Warm-up seconds and one (ms/frame, timed frames) row per depth for one mode at one batch size."""
    from cat_tts.generation import Engine

    rows = slot_rows(args.prompt_rows + args.frames + 16)  # + room for the frames between two host reads
    config = engine_config(mode, max_slots=batch, max_rows=rows, max_queue=batch, buckets=(batch,))
    start = time.perf_counter()
    engine = Engine(model, config)
    engine.start()
    try:
        run_batch(engine, model, batch, max(depths), 2, args.prompt_rows)
        warmup_s = time.perf_counter() - start
        out = []
        for depth in depths:
            seconds, timed = steady_frame_time(run_batch(engine, model, batch, depth, args.frames, args.prompt_rows))
            out.append({"depth": depth, "ms_per_frame": seconds * 1e3, "timed_frames": timed})
    finally:
        engine.close()
        del engine
        gc.collect()
        if model.device.type == "cuda":
            torch.cuda.empty_cache()
    return warmup_s, out


def run(args: argparse.Namespace) -> dict:
    depths = parse_ints(args.depths, "--depths")
    batches = parse_ints(args.batches, "--batches")
    modes = parse_modes(args.modes)
    if args.frames < 2:
        raise SystemExit("--frames must be >= 2")
    model = build_model(args)
    result = {"model": describe(model, args), "modes": modes, "baseline": modes[0], "rows": []}
    print(result["model"], flush=True)
    print(f"{'mode':>10} {'batch':>5} {'K':>3} {'ms/frame':>9} {'frames/s':>9} {'RTF (1 stream)':>14} "
          f"{'vs ' + modes[0]:>10} {'timed':>5} {'warm-up s':>9}", flush=True)  # fmt: skip
    baseline: dict[tuple[int, int], float] = {}
    for batch in batches:  # batch outer: a run stopped early has every mode of the batches it finished
        for mode in modes:
            warmup_s, timings = time_mode(model, mode, batch, depths, args)
            for t in timings:
                ms = t["ms_per_frame"]
                key = (batch, t["depth"])
                baseline.setdefault(key, ms)
                row = {"bench": "frame", "batch": batch, "depth": t["depth"], "mode": mode, "ms_per_frame": ms,
                       "frames_per_s": batch * 1e3 / ms, "rtf": ms / 1e3 / FRAME_SECONDS,
                       "speedup": baseline[key] / ms, "timed_frames": t["timed_frames"],
                       "warmup_s": warmup_s}  # fmt: skip
                result["rows"].append(row)
                save_partial(args, result)
                print(f"{mode:>10} {batch:>5} {t['depth']:>3} {ms:>9.2f} {row['frames_per_s']:>9.1f} "
                      f"{row['rtf']:>14.3f} {row['speedup']:>9.2f}x {row['timed_frames']:>5} {warmup_s:>9.1f}",
                      flush=True)  # fmt: skip
    return result
