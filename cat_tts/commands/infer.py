"""Zero-shot voice cloning at a chosen depth (bitrate) from the command line.

    cat-tts infer --text "Hello from cat-tts." -o out.wav                 # the bundled voice, every layer
    cat-tts infer --text "Hello." --prompt-audio ref.wav --depth 16 -o out.wav
    cat-tts infer --text-file book.txt --prompt-audio ref.wav --prompt-text "what ref.wav says" -o book.wav
    cat-tts infer --text "Bonjour." --language French --duration 2.5 -o fr.wav
    cat-tts infer --jsonl jobs.jsonl --out-dir outs/ --depth 8            # batch; finished outputs are skipped
    cat-tts infer --model tiny/model --codec tiny/codec ...               # local directories (offline)

(`python infer.py` takes the same options.) Depth K in 1..N (N = the model's number of RVQ layers, 32 for the
release) is the number of layers generated and decoded: bitrate = 0.125 kbps x K; `--depth auto` lets the engine
choose. Without --prompt-audio the bundled voice speaks (with its transcript: continuation mode).

Each --jsonl line is an object with "text" and, optionally, "id" (the output name, default the line number),
"prompt_audio", "prompt_text" and any other request field under its own name ("language", "duration", "depth",
"top_k", ...), which overrides the command line's option for that line; relative audio paths are resolved against the
jsonl file's folder. A bad line or reference clip fails that job only: the others are generated, the failures are
listed at the end and in OUT_DIR/failures.jsonl, and the exit code is 2 (1 when the engine failed).

Exit codes: 0 done; 2 bad input (one line naming the option); 1 the engine failed or the model produced no audio;
130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from cat_tts.cli import (
    CLI_LABELS,
    COMPILE_MODES,
    ENGINE_FAILURE_EXIT_CODE,
    OneLineParser,
    add_model_options,
    add_request_options,
    check_writable_dir,
    check_writable_file,
    checkpoint_limits,
    engine_failure,
    request_values,
)
from cat_tts.errors import USER_ERROR_EXIT_CODE, FieldError, UserError

FAILURES_FILE = "failures.jsonl"
INTERRUPTED_EXIT_CODE = 130
INFER_LABELS = CLI_LABELS  # request field -> the option that sets it (errors are shown under it)
INPUT_FIELDS = ("text", "reference_audio", "reference_text", "mode", "instructions", "language", "duration")
GENERATION_FIELDS = tuple(name for name in CLI_LABELS if name not in INPUT_FIELDS)


class CliError(UserError):
    """Bad command-line input; printed as one line."""


class NoAudio(RuntimeError):
    """The model ended without audio (not the user's input: random tiny weights do this)."""


def build_parser(prog: str = "infer.py") -> argparse.ArgumentParser:
    """The command line (`prog` names it in messages: "infer.py" or "cat-tts infer")."""
    from cat_tts.inference import SynthesisConfig

    defaults = SynthesisConfig()
    p = OneLineParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("input")
    add_request_options(src, ["text"])
    src.add_argument("--text-file", help="read the text to speak from this UTF-8 file (long text is split)")
    add_request_options(src, [name for name in INPUT_FIELDS if name != "text"])
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
    add_request_options(p.add_argument_group("generation (defaults: the released model's settings)"), GENERATION_FIELDS)
    add_model_options(p.add_argument_group("model"))
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


# ---------------------------------------------------------------------- checks before loading
def check_args(args: argparse.Namespace) -> None:
    """Checks the options that are not request fields, and reads --text-file, before anything loads."""
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not args.max_reference_seconds > 0:
        raise CliError(f"--max-reference-seconds must be > 0, got {args.max_reference_seconds}")
    if args.jsonl:
        if args.text is not None or args.text_file:
            raise CliError("--jsonl cannot be combined with --text/--text-file")
        if not args.out_dir:
            raise CliError("--jsonl needs --out-dir")
        if args.stream:
            raise CliError("--stream works with a single --text, not with --jsonl")
        check_writable_dir(args.out_dir, "--out-dir")
        return
    if (args.text is not None) == bool(args.text_file):
        raise CliError("give exactly one of --text, --text-file or --jsonl")
    if args.text_file:
        try:
            args.text = Path(args.text_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise CliError(f"cannot read --text-file {args.text_file!r}: {err}") from err
    if Path(args.output).suffix.lower() != ".wav":
        raise CliError(f"--output must end with .wav, got {args.output}")
    check_writable_file(args.output, "--output")


def labels_for(args: argparse.Namespace) -> dict[str, str]:
    """The option each request field's errors are shown under (the text comes from --text-file when given)."""
    return {**INFER_LABELS, "text": "--text-file"} if getattr(args, "text_file", None) else INFER_LABELS


def common_values(args: argparse.Namespace) -> dict[str, Any]:
    """The request fields the command line gives (every job's defaults in --jsonl mode)."""
    values = request_values(args, list(INFER_LABELS))
    audio = values.get("reference_audio")
    if audio is not None:
        path = Path(audio).expanduser()
        if path.is_dir():
            raise FieldError("reference_audio", f"reference_audio {path} is a directory; give an audio file")
        if not path.is_file():
            raise FieldError("reference_audio", f"reference_audio file not found: {path}")
    elif values.get("reference_text") is not None:
        raise FieldError("reference_text", "reference_text is the transcript of --prompt-audio: give --prompt-audio")
    return values


def single_request(args: argparse.Namespace, limits: Any = None) -> Any:
    """The one request of a --text / --text-file run (the bundled voice when no --prompt-audio is given).

    Raises:
        FieldError: naming the first bad field (the caller shows it under its option).
    """
    from cat_tts.commands.jobs import default_voice_fields
    from cat_tts.inference import SpeechRequest

    values = common_values(args)
    if "reference_audio" not in values:
        values.update(default_voice_fields(values.get("mode")))
    return SpeechRequest.from_fields(values, limits)


# ---------------------------------------------------------------------- running
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


def _load(args: argparse.Namespace, model_dir: Path, codec_dir: Path) -> Any:
    from cat_tts.generation import EngineConfig
    from cat_tts.inference import CatTTS, SynthesisConfig

    engine = EngineConfig(max_slots=args.batch_size if args.jsonl else 8, compile=COMPILE_MODES[args.compile])
    return CatTTS.from_pretrained(
        model=model_dir,
        codec=codec_dir,
        device=args.device,
        dtype=args.dtype,
        config=SynthesisConfig(max_reference_seconds=args.max_reference_seconds),
        engine=engine,
    )


def _describe_depth(config: Any, n_vq: int) -> str:
    from cat_tts.codec.config import bitrate_kbps

    low, high = config.depth_range(n_vq)
    if config.depth == "auto":
        return f"depth K = auto, {low}..{high} of {n_vq} layers ({bitrate_kbps(low):g}..{bitrate_kbps(high):g} kbps)"
    return f"depth K = {low} of {n_vq} layers, bitrate {bitrate_kbps(low):.3f} kbps"


def _rate_line(seconds: float, elapsed: float, extra: str = "") -> str:
    """`X s of audio in Y s (RTF Z)`; without audio there is no real-time factor to give."""
    if seconds <= 0:
        return f"no audio in {elapsed:.2f} s"
    return f"{seconds:.2f} s of audio in {elapsed:.2f} s (RTF {elapsed / seconds:.3f}{extra})"


def run(args: argparse.Namespace) -> int:
    """Runs a parsed command line; returns the exit code (raises `UserError` for bad input)."""
    from cat_tts.weights import dtype_name, resolve_checkpoint

    labels = labels_for(args)
    check_args(args)
    try:
        request = None if args.jsonl else single_request(args)  # every field checked before anything loads
        common = common_values(args) if args.jsonl else None
        model_dir = resolve_checkpoint(args.model, "model")
        codec_dir = resolve_checkpoint(args.codec, "codec")
        limits = checkpoint_limits(model_dir, codec_dir)
        if request is not None:
            request.with_limits(limits)
    except FieldError as err:
        raise CliError(err.labelled(labels)) from err
    jobs = None
    if args.jsonl:
        from cat_tts.commands.jobs import read_jobs

        jobs = read_jobs(args.jsonl, common, limits)
    tts = _load(args, model_dir, codec_dir)
    print(
        f"{tts.model.device}, model in {dtype_name(tts.model.dtype)}, codec in {dtype_name(tts.codec.dtype)}, "
        f"compile {args.compile}"
    )
    progress = _Progress(args.quiet)
    try:
        if jobs is not None:
            from cat_tts.generation import GenerationConfig

            print(_describe_depth(GenerationConfig().with_overrides(**_settings(common)), tts.n_vq) + " (by default)")
            return _run_jobs(args, tts, jobs, progress)
        try:
            request = request.with_limits(tts.limits)
        except FieldError as err:
            raise CliError(err.labelled(labels)) from err
        print(_describe_depth(request.generation, tts.n_vq))
        return _run_one(args, tts, request, progress, labels)
    finally:
        progress.close()


def _settings(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k in GENERATION_FIELDS}


def _run_jobs(args: argparse.Namespace, tts: Any, jobs: list, on_frame: _Progress) -> int:
    """Batch mode: every unfinished job; a failing job fails alone."""
    from cat_tts.audio import save_audio
    from cat_tts.commands.jobs import JSONL_LABELS

    out_dir = Path(args.out_dir)
    todo = [j for j in jobs if j.request is not None and not (out_dir / f"{j.id}.wav").is_file()]
    done = sum(j.request is not None for j in jobs) - len(todo)
    if done:
        print(f"skipping {done} finished outputs in {out_dir}")
    failures = [{"line": j.line, "id": j.id, "error": j.error} for j in jobs if j.request is None]
    engine_failed = False
    start, total_audio, written = time.perf_counter(), 0.0, 0
    for i, result in tts.iter_requests([j.request for j in todo], on_frame=on_frame):
        job = todo[i]
        try:
            if isinstance(result, BaseException):
                raise result
            audio, sr = result
            if audio.size == 0:
                raise NoAudio("the model ended without audio (random tiny weights do this: try --min-new-frames)")
            save_audio(out_dir / f"{job.id}.wav", audio, sr)
        except FieldError as err:
            failures.append({"line": job.line, "id": job.id, "error": err.labelled(JSONL_LABELS)})
            continue
        except UserError as err:
            failures.append({"line": job.line, "id": job.id, "error": " ".join(str(err).split())})
            continue
        except Exception as err:  # noqa: BLE001 - the engine failed this job (or no audio): the others go on
            message = engine_failure(err) or " ".join(str(err).split()) or type(err).__name__
            failures.append({"line": job.line, "id": job.id, "error": message})
            engine_failed = True
            continue
        total_audio += len(audio) / sr
        written += 1
    on_frame.close()
    print(f"wrote {written} files to {out_dir}: {_rate_line(total_audio, time.perf_counter() - start)}")
    return _report_failures(args, out_dir, failures, len(jobs), engine_failed)


def _report_failures(args: argparse.Namespace, out_dir: Path, failures: list[dict], total: int, engine: bool) -> int:
    from cat_tts.files import atomic_write

    report = out_dir / FAILURES_FILE
    if not failures:
        report.unlink(missing_ok=True)  # a stale list from an earlier run would mislead
        return 0
    failures.sort(key=lambda f: f["line"])
    with atomic_write(report) as tmp:
        tmp.write_text("".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failures), encoding="utf-8")
    for f in failures:
        print(f"error: {args.jsonl} line {f['line']} (id {f['id']!r}): {f['error']}", file=sys.stderr)
    print(f"error: {len(failures)} of {total} jobs failed (listed in {report})", file=sys.stderr)
    return ENGINE_FAILURE_EXIT_CODE if engine else USER_ERROR_EXIT_CODE


def _run_one(args: argparse.Namespace, tts: Any, request: Any, on_frame: _Progress, labels: dict[str, str]) -> int:
    """One text (any length) to one wav file, one-shot or streamed; the file appears only when complete."""
    from cat_tts.audio import save_audio

    out = Path(args.output)
    start = time.perf_counter()
    first = None
    try:
        if args.stream:
            seconds, first = _stream_to(out, tts, request, on_frame, start)
        else:
            audio, sr = tts.synthesize_request(request, on_frame=on_frame)
            if audio.size == 0:
                raise NoAudio("the model ended without audio")
            save_audio(out, audio, sr)
            seconds = len(audio) / sr
    except FieldError as err:  # the reference clip, read when the request runs
        raise CliError(err.labelled(labels)) from err
    except NoAudio as err:
        print(f"error: {err}; nothing written to {out} (random tiny weights do this: try --min-new-frames)",
              file=sys.stderr)  # fmt: skip
        return ENGINE_FAILURE_EXIT_CODE
    on_frame.close()
    extra = f", first audio after {first:.2f} s" if first is not None else ""
    print(f"wrote {out} ({tts.sample_rate} Hz): {_rate_line(seconds, time.perf_counter() - start, extra)}")
    return 0


def _stream_to(out: Path, tts: Any, request: Any, on_frame: _Progress, start: float) -> tuple[float, float | None]:
    """Writes the request's audio to `out` while it is generated (under a temporary name until complete)."""
    import numpy as np
    import soundfile as sf

    from cat_tts.files import atomic_write

    samples, first = 0, None
    with atomic_write(out) as tmp:
        with sf.SoundFile(str(tmp), "w", samplerate=tts.sample_rate, channels=1, subtype="PCM_16", format="WAV") as f:
            for piece in tts.stream_request(request, on_frame=on_frame):
                if first is None:
                    first = time.perf_counter() - start
                f.write(np.clip(piece, -1.0, 1.0))  # as save_audio does
                f.flush()
                samples += len(piece)
        if samples == 0:
            raise NoAudio("the model ended without audio")  # the temporary file is removed: no empty wav is left
    return samples / tts.sample_rate, first


def main(argv: list[str] | None = None, prog: str = "infer.py") -> int:
    """Runs the command line; returns the exit code (see the module docstring)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser(prog).parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    except FieldError as err:  # a field checked past the front end (e.g. while loading a reference clip)
        print(f"error: {' '.join(err.labelled(labels_for(args)).split())}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    except ValueError as err:  # UserError (InputError, CheckpointError, CliError...), AudioError, other bad input
        print(f"error: {' '.join(str(err).split()) or type(err).__name__}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    except RuntimeError as err:
        message = engine_failure(err)
        if message is None:
            raise  # a bug: keep its traceback
        print(f"error: {message}", file=sys.stderr)
        return ENGINE_FAILURE_EXIT_CODE
