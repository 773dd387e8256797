"""The CPU at its floor: a lone request's frame against the matrix-vector products it cannot avoid, and a lone request
through the service's multi-slot engine against `CatTTSModel.generate` at batch 1 (issue 17 item 6).

At batch 1 a frame is bound by reading its weights: every depth position runs the shared input adapter, the four
depth blocks, its channel's output adapter and head, and the temporal step runs its blocks once. The floor is the
time of exactly those products (`F.linear` of one row with each weight, in frame order, same dtype), measured in the
same process; the engine's frame at batch 1 is then compared with it. Both numbers are medians over repeats.

    python -m cat_tts.tools.bench floor --depth 32 --frames 8
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from cat_tts.generation import Engine, EngineConfig, GenerationConfig
from cat_tts.tools.bench.models import add_model_arguments, build_model, describe, random_prompt


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--depth", type=int, default=32, help="K, the layers generated per frame")
    parser.add_argument("--frames", type=int, default=8, help="frames per timed request")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each measurement (median)")
    parser.add_argument("--slots", type=int, default=8, help="slots of the service's engine (a lone request in it)")
    parser.add_argument("--prompt-rows", type=int, default=40, help="prompt rows of each request")


def frame_weights(model, depth: int) -> list[torch.Tensor]:
    """The weight matrices one frame at depth K reads, in order (each read once per use)."""
    depth_side = []
    for block in model.depth.layers:
        attn, mlp = block.self_attn, block.mlp
        depth_side += [attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight, attn.o_proj.weight,
                       mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight]  # fmt: skip
    adapter_in = [model.depth_input.gate_proj.weight, model.depth_input.up_proj.weight,
                  model.depth_input.down_proj.weight]  # fmt: skip
    weights = []
    for c in range(depth + 1):
        out = model.depth_output[c]
        weights += adapter_in + depth_side + [out.gate_proj.weight, out.up_proj.weight, out.down_proj.weight]
        if c > 0:
            weights.append(model.heads[c].weight)
    for layer in model.temporal.layers:
        attn, mlp = layer.self_attn, layer.mlp
        weights += [attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight, attn.o_proj.weight,
                    mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight]  # fmt: skip
    return weights


@torch.inference_mode()
def floor_seconds(model, depth: int, repeats: int) -> float:
    """Median seconds of the frame's matrix-vector products alone."""
    weights = frame_weights(model, depth)
    inputs = {w.shape[1]: torch.randn(1, w.shape[1], dtype=w.dtype, device=w.device) for w in weights}
    times = []
    for _ in range(repeats + 1):  # the first pass warms caches and allocators
        start = time.perf_counter()
        for w in weights:
            F.linear(inputs[w.shape[1]], w)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def frame_seconds(engine: Engine, prompt: torch.Tensor, depth: int, frames: int, repeats: int) -> float:
    """Median seconds per frame of one lone request (prefill excluded: timed from its first frame)."""
    config = GenerationConfig(depth=depth, max_new_frames=frames + 1, min_new_frames=frames + 1, seed=0)
    engine.submit(prompt, config).result()  # warm-up (and the engine's own warm-up)
    times = []
    for _ in range(repeats):
        request = engine.submit(prompt, config)
        stream = request.stream()
        next(stream)  # its first frame: the prompt is in
        start = time.perf_counter()
        for _ in stream:
            pass
        times.append((time.perf_counter() - start) / frames)
    return statistics.median(times)


def run(args: argparse.Namespace) -> dict:
    model = build_model(args)
    print(describe(model, args))
    prompt = random_prompt(model, args.prompt_rows)
    rows = args.prompt_rows + args.frames + 16
    floor = floor_seconds(model, args.depth, args.repeats)
    lone = Engine(model, EngineConfig(max_slots=1, max_rows=rows, compile=False, cpu_prepack=False))  # = generate
    alone = frame_seconds(lone, prompt, args.depth, args.frames, args.repeats)
    served = Engine(model, EngineConfig(max_slots=args.slots, max_rows=rows, compile=False))  # occupancy buckets
    in_service = frame_seconds(served, prompt, args.depth, args.frames, args.repeats)
    result = {
        "bench": "floor",
        "device": args.device,
        "depth": args.depth,
        "floor_ms_per_frame": floor * 1e3,
        "generate_b1_ms_per_frame": alone * 1e3,
        "service_lone_ms_per_frame": in_service * 1e3,
        "floor_over_generate": floor / alone,  # >= 0.9: the frame runs at >= 90% of the products' speed
        "service_over_generate": in_service / alone,  # <= 1.1: a lone request does not pay for the other slots
        "slots": args.slots,
        "prepacked_buckets": list(served.runner.prepacked_buckets),
    }
    print(
        f"K = {args.depth}: matrix-vector floor {floor * 1e3:.1f} ms/frame; engine at batch 1 (= generate) "
        f"{alone * 1e3:.1f} ms/frame ({floor / alone:.0%} of the floor's speed); a lone request in a {args.slots}-slot "
        f"engine {in_service * 1e3:.1f} ms/frame ({in_service / alone:.2f}x generate)"
    )
    return result
