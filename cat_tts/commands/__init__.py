"""The `cat-tts` command: one installed entry point for every tool, with the same options as the scripts.

    cat-tts infer --text "Hello." -o out.wav       # = python infer.py ...
    cat-tts serve --model tiny/model ...           # = python serve.py ...
    cat-tts demo                                   # = python app.py ...
    cat-tts train --config configs/tiny.yaml ...   # = python train.py ...
    cat-tts eval generate --meta ...               # = python -m eval.seedtts ...
    cat-tts bench generate ...                     # = python -m cat_tts.tools.bench ...

`cat-tts COMMAND --help` lists a command's options. Each command hands the rest of the command line to that tool's
`main`, imported only when it runs (so `cat-tts --help` needs none of the optional extras). `python -m cat_tts` is the
same command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass

from cat_tts.cli import OneLineParser


@dataclass(frozen=True)
class Command:
    """One subcommand of `cat-tts`."""

    module: str  # the module whose `main(argv)` runs it
    help: str  # one line for `cat-tts --help`
    takes_prog: bool = False  # its `main` takes `prog=` (its messages then say "cat-tts NAME")


COMMANDS = {
    "infer": Command("cat_tts.commands.infer", "speak a text (or a jsonl batch) in a voice at a chosen depth", True),
    "serve": Command("cat_tts.server.cli", "the OpenAI-compatible speech server (needs the serve extra)"),
    "demo": Command("cat_tts.demo.cli", "the Gradio demo (needs the app extra)", True),
    "train": Command("cat_tts.training.cli", "train under DeepSpeed (needs the train extra)", True),
    "eval": Command("eval.seedtts.__main__", "Seed-TTS-Eval: generate, score, report (needs the eval extra)"),
    "bench": Command("cat_tts.tools.bench.__main__", "speed and memory benchmarks"),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser (it parses the command name only; the command parses the rest)."""
    from cat_tts import __version__

    parser = OneLineParser(prog="cat-tts", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cat-tts {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        sub.add_parser(name, help=command.help, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs `cat-tts COMMAND ARGS...`; returns the command's exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        parser = build_parser()
        if not argv:
            parser.error(f"give a command: {', '.join(COMMANDS)}")
        parser.parse_args(argv[:1])  # --help, --version, or a one-line error naming the commands
        return 0
    name, rest = argv[0], argv[1:]
    command = COMMANDS[name]
    module = importlib.import_module(command.module)
    if command.takes_prog:
        return module.main(rest, prog=f"cat-tts {name}")
    return module.main(rest)
