"""The engine under Seed-TTS-Eval-shaped load: aggregate real-time rate, per-stream RTF, TTFA and playback stalls.

    python -m cat_tts.tools.bench engine [--concurrency 1,4,8,16,32,64] [--depths 32] [--modes default]
                                         [--requests-per-client 2] [--reference-seconds 3-10] [--frames 40-100]
                                         [--released] [--device cuda]

For each mode (`cat_tts.tools.bench.modes.MODES`) one engine of `--slots` slots (default: the largest concurrency,
as a server would be configured) runs in its background thread; for each depth K and concurrency N, N clients start
together and each sends `--requests-per-client` requests one after another (see `cat_tts.tools.bench.load` for
their shapes: a 3-10 s reference clip's frames at the codec's frame rate plus text rows as the prompt, 40-100 frames
of output). Each request is consumed through `request.stream()`, so its times are those of a caller of the engine:
time to first audio is submit -> first frames delivered (codec decode not included: `bench serve` has the whole
path). Reported per (K, N): the aggregate real-time rate (audio seconds / wall seconds), per-stream RTF p50/p95 and
how many streams were slower than real time, TTFA p50/p95, playback stall p50/p95, and the aggregate rate relative
to the first concurrency listed (the baseline, measured in the same run). An untimed pass first pays the first-use
costs (CUDA graph capture, compilation, allocations).
"""

from __future__ import annotations

import argparse
import gc
import time

import torch

from cat_tts.tools.bench import save_partial
from cat_tts.tools.bench.load import StreamTiming, parse_ints, parse_range, request_shape, run_clients, summarize
from cat_tts.tools.bench.models import FRAME_SECONDS, add_model_arguments, build_model, describe, random_prompt
from cat_tts.tools.bench.modes import MODES, engine_config, parse_modes, slot_rows

CHUNK_TIMEOUT_S = 1800.0  # a request that delivers nothing for this long fails the benchmark instead of hanging it


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concurrency", default="1,4,8,16,32,64", help="comma-separated client counts N")
    parser.add_argument("--depths", default="32", help="comma-separated depths K (32)")
    parser.add_argument("--modes", default="default", help=f"engine modes ({', '.join(MODES)}; default: default)")
    parser.add_argument("--requests-per-client", type=int, default=2, help="requests each client sends in turn (2)")
    parser.add_argument("--reference-seconds", default="3-10", help="reference clip durations, LO-HI seconds (3-10)")
    parser.add_argument("--frames", default="40-100", help="frames generated per request, LO-HI (40-100)")
    parser.add_argument("--text-rows", default="32-96", help="text rows of the prompt, LO-HI (32-96)")
    parser.add_argument("--slots", type=int, default=None, help="engine slots (default: the largest concurrency)")
    parser.add_argument("--buckets", default=None, help="batch sizes a frame runs at, comma-separated (default: the "
                        "engine's: powers of two up to --slots)")  # fmt: skip
    add_model_arguments(parser)


@torch.inference_mode()
def run_mode(model, mode: str, depths: list[int], counts: list[int], args: argparse.Namespace, emit,
             emit_warmup) -> None:  # fmt: skip
    """Every (depth, concurrency) on one engine of `mode`; `emit(depth, n, summary)` receives each result and
    `emit_warmup(seconds)` the untimed first pass (engine start, compilation / CUDA graph capture, first requests)."""
    from cat_tts.generation import Engine, GenerationConfig

    ref = parse_range(args.reference_seconds, "--reference-seconds")
    text = parse_range(args.text_rows, "--text-rows")
    frames = parse_range(args.frames, "--frames")
    per_client = args.requests_per_client
    slots = args.slots or max(counts)
    rows = slot_rows(round(text[1]) + round(ref[1] / FRAME_SECONDS) + 1 + round(frames[1]) + 16)  # + host reads
    buckets = tuple(parse_ints(args.buckets, "--buckets")) if args.buckets else None
    config = engine_config(mode, max_slots=slots, max_rows=rows, max_queue=max(counts) * per_client, buckets=buckets)
    engine = Engine(model, config)
    engine.start()

    def one_request(client: int, index: int, depth: int, frames_override: int | None = None) -> StreamTiming:
        shape = request_shape(client, index, ref, text, frames)
        n = frames_override or shape.frames
        prompt = random_prompt(model, shape.text_rows + round(shape.reference_seconds / FRAME_SECONDS) + 1, shape.seed)
        timing = StreamTiming(sent=time.perf_counter())
        request = engine.submit(prompt, GenerationConfig(depth=depth, min_new_frames=n, seed=shape.seed),
                                max_new_frames=n)  # fmt: skip
        for chunk in request.stream(timeout=CHUNK_TIMEOUT_S):
            timing.arrivals.append(time.perf_counter())
            timing.durations.append(chunk.shape[0] * FRAME_SECONDS)
        return timing

    try:
        start = time.perf_counter()
        run_clients(min(slots, max(counts)), 1, lambda i, j: one_request(i, j, max(depths), frames_override=2))
        emit_warmup(time.perf_counter() - start)
        for depth in depths:
            for n in counts:
                streams = run_clients(n, per_client, lambda i, j, k=depth: one_request(i, j, k))
                emit(depth, n, summarize(**streams))
    finally:
        engine.close()


