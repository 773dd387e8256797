"""Serve the cat-tts demo: voice cloning with a bitrate slider, streaming playback and side-by-side depths.

    python app.py                                   # the released weights (downloaded from the Hugging Face hub)
    python app.py --model tiny/model --codec tiny/codec --min-new-frames 10   # offline, on make_tiny checkpoints
    python app.py --host 0.0.0.0 --port 7860         # reachable from other machines

Needs the `app` extra: pip install 'cat-tts[app]'.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

DEFAULT_MODEL = "OpenMOSS-Team/MOSS-TTS-Local-Transformer"
DEFAULT_CODEC = "OpenMOSS-Team/MOSS-Audio-Tokenizer"
DTYPES = ("auto", "float32", "bfloat16", "float16")
ROOT = Path(__file__).resolve().parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python app.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="TTS model: hub id or local directory")
    parser.add_argument("--codec", default=DEFAULT_CODEC, help="CAT codec: hub id or local directory")
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda, cuda:1, cpu (default: cuda if found)")
    parser.add_argument(
        "--dtype", default="auto", choices=DTYPES, help="weights dtype (auto: bfloat16 on GPU, float32 on CPU)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on; 0.0.0.0 for all")
    parser.add_argument("--port", type=int, default=7860, help="TCP port")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument("--max-text-chars", type=int, default=500, help="longest accepted text, in characters")
    parser.add_argument(
        "--max-reference-seconds", type=float, default=30.0, help="longest accepted reference clip, in seconds"
    )
    parser.add_argument("--concurrency", type=int, default=1, help="generation requests running at once")
    parser.add_argument("--queue-size", type=int, default=16, help="requests allowed to wait in the queue")
    parser.add_argument(
        "--max-new-frames", type=int, default=None, help="frame cap per text chunk, 12.5/s (default: from text length)"
    )
    parser.add_argument(
        "--min-new-frames",
        type=int,
        default=0,
        help="frames before the model may stop (random make_tiny checkpoints stop at once: give e.g. 10)",
    )
    return parser


def _is_tiny(model: str) -> bool:
    """True for a `make_tiny` checkpoint (random weights: noise), judged from its config's hidden size."""
    config = Path(model) / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    hidden = (data.get("language_config") or {}).get("hidden_size", data.get("hidden_size"))
    return isinstance(hidden, int) and hidden < 256


def _check_local(option: str, ref: str) -> None:
    """Fails fast (before the heavy imports) on a local path that does not exist; hub ids are `org/name`."""
    looks_local = ref.startswith((".", "/", "~")) or ref.count("/") != 1
    if looks_local and not Path(ref).expanduser().is_dir():
        raise ValueError(
            f"{option} directory {ref!r} does not exist (give a checkpoint directory, e.g. from "
            "`python -m cat_tts.tools.make_tiny OUT`, or a hub id such as org/name)"
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own startup probes of the local server
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        if not 1 <= args.port <= 65535:
            raise ValueError(f"--port must be in 1..65535, got {args.port}")
        _check_local("--model", args.model)
        _check_local("--codec", args.codec)
        from cat_tts.app import DemoLimits, build_demo, bundled_examples, launch_demo

        limits = DemoLimits(
            max_text_chars=args.max_text_chars,
            max_reference_seconds=args.max_reference_seconds,
            concurrency_limit=args.concurrency,
            max_queue_size=args.queue_size,
            max_new_frames=args.max_new_frames,
            min_new_frames=args.min_new_frames,
        )
        from cat_tts.inference import CatTTS

        dtype = None if args.dtype == "auto" else args.dtype
        print(f"loading {args.model} and {args.codec} ...", flush=True)
        pipeline = CatTTS.from_pretrained(model=args.model, codec=args.codec, device=args.device, dtype=dtype)
        notice = None
        if _is_tiny(args.model):
            notice = "These are random tiny checkpoints (make_tiny): the output is noise, for plumbing checks only."
        demo = build_demo(pipeline, limits, examples=bundled_examples(ROOT), notice=notice)
    except (ImportError, OSError, ValueError, RuntimeError) as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    launch_demo(demo, host=args.host, port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
