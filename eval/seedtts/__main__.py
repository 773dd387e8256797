"""Seed-TTS-Eval harness with a bitrate (depth) sweep.

    python -m eval.seedtts generate --meta testset/en/meta.lst --model M --codec C --depths 8 16 32 --out runs/en
    python -m eval.seedtts score --meta testset/en/meta.lst --wavs runs/en/depth_8 --lang en --sim-model SV.pth
    python -m eval.seedtts score --meta testset/en/meta.lst --ground-truth --lang en --out runs/en/ground_truth ...
    python -m eval.seedtts report runs/en
    python -m eval.seedtts convert-sim wavlm_large_finetune.pth wavlm_large_finetune.safetensors

See eval/README.md for the test set, the scoring models and how to read the sweep.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

EXIT_OK, EXIT_ERROR, EXIT_FAILURES = 0, 1, 3


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="synthesise every usable test line at each depth (resumable)",
        description="synthesise every usable test line at each depth (resumable)",
    )
    p.add_argument("--meta", required=True, type=Path, help="test list (e.g. seedtts_testset/en/meta.lst)")
    p.add_argument("--model", required=True, help="CAT-TTS model directory or hub id")
    p.add_argument("--codec", required=True, help="CAT codec directory or hub id")
    p.add_argument("--depths", required=True, type=int, nargs="+", help="depths K (1..32) to generate, e.g. 8 16 32")
    p.add_argument("--out", required=True, type=Path, help="sweep directory; wavs go to OUT/depth_<K>/<utt>.wav")
    p.add_argument("--batch-size", type=int, default=1, help="utterances per synthesis call (default 1)")
    p.add_argument("--seed", type=int, default=0, help="base seed; each utterance gets seed + crc32(utt)")
    p.add_argument(
        "--mode",
        choices=["continuation", "clone"],
        default="continuation",
        help="continuation: give the prompt transcript (default); clone: prompt audio only",
    )
    p.add_argument("--device", default=None, help="torch device (default: the pipeline's choice)")
    p.add_argument("--dtype", default=None, help="model dtype, e.g. bfloat16 (default: the pipeline's choice)")
    p.add_argument(
        "--max-new-frames",
        type=int,
        default=None,
        help="frame cap per text chunk (12.5 frames/s; default: from the text length)",
    )
    p.add_argument(
        "--min-new-frames", type=int, default=None, help="frames generated before the end may be chosen, per chunk"
    )
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: pipeline's)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold (default: pipeline's)")
    p.add_argument("--top-k", type=int, default=None, help="top-k sampling (default: pipeline's)")
    p.add_argument("--repetition-penalty", type=float, default=None, help="repetition penalty (default: pipeline's)")


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


def load_pipeline(args: argparse.Namespace):
    """The CAT-TTS pipeline for `generate` (tests replace this function to inject a stand-in)."""
    try:
        from cat_tts.inference import CatTTS
    except ImportError as err:
        raise ImportError(f"cat_tts.inference is not available ({err}); install cat-tts") from err
    kwargs = {}
    if args.device:
        kwargs["device"] = args.device
    if args.dtype:
        import torch

        dtype = getattr(torch, args.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"--dtype must be a torch dtype name such as bfloat16, got {args.dtype!r}")
        kwargs["dtype"] = dtype
    return CatTTS.from_pretrained(model=args.model, codec=args.codec, **kwargs)


def _generate(args: argparse.Namespace) -> int:
    from eval.seedtts.generate import check_depths, count_missing, generate_testset
    from eval.seedtts.testset import read_testset

    depths = check_depths(args.depths)
    testset = read_testset(args.meta)
    for bad in testset.bad_lines:
        print(f"unusable test line, not generated: {bad.describe()}", file=sys.stderr)
    if not testset.items:
        raise ValueError(f"{args.meta} has no usable line")
    sampling = {
        k: v
        for k, v in (
            ("temperature", args.temperature),
            ("top_p", args.top_p),
            ("top_k", args.top_k),
            ("repetition_penalty", args.repetition_penalty),
            ("max_new_frames", args.max_new_frames),
            ("min_new_frames", args.min_new_frames),
        )
        if v is not None
    }
    # load the model only when something is left to synthesise
    pipeline = load_pipeline(args) if count_missing(testset, args.out, depths) else None
    report = generate_testset(
        testset,
        pipeline,
        args.out,
        depths,
        batch_size=args.batch_size,
        seed=args.seed,
        sampling=sampling,
        mode=args.mode,
        progress=True,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bad_lines.json").write_text(
        json.dumps(
            [{"utt": b.utt, "line_no": b.line_no, "reason": b.reason} for b in testset.bad_lines],
            indent=1,
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )
    for k in depths:
        print(
            f"depth {k}: wrote {len(report.written[k])}, kept {len(report.kept[k])}, "
            f"failed {len(report.failed[k])} -> {args.out / f'depth_{k}'}"
        )
    if testset.bad_lines:
        print(f"{len(testset.bad_lines)} unusable test line(s), listed in {args.out / 'bad_lines.json'}")
    if report.n_failed:
        print(
            f"error: {report.n_failed} synthesis failure(s); see depth_<K>/failures.json and rerun to retry",
            file=sys.stderr,
        )
        return EXIT_FAILURES
    return EXIT_OK


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
            raise ValueError(f"--wavs {wav_dir} is not a directory")
    if args.wavs and len(args.wavs) > 1 and (args.out is not None or args.depth is not None):
        raise ValueError("--out and --depth apply to a single --wavs directory; results go next to each wav directory")
    testset = read_testset(args.meta, require_ground_truth=args.ground_truth)
    for bad in testset.bad_lines:
        print(f"unusable test line, not scored: {bad.describe()}", file=sys.stderr)
    if not testset.items:
        raise ValueError(f"{args.meta} has no usable line")
    if args.ground_truth and args.out is None:
        raise ValueError("--ground-truth needs --out (e.g. runs/en/ground_truth)")
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
    """Run the CLI; returns the exit code (1 with a one-line message on bad input)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    handlers = {"generate": _generate, "score": _score, "report": _report, "convert-sim": _convert}
    try:
        return handlers[args.command](args)
    except (ValueError, ImportError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
