"""Training step (forward + backward) time and peak memory with Progressive Sequence Dropout p=0 vs p=1.

    python -m cat_tts.tools.bench train-step --preset small --batch 4 --frames 64

Both settings use the same random model and batch (measured in worker processes). A step is the teacher-forced
forward with labels plus the backward pass (no optimizer). With p=1 every sample keeps a uniform random
depth K in 1..N-1 (the depth transformer runs K+1 positions for it); with p=0 all N layers are kept.

Peak memory (one fresh process per setting, first step): on CUDA, `torch.cuda.max_memory_allocated`
minus the memory allocated before the step; on CPU, the largest resident-set increase sampled every
millisecond during the step (from /proc/self/statm; gradients are allocated beforehand so they do not
count), i.e. activations and temporaries. FLOPs: torch's flop counter, mean over the timed steps' depth
draws. Time: median over `--steps` steps per setting, p=0 and p=1 steps alternating in one process so
both see the same machine load.
With p=1 the mean K of the drawn depths is reported (expected 16 for N=32).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import threading
import time
from typing import Any

import torch

from cat_tts.tools.bench import sync

PRESETS = ("tiny", "small", "cat_tts_1.7b")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `bench train-step`."""
    parser.add_argument("--preset", choices=PRESETS, default="small", help="model size (random weights)")
    parser.add_argument("--batch", type=int, default=4, help="samples per step")
    parser.add_argument("--frames", type=int, default=64, help="frames per sample (all supervised)")
    parser.add_argument("--prompt-frames", type=int, default=0, help="leading frames per sample without labels")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting (after one measured step)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None, help="default: bf16 on CUDA")
    parser.add_argument("--attn", default=None, help="attention implementation (default: automatic)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, batch and depths")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _RssSampler:
    """Samples the resident set size in a background thread; `peak` is the largest value seen."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def _setup(options: dict[str, Any]) -> tuple[Any, Any]:
    """Build the random model and a batch; returns (model, step) where step(p, generator) runs one step."""
    from cat_tts.model import CatTTSConfig, CatTTSModel, sample_depths

    if options["threads"]:
        torch.set_num_threads(options["threads"])
    device = torch.device(options["device"])
    dtype = getattr(torch, options["dtype"])
    torch.manual_seed(options["seed"])
    config = CatTTSConfig.from_preset(options["preset"])
    model = CatTTSModel(config, attn_implementation=options["attn"]).to(device=device, dtype=dtype).train()
    for param in model.parameters():  # gradients exist before any measured step: they are not activations
        param.grad = torch.zeros_like(param)

    g = torch.Generator().manual_seed(options["seed"])
    b, t, n = options["batch"], options["frames"], config.n_vq
    ids = torch.randint(0, config.audio_vocab_size, (b, t + 1, 1 + n), generator=g)
    ids[..., 0] = config.audio_assistant_gen_slot_token_id
    labels = ids[:, 1:].clone()
    ids = ids[:, :-1]
    labels[:, : options["prompt_frames"]] = -100
    ids, labels = ids.to(device), labels.to(device)
    mask = torch.ones(b, t, dtype=torch.long, device=device)

    def step(p: float, generator: torch.Generator) -> float:
        depths = sample_depths(b, n, p, generator, device=device)
        out = model(ids, mask, labels, depths=depths, return_logits=False)  # as a training loop calls it
        out.loss.backward()
        sync(device)
        return float(depths.float().mean())

    return model, step


def _measure_memory(options: dict[str, Any], p: float, queue: Any) -> None:
    """Worker (fresh process per setting): peak memory of the first step."""
    model, step = _setup(options)
    generator = torch.Generator().manual_seed(options["seed"] + 1)
    sync(options["device"])
    if options["device"].startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        mean_depth = step(p, generator)
        peak = torch.cuda.max_memory_allocated() - before
    else:
        before = _rss_bytes()
        with _RssSampler() as sampler:
            mean_depth = step(p, generator)
        peak = sampler.peak - before
    queue.put({"p": p, "peak_bytes": int(peak), "memory_step_mean_depth": mean_depth})


def _measure_time(options: dict[str, Any], queue: Any) -> None:
    """Worker: alternating timed steps (same load conditions for both settings), then the same steps again
    under torch's flop counter (same depth draws, so FLOPs and mean K describe exactly the timed steps)."""
    from torch.utils.flop_counter import FlopCounterMode

    model, step = _setup(options)
    for p in (0.0, 1.0):  # warm-up, with draws of its own
        step(p, torch.Generator().manual_seed(options["seed"] + 100))
    generators = {p: torch.Generator().manual_seed(options["seed"] + 1) for p in (0.0, 1.0)}
    times: dict[float, list[float]] = {0.0: [], 1.0: []}
    depths: dict[float, list[float]] = {0.0: [], 1.0: []}
    for _ in range(options["steps"]):
        for p in (0.0, 1.0):
            start = time.perf_counter()
            depths[p].append(step(p, generators[p]))
            times[p].append(time.perf_counter() - start)
    flops = {}
    for p in (0.0, 1.0):
        replay = torch.Generator().manual_seed(options["seed"] + 1)
        counter = FlopCounterMode(display=False)
        with counter:
            for _ in range(options["steps"]):
                step(p, replay)
        flops[p] = counter.get_total_flops() / options["steps"]
    queue.put(
        {
            p: {
                "step_seconds_median": sorted(times[p])[len(times[p]) // 2],
                "step_seconds": times[p],
                "mean_depth": sum(depths[p]) / len(depths[p]),
                "flops": flops[p],
            }
            for p in (0.0, 1.0)
        }
    )


def _in_subprocess(target: Any, *args: Any) -> Any:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def run(args: argparse.Namespace) -> dict:
    """Measure p=0 and p=1; print a table; return the numbers and the p=1 / p=0 ratios."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    if args.prompt_frames >= args.frames:
        raise SystemExit(f"--prompt-frames ({args.prompt_frames}) must be smaller than --frames ({args.frames})")
    options = {
        "preset": args.preset,
        "batch": args.batch,
        "frames": args.frames,
        "prompt_frames": args.prompt_frames,
        "steps": args.steps,
        "device": device,
        "dtype": dtype,
        "attn": args.attn,
        "threads": args.threads,
        "seed": args.seed,
    }
    timing = _in_subprocess(_measure_time, options)
    results = []
    for p in (0.0, 1.0):
        memory = _in_subprocess(_measure_memory, options, p)
        results.append({**timing[p], **memory})
    base, psd = results
    ratios = {
        "step_time_p1_over_p0": psd["step_seconds_median"] / base["step_seconds_median"],
        "flops_p1_over_p0": psd["flops"] / base["flops"],
        "peak_memory_p1_over_p0": psd["peak_bytes"] / base["peak_bytes"] if base["peak_bytes"] > 0 else None,
    }
    memory_kind = "cuda max_memory_allocated" if device.startswith("cuda") else "sampled RSS increase"
    print(
        f"train-step: preset={args.preset} batch={args.batch} frames={args.frames} prompt={args.prompt_frames} "
        f"device={device} dtype={dtype} threads={args.threads or torch.get_num_threads()} steps={args.steps}"
    )
    print(f"{'setting':<8} {'mean K':>7} {'step s':>9} {'GFLOP':>9} {'peak MiB':>10}")
    for r in results:
        print(
            f"p={r['p']:<6.0f} {r['mean_depth']:>7.2f} {r['step_seconds_median']:>9.3f} {r['flops'] / 1e9:>9.1f} "
            f"{r['peak_bytes'] / 2**20:>10.1f}"
        )
    mem = ratios["peak_memory_p1_over_p0"]
    mem_text = f"{mem:.3f}" if mem is not None else "n/a"
    print(
        f"ratio p=1/p=0: step time {ratios['step_time_p1_over_p0']:.3f} (median), "
        f"FLOPs {ratios['flops_p1_over_p0']:.3f}, peak memory {mem_text} ({memory_kind}, first step)"
    )
    return {"options": options, "results": results, "ratios": ratios}
