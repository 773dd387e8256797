"""Serve the cat-tts demo: voice cloning with a bitrate slider, streaming playback and side-by-side depths.

    cat-tts demo                                   # the released weights (downloaded from the Hugging Face hub)
    cat-tts demo --model tiny/model --codec tiny/codec --min-new-frames 10   # offline, on make_tiny checkpoints
    cat-tts demo --host 0.0.0.0 --port 7860         # reachable from other machines
    cat-tts demo --max-slots 16                     # up to 16 users generated together in one engine batch

(`python app.py` takes the same options.)

Every user's request runs on one continuous-batching engine: up to --max-slots requests are generated together
(one frame step advances all of them), so concurrent users share the model instead of waiting for each other.
Gradio hands the engine up to --concurrency requests at once (default: the number of slots); more wait in
Gradio's queue (--queue-size), and a request whose text is long enough to take several slots waits in the
engine's queue for a free one. Ctrl-C or SIGTERM stops the server and the engine.

Bad options, missing or mismatched checkpoint directories and a taken port exit with code 2 and one line.
Needs the `app` extra: pip install 'cat-tts[app]'.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cat_tts.cli import COMPILE_MODES, OneLineParser, add_model_options
from cat_tts.errors import USER_ERROR_EXIT_CODE, FieldError, UserError

# DemoLimits and EngineConfig fields -> the options that set them (their errors are shown under the option).
OPTIONS = {
    "max_text_chars": "--max-text-chars",
    "max_reference_seconds": "--max-reference-seconds",
    "concurrency_limit": "--concurrency",
    "max_queue_size": "--queue-size",
    "max_new_frames": "--max-new-frames",
    "min_new_frames": "--min-new-frames",
    "max_slots": "--max-slots",
}
TINY_HIDDEN_SIZE = 256  # a temporal width below this is a `make_tiny` checkpoint (random weights: noise)


class CliError(UserError):
    """Bad command-line input; printed as one line."""


def build_parser(prog: str = "app.py") -> argparse.ArgumentParser:
    """The command line (`prog` names it in messages: "app.py" or "cat-tts demo")."""
    from cat_tts.demo.request import DemoLimits
    from cat_tts.generation import EngineConfig

    limits, engine = DemoLimits(), EngineConfig()
    p = OneLineParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(p.add_argument_group("model"))
    h = p.add_argument_group("web server")
    h.add_argument("--host", default="127.0.0.1", help="interface to listen on; 0.0.0.0 for all (default 127.0.0.1)")
    h.add_argument("--port", type=int, default=7860, help="TCP port, 1..65535 (default 7860)")
    h.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    lim = p.add_argument_group("limits")
    lim.add_argument(
        "--max-slots",
        type=int,
        default=engine.max_slots,
        help=f"requests the engine generates together in one batch (default {engine.max_slots})",
    )
    lim.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="requests handed to the engine at once (default: --max-slots); requests beyond the free slots "
        "wait in the engine's queue",
    )
    lim.add_argument(
        "--queue-size",
        type=int,
        default=limits.max_queue_size,
        help=f"requests allowed to wait in the page's queue (default {limits.max_queue_size})",
    )
    lim.add_argument(
        "--max-text-chars",
        type=int,
        default=limits.max_text_chars,
        help=f"longest accepted text, in characters (default {limits.max_text_chars})",
    )
    lim.add_argument(
        "--max-reference-seconds",
        type=float,
        default=limits.max_reference_seconds,
        help=f"longest accepted reference clip, in seconds (default {limits.max_reference_seconds:g})",
    )
    lim.add_argument(
        "--max-new-frames",
        type=int,
        default=limits.max_new_frames,
        help="the page's starting frame budget per text segment, in codec frames (default: from the text length)",
    )
    lim.add_argument(
        "--min-new-frames",
        type=int,
        default=limits.min_new_frames,
        help="the page's starting frames before the model may stop (random make_tiny checkpoints stop at once: "
        "give e.g. 10)",
    )
    return p


def settings_from_args(args: argparse.Namespace) -> tuple[Any, Any]:
    """The demo's limits and the engine's settings from the command line (checked before anything loads).

    Returns:
        `(DemoLimits, EngineConfig)`.

    Raises:
        CliError: naming the option that is out of range.
    """
    from cat_tts.demo.request import DemoLimits
    from cat_tts.generation import EngineConfig

    if not 1 <= args.port <= 65535:
        raise CliError(f"--port must be in 1..65535, got {args.port}")
    try:
        engine = EngineConfig(max_slots=args.max_slots, compile=COMPILE_MODES[args.compile])
        limits = DemoLimits(
            max_text_chars=args.max_text_chars,
            max_reference_seconds=args.max_reference_seconds,
            concurrency_limit=args.concurrency,
            max_queue_size=args.queue_size,
            max_new_frames=args.max_new_frames,
            min_new_frames=args.min_new_frames,
        )
    except FieldError as err:
        raise CliError(" ".join(err.labelled(OPTIONS).split())) from None
    return limits, engine


def check_port(host: str, port: int) -> None:
    """Fails now, not after the model has loaded, when `host:port` cannot be listened on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server does
        try:
            sock.bind((host, port))
        except OSError as err:
            raise CliError(f"cannot listen on {host}:{port}: {err.strerror or err} (choose another --port)") from None


