"""The files of a scored run and what they add up to; `generate`, `score` and `report` all read and write them here.

A run directory (`OUT/depth_<K>/`, or `ground_truth/`) holds:

* `generation.jsonl` (`GENERATION_LOG`): one timing record per written wav, appended by `generate`;
* `results.jsonl` (`RESULTS`): one `UtteranceResult` per usable test line, written by `score`;
* `run.json` (`RUN`): what was scored and how; `summary.json` (`SUMMARY`): `summarize` of the results.

Every file is written whole under a temporary name and renamed (`cat_tts.files.atomic_write`), and read with the
one JSON-lines reader (`cat_tts.files.read_jsonl`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

from cat_tts.codec.config import bitrate_kbps
from cat_tts.errors import UserError
from cat_tts.files import JsonlError, atomic_write, read_jsonl
from eval.seedtts.metrics import mean

logger = logging.getLogger(__name__)

GENERATION_LOG = "generation.jsonl"
RESULTS = "results.jsonl"
RUN = "run.json"
SUMMARY = "summary.json"

# statuses of a result record
OK, MISSING, EMPTY, UNREADABLE, ASR_ERROR = "ok", "missing", "empty", "unreadable", "asr_error"


class ReportError(UserError):
    """A sweep directory has nothing to report or holds malformed files."""


@dataclass
class UtteranceResult:
    """Scores of one test line."""

    utt: str  # utterance id
    depth: int | None  # generation depth K (None for ground-truth recordings)
    status: str  # "ok", "missing", "empty", "unreadable" or "asr_error"
    wer: float | None  # error rate of this utterance as a fraction (WER for EN, CER for ZH); 1.0 when not scored
    sim: float | None  # cosine similarity to the prompt (-1..1); None when not computed
    hypothesis: str | None  # ASR transcript
    reference: str  # target text
    duration: float | None  # seconds of audio in the scored file
    rtf: float | None  # generation seconds / audio seconds, from generation.jsonl when present
    error: str | None = None  # what went wrong, for statuses other than "ok"


def depth_from_dir(path: Path) -> int | None:
    """K from a directory named `depth_<K>`, else None."""
    m = re.fullmatch(r"depth_(\d+)", path.name)
    return int(m.group(1)) if m else None


def kbps(depth: int | None) -> float | None:
    """Bitrate of depth K in kbps (None for ground truth)."""
    return None if depth is None else bitrate_kbps(depth)


def read_generation_log(wav_dir: Path) -> dict[str, dict[str, Any]]:
    """Per-utterance timing records written by `generate` (last record per utterance wins). A line cut short by a
    killed run is skipped with a warning: its wav was written before the record, so only its timing is lost."""
    path = wav_dir / GENERATION_LOG
    records: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return records
    for _, rec in read_jsonl(path, errors="return", what="generation log"):
        if isinstance(rec, JsonlError) or not isinstance(rec, dict) or "utt" not in rec:
            logger.warning("%s: skipping an unreadable timing record (%s)", path, rec)
            continue
        records[rec["utt"]] = rec
    return records


def read_results(path: Path) -> list[dict[str, Any]]:
    """Records of a `results.jsonl` file.

    Raises:
        ReportError: on a malformed line (named by file and line number).
    """
    out = []
    try:
        for number, rec in read_jsonl(path, what="results file"):
            if not isinstance(rec, dict) or "status" not in rec or "wer" not in rec:
                raise ReportError(f"{path}:{number}: a result record needs at least 'status' and 'wer'")
            out.append(rec)
    except JsonlError as err:
        raise ReportError(str(err)) from None
    return out


def write_json(path: Path, value: Any) -> None:
    """`value` as indented UTF-8 JSON, written atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(value, ensure_ascii=False, indent=1), encoding="utf-8")


def write_jsonl(path: Path, records: Iterable[Any]) -> None:
    """One JSON object per record (dataclasses or dicts), written atomically."""
    lines = (json.dumps(asdict(r) if is_dataclass(r) else r, ensure_ascii=False) + "\n" for r in records)
    with atomic_write(path) as tmp:
        tmp.write_text("".join(lines), encoding="utf-8")


def _pct(value: float | None) -> float | None:
    return None if value is None else round(100.0 * value, 4)


def summarize(results: Iterable[Any], run: dict[str, Any]) -> dict[str, Any]:
    """Aggregate per-utterance records (dataclasses or dicts) of one run.

    Returns:
        A JSON-serialisable dict: counts (`n_items`, `n_scored`, per-status counts, rejected test lines),
        `error_rate` (percent, mean over all usable lines, unscored ones count as 100 %),
        `error_rate_scored` (percent, mean over scored files only: the official scripts' number),
        `sim` (mean cosine similarity over files with a SIM score, 0..1), `rtf` (total generation seconds
        / total audio seconds when timings exist), `audio_seconds`, and the run's metadata. A value that does
        not exist (no scored file, no timing) is None, never NaN.
    """
    recs = [asdict(r) if is_dataclass(r) else dict(r) for r in results]
    statuses: dict[str, int] = {}
    for r in recs:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    scored = [r for r in recs if r["status"] == OK]
    with_sim = [r["sim"] for r in recs if r.get("sim") is not None]
    timed = [r for r in scored if r.get("rtf") is not None and r.get("duration")]
    gen_seconds = sum(r["rtf"] * r["duration"] for r in timed)
    audio_seconds = sum(r["duration"] for r in timed)
    depth = run.get("depth")
    lang = run.get("lang")
    return {
        "testset": run.get("testset"),
        "lang": lang,
        "metric": "CER" if lang == "zh" else "WER",
        "depth": depth,
        "kbps": kbps(depth),
        "ground_truth": bool(run.get("ground_truth")),
        "n_items": len(recs),
        "n_scored": len(scored),
        "n_sim": len(with_sim),
        "status_counts": dict(sorted(statuses.items())),
        "n_bad_lines": len(run.get("bad_lines") or []),
        "bad_lines": run.get("bad_lines") or [],
        "error_rate": _pct(mean(1.0 if r["wer"] is None else r["wer"] for r in recs)),
        "error_rate_scored": _pct(mean(r["wer"] for r in scored)),
        "sim": None if not with_sim else round(mean(with_sim), 6),
        "rtf": round(gen_seconds / audio_seconds, 6) if audio_seconds > 0 else None,
        "audio_seconds": round(sum(r["duration"] or 0.0 for r in scored), 3),
        "asr_model": run.get("asr_model"),
        "sim_model": run.get("sim_model"),
    }
