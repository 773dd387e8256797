"""`python serve.py`: the OpenAI-compatible speech server.

    python serve.py                                             # the released weights, on cuda if present
    python serve.py --model tiny/model --codec tiny/codec --min-new-frames 10    # offline, make_tiny checkpoints
    python serve.py --devices cuda:0,cuda:1 --max-slots 16      # one engine per GPU, least-loaded routing
    CAT_TTS_API_KEY=secret python serve.py --host 0.0.0.0       # clients send Authorization: Bearer secret

Then: curl http://127.0.0.1:8000/v1/audio/speech -H 'Content-Type: application/json' \\
        -d '{"input": "Hello!", "voice": "default", "response_format": "wav"}' -o hello.wav

The port answers at once: /health says "loading", then "starting" (503) until the engine is warm, then "ok".
SIGTERM (or Ctrl-C) stops admitting requests (503), lets the ones in flight finish within --shutdown-grace
seconds, cancels the rest and exits 0. Bad options, checkpoints or directories exit 2 with one line.
Needs the `serve` extra: pip install 'cat-tts[serve]'.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

from cat_tts.cli import COMPILE_MODES, OneLineParser, add_model_options
from cat_tts.errors import USER_ERROR_EXIT_CODE, FieldError, UserError
from cat_tts.server.config import API_KEY_ENV, ServerConfig, default_voices_dir

logger = logging.getLogger(__name__)

CPU_SLOTS_PER_CORE = 8  # more slots than this per core on a CPU get a warning at start
LISTEN_BACKLOG = 2048  # uvicorn's default backlog


def build_parser(prog: str = "python serve.py") -> argparse.ArgumentParser:
    """The options (`prog`: how the command is called, for its messages: `cat-tts serve` or `python serve.py`)."""
    p = OneLineParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("model")
    add_model_options(m)
    m.add_argument(
        "--devices",
        default=None,
        help="comma-separated devices, one engine each, e.g. cuda:0,cuda:1 (overrides --device)",
    )
    m.add_argument("--model-id", default=None, help="id reported by /v1/models (default: the --model value)")
    m.add_argument("--cpu-prepack", default="on", choices=["on", "off"],
                   help="on the CPU, time prepacked depth weights per batch size at warm-up and keep the faster "
                        "(on); off: plain weights, a faster start")  # fmt: skip
    m.add_argument("--batch-invariant", action="store_true",
                   help="run every frame at --max-slots and decode each stream alone: a request's audio is "
                        "bit-identical alone and under any load (every frame then computes all slots)")  # fmt: skip
    h = p.add_argument_group("http")
    h.add_argument("--host", default="127.0.0.1", help="interface to listen on; 0.0.0.0 for all (default 127.0.0.1)")
    h.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0: any free port, logged)")
    h.add_argument(
        "--api-key",
        default=None,
        help=f"require this key (Authorization: Bearer KEY) on /v1/* and /metrics; also {API_KEY_ENV}",
    )
    h.add_argument("--public-metrics", action="store_true", help="serve /metrics without the key (for scrapers)")
    h.add_argument(
        "--voices-dir", default=None, help=f"stored voices, one folder per codec (default {default_voices_dir()})"
    )
    h.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    lim = p.add_argument_group("limits")
    lim.add_argument("--max-slots", type=int, default=8, help="requests generated together per engine (8)")
    lim.add_argument("--max-queue", type=int, default=32, help="requests waiting per engine; beyond: 429 (32)")
    lim.add_argument("--max-input-chars", type=int, default=4096, help="longest input text, characters (4096)")
    lim.add_argument(
        "--max-new-frames",
        type=int,
        default=None,
        help="the most frames (80 ms each) a request may ask for per text segment (default: what an "
        "engine slot holds; requests that give none get an estimate from their text)",
    )
    lim.add_argument(
        "--min-new-frames",
        type=int,
        default=0,
        help="default frames before the model may stop (random make_tiny checkpoints: e.g. 10)",
    )
    lim.add_argument("--max-upload-mb", type=float, default=16.0, help="largest voice upload, MiB (16)")
    lim.add_argument("--max-voice-seconds", type=float, default=30.0, help="longest voice clip, seconds (30)")
    lim.add_argument("--request-timeout", type=float, default=300.0, help="time limit per request, seconds (300)")
    lim.add_argument("--shutdown-grace", type=float, default=30.0,
                     help="on SIGTERM, seconds in-flight requests may take to finish (30)")  # fmt: skip
    return p


def option_labels(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Setting name -> the option that sets it (`max_upload_mb` -> `--max-upload-mb`), from the parser itself, so
    an error only ever names an option that exists."""
    return {a.dest: a.option_strings[-1] for a in parser._actions if a.option_strings and a.dest != "help"}


