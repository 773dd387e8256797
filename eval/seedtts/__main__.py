"""Seed-TTS-Eval harness with a bitrate (depth) sweep.

    python -m eval.seedtts generate --meta testset/en/meta.lst --model M --codec C --depths 8 16 32 --out runs/en
    python -m eval.seedtts score --meta testset/en/meta.lst --wavs runs/en/depth_8 --lang en --sim-model SV.pth
    python -m eval.seedtts score --meta testset/en/meta.lst --ground-truth --lang en --out runs/en/ground_truth ...
    python -m eval.seedtts report runs/en
    python -m eval.seedtts convert-sim wavlm_large_finetune.pth wavlm_large_finetune.safetensors

`generate` runs on the inference engine (`--slots` utterances generated together) and is resumable; a bad test line
or reference clip fails alone (listed in OUT/depth_<K>/failures.jsonl). Exit codes: 0 done, 2 (`USER_ERROR_EXIT_CODE`)
for bad input with a one-line reason, or when any utterance failed; 130 interrupted. See eval/README.md for the test
set, the scoring models and how to read the sweep.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cat_tts.cli import (
    COMPILE_HELP,
    COMPILE_MODES,
    ENGINE_FAILURE_EXIT_CODE,
    add_request_options,
    check_writable_dir,
    engine_failure,
    request_values,
)
from cat_tts.errors import USER_ERROR_EXIT_CODE, FieldError, UserError

if TYPE_CHECKING:
    from cat_tts.generation import EngineConfig
    from cat_tts.inference import CatTTS

EXIT_OK = 0
INTERRUPTED_EXIT_CODE = 130
# Request fields the generate command takes from its options for every utterance (the test list gives the text and
# the voice, --depths / --bitrates-kbps the fixed depths of the sweep (so no depth "auto" and its range), --seed the
# per-utterance seeds; --mode and --language have their own options here): the same options as infer.py.
RUN_FIELDS = (
    "instructions", "duration", "max_new_frames", "min_new_frames", "do_sample", "temperature", "top_p", "top_k",
    "repetition_penalty", "control_temperature", "control_top_p", "control_top_k", "control_tokens",
)  # fmt: skip
SET_LANGUAGES = {"en": "English", "zh": "Chinese"}  # --language auto: the language of each Seed-TTS-Eval set folder


class CliError(UserError):
    """Bad command-line input; printed as one line."""


def _add_generate(sub: argparse._SubParsersAction) -> None:
    from cat_tts.generation import EngineConfig
    from cat_tts.weights import DEFAULT_CODEC, DEFAULT_MODEL, DTYPE_CHOICES

    engine = EngineConfig()
    p = sub.add_parser(
        "generate",
        help="synthesise every usable test line at each depth on the inference engine (resumable)",
        description="synthesise every usable test line at each depth on the inference engine (resumable); a bad "
        "line or reference clip fails alone, the failures are listed in OUT/depth_<K>/failures.jsonl and the exit "
        f"code is {USER_ERROR_EXIT_CODE}",
    )
    p.add_argument("--meta", required=True, type=Path, help="test list (e.g. seedtts_testset/en/meta.lst)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"CAT-TTS model directory or hub id ({DEFAULT_MODEL})")
    p.add_argument("--codec", default=DEFAULT_CODEC, help=f"CAT codec directory or hub id ({DEFAULT_CODEC})")
    sweep = p.add_mutually_exclusive_group(required=True)
    sweep.add_argument("--depths", type=int, nargs="+", help="depths K in 1..N (N: the model's layers) to generate")
    sweep.add_argument(
        "--bitrates-kbps",
        type=float,
        nargs="+",
        help="the depths as bitrates, 0.125 kbps per layer (rounded to the nearest layer); instead of --depths",
    )
    p.add_argument("--out", required=True, type=Path, help="sweep directory; wavs go to OUT/depth_<K>/<utt>.wav")
    p.add_argument(
        "--slots",
        "--batch-size",
        dest="slots",
        type=int,
        default=engine.max_slots,
        help=f"utterances the engine generates together (its slots; default {engine.max_slots}); "
        "--batch-size is the old name",
    )
    p.add_argument("--compile", default="auto", choices=list(COMPILE_MODES), help=COMPILE_HELP)
    p.add_argument("--seed", type=int, default=0, help="base seed; each utterance gets seed + crc32(utt)")
    p.add_argument(
        "--mode",
        choices=["continuation", "clone"],
        default="continuation",
        help="continuation: give the prompt transcript (default); clone: prompt audio only",
    )
    p.add_argument(
        "--language",
        default=None,
        help="the language of the test set's text for the prompt: a name (English), SET=NAME pairs chosen by the "
        "list's folder (en=English,zh=Chinese), or auto (en: English, zh: Chinese); default: none",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument(
        "--dtype", default="auto", choices=DTYPE_CHOICES, help="model dtype (auto: bfloat16 on CUDA, float32 on CPU)"
    )
    add_request_options(p.add_argument_group("every utterance (defaults: the released model's settings)"), RUN_FIELDS)


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="WER/CER + SIM of one directory of outputs (or of the test set's recordings)",
        description="WER/CER + SIM of one directory of outputs (or of the test set's recordings)",
    )
    p.add_argument("--meta", required=True, type=Path, help="the test list the outputs were generated from")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--wavs",
        type=Path,
        nargs="+",
        help="directories with <utt>.wav, e.g. runs/en/depth_* (several: the models load once, prompts embed once)",
    )
    src.add_argument("--ground-truth", action="store_true", help="score the test set's own recordings (wavs/<utt>.wav)")
    p.add_argument(
        "--lang", required=True, choices=["en", "zh"], help="en: Whisper WER; zh: Paraformer CER (hard set too)"
    )
    p.add_argument("--out", type=Path, default=None, help="where to write results (default: each --wavs directory)")
    p.add_argument("--depth", type=int, default=None, help="depth K of the outputs (default: from each depth_<K> name)")
    p.add_argument("--asr-model", default=None, help="Whisper id/dir (en) or FunASR model name (zh)")
    p.add_argument(
        "--sim-model",
        default=None,
        type=Path,
        help="wavlm_large_finetune.pth or its .safetensors conversion (omit to skip SIM)",
    )
    p.add_argument("--device", default="cpu", help="torch device for the scoring models (default cpu)")


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="rebuild summaries, the Markdown table and the plots of a sweep directory",
        description="rebuild summaries, the Markdown table and the plots of a sweep directory",
    )
    p.add_argument("dir", type=Path, help="sweep directory holding depth_<K>/ (and ground_truth/) results")


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert-sim",
        help="one-time safe conversion of wavlm_large_finetune.pth to safetensors",
        description="one-time safe conversion of wavlm_large_finetune.pth to safetensors",
    )
    p.add_argument("src", type=Path, help="wavlm_large_finetune.pth")
    p.add_argument("dst", type=Path, help="output .safetensors")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (also used by the docs)."""
    parser = argparse.ArgumentParser(
        prog="python -m eval.seedtts", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    _add_score(sub)
    _add_report(sub)
    _add_convert(sub)
    return parser


def language_for(spec: str | None, set_name: str) -> str | None:
    """The language of test set `set_name` (the list's folder: en, zh) from a --language value (None: none).

    Raises:
        CliError: a SET=NAME list that does not parse.
    """
    if spec is None or not spec.strip():
        return None
    if spec.strip().lower() == "auto":
        return SET_LANGUAGES.get(set_name)
    if "=" not in spec:
        return spec
    pairs = {}
    for part in spec.split(","):
        key, sep, name = part.partition("=")
        if not sep or not key.strip() or not name.strip():
            raise CliError(f"--language: expected NAME or SET=NAME pairs (en=English,zh=Chinese), got {spec!r}")
        pairs[key.strip()] = name.strip()
    return pairs.get(set_name)


def request_fields(args: argparse.Namespace, set_name: str) -> dict:
    """The request fields every utterance of test set `set_name` takes, checked now (one line naming the option).

    Returns:
        field name -> value (options not given are left out: the request's defaults).
    """
    fields = request_values(args, RUN_FIELDS)
    language = language_for(args.language, set_name)
    if language is not None:
        fields["language"] = language
    check_fields(fields)
    return fields


def check_fields(fields: dict, limits: Any = None) -> None:
    """Checks the run's request fields (against the model's `limits` once it is loaded).

    Raises:
        CliError: naming the option of the first bad field.
    """
    from cat_tts.inference import SpeechRequest
    from eval.seedtts.generate import EVAL_LABELS

    try:
        SpeechRequest.from_fields({**fields, "text": "-"}, limits)  # a stand-in text: the lines bring their own
    except FieldError as err:
        raise CliError(" ".join(err.labelled(EVAL_LABELS).split())) from err


def _sweep_option(args: argparse.Namespace) -> str:
    return "--depths" if args.depths is not None else "--bitrates-kbps"


def sweep_depths(args: argparse.Namespace) -> list[int]:
    """The depths of --depths, or of --bitrates-kbps (0.125 kbps per layer)."""
    from cat_tts.generation import GenerationConfig
    from eval.seedtts.generate import EVAL_LABELS

    if args.depths is not None:
        return list(args.depths)
    try:
        return [GenerationConfig(bitrate_kbps=kbps).depth for kbps in args.bitrates_kbps]
    except FieldError as err:
        raise CliError(" ".join(err.labelled(EVAL_LABELS).split())) from err


def engine_config(args: argparse.Namespace) -> EngineConfig:
    """The engine's settings (slots, compilation), checked now."""
    from cat_tts.generation import EngineConfig

    if args.slots < 1:
        raise CliError(f"--slots must be >= 1, got {args.slots}")
    return EngineConfig(max_slots=args.slots, compile=COMPILE_MODES[args.compile])


def load_pipeline(args: argparse.Namespace, depths: list[int]) -> CatTTS:
    """The CAT-TTS pipeline for `generate` (tests replace this function to inject a stand-in).

    The depths are checked against the model's config.json, and the codec directory's kind is checked, before any
    weights are read.
    """
    from cat_tts.inference import CatTTS
    from cat_tts.weights import resolve_checkpoint
    from eval.seedtts.generate import check_depths, model_layers

    model_dir, n_layers = model_layers(args.model)
    try:
        check_depths(depths, n_layers)
    except UserError as err:
        raise CliError(f"{_sweep_option(args)}: {err} (model {args.model} has N = {n_layers} layers)") from err
    codec_dir = resolve_checkpoint(args.codec, "codec")
    return CatTTS.from_pretrained(
        model=model_dir, codec=codec_dir, device=args.device, dtype=args.dtype, engine=engine_config(args)
    )


def _generate(args: argparse.Namespace) -> int:
    from eval.seedtts.generate import check_depths, count_missing, generate_testset
    from eval.seedtts.results import write_json
    from eval.seedtts.testset import read_testset

    asked = sweep_depths(args)
    try:
        depths = check_depths(asked)
    except UserError as err:
        raise CliError(f"{_sweep_option(args)}: {err}") from err
    fields = request_fields(args, args.meta.resolve().parent.name)
    engine_config(args)
    check_writable_dir(args.out, "--out")
    testset = read_testset(args.meta)
    if not testset.items:
        reasons = "; ".join(b.describe() for b in testset.bad_lines[:3])
        raise CliError(f"{args.meta} has no usable line" + (f" ({reasons})" if reasons else ""))
    for bad in testset.bad_lines:
        print(f"unusable test line, not generated: {bad.describe()}", file=sys.stderr)
    write_json(
        args.out / "bad_lines.json",
        [{"utt": b.utt, "line_no": b.line_no, "reason": b.reason} for b in testset.bad_lines],
    )
    # load the model only when something is left to synthesise
    pipeline = load_pipeline(args, depths) if count_missing(testset, args.out, depths) else None
    if pipeline is not None:
        check_fields(fields, pipeline.limits)  # e.g. a --duration beyond the engine's frame limit
        print(f"model with N = {pipeline.n_vq} layers; depths {', '.join(map(str, depths))}; {args.slots} engine slots")
    report = generate_testset(
        testset, pipeline, args.out, depths, seed=args.seed, fields=fields, mode=args.mode, progress=True
    )
    for k in depths:
        print(
            f"depth {k}: wrote {len(report.written[k])}, kept {len(report.kept[k])}, "
            f"failed {len(report.failed[k])} -> {args.out / f'depth_{k}'}"
        )
    if not report.n_failed:
        return EXIT_OK
    # one line per failing test line and error, with the depths it failed at
    grouped: dict[tuple[int, str, str], list[int]] = {}
    for k in depths:
        for f in report.failed[k]:
            grouped.setdefault((f.line, f.utt, f.error), []).append(k)
    for (line, utt, error), ks in sorted(grouped.items()):
        where = "every depth" if len(ks) == len(depths) else "depth " + ", ".join(map(str, ks))
        print(f"failed: {utt} (line {line}), {where}: {error}", file=sys.stderr)
    n_lines = len({(line, utt) for line, utt, _ in grouped})
    n_total = len(testset.items) + len(testset.bad_lines)
    print(
        f"error: {n_lines} of {n_total} test lines failed; listed in "
        f"{', '.join(str(p) for p in report.failure_files)}; fix them and rerun (finished wavs are kept)",
        file=sys.stderr,
    )
    return USER_ERROR_EXIT_CODE


def load_scorers(args: argparse.Namespace):
    """(asr, sim) for `score` (tests replace this function to inject tiny models)."""
    from eval.seedtts.asr import load_asr
    from eval.seedtts.sim import SpeakerSimilarity

    asr = load_asr(args.lang, args.asr_model, device=args.device)
    sim = SpeakerSimilarity.from_checkpoint(args.sim_model, device=args.device) if args.sim_model else None
    return asr, sim


def _score(args: argparse.Namespace) -> int:
    from eval.seedtts.score import score_testset
    from eval.seedtts.testset import read_testset

    for wav_dir in args.wavs or []:
        if not wav_dir.is_dir():
            raise CliError(f"--wavs {wav_dir} is not a directory")
    if args.wavs and len(args.wavs) > 1 and (args.out is not None or args.depth is not None):
        raise CliError("--out and --depth apply to a single --wavs directory; results go next to each wav directory")
    if args.depth is not None and args.depth < 1:
        raise CliError(f"--depth must be >= 1, got {args.depth}")
    if args.ground_truth and args.out is None:
        raise CliError("--ground-truth needs --out (e.g. runs/en/ground_truth)")
    if args.sim_model is not None and not args.sim_model.is_file():
        raise CliError(f"--sim-model {args.sim_model} does not exist (give wavlm_large_finetune.pth or its conversion)")
    for out in [args.out] if args.out is not None else args.wavs:  # results are written after the ASR work
        check_writable_dir(out, "--out" if args.out is not None else "--wavs")
    testset = read_testset(args.meta, require_ground_truth=args.ground_truth)
    for bad in testset.bad_lines:
        print(f"unusable test line, not scored: {bad.describe()}", file=sys.stderr)
    if not testset.items:
        raise CliError(f"{args.meta} has no usable line")
    if args.sim_model is None:
        print("note: no --sim-model given, SIM is not computed", file=sys.stderr)
    asr, sim = load_scorers(args)
    for wav_dir in args.wavs or [None]:
        score_testset(
            testset,
            args.lang,
            asr,
            sim,
            wav_dir=wav_dir,
            out_dir=args.out,
            depth=args.depth,
            ground_truth=args.ground_truth,
            progress=True,
        )
        out = args.out or wav_dir
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        sim_txt = "–" if summary["sim"] is None else f"{summary['sim']:.3f}"
        scored_txt = "–" if summary["error_rate_scored"] is None else f"{summary['error_rate_scored']:.2f}%"
        print(
            f"{summary['metric']} {summary['error_rate']:.2f}% (scored only: {scored_txt}), "
            f"SIM {sim_txt}, scored {summary['n_scored']}/{summary['n_items']} "
            f"({summary['n_bad_lines']} unusable lines) -> {out}"
        )
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from eval.seedtts.report import build_report

    if not args.dir.is_dir():
        raise CliError(f"{args.dir} is not a directory (give the sweep directory holding depth_<K>/)")
    result = build_report(args.dir)
    print(result["table"], end="")
    for f in result["files"]:
        print(f"wrote {f}")
    return EXIT_OK


def _convert(args: argparse.Namespace) -> int:
    from eval.seedtts.sim import convert_checkpoint

    print(f"wrote {convert_checkpoint(args.src, args.dst)}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (`USER_ERROR_EXIT_CODE` with a one-line message on bad input)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    handlers = {"generate": _generate, "score": _score, "report": _report, "convert-sim": _convert}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("interrupted (finished files are kept; rerun to resume)", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    except (ValueError, ImportError, OSError) as err:  # UserError (bad lists, depths, checkpoints), missing extras
        print(f"error: {' '.join(str(err).split()) or type(err).__name__}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    except RuntimeError as err:  # the engine could not run (busy, shut down, failed): not the user's input
        message = engine_failure(err)
        if message is None:
            raise  # a bug: keep its traceback
        print(f"error: {message}", file=sys.stderr)
        return ENGINE_FAILURE_EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
