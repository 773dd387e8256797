"""Zero-shot voice cloning at a chosen depth (bitrate) from the command line.

    python infer.py --text "Hello from cat-tts." --prompt-audio ref.wav --depth 16 -o out.wav
    python infer.py --text-file book.txt --prompt-audio ref.wav --prompt-text "what ref.wav says" -o book.wav
    python infer.py --jsonl jobs.jsonl --out-dir outs/ --depth 8        # batch; finished outputs are skipped
    python infer.py --model tiny/model --codec tiny/codec ...           # local directories (offline)

Depth K in 1..32 is the number of RVQ layers generated and decoded: bitrate = 0.125 kbps x K.
Each --jsonl line is an object with "text", "prompt_audio", optional "prompt_text" and "id" (the output
name, default the line number); relative audio paths are resolved against the jsonl file's folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

DEFAULT_MODEL = "OpenMOSS-Team/MOSS-TTS-Local-Transformer"
DEFAULT_CODEC = "OpenMOSS-Team/MOSS-Audio-Tokenizer"
MAX_DEPTH = 32


class CliError(Exception):
    """Bad command-line input; printed as one line."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="infer.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_argument_group("input")
    src.add_argument("--text", help="text to speak")
    src.add_argument("--text-file", help="read the text to speak from this UTF-8 file (long text is chunked)")
    src.add_argument("--prompt-audio", help="reference clip of the voice to clone (any format soundfile reads)")
    src.add_argument("--prompt-text", help="transcript of the reference clip (enables continuation mode)")
    src.add_argument(
        "--mode",
        choices=["auto", "clone", "continuation"],
        default="auto",
        help="prompt mode: auto = continuation when --prompt-text is given, else clone (default auto)",
    )
    src.add_argument("--jsonl", help="batch mode: one JSON object per line (see above)")
    src.add_argument("--out-dir", help="batch mode: output folder (<id>.wav per line)")
    src.add_argument("--batch-size", type=int, default=4, help="batch mode: text chunks generated together (4)")
    out = p.add_argument_group("output")
    out.add_argument("-o", "--output", default="out.wav", help="output wav file (24 kHz mono), default out.wav")
    out.add_argument("--stream", action="store_true", help="write audio to the file as frames are generated")
    gen = p.add_argument_group("generation")
    gen.add_argument("--depth", type=int, default=MAX_DEPTH, help="RVQ layers K in 1..32 (0.125 kbps each), default 32")
    gen.add_argument("--seed", type=int, default=None, help="random seed for reproducible sampling")
    gen.add_argument("--temperature", type=float, default=None, help="audio sampling temperature (1.0; <= 0 greedy)")
    gen.add_argument("--top-p", type=float, default=None, help="audio nucleus sampling mass in (0, 1] (0.95)")
    gen.add_argument("--top-k", type=int, default=None, help="audio top-k, 0 disables (50)")
    gen.add_argument("--repetition-penalty", type=float, default=None, help="audio repetition penalty > 0 (1.1)")
    gen.add_argument("--greedy", action="store_true", help="greedy decoding for every channel (no sampling)")
    gen.add_argument("--max-new-frames", type=int, default=None, help="frame budget per text chunk (12.5 per second)")
    gen.add_argument("--min-new-frames", type=int, default=None, help="frames before the end may be chosen (0)")
    mdl = p.add_argument_group("model")
    mdl.add_argument("--model", default=DEFAULT_MODEL, help=f"TTS model directory or hub id ({DEFAULT_MODEL})")
    mdl.add_argument("--codec", default=DEFAULT_CODEC, help=f"codec directory or hub id ({DEFAULT_CODEC})")
    mdl.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    mdl.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="model dtype")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def sampling_kwargs(args: argparse.Namespace) -> dict:
    """Sampling options given on the command line (others keep the released defaults)."""
    kw = {}
    for name in ("temperature", "top_p", "top_k", "repetition_penalty"):
        value = getattr(args, name)
        if value is not None:
            kw[name] = value
    if args.greedy:
        kw["do_sample"] = False
    if args.min_new_frames is not None:
        kw["min_new_frames"] = args.min_new_frames
    return kw