def check_gradio() -> None:
    if importlib.util.find_spec("gradio") is None:
        raise CliError("the demo needs gradio: pip install 'cat-tts[app]'")


def resolve_checkpoints(model: str, codec: str) -> tuple[Path, Path]:
    """The model and codec directories (hub ids fetched); a wrong kind or missing directory names the option."""
    from cat_tts.weights import resolve_checkpoint

    dirs = []
    for option, ref, kind in (("--model", model, "model"), ("--codec", codec, "codec")):
        try:
            dirs.append(resolve_checkpoint(ref, kind))
        except UserError as err:  # says which kind of directory it is and how to pass it
            raise CliError(f"{option}: {err}") from None
    return dirs[0], dirs[1]


def load_service(
    model: str | Path, codec: str | Path, device: str | None, dtype: str, engine: Any, limits: Any = None
) -> Any:
    """The `CatTTS` service the demo serves, on an engine with the given `EngineConfig` (not started); the reference
    clips it accepts are at most `limits.max_reference_seconds` long."""
    from cat_tts.inference import CatTTS, SynthesisConfig

    config = None if limits is None else SynthesisConfig(max_reference_seconds=limits.max_reference_seconds)
    return CatTTS.from_pretrained(model=model, codec=codec, device=device, dtype=dtype, config=config, engine=engine)


def is_tiny(service: Any) -> bool:
    """True for a `make_tiny` checkpoint (random weights: noise), judged from the temporal width."""
    hidden = getattr(getattr(getattr(service, "model", None), "config", None), "hidden_size", None)
    return isinstance(hidden, int) and hidden < TINY_HIDDEN_SIZE


def describe(service: Any, limits: Any, compile_option: str) -> list[str]:
    """The start-up lines: device and dtypes, the depth range, and how requests are batched."""
    from cat_tts.codec.config import bitrate_kbps
    from cat_tts.weights import dtype_name

    engine, n = service.engine, service.n_vq
    slots = engine.config.max_slots
    concurrency = limits.concurrency(service)
    runner = engine.runner
    lines = [
        f"{service.model.device}, model in {dtype_name(service.model.dtype)}, codec in "
        f"{dtype_name(service.codec.dtype)}, compile {compile_option} (CUDA graphs: {runner.uses_cuda_graphs}, "
        f"torch.compile: {runner.uses_compile})",
        f"depth K = 1..{n} layers ({bitrate_kbps(1):g}..{bitrate_kbps(n):g} kbps), {service.sample_rate} Hz, "
        f"{service.frame_rate:g} frames/s",
        f"engine: {slots} slots generated together; the page hands it up to {concurrency} requests at once "
        f"and queues {limits.max_queue_size} more",
    ]
    if concurrency > slots:
        lines.append(f"requests beyond the {slots} slots wait in the engine's queue for a free one")
    return lines


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # Gradio's blocking loop then closes the server, and main() closes the engine


def main(argv: list[str] | None = None, prog: str = "app.py") -> int:
    """Runs the demo until interrupted (Ctrl-C, or SIGTERM, which this function turns into Ctrl-C).

    Args:
        argv: command-line arguments (default: sys.argv[1:]).
        prog: the command's name in messages ("app.py" or "cat-tts demo").

    Returns:
        0 after a clean shutdown (interrupted once the page is being served), `USER_ERROR_EXIT_CODE` (2) for bad
        input, 130 when interrupted while loading.
    """
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own startup probes of the local server
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    main_thread = threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    service = None
    try:
        limits, engine = settings_from_args(args)
        check_gradio()
        check_port(args.host, args.port)
        model_dir, codec_dir = resolve_checkpoints(args.model, args.codec)
        from cat_tts.demo import build_demo, bundled_examples, launch_demo

        print(f"loading {args.model} and {args.codec} ...", flush=True)
        start = time.perf_counter()
        service = load_service(model_dir, codec_dir, args.device, args.dtype, engine, limits)
        print(f"loaded in {time.perf_counter() - start:.1f} s")
        for line in describe(service, limits, args.compile):
            print(line)
        if not service.engine.stats().warm:
            print("warming up the engine (CUDA graphs / torch.compile) ...", flush=True)
            service.warmup()
        notice = None
        if is_tiny(service):
            notice = "These are random tiny checkpoints (make_tiny): the output is noise, for plumbing checks only."
        examples = bundled_examples(service.n_vq)
        demo = build_demo(service, limits, examples=examples, notice=notice)
        service.start()  # a background thread steps the engine: concurrent requests share its batch
        try:
            threads = max(40, limits.concurrency(service) + 8)
            launch_demo(demo, host=args.host, port=args.port, share=args.share, max_threads=threads)
        except KeyboardInterrupt:  # before Gradio's own loop took over (once serving, it handles the interrupt)
            demo.close()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:  # UserError (CliError, InputError, CheckpointError), AudioError, port
        print("error: " + (" ".join(str(err).split()) or type(err).__name__), file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    finally:
        if previous_handler is not None:  # a second SIGTERM while closing ends the process the default way
            signal.signal(signal.SIGTERM, previous_handler)
        if service is not None:
            service.close()  # cancels what is still in flight and stops the engine's thread
    return 0
