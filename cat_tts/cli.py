"""What the command-line entry points share: the model options, the compile modes, output checks made before any
work, and generation settings whose errors name the option.

Used by infer.py, app.py, serve.py, train.py, `python -m cat_tts.data.prepare`, `python -m eval.seedtts` and the
benchmarks. Errors are `cat_tts.errors.InputError`: every CLI prints them as one line and exits 2. This module imports
neither torch nor transformers at import time (the CLIs build their parsers before the heavy imports).
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path
from typing import Any

from cat_tts.errors import InputError
from cat_tts.weights import DEFAULT_CODEC, DEFAULT_MODEL, DTYPE_CHOICES

# --compile value -> EngineConfig.compile
COMPILE_MODES: dict[str, Any] = {"auto": "auto", "on": True, "off": False}
COMPILE_HELP = "frame step: auto = CUDA graphs on CUDA, eager on CPU; on = also torch.compile; off = eager"


def add_model_options(parser: argparse.ArgumentParser | Any, compile: bool = True) -> None:
    """Adds --model, --codec, --device, --dtype (and --compile) to a parser or an argument group."""
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"TTS model directory or hub id ({DEFAULT_MODEL})")
    parser.add_argument("--codec", default=DEFAULT_CODEC, help=f"codec directory or hub id ({DEFAULT_CODEC})")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument(
        "--dtype", default="auto", choices=DTYPE_CHOICES, help="model dtype (auto: bfloat16 on CUDA, float32 on CPU)"
    )
    if compile:
        parser.add_argument("--compile", default="auto", choices=list(COMPILE_MODES), help=COMPILE_HELP)


def check_writable_dir(path: str | Path, option: str) -> Path:
    """Creates `path` if needed and checks that files can be written in it, before any work starts.

    Raises:
        InputError: naming the option and why (a file is in the way, no permission, read-only filesystem...).
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path} is a file, not a directory; choose a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise InputError(f"{option}: cannot write to {path} ({err.strerror or err})") from err
    return path


def check_writable_file(path: str | Path, option: str) -> Path:
    """Checks that the file `path` can be written (its folder is created if needed), before any work starts."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise InputError(f"{option} {path} is a directory; give a file name")
    check_writable_dir(path.parent if str(path.parent) else Path("."), option)
    return path


def generation_settings(options: dict[str, Any], base: Any = None) -> Any:
    """A `GenerationConfig` from command-line values (None = not given: keep the default).

    Errors name the option (`--top-p must be in ...`) instead of the field.

    Args:
        options: field name -> value, e.g. `{"temperature": args.temperature, "top_p": args.top_p}`.
        base: the config the values override (default: `GenerationConfig()`, the released settings).
    """
    from cat_tts.generation import GenerationConfig

    try:
        return (base or GenerationConfig()).with_overrides(**options)
    except InputError as err:
        message = str(err)
        for field in GenerationConfig.field_names():
            message = re.sub(rf"\b{field}\b", "--" + field.replace("_", "-"), message)
        raise InputError(message) from err
