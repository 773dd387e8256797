"""What the command-line entry points share: the model options, the compile modes, output checks made before any
work, the command-line labels of the speech request's fields, and the one-line messages of engine failures.

Used by infer.py, the demo, serve.py, train.py, `python -m cat_tts.data.prepare`, `python -m eval.seedtts` and the
benchmarks. Errors are `cat_tts.errors.InputError`: every CLI prints them as one line and exits 2. This module imports
neither torch nor transformers at import time (the CLIs build their parsers before the heavy imports).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from cat_tts.errors import USER_ERROR_EXIT_CODE, InputError
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


ENGINE_FAILURE_EXIT_CODE = 1  # exit status of a CLI whose engine could not run the work (not the user's input)


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad option as one line and exit code 2 (no usage block)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)


# ---------------------------------------------------------------------- the speech request on a command line
def _auto_or(kind: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        if value.strip().lower() == "auto":
            return "auto"
        try:
            return kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} or auto, got {value!r}") from None

    return parse


@dataclass(frozen=True)
class Option:
    """How a command line spells one field of `cat_tts.inference.SpeechRequest`."""

    flag: str  # the option, e.g. "--top-k" (the label a field's error is shown under)
    type: Callable[[str], Any] | None  # parses the value; None: a flag without a value that stores `const`
    help: str  # the option's help line (defaults are the released model's, from `GenerationConfig`)
    choices: tuple[str, ...] | None = None  # the accepted values, if a closed set
    const: Any = None  # the value a flag without a value stores
    unset: str | None = None  # a value that means "not given" (the request's default), e.g. "auto" for --mode


# Request field -> its command-line option. The command-line front ends (infer.py and the evaluator) show a field's
# errors under these labels; a field they take from elsewhere (the evaluator's test list) has its own label there.
REQUEST_OPTIONS: dict[str, Option] = {
    "text": Option("--text", str, "text to speak (any length: long text is split into sentence segments)"),
    "reference_audio": Option(
        "--prompt-audio", str, "reference clip of the voice to clone, any format soundfile reads (default: the "
        "bundled voice, with its transcript)"
    ),
    "reference_text": Option("--prompt-text", str, "transcript of the reference clip (enables continuation mode)"),
    "mode": Option(
        "--mode", str, "prompt mode: continuation (needs the transcript) or clone (audio only); auto (default): "
        "continuation when the transcript is known", choices=("auto", "clone", "continuation"), unset="auto"
    ),
    "instructions": Option("--instructions", str, "a style instruction for the prompt (chat-layout models)"),
    "language": Option("--language", str, "the language of the text, e.g. English, Chinese (the prompt's language)"),
    "duration": Option("--duration", float, "target length of the speech in seconds (1 s = 12.5 frames)"),
    "depth": Option("--depth", _auto_or(int, "an integer"), "RVQ layers K in 1..N, 0.125 kbps each, or auto (the "
                    "engine chooses from its load); default: all N"),
    "bitrate_kbps": Option("--bitrate-kbps", _auto_or(float, "a number"), "the depth as a bitrate, 0.125 kbps per "
                           "layer (rounded to the nearest layer), or auto; instead of --depth"),
    "min_depth": Option("--min-depth", int, "with --depth auto: the lowest depth the engine may choose (1)"),
    "max_depth": Option("--max-depth", int, "with --depth auto: the highest depth the engine may choose (N)"),
    "max_new_frames": Option("--max-new-frames", int, "frame budget per text segment, 80 ms frames (default: from "
                             "the text length)"),
    "min_new_frames": Option("--min-new-frames", int, "frames before the end of speech may be chosen (0)"),
    "do_sample": Option("--greedy", None, "greedy decoding for every channel (no sampling)", const=False),
    "temperature": Option("--temperature", float, "audio sampling temperature (1.0; 0 = greedy)"),
    "top_p": Option("--top-p", float, "audio nucleus sampling mass in (0, 1] (0.95)"),
    "top_k": Option("--top-k", int, "audio top-k, 0 disables (50)"),
    "repetition_penalty": Option("--repetition-penalty", float, "audio repetition penalty > 0, 1 = off (1.1)"),
    "control_temperature": Option("--control-temperature", float, "channel 0 (continue or end) temperature (1.5)"),
    "control_top_p": Option("--control-top-p", float, "channel 0 nucleus sampling mass in (0, 1] (1.0)"),
    "control_top_k": Option("--control-top-k", int, "channel 0 top-k, 0 disables (50)"),
    "control_tokens": Option("--control-tokens", str, "channel 0 samples continue/end only (audio, default) or the "
                             "whole text vocabulary as the released code does (full)", choices=("audio", "full")),
    "seed": Option("--seed", int, "random seed for reproducible sampling (default: a fresh one)"),
}  # fmt: skip
CLI_LABELS = {name: option.flag for name, option in REQUEST_OPTIONS.items()}  # request field -> its option


def add_request_options(group: argparse.ArgumentParser | Any, names: list[str] | tuple[str, ...]) -> None:
    """Adds the options of the request fields `names` (see `REQUEST_OPTIONS`) to a parser or argument group; each
    stores its value under the field's name, None when not given."""
    for name in names:
        option = REQUEST_OPTIONS[name]
        if option.type is None:
            group.add_argument(option.flag, dest=name, action="store_const", const=option.const, help=option.help)
        else:
            metavar = None if option.choices else option.flag.lstrip("-").replace("-", "_").upper()
            group.add_argument(
                option.flag, dest=name, type=option.type, choices=option.choices, metavar=metavar, help=option.help
            )


def request_values(args: argparse.Namespace, names: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """The given request fields of parsed arguments (field -> value; options not given are left out)."""
    values = {}
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value != REQUEST_OPTIONS[name].unset:
            values[name] = value
    return values


def checkpoint_limits(model_dir: str | Path, codec_dir: str | Path) -> Any:
    """The `Limits` a request can be checked against before any weights are read: the model's layers and codebook
    size (its config.json) and the codec's frame rate (its config.json). The frame limit of the engine is checked when
    the service is loaded.

    Raises:
        CheckpointError: a config.json that does not parse.
    """
    from cat_tts.codec.config import CodecConfig
    from cat_tts.inference import Limits
    from cat_tts.model.config import CatTTSConfig
    from cat_tts.weights import read_config_json

    model = CatTTSConfig.from_dict(read_config_json(model_dir))
    codec = CodecConfig.from_dict(read_config_json(codec_dir))
    return Limits(n_vq=model.n_vq, frame_rate=codec.frame_rate, codebook_size=model.audio_vocab_size)


def engine_failure(err: BaseException) -> str | None:
    """The one-line message of an engine that could not run a request (none of these is the user's input), or None
    for any other exception."""
    from cat_tts.generation import EngineClosed, EngineError, QueueFull

    text = " ".join(str(err).split())
    if isinstance(err, QueueFull):
        return f"the engine is busy (every slot and its queue are taken){': ' + text if text else ''}; retry later"
    if isinstance(err, EngineClosed):
        return f"the engine shut down before the request finished{': ' + text if text else ''}"
    if isinstance(err, EngineError):
        return f"the engine failed{': ' + text if text else ''} (the log has the traceback)"
    return None
