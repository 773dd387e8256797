"""Write tiny random checkpoints in the official formats so every command runs offline.

    python -m cat_tts.tools.make_tiny OUT [--seed 0]

writes `OUT/codec` (a MOSS-Audio-Tokenizer directory: config.json + model.safetensors, real 24 kHz
rate and all 32 layers, tiny widths) and `OUT/model` (a MOSS-TTS-Local-Transformer directory:
config.json + model.safetensors + tokenizer files, all 32 layers).

Random weights produce noise: these checkpoints are for plumbing checks (tests, the demo, the
benchmark harness), never for listening.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def make_tiny(out: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write `out/codec` and `out/model`; returns their paths."""
    from cat_tts.codec.tiny import write_tiny_codec
    from cat_tts.model.tiny import write_tiny_model
    from cat_tts.text.tiny_tokenizer import write_tiny_tokenizer

    out = Path(out)
    paths = {
        "codec": write_tiny_codec(out / "codec", seed=seed),
        "model": write_tiny_model(out / "model", seed=seed),
    }
    write_tiny_tokenizer(paths["model"])  # the model directory carries its tokenizer, like the release
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cat_tts.tools.make_tiny",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", help="output directory (created)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the weights")
    args = parser.parse_args(argv)
    paths = make_tiny(args.out, seed=args.seed)
    for name, path in paths.items():
        print(f"wrote {name}: {path}")
    print("note: random weights produce noise; these checkpoints are for offline plumbing checks only.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
