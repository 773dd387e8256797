"""codec: CAT codec encode/decode real-time factors and streaming first-chunk latency (random weights).

    python -m cat_tts.tools.bench codec [--preset released|tiny] [--seconds S] [--device cpu|cuda]
                                        [--dtype float32|bfloat16] [--chunk-frames N] [--repeats R] [--threads N]

Measures, for one clip of S seconds (batch 1): one-shot encode and decode times and their real-time factors
(RTF = compute time / audio duration; < 1 is faster than real time), streaming decode in chunks of N frames
(first-chunk latency from a fresh state, and the whole stream's RTF), and streaming encode likewise. The
baseline is the one-shot call in the same run: the table reports streaming/one-shot ratios, and how much
sooner the first audio chunk is ready than the whole one-shot decode.
"""

from __future__ import annotations

import argparse
import time

import torch

from cat_tts.codec import CodecConfig
from cat_tts.codec.tiny import random_codec
from cat_tts.tools.bench import sync


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=["released", "tiny"], default="released", help="codec size")
    parser.add_argument("--seconds", type=float, default=6.0, help="audio duration to encode/decode")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="transformer dtype")
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


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
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
    wav = (0.1 * torch.randn(1, frames * codec.frame_size, generator=gen)).to(device)

    with torch.inference_mode():
        codec.decode(codec.encode(wav[:, : 2 * codec.frame_size]).codes)  # warm-up (kernels, allocator)
        enc_s, enc = _timed(lambda: codec.encode(wav), device, args.repeats)
        codes = enc.codes
        dec_s, _ = _timed(lambda: codec.decode(codes), device, args.repeats)
        sd_first, sd_total = _stream(
            codec.decode_step, codes, args.chunk_frames, codec.new_stream_state(codes.shape[0]), device
        )
        se_first, se_total = _stream(
            codec.encode_step, wav, args.chunk_frames * codec.frame_size, codec.new_stream_state(wav.shape[0]), device
        )

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
        "encode_seconds": enc_s,
        "encode_rtf": enc_s / seconds,
        "decode_seconds": dec_s,
        "decode_rtf": dec_s / seconds,
        "stream_decode_first_chunk_ms": 1000 * sd_first,
        "stream_decode_rtf": sd_total / seconds,
        "stream_decode_vs_oneshot": sd_total / dec_s,
        "first_audio_speedup_vs_oneshot": dec_s / sd_first,
        "stream_encode_first_chunk_ms": 1000 * se_first,
        "stream_encode_rtf": se_total / seconds,
        "stream_encode_vs_oneshot": se_total / enc_s,
    }
    rows = [
        ("codec", f"{args.preset} ({params / 1e6:.1f} M params), {device}, {args.dtype}, {result['threads']} threads"),
        ("audio", f"{seconds:.2f} s, batch 1; streaming chunk {args.chunk_frames} frame(s) = {chunk_ms:.0f} ms"),
        ("build (random weights)", f"{build_s:.1f} s"),
        ("encode, one-shot", f"{enc_s:.3f} s   RTF {result['encode_rtf']:.3f}"),
        ("decode, one-shot (32 layers)", f"{dec_s:.3f} s   RTF {result['decode_rtf']:.3f}"),
        ("stream decode, first chunk", f"{1000 * sd_first:.1f} ms"),
        (
            "stream decode, whole clip",
            f"RTF {result['stream_decode_rtf']:.3f}  ({sd_total / dec_s:.2f}x one-shot time)",
        ),
        ("first audio vs one-shot", f"{dec_s / sd_first:.1f}x sooner"),
        ("stream encode, first chunk", f"{1000 * se_first:.1f} ms"),
        (
            "stream encode, whole clip",
            f"RTF {result['stream_encode_rtf']:.3f}  ({se_total / enc_s:.2f}x one-shot time)",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return result
