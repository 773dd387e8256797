"""Score a directory of generated `<utt>.wav` files (or the test set's own recordings) against a test list.

Writes into the output directory:

* `results.jsonl`: one record per usable test line (`UtteranceResult`);
* `run.json`: what was scored and how (test list, language, depth, models, rejected test lines);
* `summary.json`: the aggregates (`results.summarize`).

Unlike the official scripts, nothing is dropped silently: a missing, empty or unreadable output is a
record with a status, it counts as a failed utterance (error rate 100 %, the score of an empty
transcript) in `error_rate`, and the summary states how many utterances were scored. `error_rate_scored`
is the mean over scored files only, which is what the official scripts print.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from eval.seedtts.asr import Transcriber
from eval.seedtts.audio import AudioReadError, read_audio
from eval.seedtts.metrics import utterance_wer
from eval.seedtts.normalize import check_language
from eval.seedtts.results import (
    ASR_ERROR,
    EMPTY,
    MISSING,
    OK,
    RESULTS,
    RUN,
    SUMMARY,
    UNREADABLE,
    UtteranceResult,
    depth_from_dir,
    read_generation_log,
    summarize,
    write_json,
    write_jsonl,
)
from eval.seedtts.testset import TestSet

logger = logging.getLogger(__name__)


class SpeakerScorer(Protocol):
    """What the scorer needs from a SIM model (see `sim.SpeakerSimilarity`)."""

    name: str

    def similarity(self, generated: str | Path, prompt: str | Path) -> float:
        """Cosine similarity (-1..1) of the speakers of two audio files."""
        ...


def score_testset(
    testset: TestSet,
    lang: str,
    asr: Transcriber,
    sim: SpeakerScorer | None,
    wav_dir: Path | None = None,
    out_dir: Path | None = None,
    depth: int | None = None,
    ground_truth: bool = False,
    progress: bool = False,
) -> list[UtteranceResult]:
    """Transcribe and compare every usable line's output; write results, run info and summary.

    Args:
        testset: the parsed test list.
        lang: "en" or "zh".
        asr: the recogniser (`asr.WhisperAsr`, `asr.ParaformerAsr` or any `transcribe(path)` object).
        sim: the speaker-similarity model, or None to skip SIM.
        wav_dir: directory with `<utt>.wav` (ignored with `ground_truth`).
        out_dir: where to write the files (default: `wav_dir`).
        depth: generation depth K (default: from a `depth_<K>` directory name).
        ground_truth: score the test set's own recordings instead of generated files.
        progress: show a progress bar on stderr.

    Returns:
        One result per usable line, in list order.

    Raises:
        ValueError: bad language, or neither `wav_dir` nor `ground_truth` given, or no output directory.
    """
    check_language(lang)
    if not ground_truth and wav_dir is None:
        raise ValueError("give the directory of generated wavs (--wavs) or score the recordings (--ground-truth)")
    out_dir = Path(out_dir) if out_dir is not None else wav_dir
    if out_dir is None:
        raise ValueError("--out is required with --ground-truth")
    if depth is None and not ground_truth and wav_dir is not None:
        depth = depth_from_dir(Path(wav_dir))
    timings = {} if ground_truth or wav_dir is None else read_generation_log(Path(wav_dir))

    results: list[UtteranceResult] = []
    started = time.time()
    for item in tqdm(testset.items, desc=f"score {out_dir.name}", disable=not progress, unit="utt"):
        path = item.ground_truth_wav if ground_truth else Path(wav_dir) / f"{item.utt}.wav"
        timing = timings.get(item.utt)
        res = UtteranceResult(
            item.utt,
            None if ground_truth else depth,
            OK,
            None,
            None,
            None,
            item.target_text,
            None,
            timing.get("rtf") if timing else None,
        )
        if path is None or not Path(path).is_file():
            res.status, res.wer, res.error = MISSING, 1.0, f"no file {path}"
            results.append(res)
            continue
        try:
            wav, sr = read_audio(path)
            res.duration = len(wav) / sr
        except AudioReadError as err:
            res.status = EMPTY if err.kind == "empty" else UNREADABLE
            res.wer, res.error = 1.0, str(err)
            results.append(res)
            continue
        try:
            res.hypothesis = asr.transcribe(path)
            res.wer = utterance_wer(item.target_text, res.hypothesis, lang)
        except Exception as err:  # a recogniser crash must not lose the rest of the run
            logger.warning("ASR failed on %s: %s", path, err)
            res.status, res.wer, res.error = ASR_ERROR, 1.0, f"{err.__class__.__name__}: {err}"
        if sim is not None:
            try:
                res.sim = sim.similarity(path, item.prompt_wav)
            except Exception as err:
                logger.warning("SIM failed on %s: %s", path, err)
                res.error = ((res.error + "; ") if res.error else "") + f"SIM {err.__class__.__name__}: {err}"
        results.append(res)

    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / RESULTS, results)
    run = {
        "testset": testset.name,
        "meta": str(testset.meta_path),
        "lang": lang,
        "depth": None if ground_truth else depth,
        "ground_truth": ground_truth,
        "wavs": None if ground_truth else str(wav_dir),
        "asr_model": getattr(asr, "name", type(asr).__name__),
        "sim_model": getattr(sim, "name", type(sim).__name__) if sim is not None else None,
        "bad_lines": [asdict(b) for b in testset.bad_lines],
        "seconds": round(time.time() - started, 3),
    }
    write_json(out_dir / RUN, run)
    write_json(out_dir / SUMMARY, summarize(results, run))
    return results
