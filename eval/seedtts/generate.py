"""Synthesise every usable line of a test list at several depths on the inference engine: `OUT/depth_<K>/<utt>.wav`.

Each line becomes one `cat_tts.inference.SpeechRequest` per depth (its target text, prompt wav and prompt text, with
the command line's other request fields: language, duration, instructions, sampling, frame limits); building it is
the only validation, and a bad field is named by the evaluator's label for it (`EVAL_LABELS`). All the requests of
one depth go to the synthesiser in one `iter_requests` call, so the engine generates them together in its slots
(continuous batching: an utterance joins the batch when a slot frees up) and each result is written as soon as it is
ready.

Resumable: an existing `<utt>.wav` is kept and not regenerated, and the CLI does not even load the model when nothing
is missing. Files are written under a temporary name and renamed, so an interrupted run never leaves a truncated wav
behind. Each written file appends a record to `OUT/depth_<K>/generation.jsonl` (utt, depth, seconds, audio_seconds,
rtf, seed, slots, mode, language). `seconds` is the wall time between this utterance's result and the previous one
(the first counts from the start of the depth), so the `seconds` of a run add up to its wall time and total seconds /
total audio seconds is the run's real-time factor at that number of slots (what the scorer reports).

Failures: a test line that cannot be used (`TestSet.bad_lines`) and an utterance whose synthesis fails (an unusable
reference clip or text: `cat_tts.errors.InputError`; a request the engine failed: `EngineError`; no samples) fail
alone: every other utterance is generated. `OUT/depth_<K>/failures.jsonl` lists every line of the list that has no
wav at that depth after the run (utt, line, depth, stage, error); it is written atomically and removed when there is
none. An exception the synthesiser raises instead of returning it (a bug) stops the run; the wavs written so far are
kept.

Prompting: by default the prompt transcript (2nd field) is passed as `reference_text`, which makes `CatTTS` continue
the prompt audio (the in-context mode Seed-TTS-Eval was designed for); `mode="clone"` passes the prompt audio only.
The mode is recorded in `generation.jsonl`.

Seeds: utterance u is generated with seed `seed + crc32(u) mod 2**31`, independent of list order, of which files
already exist and of its batch neighbours (the engine's noise is keyed by request seed, frame and channel), so a
resumed run reproduces the files of an uninterrupted one (bit for bit on the CPU, tested; on CUDA the engine may run
a frame at another batch-size bucket, which can change low-order bits).

The synthesiser is any object with the `cat_tts.inference.CatTTS` attributes `n_vq`, `limits` and method
`iter_requests(requests, on_frame=...) -> Iterator[(index, (audio, sr) | Exception)]`.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from cat_tts.audio import save_audio
from cat_tts.cli import CLI_LABELS
from cat_tts.errors import CheckpointError, FieldError, InputError
from cat_tts.generation import GenerationConfig
from cat_tts.inference import Limits, SpeechRequest
from cat_tts.model.config import CatTTSConfig
from cat_tts.weights import read_config_json, resolve_checkpoint
from eval.seedtts.results import GENERATION_LOG, write_jsonl
from eval.seedtts.testset import BadLine, TestItem, TestSet

logger = logging.getLogger(__name__)

MODES = ("continuation", "clone")
FAILURES_FILE = "failures.jsonl"
BAD_LINE, SYNTHESIS = "test list", "synthesis"  # the stage a failure happened at
# Request field -> the evaluator's label for it (errors are shown under it): the test list gives the text and the
# voice, the sweep the depth, the command line every other field (the same options as infer.py).
EVAL_LABELS = {
    **CLI_LABELS,
    "text": "target text (4th field of the test list)",
    "reference_audio": "prompt wav (3rd field of the test list)",
    "reference_text": "prompt text (2nd field of the test list)",
    "depth": "--depths",
    "bitrate_kbps": "--bitrates-kbps",
    # a sweep runs fixed depths (its directories are depth_<K>): depth "auto" and its range are not offered
    "min_depth": "--depths",
    "max_depth": "--depths",
}
LIST_FIELDS = ("text", "reference_audio", "reference_text")  # taken from each line, not from the command line


class Synthesizer(Protocol):
    """The part of `cat_tts.inference.CatTTS` the harness uses."""

    n_vq: int  # the model's number of RVQ layers N (depths 1..N)
    limits: Limits  # what a request may ask of this model and engine

    def iter_requests(
        self, requests: Iterable[SpeechRequest | Exception], on_frame: Callable[[int], None] | None = None
    ) -> Iterator[tuple[int, tuple[np.ndarray, int] | Exception]]: ...


@dataclass(frozen=True)
class Failure:
    """A test line without an output at one depth, and why."""

    utt: str  # utterance id (or "line <n>" for a line without a usable id)
    line: int  # 1-based line number in the test list
    depth: int  # depth K
    stage: str  # "test list" (the line is unusable) or "synthesis"
    error: str  # what went wrong, one line

    def describe(self) -> str:
        """One line for the CLI."""
        return f"{self.utt} (line {self.line}): {self.error}"


@dataclass
class GenerateReport:
    """What a `generate_testset` call did."""

    written: dict[int, list[str]] = field(default_factory=dict)  # depth -> utterances synthesised now
    kept: dict[int, list[str]] = field(default_factory=dict)  # depth -> utterances whose wav already existed
    failed: dict[int, list[Failure]] = field(default_factory=dict)  # depth -> lines without a wav, by line number
    bad_lines: list[BadLine] = field(default_factory=list)  # unusable test lines (also in `failed` at every depth)
    failure_files: list[Path] = field(default_factory=list)  # the failures.jsonl files written

    @property
    def n_failed(self) -> int:
        """Number of (depth, line) pairs without an output."""
        return sum(len(v) for v in self.failed.values())


def utterance_seed(seed: int, utt: str) -> int:
    """Deterministic per-utterance seed."""
    return (seed + zlib.crc32(utt.encode("utf-8"))) % (2**31)


def check_depths(depths: Sequence[int], n_layers: int | None = None) -> list[int]:
    """Sorted unique depths, each >= 1 and, when the model's number of layers N is given, <= N.

    Raises:
        InputError: for an empty list, a depth below 1 or above N.
    """
    if not depths:
        raise InputError("give at least one depth (e.g. --depths 8 16 32)")
    for k in depths:
        try:  # the request's own check of a depth (against the model when N is known)
            config = GenerationConfig(depth=k)
            if n_layers is not None:
                config.depth_range(n_layers)
        except FieldError as err:  # shown under the sweep's option by the command
            raise InputError(str(err)) from err
    return sorted(set(depths))


def model_layers(model: str | Path) -> tuple[Path, int]:
    """The model's checkpoint directory and its number of RVQ layers N, from config.json (no weights are read).

    Args:
        model: a CAT-TTS model directory or hub id.

    Raises:
        ModelLoadError: missing directory, wrong kind of checkpoint (the message names it), unreachable hub.
        CheckpointError: a config.json whose `n_vq` is not a positive integer.
    """
    directory = resolve_checkpoint(model, "model")
    fields = read_config_json(directory)
    n_vq = fields.get("n_vq")
    if n_vq is None:  # the config class's default, as the loader would use it
        n_vq = CatTTSConfig.from_dict(fields).n_vq
    if isinstance(n_vq, bool) or not isinstance(n_vq, int) or n_vq < 1:
        raise CheckpointError(f"{directory}/config.json: n_vq must be a positive integer, got {n_vq!r}")
    return directory, n_vq


def count_missing(testset: TestSet, out_dir: str | Path, depths: Sequence[int]) -> int:
    """Number of (line, depth) outputs that do not exist yet (0: nothing to generate, no model needed)."""
    out_dir = Path(out_dir)
    return sum(not (out_dir / f"depth_{k}" / f"{it.utt}.wav").is_file() for k in depths for it in testset.items)


def _write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> float:
    """Write mono 16-bit PCM atomically (`save_audio`); returns the duration in seconds."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if audio.size == 0:
        raise InputError("the synthesiser returned no samples (the model ended at once; see --min-new-frames)")
    save_audio(path, audio, sample_rate)
    return audio.size / sample_rate