def check_args(args: argparse.Namespace) -> None:
    """Checks everything that can be checked before loading the model."""
    if not 1 <= args.depth <= MAX_DEPTH:
        raise CliError(f"--depth must be in 1..{MAX_DEPTH}, got {args.depth}")
    if args.max_new_frames is not None and args.max_new_frames < 1:
        raise CliError(f"--max-new-frames must be >= 1, got {args.max_new_frames}")
    if args.min_new_frames is not None and args.min_new_frames < 0:
        raise CliError(f"--min-new-frames must be >= 0, got {args.min_new_frames}")
    if args.temperature is not None and args.temperature != args.temperature:
        raise CliError("--temperature must be a number")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise CliError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.top_k is not None and args.top_k < 0:
        raise CliError(f"--top-k must be >= 0, got {args.top_k}")
    if args.repetition_penalty is not None and not args.repetition_penalty > 0:
        raise CliError(f"--repetition-penalty must be > 0, got {args.repetition_penalty}")
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.jsonl:
        if args.text or args.text_file:
            raise CliError("--jsonl cannot be combined with --text/--text-file")
        if not args.out_dir:
            raise CliError("--jsonl needs --out-dir")
        if args.stream:
            raise CliError("--stream works with a single --text, not with --jsonl")
        return
    if bool(args.text is not None) == bool(args.text_file):
        raise CliError("give exactly one of --text, --text-file or --jsonl")
    if args.text_file:
        try:
            args.text = Path(args.text_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise CliError(f"cannot read --text-file {args.text_file!r}: {err}") from err
    if not args.text.strip():
        raise CliError("the text is empty")
    if not args.prompt_audio:
        raise CliError("--prompt-audio is required (a short clip of the voice to clone)")
    if not Path(args.prompt_audio).is_file():
        raise CliError(f"--prompt-audio file not found: {args.prompt_audio}")
    if args.mode == "continuation" and not args.prompt_text:
        raise CliError("--mode continuation needs --prompt-text (the transcript of the reference clip)")
    if Path(args.output).suffix.lower() != ".wav":
        raise CliError(f"--output must end with .wav, got {args.output}")


def read_jobs(path: str) -> list[dict]:
    """Parses and checks a jsonl batch file; returns one dict per line."""
    base = Path(path).resolve().parent
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise CliError(f"cannot read --jsonl {path!r}: {err}") from err
    jobs, seen = [], set()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise CliError(f"{path}:{n}: not valid JSON ({err.msg})") from err
        if not isinstance(obj, dict):
            raise CliError(f"{path}:{n}: expected a JSON object")
        text, audio = obj.get("text"), obj.get("prompt_audio")
        if not isinstance(text, str) or not text.strip():
            raise CliError(f"{path}:{n}: 'text' is missing or empty")
        if not isinstance(audio, str):
            raise CliError(f"{path}:{n}: 'prompt_audio' is missing")
        audio_path = Path(audio) if Path(audio).is_absolute() else base / audio
        if not audio_path.is_file():
            raise CliError(f"{path}:{n}: prompt_audio file not found: {audio_path}")
        name = str(obj.get("id", n))
        if not name or "/" in name or name.startswith("."):
            raise CliError(f"{path}:{n}: 'id' must be a plain file name, got {name!r}")
        if name in seen:
            raise CliError(f"{path}:{n}: duplicate id {name!r}")
        seen.add(name)
        prompt_text = obj.get("prompt_text")
        if prompt_text is not None and not isinstance(prompt_text, str):
            raise CliError(f"{path}:{n}: 'prompt_text' must be a string")
        jobs.append({"id": name, "text": text, "reference_audio": str(audio_path), "reference_text": prompt_text})
    if not jobs:
        raise CliError(f"{path}: no jobs")
    return jobs


class _Progress:
    """A tqdm bar over generated frames, created on the first frame (so input errors print one clean line)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None

    def __call__(self, step) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(desc="frames", unit="frame", disable=self.quiet, file=sys.stderr, dynamic_ncols=True)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _save(path: Path, audio, sample_rate: int) -> None:
    """Writes atomically, so an interrupted run never leaves a file that looks finished."""
    from cat_tts.audio import save_audio

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial.wav")
    save_audio(tmp, audio, sample_rate)
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> int:
    check_args(args)
    jobs = read_jobs(args.jsonl) if args.jsonl else None
    from cat_tts.codec.config import bitrate_kbps
    from cat_tts.inference import CatTTS

    mode = None if args.mode == "auto" else args.mode
    tts = CatTTS.from_pretrained(model=args.model, codec=args.codec, device=args.device, dtype=args.dtype)
    kbps = bitrate_kbps(args.depth)
    print(f"depth K = {args.depth} layers, bitrate {kbps:.3f} kbps")
    sampling = sampling_kwargs(args)

    progress = _Progress(args.quiet)
    try:
        if jobs is not None:
            return _run_jobs(args, tts, jobs, mode, sampling, progress)
        return _run_one(args, tts, mode, sampling, progress)
    finally:
        progress.close()


def _run_jobs(args, tts, jobs: list[dict], mode, sampling: dict, on_frame: _Progress) -> int:
    """Batch mode: synthesise every unfinished jsonl job."""
    out_dir = Path(args.out_dir)
    todo = [j for j in jobs if not (out_dir / f"{j['id']}.wav").is_file()]
    if len(todo) < len(jobs):
        print(f"skipping {len(jobs) - len(todo)} finished outputs in {out_dir}")
    start, total_audio = time.perf_counter(), 0.0
    for i in range(0, len(todo), args.batch_size):
        group = todo[i : i + args.batch_size]
        items = [{k: j[k] for k in ("text", "reference_audio", "reference_text")} for j in group]
        for item in items:
            if mode:
                item["mode"] = mode
        try:
            results = tts.synthesize_batch(
                items,
                depth=args.depth,
                seed=args.seed,
                batch_size=args.batch_size,
                max_new_frames=args.max_new_frames,
                on_frame=on_frame,
                **sampling,
            )
        except ValueError as err:  # name the job, not the index inside this group
            match = re.match(r"item (\d+): (.*)", str(err))
            if match is None:
                raise
            raise CliError(f"{args.jsonl} id {group[int(match[1])]['id']!r}: {match[2]}") from err
        for job, (audio, sr) in zip(group, results, strict=True):
            _save(out_dir / f"{job['id']}.wav", audio, sr)
            total_audio += len(audio) / sr
    on_frame.close()
    elapsed = time.perf_counter() - start
    rtf = elapsed / total_audio if total_audio else float("nan")
    print(f"wrote {len(todo)} files to {out_dir}: {total_audio:.2f} s of audio in {elapsed:.2f} s (RTF {rtf:.3f})")
    return 0


def _run_one(args, tts, mode, sampling: dict, on_frame: _Progress) -> int:
    """One text (any length) to one wav file, one-shot or streamed."""
    out = Path(args.output)
    common = dict(
        reference_text=args.prompt_text,
        depth=args.depth,
        seed=args.seed,
        mode=mode,
        max_new_frames=args.max_new_frames,
        on_frame=on_frame,
        **sampling,
    )
    start = time.perf_counter()
    if args.stream:
        import numpy as np
        import soundfile as sf

        out.parent.mkdir(parents=True, exist_ok=True)
        samples, first = 0, None
        with sf.SoundFile(str(out), "w", samplerate=tts.sample_rate, channels=1, subtype="PCM_16") as f:
            for piece in tts.stream(args.text, args.prompt_audio, **common):
                if first is None:
                    first = time.perf_counter() - start
                f.write(np.clip(piece, -1.0, 1.0))  # as save_audio does
                f.flush()
                samples += len(piece)
        sr = tts.sample_rate
        seconds = samples / sr
    else:
        audio, sr = tts.synthesize(args.text, args.prompt_audio, **common)
        _save(out, audio, sr)
        seconds = len(audio) / sr
    on_frame.close()
    elapsed = time.perf_counter() - start
    rtf = elapsed / seconds if seconds else float("nan")
    extra = f", first audio after {first:.2f} s" if args.stream and first is not None else ""
    print(f"wrote {out}: {seconds:.2f} s of audio at {sr} Hz in {elapsed:.2f} s (RTF {rtf:.3f}{extra})")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except CliError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ValueError as err:  # InputError, AudioError, ModelLoadError and other bad-input errors
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
