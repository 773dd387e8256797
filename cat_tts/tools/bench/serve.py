"""The speech server under load: N concurrent HTTP clients vs the same clients on a one-request-at-a-time server.

    python -m cat_tts.tools.bench serve --tiny                          # make_tiny checkpoints (plumbing, CPU)
    python -m cat_tts.tools.bench serve --model M --codec C --device cuda [--concurrency 1,4,8,16]
                                        [--requests-per-client 2] [--frames 24] [--depth 8] [--format pcm]

Two servers run in this process in turn (real uvicorn on a loopback port, the real pipeline and engine):

* `engine`: one engine with as many slots as the largest concurrency, so N clients share every frame step;
* `baseline`: the same pipeline with an engine of one slot (what a server with a generation lock does).

For each N, N clients start together and each sends `--requests-per-client` streaming requests one after another
(each forced to exactly `--frames` frames, so every run produces the same audio). Reported: requests/s, audio
seconds per second (aggregate real-time factor = 1 / that), and the time to first audio (request sent -> first
audio byte received) p50/p95, for both servers, with the ratios engine / baseline. Random checkpoints (--tiny)
make noise: that is for plumbing; the numbers that matter come from the released weights on a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator

import numpy as np

from cat_tts.tools.bench.models import FRAME_SECONDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tiny", action="store_true", help="use fresh make_tiny checkpoints (ignores --model/--codec)")
    parser.add_argument("--model", default=None, help="TTS model directory or hub id (default: the released one)")
    parser.add_argument("--codec", default=None, help="codec directory or hub id (default: the released one)")
    parser.add_argument("--device", default="cpu", help="device of the engine (cpu, cuda, cuda:1)")
    parser.add_argument("--dtype", default="auto", help="weights dtype (auto: bf16 on GPU, fp32 on CPU)")
    parser.add_argument("--compile", default="auto", choices=["auto", "on", "off"], help="engine compilation")
    parser.add_argument("--concurrency", default="1,4,8,16", help="comma-separated client counts N (1,4,8,16)")
    parser.add_argument("--requests-per-client", type=int, default=2, help="requests each client sends in turn (2)")
    parser.add_argument("--frames", type=int, default=24, help="frames per request (80 ms each: 24 = 1.92 s of audio)")
    parser.add_argument("--depth", type=int, default=8, help="depth K of every request (8 = 1 kbps)")
    parser.add_argument("--format", default="pcm", choices=["pcm", "wav", "flac", "mp3", "opus"], help="response")
    parser.add_argument("--text", default="The quick brown fox jumps over the lazy dog.", help="text of each request")
    parser.add_argument("--no-baseline", action="store_true", help="skip the one-slot server")


def run(args: argparse.Namespace) -> dict:
    counts = [int(x) for x in args.concurrency.split(",")]
    if not counts or min(counts) < 1 or args.requests_per_client < 1 or args.frames < 1:
        raise SystemExit("--concurrency, --requests-per-client and --frames must be >= 1")
    with _checkpoints(args) as (model, codec):
        print(f"serve bench: model {model}, device {args.device}, K={args.depth}, {args.frames} frames/request, "
              f"{args.requests_per_client} requests/client, format {args.format}", flush=True)  # fmt: skip
        engine = _measure(args, model, codec, slots=max(counts), counts=counts)
        baseline = None if args.no_baseline else _measure(args, model, codec, slots=1, counts=counts)
    rows = []
    header = (f"{'N':>3} {'req/s':>7} {'base':>7} {'ratio':>6} {'audio s/s':>9} {'base':>7} {'TTFA p50':>9} "
              f"{'p95':>7} {'base p50':>9} {'base p95':>9}  (TTFA in ms)")  # fmt: skip
    print(header, flush=True)
    for n in counts:
        e = engine[n]
        b = baseline[n] if baseline else None
        ratio = e["requests_per_s"] / b["requests_per_s"] if b else float("nan")
        rows.append({"concurrency": n, "engine": e, "baseline": b, "ratio": ratio})
        nan = float("nan")
        print(f"{n:>3} {e['requests_per_s']:>7.2f} {b['requests_per_s'] if b else nan:>7.2f} {ratio:>5.2f}x "
              f"{e['audio_s_per_s']:>9.2f} {b['audio_s_per_s'] if b else nan:>7.2f} {e['ttfa_p50_ms']:>9.0f} "
              f"{e['ttfa_p95_ms']:>7.0f} {b['ttfa_p50_ms'] if b else nan:>9.0f} {b['ttfa_p95_ms'] if b else nan:>9.0f}",
              flush=True)  # fmt: skip
    return {
        "model": model,
        "device": args.device,
        "depth": args.depth,
        "frames_per_request": args.frames,
        "requests_per_client": args.requests_per_client,
        "format": args.format,
        "rows": rows,
    }


@contextlib.contextmanager
def _checkpoints(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    from cat_tts.weights import DEFAULT_CODEC, DEFAULT_MODEL

    if not args.tiny:
        yield args.model or DEFAULT_MODEL, args.codec or DEFAULT_CODEC
        return
    from cat_tts.tools.make_tiny import make_tiny

    with tempfile.TemporaryDirectory(prefix="cat-tts-bench-") as tmp:
        paths = make_tiny(tmp)
        yield str(paths["model"]), str(paths["codec"])


def _measure(args: argparse.Namespace, model: str, codec: str, slots: int, counts: list[int]) -> dict[int, dict]:
    """Starts a server whose engine has `slots` slots and runs every concurrency level against it."""
    from cat_tts.server.app import create_app
    from cat_tts.server.backend import PipelineBackend
    from cat_tts.server.config import ServerConfig
    from cat_tts.server.runner import serve_in_thread

    compile_mode = {"auto": "auto", "on": True, "off": False}[args.compile]
    backend = PipelineBackend.from_pretrained(model, codec, args.device, args.dtype, max_slots=slots,
                                              max_queue=max(counts) + 1, compile=compile_mode)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="cat-tts-bench-voices-") as voices:
        config = ServerConfig(voices_dir=voices, model_id=model, request_timeout_s=3600.0)
        with serve_in_thread(create_app(backend, config)) as url:
            _run_clients(url, 1, 1, args)  # warm-up: compilation, allocations, the codec's first decode
            results = {}
            for n in counts:
                results[n] = _run_clients(url, n, args.requests_per_client, args)
                label = "engine" if slots > 1 else "baseline"
                print(f"  {label:8} N={n:<3} {results[n]['requests_per_s']:.2f} req/s", flush=True)
    return results


def _run_clients(url: str, clients: int, per_client: int, args: argparse.Namespace) -> dict:
    """`clients` threads start together; each sends `per_client` streaming requests in turn."""
    import httpx

    body = {"input": args.text, "voice": "default", "response_format": args.format, "depth": args.depth,
            "max_new_frames": args.frames, "min_new_frames": args.frames}  # fmt: skip
    ttfa: list[float] = []
    audio_bytes: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        with httpx.Client(timeout=3600) as http:
            barrier.wait()
            for j in range(per_client):
                sent = time.perf_counter()
                first = None
                size = 0
                with http.stream("POST", f"{url}/v1/audio/speech", json={**body, "seed": i * per_client + j}) as r:
                    if r.status_code != 200:
                        with lock:
                            errors.append(f"{r.status_code}: {r.read()[:200]!r}")
                        continue
                    for chunk in r.iter_bytes():
                        if chunk and first is None:
                            first = time.perf_counter() - sent
                        size += len(chunk)
                with lock:
                    ttfa.append(first if first is not None else float("nan"))
                    audio_bytes.append(size)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, e.g. {errors[0]}")
    requests = clients * per_client
    audio_s = requests * args.frames * FRAME_SECONDS  # every request is forced to --frames frames
    return {
        "clients": clients,
        "requests": requests,
        "wall_s": wall,
        "requests_per_s": requests / wall,
        "audio_s_per_s": audio_s / wall,
        "ttfa_p50_ms": statistics.median(ttfa) * 1e3,
        "ttfa_p95_ms": float(np.percentile(ttfa, 95)) * 1e3,
        "bytes": int(sum(audio_bytes)),
    }