def main(argv: list[str] | None = None, prog: str = "python serve.py") -> int:
    """Runs the server until SIGTERM/SIGINT; returns the exit status (0, or 2 with one line for bad input)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    labels = option_labels(parser)
    try:
        config, engine, devices = _settings(args)
        _check_serve_extra()
        from cat_tts.server.voices import check_writable
        from cat_tts.weights import resolve_checkpoint

        check_writable(config.voices_dir, "--voices-dir")
        _warn_about_cpu_slots(devices, engine.max_slots)
        model_dir, codec_dir = resolve_checkpoint(args.model, "model"), resolve_checkpoint(args.codec, "codec")
        sock = _bind(args.host, args.port)
    except FieldError as err:
        return _fail(err.labelled(labels))
    except (UserError, OSError) as err:
        return _fail(str(err))
    from cat_tts.inference import SynthesisConfig
    from cat_tts.server.app import create_app
    from cat_tts.server.backend import load_backend
    from cat_tts.server.runner import serve_forever

    synthesis = SynthesisConfig(max_segment_frames=config.max_new_frames)  # the cap, also for requests that set none
    app = create_app(
        config, load=lambda: load_backend(str(model_dir), str(codec_dir), devices, args.dtype, engine, synthesis)
    )
    code = serve_forever(app, sock, config, args.log_level)
    error = app.state.cat.startup_error
    if isinstance(error, UserError):
        _fail(error.labelled(labels) if isinstance(error, FieldError) else str(error))
    return code


def _fail(message: str) -> int:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return USER_ERROR_EXIT_CODE


def _settings(args: argparse.Namespace):
    """(ServerConfig, EngineConfig, devices) from the options. Raises `FieldError` naming the setting."""
    from cat_tts.generation import EngineConfig

    if not 0 <= args.port < 65536:
        raise FieldError("port", f"port must be in 0..65535 (0: any free port), got {args.port}")
    if args.devices is not None:
        devices = [d.strip() for d in args.devices.split(",") if d.strip()]
        if not devices:
            raise FieldError("devices", "devices must list at least one device, e.g. cuda:0,cuda:1")
    else:
        devices = [args.device or _default_device()]
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    config = ServerConfig(
        model_id=args.model_id or str(args.model).rstrip("/"),
        api_key=api_key,
        public_metrics=args.public_metrics,
        voices_dir=Path(args.voices_dir) if args.voices_dir else default_voices_dir(),
        max_input_chars=args.max_input_chars,
        max_upload_mb=args.max_upload_mb,
        max_voice_seconds=args.max_voice_seconds,
        max_new_frames=args.max_new_frames,
        min_new_frames=args.min_new_frames,
        request_timeout=args.request_timeout,
        shutdown_grace=args.shutdown_grace,
    )
    engine = EngineConfig(max_slots=args.max_slots, max_queue=args.max_queue, compile=COMPILE_MODES[args.compile],
                          cpu_prepack=args.cpu_prepack == "on", batch_invariant=args.batch_invariant)  # fmt: skip
    return config, engine, devices


def _warn_about_cpu_slots(devices: list[str], max_slots: int) -> None:
    """More slots than a CPU can advance make every stream slow: say so at start, with the reason."""
    cores = os.cpu_count() or 1
    useful = CPU_SLOTS_PER_CORE * cores
    if any(d.split(":")[0] == "cpu" for d in devices) and max_slots > useful:
        logger.warning(
            "--max-slots %d on a CPU with %d cores: every frame computes all the requests in it, so once the slots "
            "fill each stream gets about 1/%d of the CPU and plays slower than real time; every slot's cache is "
            "also allocated (and every batch size warmed up) at start. Use --max-slots %d or fewer and let "
            "--max-queue hold the rest (a queued request waits for a slot instead of slowing the others).",
            max_slots, cores, max_slots, useful,
        )  # fmt: skip


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _check_serve_extra() -> None:
    missing = []
    for module in ("fastapi", "uvicorn", "h11", "python_multipart", "prometheus_client"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise UserError(f"the server needs {', '.join(missing)}: pip install 'cat-tts[serve]'")


def _bind(host: str, port: int) -> socket.socket:
    """Binds and listens before the model loads: a taken port fails at once with one line, and from then on
    connections are accepted (queued by the kernel until uvicorn takes them over), never refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        shown = f"[{host}]" if ":" in host else host
        raise UserError(f"cannot listen on {shown}:{port}: {err.strerror or err}") from None
    sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(True)
    return sock
