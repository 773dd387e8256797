"""`python serve.py`: the OpenAI-compatible speech server.

    python serve.py                                             # the released weights, on cuda if present
    python serve.py --model tiny/model --codec tiny/codec --min-new-frames 10    # offline, make_tiny checkpoints
    python serve.py --devices cuda:0,cuda:1 --max-slots 16      # one engine per GPU, least-loaded routing
    CAT_TTS_API_KEY=secret python serve.py --host 0.0.0.0       # clients send Authorization: Bearer secret

Then: curl http://127.0.0.1:8000/v1/audio/speech -H 'Content-Type: application/json' \\
        -d '{"input": "Hello!", "voice": "default", "response_format": "wav"}' -o hello.wav

SIGTERM (or Ctrl-C) stops admitting requests (503), lets the ones in flight finish within --shutdown-grace
seconds, cancels the rest and exits 0. Needs the `serve` extra: pip install 'cat-tts[serve]'.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from cat_tts.cli import COMPILE_MODES, add_model_options
from cat_tts.errors import USER_ERROR_EXIT_CODE, UserError
from cat_tts.server.config import API_KEY_ENV, MIB, ServerConfig, default_voices_dir

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python serve.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    m = p.add_argument_group("model")
    add_model_options(m)
    m.add_argument(
        "--devices",
        default=None,
        help="comma-separated devices, one engine each, e.g. cuda:0,cuda:1 (overrides --device)",
    )
    m.add_argument("--model-id", default=None, help="id reported by /v1/models (default: the --model value)")
    h = p.add_argument_group("http")
    h.add_argument("--host", default="127.0.0.1", help="interface to listen on; 0.0.0.0 for all (default 127.0.0.1)")
    h.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0: any free port, logged)")
    h.add_argument("--api-key", default=None, help=f"require this key (Authorization: Bearer KEY); also {API_KEY_ENV}")
    h.add_argument("--voices-dir", default=None, help=f"stored voices (default {default_voices_dir()})")
    h.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    lim = p.add_argument_group("limits")
    lim.add_argument("--max-slots", type=int, default=8, help="requests generated together per engine (8)")
    lim.add_argument("--max-queue", type=int, default=32, help="requests waiting per engine; beyond: 429 (32)")
    lim.add_argument("--max-input-chars", type=int, default=4096, help="longest input text, characters (4096)")
    lim.add_argument(
        "--max-new-frames",
        type=int,
        default=None,
        help="cap on a request's frames per text chunk, 80 ms each (default: from the text length)",
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config, devices = _config_from_args(args)
        _check_serve_extra()
        sock = _bind(args.host, args.port)
        from cat_tts.server.app import create_app
        from cat_tts.server.backend import load_backend

        backend = load_backend(args.model, args.codec, devices, args.dtype, args.max_slots, args.max_queue,
                               COMPILE_MODES[args.compile])  # fmt: skip
        app = create_app(backend, config)
    except (UserError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    return run_server(app, sock, config.shutdown_grace_s, args.log_level)


def _config_from_args(args: argparse.Namespace) -> tuple[ServerConfig, list[str]]:
    for name in ("max_slots", "max_queue"):
        value = getattr(args, name)
        if value < (1 if name == "max_slots" else 0):
            raise UserError(f"--{name.replace('_', '-')} must be >= {1 if name == 'max_slots' else 0}, got {value}")
    if not 0 <= args.port < 65536:
        raise UserError(f"--port must be in 0..65535 (0: any free port), got {args.port}")
    if args.devices:
        devices = [d.strip() for d in args.devices.split(",") if d.strip()]
        if not devices:
            raise UserError("--devices must list at least one device, e.g. cuda:0,cuda:1")
    else:
        devices = [args.device or _default_device()]
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    try:
        config = ServerConfig(
            model_id=args.model_id or str(args.model).rstrip("/"),
            api_key=api_key,
            voices_dir=Path(args.voices_dir) if args.voices_dir else default_voices_dir(),
            max_input_chars=args.max_input_chars,
            max_upload_bytes=int(args.max_upload_mb * MIB),
            max_voice_seconds=args.max_voice_seconds,
            max_new_frames=args.max_new_frames,
            min_new_frames=args.min_new_frames,
            request_timeout_s=args.request_timeout,
            shutdown_grace_s=args.shutdown_grace,
        )
    except ValueError as err:  # name the option, not the field
        message = str(err)
        field = message.split()[0]
        raise UserError(f"--{field.replace('_', '-')}{message[len(field) :]}") from None
    return config, devices


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _check_serve_extra() -> None:
    missing = []
    for module in ("fastapi", "uvicorn", "python_multipart", "prometheus_client"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise UserError(f"the server needs {', '.join(missing)}: pip install 'cat-tts[serve]'")


def _bind(host: str, port: int) -> socket.socket:
    """Binds the listening socket before the model loads, so a taken port fails at once with one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.set_inheritable(True)
    return sock


def run_server(app: Any, sock: socket.socket, grace_s: float, log_level: str = "info") -> int:
    """Serves `app` on the bound `sock` until SIGTERM/SIGINT, then drains (see `runner.DrainingServer`)."""
    from cat_tts.server.runner import serve_forever

    return serve_forever(app, sock, grace_s, log_level)
