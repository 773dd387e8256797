"""Zero-shot voice cloning at a chosen depth (bitrate) from the command line.

    python infer.py --text "Hello from cat-tts." --prompt-audio ref.wav --depth 16 -o out.wav
    python infer.py --text-file book.txt --prompt-audio ref.wav --prompt-text "what ref.wav says" -o book.wav
    python infer.py --jsonl jobs.jsonl --out-dir outs/ --depth 8        # batch; finished outputs are skipped
    python infer.py --model tiny/model --codec tiny/codec ...           # local directories (offline)

Depth K in 1..N (N = the model's number of RVQ layers, 32 for the release) is the number of layers generated and
decoded: bitrate = 0.125 kbps x K. Each --jsonl line is an object with "text", "prompt_audio", optional
"prompt_text" and "id" (the output name, default the line number); relative audio paths are resolved against the
jsonl file's folder. A bad line or reference clip fails that job only: the others are generated, the failures are
listed at the end and in OUT_DIR/failures.jsonl, and the exit code is 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from cat_tts.cli import COMPILE_MODES, add_model_options, check_writable_dir, check_writable_file, generation_settings
from cat_tts.errors import USER_ERROR_EXIT_CODE, UserError

FAILURES_FILE = "failures.jsonl"
# Generation settings given on the command line (GenerationConfig fields; the options are --field-name).
SETTING_FLAGS = (
    "depth", "temperature", "top_p", "top_k", "repetition_penalty", "max_new_frames", "min_new_frames", "seed",
)  # fmt: skip


class CliError(UserError):
    """Bad command-line input; printed as one line."""


def build_parser() -> argparse.ArgumentParser:
    from cat_tts.inference import SynthesisConfig

    defaults = SynthesisConfig()
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
    src.add_argument("--instructions", default=None, help="a style instruction for the prompt (chat-layout models)")
    src.add_argument(
        "--max-reference-seconds",
        type=float,
        default=defaults.max_reference_seconds,
        help=f"longest accepted reference clip in seconds ({defaults.max_reference_seconds:g})",
    )
    src.add_argument("--jsonl", help="batch mode: one JSON object per line (see above)")
    src.add_argument("--out-dir", help="batch mode: output folder (<id>.wav per line)")
    src.add_argument(
        "--batch-size", type=int, default=8, help="requests generated together (the engine's slots; default 8)"
    )
    out = p.add_argument_group("output")
    out.add_argument("-o", "--output", default="out.wav", help="output wav file (24 kHz mono), default out.wav")
    out.add_argument("--stream", action="store_true", help="write audio to the file as frames are generated")
    gen = p.add_argument_group("generation (defaults: the released model's settings)")
    gen.add_argument("--depth", type=int, default=None, help="RVQ layers K in 1..N, 0.125 kbps each (default: all N)")
    gen.add_argument("--seed", type=int, default=None, help="random seed for reproducible sampling")
    gen.add_argument("--temperature", type=float, default=None, help="audio sampling temperature (1.0; 0 = greedy)")
    gen.add_argument("--top-p", type=float, default=None, help="audio nucleus sampling mass in (0, 1] (0.95)")
    gen.add_argument("--top-k", type=int, default=None, help="audio top-k, 0 disables (50)")
    gen.add_argument("--repetition-penalty", type=float, default=None, help="audio repetition penalty > 0 (1.1)")
    gen.add_argument("--greedy", action="store_true", help="greedy decoding for every channel (no sampling)")
    gen.add_argument("--max-new-frames", type=int, default=None, help="frame budget per text chunk (80 ms frames)")
    gen.add_argument("--min-new-frames", type=int, default=None, help="frames before the end may be chosen (0)")
    add_model_options(p.add_argument_group("model"))
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def generation_config(args: argparse.Namespace):
    """The command line's generation settings (unset options keep the released defaults; checked here)."""
    values = {field: getattr(args, field) for field in SETTING_FLAGS}
    if args.greedy:
        values["do_sample"] = False
    return generation_settings(values)