def run(args: argparse.Namespace) -> dict:
    counts = parse_ints(args.concurrency, "--concurrency")
    depths = parse_ints(args.depths, "--depths")
    modes = parse_modes(args.modes)
    parse_range(args.frames, "--frames")  # refuse a bad range before the model is built
    if args.requests_per_client < 1:
        raise SystemExit("--requests-per-client must be >= 1")
    model = build_model(args)
    result = {
        "model": describe(model, args),
        "frame_seconds": FRAME_SECONDS,
        "reference_seconds": args.reference_seconds,
        "frames": args.frames,
        "requests_per_client": args.requests_per_client,
        "warmup_s": {},  # mode -> seconds of the untimed first pass (compilation / capture included)
        "rows": [],
    }
    print(result["model"], flush=True)
    print(f"requests: {args.reference_seconds} s reference clips, {args.frames} frames of output, "
          f"{args.requests_per_client} per client", flush=True)  # fmt: skip
    print(f"{'mode':>9} {'K':>3} {'N':>3} {'x realtime':>10} {'vs N=' + str(counts[0]):>8} {'RTF p50':>8} "
          f"{'p95':>6} {'>=1':>4} {'TTFA p50 ms':>11} {'p95':>6} {'stall p50 s':>11} {'p95':>6}",
          flush=True)  # fmt: skip
    for mode in modes:
        baseline: dict[int, float] = {}

        def emit(depth: int, n: int, s: dict, mode: str = mode, baseline: dict = baseline) -> None:
            baseline.setdefault(depth, s["aggregate_realtime"])
            row = {"bench": "engine", "mode": mode, "concurrency": n, "depth": depth,
                   "frames_per_request": s["audio_s"] / s["requests"] / FRAME_SECONDS, **s,
                   "speedup": s["aggregate_realtime"] / baseline[depth]}  # fmt: skip
            result["rows"].append(row)
            save_partial(args, result)
            print(f"{mode:>9} {depth:>3} {n:>3} {s['aggregate_realtime']:>10.2f} {row['speedup']:>7.2f}x "
                  f"{s['stream_rtf_p50']:>8.3f} {s['stream_rtf_p95']:>6.3f} {s['streams_slower_than_realtime']:>4} "
                  f"{s['ttfa_ms_p50']:>11.0f} {s['ttfa_ms_p95']:>6.0f} {s['stall_s_p50']:>11.2f} "
                  f"{s['stall_s_p95']:>6.2f}", flush=True)  # fmt: skip

        def emit_warmup(seconds: float, mode: str = mode) -> None:
            result["warmup_s"][mode] = seconds
            save_partial(args, result)
            print(f"{mode:>9} engine warm (first requests served) in {seconds:.1f} s", flush=True)

        run_mode(model, mode, depths, counts, args, emit, emit_warmup)
        gc.collect()  # the mode's engine (slot caches, graphs) goes before the next one is built
        if model.device.type == "cuda":
            torch.cuda.empty_cache()
    return result
