"""Serve the cat-tts demo: voice cloning with a bitrate slider, streaming playback and side-by-side depths.

    python app.py                                   # the released weights (downloaded from the Hugging Face hub)
    python app.py --model tiny/model --codec tiny/codec --min-new-frames 10   # offline, on make_tiny checkpoints
    python app.py --host 0.0.0.0 --port 7860         # reachable from other machines
    python app.py --max-slots 16                     # up to 16 users generated together in one engine batch

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
import re
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

from cat_tts.cli import COMPILE_MODES, add_model_options
from cat_tts.errors import USER_ERROR_EXIT_CODE, UserError

# DemoLimits and EngineConfig fields -> the options that set them (their error messages name the option).
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


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option as one line and exit code 2 (no usage block)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see python app.py --help)", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)


def build_parser() -> argparse.ArgumentParser:
    from cat_tts.app.handlers import DemoLimits
    from cat_tts.generation import EngineConfig

    limits, engine = DemoLimits(), EngineConfig()
    p = _Parser(prog="python app.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
        help="frame cap per text chunk, in codec frames (default: from the text length)",
    )
    lim.add_argument(
        "--min-new-frames",
        type=int,
        default=limits.min_new_frames,
        help="frames before the model may stop (random make_tiny checkpoints stop at once: give e.g. 10)",
    )
    return p


def _option_message(err: Exception) -> str:
    """A DemoLimits / EngineConfig message with its field names replaced by the options that set them."""
    message = " ".join(str(err).split())
    for field, option in OPTIONS.items():
        message = re.sub(rf"\b{field}\b", option, message)
    return message


def settings_from_args(args: argparse.Namespace) -> tuple[Any, Any]:
    """The demo's limits and the engine's settings from the command line (checked before anything loads).

    Returns:
        `(DemoLimits, EngineConfig)`.

    Raises:
        CliError: naming the option that is out of range.
    """
    from cat_tts.app.handlers import DemoLimits
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
    except ValueError as err:  # InputError naming the field
        raise CliError(_option_message(err)) from None
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


def load_pipeline(model: str | Path, codec: str | Path, device: str | None, dtype: str, engine: Any) -> Any:
    """The `CatTTS` pipeline the demo serves, on an engine with the given `EngineConfig` (not started)."""
    from cat_tts.inference import CatTTS

    return CatTTS.from_pretrained(model=model, codec=codec, device=device, dtype=dtype, engine=engine)


def is_tiny(pipeline: Any) -> bool:
    """True for a `make_tiny` checkpoint (random weights: noise), judged from the temporal width."""
    hidden = getattr(getattr(getattr(pipeline, "model", None), "config", None), "hidden_size", None)
    return isinstance(hidden, int) and hidden < TINY_HIDDEN_SIZE


def describe(pipeline: Any, limits: Any, compile_option: str) -> list[str]:
    """The start-up lines: device and dtypes, the depth range, and how requests are batched."""
    from cat_tts.codec.config import bitrate_kbps
    from cat_tts.weights import dtype_name

    engine, n = pipeline.engine, pipeline.n_vq
    concurrency = limits.concurrency(pipeline)
    lines = [
        f"{pipeline.model.device}, model in {dtype_name(pipeline.model.dtype)}, codec in "
        f"{dtype_name(pipeline.codec.dtype)}, compile {compile_option} (CUDA graphs: {engine.runner.uses_cuda_graphs}, "
        f"torch.compile: {engine.runner.uses_compile})",
        f"depth K = 1..{n} layers ({bitrate_kbps(1):g}..{bitrate_kbps(n):g} kbps), {pipeline.sample_rate} Hz, "
        f"{pipeline.frame_rate:g} frames/s",
        f"engine: {engine.max_slots} slots generated together; the page hands it up to {concurrency} requests at once "
        f"and queues {limits.max_queue_size} more",
    ]
    if concurrency > engine.max_slots:
        lines.append(f"requests beyond the {engine.max_slots} slots wait in the engine's queue for a free one")
    return lines


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # Gradio's blocking loop then closes the server, and main() closes the engine


def main(argv: list[str] | None = None, examples_root: str | Path | None = None) -> int:
    """Runs the demo until interrupted (Ctrl-C, or SIGTERM, which this function turns into Ctrl-C).

    Args:
        argv: command-line arguments (default: sys.argv[1:]).
        examples_root: the repository root holding `docs/assets/reference.wav` for the examples (None: none).

    Returns:
        0 after a clean shutdown (interrupted once the page is being served), `USER_ERROR_EXIT_CODE` (2) for bad
        input, 130 when interrupted while loading.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own startup probes of the local server
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    main_thread = threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    pipeline = None
    try:
        limits, engine = settings_from_args(args)
        check_gradio()
        check_port(args.host, args.port)
        model_dir, codec_dir = resolve_checkpoints(args.model, args.codec)
        from cat_tts.app import build_demo, bundled_examples, launch_demo

        print(f"loading {args.model} and {args.codec} ...", flush=True)
        start = time.perf_counter()
        pipeline = load_pipeline(model_dir, codec_dir, args.device, args.dtype, engine)
        print(f"loaded in {time.perf_counter() - start:.1f} s")
        for line in describe(pipeline, limits, args.compile):
            print(line)
        if not pipeline.engine.runner.warm:
            print("warming up the engine (CUDA graphs / torch.compile) ...", flush=True)
            pipeline.warmup()
        notice = None
        if is_tiny(pipeline):
            notice = "These are random tiny checkpoints (make_tiny): the output is noise, for plumbing checks only."
        examples = bundled_examples(examples_root, pipeline.n_vq) if examples_root is not None else []
        demo = build_demo(pipeline, limits, examples=examples, notice=notice)
        pipeline.start()  # a background thread steps the engine: concurrent requests share its batch
        try:
            threads = max(40, limits.concurrency(pipeline) + 8)
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
        if pipeline is not None:
            pipeline.close()  # cancels what is still in flight and stops the engine's thread
    return 0
