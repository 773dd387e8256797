"""Dispatch `python -m cat_tts.tools.bench SUBCOMMAND ...` to the module that implements it."""

from __future__ import annotations

import argparse
import importlib
import sys

from cat_tts.errors import UserError
from cat_tts.tools.bench import SUBCOMMANDS, write_json

SUBCOMMANDS = {**SUBCOMMANDS, "coldstart": "coldstart"}  # issue 13: load time/memory in fresh processes, first audio
SUBCOMMANDS = {**SUBCOMMANDS, "serve": "serve"}  # issues 11, 17: HTTP clients with Seed-TTS-Eval-shaped requests
SUBCOMMANDS = {**SUBCOMMANDS, "realtime": "realtime"}  # issue 19: WebSocket sessions, fixed depth vs depth "auto"


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """The command line (every subcommand's options) and the modules that implement the subcommands."""
    parser = argparse.ArgumentParser(prog="python -m cat_tts.tools.bench", description=__doc__)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, module_name in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(f"cat_tts.tools.bench.{module_name}")
        except ModuleNotFoundError as err:
            if err.name != f"cat_tts.tools.bench.{module_name}":
                raise
            continue  # not built yet
        modules[name] = module
        p = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(p)
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    try:
        result = modules[args.command].run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        write_json(args.json, {**result, "complete": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