def check_args(args: argparse.Namespace) -> None:
    """Checks everything that can be checked before loading the model."""
    if args.depth is not None and args.depth < 1:
        raise CliError(f"--depth must be >= 1 (and at most the model's number of layers), got {args.depth}")
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not args.max_reference_seconds > 0:
        raise CliError(f"--max-reference-seconds must be > 0, got {args.max_reference_seconds}")
    if args.jsonl:
        if args.text or args.text_file:
            raise CliError("--jsonl cannot be combined with --text/--text-file")
        if not args.out_dir:
            raise CliError("--jsonl needs --out-dir")
        if args.stream:
            raise CliError("--stream works with a single --text, not with --jsonl")
        check_writable_dir(args.out_dir, "--out-dir")
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
    ref = Path(args.prompt_audio)
    if ref.is_dir():
        raise CliError(f"--prompt-audio {ref} is a directory; give an audio file")
    if not ref.is_file():
        raise CliError(f"--prompt-audio file not found: {ref}")
    if args.mode == "continuation" and not args.prompt_text:
        raise CliError("--mode continuation needs --prompt-text (the transcript of the reference clip)")
    if Path(args.output).suffix.lower() != ".wav":
        raise CliError(f"--output must end with .wav, got {args.output}")
    check_writable_file(args.output, "--output")


def read_jobs(path: str) -> tuple[list[dict], list[dict]]:
    """Parses a jsonl batch file: the usable jobs, and one failure record per unusable line."""
    base = Path(path).resolve().parent
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise CliError(f"cannot read --jsonl {path!r}: {err}") from err
    jobs, failures, seen = [], [], set()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            jobs.append(_parse_job(line, n, base, seen))
        except CliError as err:
            failures.append({"line": n, "id": _line_id(line, n), "error": str(err)})
    if not jobs and not failures:
        raise CliError(f"{path}: no jobs")
    return jobs, failures


def _line_id(line: str, n: int) -> str:
    try:
        obj = json.loads(line)
        return str(obj.get("id", n)) if isinstance(obj, dict) else str(n)
    except json.JSONDecodeError:
        return str(n)


def _parse_job(line: str, n: int, base: Path, seen: set[str]) -> dict:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise CliError(f"line {n}: not valid JSON ({err.msg})") from err
    if not isinstance(obj, dict):
        raise CliError(f"line {n}: expected a JSON object")
    text, audio = obj.get("text"), obj.get("prompt_audio")
    if not isinstance(text, str) or not text.strip():
        raise CliError(f"line {n}: 'text' is missing or empty")
    if not isinstance(audio, str):
        raise CliError(f"line {n}: 'prompt_audio' is missing")
    audio_path = Path(audio) if Path(audio).is_absolute() else base / audio
    name = str(obj.get("id", n))
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise CliError(f"line {n}: 'id' must be a plain file name, got {name!r}")
    if name in seen:
        raise CliError(f"line {n}: duplicate id {name!r}")
    seen.add(name)
    prompt_text = obj.get("prompt_text")
    if prompt_text is not None and not isinstance(prompt_text, str):
        raise CliError(f"line {n}: 'prompt_text' must be a string")
    return {"id": name, "line": n, "text": text, "reference_audio": str(audio_path), "reference_text": prompt_text}


class _Progress:
    """A tqdm bar over generated frames, created on the first frame (so input errors print one clean line)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None

    def __call__(self, frames: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(desc="frames", unit="frame", disable=self.quiet, file=sys.stderr, dynamic_ncols=True)
        self.bar.update(frames)

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


def _load(args: argparse.Namespace):
    """Checks the depth against the model's own number of layers, then loads the pipeline."""
    from cat_tts.generation import EngineConfig
    from cat_tts.weights import read_config_json, resolve_checkpoint
    from cat_tts.inference import CatTTS, SynthesisConfig

    model_dir = resolve_checkpoint(args.model, "model")
    n_vq = int(read_config_json(model_dir).get("n_vq", 32))
    if args.depth is not None and args.depth > n_vq:
        raise CliError(f"--depth must be in 1..{n_vq} for this model, got {args.depth}")
    compile_mode = COMPILE_MODES[args.compile]
    engine = EngineConfig(max_slots=args.batch_size if args.jsonl else 8, compile=compile_mode)
    tts = CatTTS.from_pretrained(
        model=model_dir,
        codec=args.codec,
        device=args.device,
        dtype=args.dtype,
        config=SynthesisConfig(max_reference_seconds=args.max_reference_seconds),
        engine=engine,
    )
    return tts


