"""codec: CAT codec encode/decode real-time factors and streaming first-chunk latency (random weights).

    python -m cat_tts.tools.bench codec [--preset released|tiny] [--seconds S] [--device cpu|cuda] [--batches 1,16]
                                        [--dtype float32|bfloat16] [--chunk-frames N] [--repeats R] [--threads N]

Measures, for each batch of B clips of S seconds (one row per B): one-shot encode and decode times and their
real-time factors (RTF = compute time / one clip's duration, all B clips at once; < 1 is faster than real time for
every clip) and aggregate rates (audio seconds per second), streaming decode in chunks of N frames (first-chunk
latency from a fresh state, and the whole stream's RTF), and streaming encode likewise. The baseline is the one-shot
call in the same run: the rows report streaming/one-shot ratios, and how much sooner the first audio chunk is ready
than the whole one-shot decode. A batch of B streams decoded together is what a server decoding all the requests of
a step at once would do.
"""

from __future__ import annotations

import argparse
import time

import torch

from cat_tts.codec import CodecConfig
from cat_tts.codec.tiny import random_codec
from cat_tts.tools.bench import save_partial, sync
from cat_tts.tools.bench.load import parse_ints


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=["released", "tiny"], default="released", help="codec size")
    parser.add_argument("--seconds", type=float, default=6.0, help="audio duration to encode/decode")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="transformer dtype")
    parser.add_argument("--batches", default="1", help="comma-separated clip counts coded together (1)")
    parser.add_argument("--chunk-frames", type=int, default=1, help="frames per streaming decode chunk (80 ms each)")
    parser.add_argument("--repeats", type=int, default=2, help="timed repetitions (the best is reported)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and input")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op CPU threads (default: torch's)")


def _timed(fn, device: torch.device, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(max(1, repeats)):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best, result


def _stream(step, inputs: torch.Tensor, chunk: int, state, device: torch.device) -> tuple[float, float]:
    """(first-chunk latency, total time) of feeding `inputs` to `step(piece, state)` in `chunk`-long pieces along
    its last axis, from a fresh state."""
    first = None
    start = time.perf_counter()
    for i in range(0, inputs.shape[-1], chunk):
        step(inputs[..., i : i + chunk], state)
        sync(device)
        if first is None:
            first = time.perf_counter() - start
    return first, time.perf_counter() - start


def measure(codec, wav: torch.Tensor, args: argparse.Namespace) -> dict:
    """One row of numbers for a batch of clips `wav` [B, S] (every clip the same length)."""
    device = wav.device
    batch = wav.shape[0]
    seconds = wav.shape[-1] / codec.sample_rate
    with torch.inference_mode():
        codec.decode(codec.encode(wav[:, : 2 * codec.frame_size]).codes)  # warm-up (kernels, allocator)
        enc_s, enc = _timed(lambda: codec.encode(wav), device, args.repeats)
        codes = enc.codes
        dec_s, _ = _timed(lambda: codec.decode(codes), device, args.repeats)
        sd_first, sd_total = _stream(codec.decode_step, codes, args.chunk_frames, codec.new_stream_state(batch), device)
        se_first, se_total = _stream(
            codec.encode_step, wav, args.chunk_frames * codec.frame_size, codec.new_stream_state(batch), device
        )
    return {
        "bench": "codec",
        "batch": batch,
        "dtype": args.dtype,
        "audio_seconds": seconds,  # per clip
        "encode_seconds": enc_s,
        "encode_rtf": enc_s / seconds,  # < 1: every clip of the batch encoded faster than real time
        "encode_x_realtime": batch * seconds / enc_s,  # audio seconds encoded per second, all clips together
        "decode_seconds": dec_s,
        "decode_rtf": dec_s / seconds,
        "decode_x_realtime": batch * seconds / dec_s,
        "stream_decode_first_chunk_ms": 1000 * sd_first,
        "stream_decode_rtf": sd_total / seconds,
        "stream_decode_vs_oneshot": sd_total / dec_s,
        "first_audio_speedup_vs_oneshot": dec_s / sd_first,
        "stream_encode_first_chunk_ms": 1000 * se_first,
        "stream_encode_rtf": se_total / seconds,
        "stream_encode_vs_oneshot": se_total / enc_s,
    }


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = parse_ints(args.batches, "--batches")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    config = CodecConfig.released() if args.preset == "released" else CodecConfig.tiny()
    t0 = time.perf_counter()
    codec = random_codec(config, seed=args.seed, device=device)
    if dtype != torch.float32:
        codec.set_dtype(dtype)
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in codec.parameters())

    frames = max(1, round(args.seconds * codec.frame_rate))
    seconds = frames * codec.frame_size / codec.sample_rate
    gen = torch.Generator().manual_seed(args.seed)
    chunk_ms = 1000 * args.chunk_frames / codec.frame_rate
    result = {
        "preset": args.preset,
        "device": str(device),
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "parameters": params,
        "build_seconds": build_s,
        "audio_seconds": seconds,
        "chunk_ms": chunk_ms,
        "rows": [],
    }
    print(f"codec: {args.preset} ({params / 1e6:.1f} M params, random weights built in {build_s:.1f} s), {device}, "
          f"{args.dtype}, {result['threads']} threads; clips of {seconds:.2f} s; streaming chunks of "
          f"{args.chunk_frames} frame(s) = {chunk_ms:.0f} ms; RTF = time / one clip's duration (all clips of the "
          "batch at once), x realtime = audio seconds / second", flush=True)  # fmt: skip
    print(f"{'batch':>5} {'encode RTF':>10} {'decode RTF':>10} {'x realtime enc':>14} {'dec':>7} "
          f"{'stream dec 1st ms':>17} {'RTF':>6} {'stream enc 1st ms':>17} {'RTF':>6}", flush=True)  # fmt: skip
    for batch in batches:
        wav = (0.1 * torch.randn(batch, frames * codec.frame_size, generator=gen)).to(device)
        row = measure(codec, wav, args)
        result["rows"].append(row)
        save_partial(args, result)
        print(f"{batch:>5} {row['encode_rtf']:>10.3f} {row['decode_rtf']:>10.3f} {row['encode_x_realtime']:>14.1f} "
              f"{row['decode_x_realtime']:>7.1f} {row['stream_decode_first_chunk_ms']:>17.1f} "
              f"{row['stream_decode_rtf']:>6.3f} {row['stream_encode_first_chunk_ms']:>17.1f} "
              f"{row['stream_encode_rtf']:>6.3f}", flush=True)  # fmt: skip
    return result
