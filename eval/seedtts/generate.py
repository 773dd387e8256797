"""Synthesise every usable line of a test list at several depths: `OUT/depth_<K>/<utt>.wav`.

Resumable: an existing `<utt>.wav` is kept and not regenerated, and the CLI does not even load the
model when nothing is missing. Files are written under a temporary name and renamed, so an interrupted
run never leaves a truncated wav behind. Each synthesis appends a timing record to
`OUT/depth_<K>/generation.jsonl` (utt, depth, seconds, audio_seconds, rtf, seed, batch_size, mode) so the
scorer can report the real-time factor; with `batch_size > 1`, `seconds` is the batch's wall time
divided by the batch size. A synthesis that raises `ValueError` (bad input, e.g.
`cat_tts.inference.InputError`) or `RuntimeError` (e.g. out of memory) is recorded in
`OUT/depth_<K>/failures.json` and the run goes on; any other exception is a bug and stops the run.

Prompting: by default the prompt transcript (2nd field) is passed as `reference_text`, which makes
`CatTTS` continue the prompt audio (the in-context mode Seed-TTS-Eval was designed for); `mode="clone"`
passes the prompt audio only. The mode is recorded in `generation.jsonl`.

Seeds: utterance u is generated with seed `seed + crc32(u) mod 2**31`, independent of list order and of
which files already exist, so a resumed run is reproducible with `batch_size = 1` (a batch uses the seed
of its first utterance).

The synthesiser is any object with the `cat_tts.inference.CatTTS` methods
`synthesize(text, reference_audio, reference_text=None, depth=..., seed=..., **sampling) -> (audio, sr)`
and, for `batch_size > 1`, `synthesize_batch(items, depth=..., seed=..., **sampling)`.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from eval.seedtts.score import GENERATION_LOG
from eval.seedtts.testset import TestItem, TestSet

logger = logging.getLogger(__name__)

MAX_DEPTH = 32
MODES = ("continuation", "clone")


class Synthesizer(Protocol):
    """The part of `cat_tts.inference.CatTTS` the harness uses."""

    def synthesize(
        self,
        text: str,
        reference_audio: Any,
        reference_text: str | None = None,
        depth: int = 32,
        seed: int | None = None,
        **sampling: Any,
    ) -> tuple[np.ndarray, int]: ...


@dataclass
class GenerateReport:
    """What a `generate_testset` call did."""

    written: dict[int, list[str]] = field(default_factory=dict)  # depth -> utterances synthesised now
    kept: dict[int, list[str]] = field(default_factory=dict)  # depth -> utterances whose wav already existed
    failed: dict[int, dict[str, str]] = field(default_factory=dict)  # depth -> {utt: error}
    bad_lines: list[str] = field(default_factory=list)  # descriptions of unusable test lines

    @property
    def n_failed(self) -> int:
        """Number of (depth, utterance) pairs that could not be synthesised."""
        return sum(len(v) for v in self.failed.values())


def utterance_seed(seed: int, utt: str) -> int:
    """Deterministic per-utterance seed."""
    return (seed + zlib.crc32(utt.encode("utf-8"))) % (2**31)


def check_depths(depths: Sequence[int]) -> list[int]:
    """Sorted unique depths, each in 1..32.

    Raises:
        ValueError: for an empty list or a depth outside 1..32.
    """
    if not depths:
        raise ValueError("give at least one depth (e.g. --depths 8 16 32)")
    for k in depths:
        if not isinstance(k, int) or not 1 <= k <= MAX_DEPTH:
            raise ValueError(f"depth must be an integer in 1..{MAX_DEPTH}, got {k!r}")
    return sorted(set(depths))


def count_missing(testset: TestSet, out_dir: str | Path, depths: Sequence[int]) -> int:
    """Number of (line, depth) outputs that do not exist yet (0: nothing to generate, no model needed)."""
    out_dir = Path(out_dir)
    return sum(not (out_dir / f"depth_{k}" / f"{it.utt}.wav").is_file() for k in depths for it in testset.items)


def _write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> float:
    """Write mono 16-bit PCM atomically; returns the duration in seconds."""
    import soundfile as sf

    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if audio.size == 0:
        raise ValueError("the synthesiser returned no samples")
    tmp = path.with_name(f".{path.stem}.partial.wav")
    sf.write(str(tmp), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16")
    os.replace(tmp, path)
    return audio.size / sample_rate


def _synthesize(
    pipeline: Synthesizer, batch: list[TestItem], depth: int, seed: int, mode: str, sampling: dict[str, Any]
) -> list[tuple[np.ndarray, int]]:
    def ref_text(it: TestItem) -> str | None:
        return it.prompt_text if mode == "continuation" else None

    if len(batch) == 1:
        it = batch[0]
        out = pipeline.synthesize(
            it.target_text, str(it.prompt_wav), reference_text=ref_text(it), depth=depth, seed=seed, **sampling
        )
        return [out]
    items = [
        {"text": it.target_text, "reference_audio": str(it.prompt_wav), "reference_text": ref_text(it)} for it in batch
    ]
    return pipeline.synthesize_batch(items, depth=depth, seed=seed, batch_size=len(items), **sampling)


def generate_testset(
    testset: TestSet,
    pipeline: Synthesizer | None,
    out_dir: str | Path,
    depths: Sequence[int],
    batch_size: int = 1,
    seed: int = 0,
    sampling: dict[str, Any] | None = None,
    mode: str = "continuation",
    progress: bool = False,
) -> GenerateReport:
    """Synthesise the missing `<utt>.wav` of every usable line at every depth.

    Args:
        testset: the parsed list (its rejected lines are reported, not generated).
        pipeline: the synthesiser (see module docstring); may be None when every output exists.
        out_dir: sweep directory; files go to `out_dir/depth_<K>/`.
        depths: depths K to generate (1..32).
        batch_size: utterances per synthesiser call.
        seed: base seed.
        sampling: extra keyword arguments for the synthesiser (temperature, top_p, max_new_frames, ...).
        mode: "continuation" (pass the prompt transcript) or "clone" (prompt audio only).
        progress: show a progress bar on stderr.

    Returns:
        What was written, kept and failed per depth.

    Raises:
        ValueError: bad depths, batch size or mode.
    """
    from tqdm import tqdm

    depths = check_depths(depths)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if pipeline is None and count_missing(testset, out_dir, depths):
        raise ValueError("outputs are missing but no synthesiser was given")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sampling = dict(sampling or {})
    out_dir = Path(out_dir)
    report = GenerateReport(bad_lines=[b.describe() for b in testset.bad_lines])
    for depth in depths:
        ddir = out_dir / f"depth_{depth}"
        ddir.mkdir(parents=True, exist_ok=True)
        todo = [it for it in testset.items if not (ddir / f"{it.utt}.wav").is_file()]
        report.kept[depth] = [it.utt for it in testset.items if (ddir / f"{it.utt}.wav").is_file()]
        report.written[depth], report.failed[depth] = [], {}
        bar = tqdm(total=len(todo), desc=f"depth {depth}", disable=not progress, unit="utt")
        with open(ddir / GENERATION_LOG, "a", encoding="utf-8") as log:
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                s = utterance_seed(seed, batch[0].utt)
                t0 = time.perf_counter()
                try:
                    outputs = _synthesize(pipeline, batch, depth, s, mode, sampling)
                except (ValueError, RuntimeError) as err:  # bad input or out of memory: record, go on, retry later
                    for it in batch:
                        report.failed[depth][it.utt] = f"{err.__class__.__name__}: {err}"
                    logger.warning("depth %d: synthesis failed for %s: %s", depth, [it.utt for it in batch], err)
                    bar.update(len(batch))
                    continue
                seconds = (time.perf_counter() - t0) / len(batch)
                for it, (audio, sr) in zip(batch, outputs, strict=True):
                    try:
                        duration = _write_wav(ddir / f"{it.utt}.wav", audio, sr)
                    except (ValueError, RuntimeError) as err:
                        report.failed[depth][it.utt] = str(err)
                        continue
                    rec = {
                        "utt": it.utt,
                        "depth": depth,
                        "seconds": seconds,
                        "audio_seconds": duration,
                        "rtf": seconds / duration,
                        "seed": s,
                        "batch_size": len(batch),
                        "mode": mode,
                    }
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                    report.written[depth].append(it.utt)
                bar.update(len(batch))
        bar.close()
        failures = ddir / "failures.json"
        if report.failed[depth]:
            failures.write_text(json.dumps(report.failed[depth], indent=1, ensure_ascii=False), encoding="utf-8")
        else:
            failures.unlink(missing_ok=True)  # a stale list from an earlier run would mislead
    return report