def _write_failures(path: Path, failures: list[Failure]) -> None:
    """Write the failures file atomically, or remove a stale one when there is no failure."""
    if not failures:
        path.unlink(missing_ok=True)  # a stale list from an earlier run would mislead
        return
    write_jsonl(path, failures)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def utterance_request(
    it: TestItem, depth: int, fields: dict[str, Any], mode: str, seed: int, limits: Limits | None = None
) -> SpeechRequest | FieldError:
    """The request of one test line at one depth, or its error (shown under the evaluator's label)."""
    ref_text = it.prompt_text if mode == "continuation" and it.prompt_text.strip() else None
    values = {
        **fields,
        "text": it.target_text,
        "reference_audio": str(it.prompt_wav),
        "reference_text": ref_text,
        "depth": depth,
        "seed": utterance_seed(seed, it.utt),
    }
    try:
        return SpeechRequest.from_fields(values, limits)
    except FieldError as err:
        return FieldError(err.field, err.labelled(EVAL_LABELS))


def _one_line_result(err: BaseException) -> str:
    """A synthesis failure as one line; a bad field is named by the evaluator's label for it."""
    if isinstance(err, FieldError):
        return " ".join(err.labelled(EVAL_LABELS).split())
    return _one_line(err)


def generate_testset(
    testset: TestSet,
    pipeline: Synthesizer | None,
    out_dir: str | Path,
    depths: Sequence[int],
    seed: int = 0,
    fields: dict[str, Any] | None = None,
    mode: str = "continuation",
    progress: bool = False,
) -> GenerateReport:
    """Synthesise the missing `<utt>.wav` of every usable line at every depth.

    Args:
        testset: the parsed list (its rejected lines are reported as failures at every depth, not generated).
        pipeline: the synthesiser (see module docstring); may be None when every output exists.
        out_dir: sweep directory; files go to `out_dir/depth_<K>/`.
        depths: depths K to generate (1..N of the model).
        seed: base seed (utterance u gets `utterance_seed(seed, u)`).
        fields: request fields every utterance takes (language, duration, instructions, sampling, frame limits; see
            `SpeechRequest.field_names()`); not the text, voice, depth or seed, which are set per line and depth.
        mode: "continuation" (pass the prompt transcript) or "clone" (prompt audio only).
        progress: show a progress bar on stderr.

    Returns:
        What was written, kept and failed per depth.

    Raises:
        InputError: bad depths (outside 1..N) or mode, or outputs missing without a synthesiser.
    """
    n_layers = getattr(pipeline, "n_vq", None)
    depths = check_depths(depths, n_layers)
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, got {mode!r}")
    fields = dict(fields or {})
    fixed = sorted(set(fields) & {*LIST_FIELDS, "depth", "bitrate_kbps", "seed"})
    if fixed:
        raise InputError(f"{fixed[0]} is set per line and depth by the evaluator, not for the whole run")
    limits = getattr(pipeline, "limits", None)
    if pipeline is None and count_missing(testset, out_dir, depths):
        raise InputError("outputs are missing but no synthesiser was given")
    engine = getattr(pipeline, "engine", None)
    slots = getattr(getattr(engine, "config", None), "max_slots", None)
    out_dir = Path(out_dir)
    report = GenerateReport(bad_lines=list(testset.bad_lines))
    for depth in depths:
        ddir = out_dir / f"depth_{depth}"
        ddir.mkdir(parents=True, exist_ok=True)
        todo = [it for it in testset.items if not (ddir / f"{it.utt}.wav").is_file()]
        report.kept[depth] = [it.utt for it in testset.items if (ddir / f"{it.utt}.wav").is_file()]
        report.written[depth] = []
        failed = [Failure(b.utt, b.line_no, depth, BAD_LINE, b.reason) for b in testset.bad_lines]
        frames = [0]

        def on_frame(n: int, frames: list[int] = frames) -> None:
            frames[0] += n

        bar = tqdm(total=len(todo), desc=f"depth {depth}", disable=not progress or not todo, unit="utt")
        requests = [utterance_request(it, depth, fields, mode, seed, limits) for it in todo]
        done: set[int] = set()
        try:
            with open(ddir / GENERATION_LOG, "a", encoding="utf-8") as log:
                last = time.perf_counter()
                results = pipeline.iter_requests(requests, on_frame=on_frame) if todo else ()
                for i, result in results:
                    now = time.perf_counter()
                    seconds, last = now - last, now
                    it = todo[i]
                    done.add(i)
                    bar.update(1)
                    bar.set_postfix(frames=frames[0], refresh=False)
                    try:
                        if isinstance(result, Exception):
                            raise result
                        audio, sr = result
                        duration = _write_wav(ddir / f"{it.utt}.wav", audio, sr)
                    except Exception as err:  # the synthesiser returned it, or the output is unusable
                        failed.append(Failure(it.utt, it.line_no, depth, SYNTHESIS, _one_line_result(err)))
                        logger.warning("depth %d: %s failed: %s", depth, it.utt, _one_line_result(err))
                        continue
                    rec = {
                        "utt": it.utt,
                        "depth": depth,
                        "seconds": seconds,
                        "audio_seconds": duration,
                        "rtf": seconds / duration,
                        "seed": requests[i].generation.seed,
                        "slots": slots,
                        "mode": "continuation" if requests[i].reference_text is not None else "clone",
                        "language": requests[i].language,
                    }
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                    report.written[depth].append(it.utt)
        except BaseException as err:  # a bug or an interrupt: list what is left, keep what was written
            for i, it in enumerate(todo):
                if i not in done:
                    failed.append(Failure(it.utt, it.line_no, depth, SYNTHESIS, f"not generated: {_one_line(err)}"))
            raise
        finally:
            bar.close()
            failed.sort(key=lambda f: f.line)
            report.failed[depth] = failed
            _write_failures(ddir / FAILURES_FILE, failed)
            if failed:
                report.failure_files.append(ddir / FAILURES_FILE)
    return report
