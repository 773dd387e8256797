"""Training throughput and peak memory, PSD p = 0 vs p = 1 (full DeepSpeed optimizer steps).

    python -m cat_tts.tools.bench train --preset small --steps 10 --tokens-per-batch 2048 --frames 150

Each p runs in its own process (so CPU peak memory is measured separately) on the same synthetic
batches: random codes in the continuation format, `tokens-per-batch` rows per micro-batch. The step is
the real one of `train.py` (DeepSpeed ZeRO-2 engine, AdamW, clipping; bf16 on GPU, fp32 on CPU).
Peak memory is `torch.cuda.max_memory_allocated` on GPU, and on CPU the growth of the process's peak
resident set over the steps (`ru_maxrss` minus the resident set before the first step).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cat_tts.tools.bench import save_partial


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="tiny", help="model preset: tiny | small | cat_tts_1_7b (default tiny)")
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps per p (default 8)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--tokens-per-batch", type=int, default=1024, help="rows per micro-batch (default 1024)")
    parser.add_argument("--frames", type=int, default=100, help="frames per synthetic utterance (default 100)")
    parser.add_argument("--p", default="0,1", help="comma list of PSD probabilities; the first is the baseline")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute temporal activations")
    parser.add_argument("--worker", type=float, default=None, help=argparse.SUPPRESS)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _worker(args: argparse.Namespace) -> dict[str, Any]:
    """One p in this process: builds the engine, runs the steps, returns the numbers."""
    import deepspeed
    import torch

    from cat_tts.data.collate import Collator
    from cat_tts.data.dataset import Utterance
    from cat_tts.data.samples import SampleBuilder
    from cat_tts.text.tiny_tokenizer import build_tiny_tokenizer
    from cat_tts.tools.bench import sync
    from cat_tts.training.build import build_model, build_optimizer
    from cat_tts.training.config import TrainConfig
    from cat_tts.training.deepspeed_config import build_deepspeed_config
    from cat_tts.training.distributed import setup_distributed
    from cat_tts.training.schedule import warmup_cosine

    p = args.worker
    _, _, device = setup_distributed()
    cfg = TrainConfig.from_dict(
        {
            "model": {"preset": args.preset, "gradient_checkpointing": args.gradient_checkpointing},
            "psd": {"p": p},
            "optim": {"warmup_steps": 0},
            "run": {"max_steps": args.warmup + args.steps},
        }
    )
    torch.manual_seed(0)
    model = build_model(cfg, device)
    # Synthetic text from the tiny tokenizer: its ids (< 500) are valid text ids of every preset.
    tokenizer = build_tiny_tokenizer()
    ids = model.config.token_ids
    n_vq = model.config.n_vq
    builder = SampleBuilder(tokenizer, ids, n_vq, "plain")
    collator = Collator(ids.pad, ids.audio_pad_code, n_vq, p)
    gen = torch.Generator().manual_seed(0)
    text = "the quick brown fox jumps over the lazy dog " * 4
    sample = builder.build(Utterance("u", text, torch.randint(0, 1024, (n_vq, args.frames), generator=gen)))
    per_batch = max(1, args.tokens_per_batch // sample.input_ids.shape[0])
    optimizer = build_optimizer(model, cfg, device)
    scheduler = warmup_cosine(optimizer, 0, cfg.run.max_steps, 0.1)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=build_deepspeed_config(cfg, device.type),
        dist_init_required=False,
    )
    depth_gen = torch.Generator().manual_seed(1)
    batches = [collator([sample] * per_batch, depth_gen).to(device) for _ in range(args.warmup + args.steps)]
    rss_before = _rss_bytes()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rows = 0
    t0 = 0.0
    for i, batch in enumerate(batches):
        if i == args.warmup:
            sync(device)
            t0 = time.perf_counter()
        out = engine(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            labels=batch.labels,
            depths=batch.depths,
            return_logits=False,  # as train.py calls it
        )
        engine.backward(out.loss)
        engine.step()
        if i >= args.warmup:
            rows += batch.num_rows
    sync(device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before)
    elapsed = time.perf_counter() - t0
    return {
        "p": p,
        "device": device.type,
        "samples_per_batch": per_batch,
        "rows_per_batch": per_batch * sample.input_ids.shape[0],
        "mean_depth": float(torch.cat([b.depths for b in batches]).float().mean()),
        "tokens_per_s": rows / elapsed,
        "step_s": elapsed / args.steps,
        "peak_memory_gb": peak / 2**30,
    }


def run(args: argparse.Namespace) -> dict:
    """Runs every p in a fresh process and prints a table with ratios against the first p."""
    if args.worker is not None:
        return _worker(args)
    results = []
    tmp = tempfile.mkdtemp(prefix="cat_tts_bench_train_")
    for p in [float(x) for x in args.p.split(",")]:
        out = Path(tmp) / f"p{p}.json"
        cmd = [
            sys.executable,
            "-m",
            "cat_tts.tools.bench",
            "--json",
            str(out),
            "train",
            "--worker",
            str(p),
            "--preset",
            args.preset,
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            "--tokens-per-batch",
            str(args.tokens_per_batch),
            "--frames",
            str(args.frames),
        ]
        if args.gradient_checkpointing:
            cmd.append("--gradient-checkpointing")
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"bench worker for p={p} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(out.read_text()))
        save_partial(args, {"preset": args.preset, "frames": args.frames, "steps": args.steps, "results": results})
    base = results[0]
    print(
        f"training step, preset {args.preset}, {base['device']}, {base['rows_per_batch']} rows per batch "
        f"({base['samples_per_batch']} x {args.frames} frames), {args.steps} steps"
    )
    print(f"{'p':>5} {'mean K':>7} {'tokens/s':>10} {'step s':>8} {'peak GB':>8} {'speed x':>8} {'memory x':>9}")
    for r in results:
        r["speedup_vs_baseline"] = r["tokens_per_s"] / base["tokens_per_s"]
        r["memory_vs_baseline"] = r["peak_memory_gb"] / base["peak_memory_gb"] if base["peak_memory_gb"] else None
        mem = f"{r['memory_vs_baseline']:.2f}" if r["memory_vs_baseline"] is not None else "-"
        print(
            f"{r['p']:>5.2f} {r['mean_depth']:>7.1f} {r['tokens_per_s']:>10.0f} {r['step_s']:>8.3f} "
            f"{r['peak_memory_gb']:>8.3f} {r['speedup_vs_baseline']:>8.2f} {mem:>9}"
        )
    return {"preset": args.preset, "frames": args.frames, "steps": args.steps, "results": results}