def run(args: argparse.Namespace) -> int:
    check_args(args)
    settings = generation_config(args)
    jobs, failures = read_jobs(args.jsonl) if args.jsonl else (None, [])
    from cat_tts.codec.config import bitrate_kbps
    from cat_tts.weights import dtype_name

    tts = _load(args)
    depth = settings.depth or tts.n_vq
    print(
        f"{tts.model.device}, model in {dtype_name(tts.model.dtype)}, codec in {dtype_name(tts.codec.dtype)}, "
        f"compile {args.compile} (CUDA graphs: {tts.engine.uses_cuda_graphs})"
    )
    print(f"depth K = {depth} of {tts.n_vq} layers, bitrate {bitrate_kbps(depth):.3f} kbps")
    progress = _Progress(args.quiet)
    try:
        if jobs is not None:
            return _run_jobs(args, tts, jobs, failures, settings, progress)
        return _run_one(args, tts, settings, progress)
    finally:
        progress.close()


def _run_jobs(args, tts, jobs: list[dict], failures: list[dict], settings, on_frame: _Progress) -> int:
    """Batch mode: every unfinished jsonl job; a failing job fails alone."""
    out_dir = Path(args.out_dir)
    todo = [j for j in jobs if not (out_dir / f"{j['id']}.wav").is_file()]
    if len(todo) < len(jobs):
        print(f"skipping {len(jobs) - len(todo)} finished outputs in {out_dir}")
    mode = None if args.mode == "auto" else args.mode
    items = [
        {"text": j["text"], "reference_audio": j["reference_audio"], "reference_text": j["reference_text"],
         "mode": mode, "instructions": args.instructions}
        for j in todo
    ]  # fmt: skip
    total = len(jobs) + len(failures)  # usable jobs + unusable lines
    start, total_audio, written = time.perf_counter(), 0.0, 0
    for i, result in tts.synthesize_iter(items, config=settings, on_frame=on_frame):
        job = todo[i]
        if isinstance(result, Exception):
            message = " ".join(str(result).split()) or type(result).__name__
            failures.append({"line": job["line"], "id": job["id"], "error": message})
            continue
        audio, sr = result
        _save(out_dir / f"{job['id']}.wav", audio, sr)
        total_audio += len(audio) / sr
        written += 1
    on_frame.close()
    elapsed = time.perf_counter() - start
    rtf = elapsed / total_audio if total_audio else float("nan")
    print(f"wrote {written} files to {out_dir}: {total_audio:.2f} s of audio in {elapsed:.2f} s (RTF {rtf:.3f})")
    report = out_dir / FAILURES_FILE
    if not failures:
        report.unlink(missing_ok=True)
        return 0
    failures.sort(key=lambda f: f["line"])
    tmp = report.with_name(report.name + ".partial")
    tmp.write_text("".join(json.dumps(f) + "\n" for f in failures), encoding="utf-8")
    os.replace(tmp, report)
    for f in failures:
        print(f"error: {args.jsonl} line {f['line']} (id {f['id']!r}): {f['error']}", file=sys.stderr)
    print(f"error: {len(failures)} of {total} jobs failed (listed in {report})", file=sys.stderr)
    return USER_ERROR_EXIT_CODE


def _run_one(args, tts, settings, on_frame: _Progress) -> int:
    """One text (any length) to one wav file, one-shot or streamed."""
    out = Path(args.output)
    common = dict(
        reference_text=args.prompt_text,
        mode=None if args.mode == "auto" else args.mode,
        instructions=args.instructions,
        config=settings,
        on_frame=on_frame,
    )
    start = time.perf_counter()
    first = None
    if args.stream:
        import numpy as np
        import soundfile as sf

        samples = 0
        tmp = out.with_name(out.name + ".partial.wav")
        with sf.SoundFile(str(tmp), "w", samplerate=tts.sample_rate, channels=1, subtype="PCM_16") as f:
            for piece in tts.stream(args.text, args.prompt_audio, **common):
                if first is None:
                    first = time.perf_counter() - start
                f.write(np.clip(piece, -1.0, 1.0))  # as save_audio does
                f.flush()
                samples += len(piece)
        os.replace(tmp, out)
        sr = tts.sample_rate
        seconds = samples / sr
    else:
        audio, sr = tts.synthesize(args.text, args.prompt_audio, **common)
        _save(out, audio, sr)
        seconds = len(audio) / sr
    on_frame.close()
    elapsed = time.perf_counter() - start
    rtf = elapsed / seconds if seconds else float("nan")
    extra = f", first audio after {first:.2f} s" if first is not None else ""
    print(f"wrote {out}: {seconds:.2f} s of audio at {sr} Hz in {elapsed:.2f} s (RTF {rtf:.3f}{extra})")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ValueError as err:  # UserError (InputError, CheckpointError, CliError...), AudioError, other bad input
        msg = " ".join(str(err).split()) or type(err).__name__
        print(f"error: {msg}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
