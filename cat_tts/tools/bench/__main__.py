"""Dispatch `python -m cat_tts.tools.bench SUBCOMMAND ...` to the module that implements it."""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from cat_tts.tools.bench import SUBCOMMANDS

SUBCOMMANDS = {**SUBCOMMANDS, "coldstart": "coldstart"}  # issue 13: load time/memory in fresh processes, first audio
SUBCOMMANDS = {**SUBCOMMANDS, "serve": "serve"}  # issue 11: HTTP clients on the engine vs a one-slot server


def main(argv: list[str] | None = None) -> int:
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
    args = parser.parse_args(argv)
    result = modules[args.command].run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
