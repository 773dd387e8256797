"""Summaries, the Markdown table and the quality-versus-bitrate plots of a depth sweep.

A sweep directory holds one sub-directory per scored run: `depth_<K>/` (generated at depth K) and
optionally `ground_truth/` (the test set's own recordings), each with `results.jsonl` and `run.json`
written by `score`. `build_report(DIR)` recomputes every `summary.json` from those files and writes

* `DIR/summary.json`: all runs, sorted by depth;
* `DIR/report.md`: one table row per depth with the bitrate in kbps (K layers x 0.125 kbps);
* `DIR/error_rate_vs_kbps.png` and `DIR/sim_vs_kbps.png` (the ground truth as a dashed line).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from cat_tts.codec.config import bitrate_kbps
from cat_tts.errors import UserError
from eval.seedtts.metrics import mean

logger = logging.getLogger(__name__)


GROUND_TRUTH_DIR = "ground_truth"


class ReportError(UserError):
    """A sweep directory has nothing to report or holds malformed files."""


def kbps(depth: int | None) -> float | None:
    """Bitrate of depth K in kbps (None for ground truth)."""
    return None if depth is None else bitrate_kbps(depth)


def _pct(value: float | None) -> float | None:
    return None if value is None else round(100.0 * value, 4)


def summarize(results: Iterable[Any], run: dict[str, Any]) -> dict[str, Any]:
    """Aggregate per-utterance records (dataclasses or dicts) of one run.

    Returns:
        A JSON-serialisable dict: counts (`n_items`, `n_scored`, per-status counts, rejected test lines),
        `error_rate` (percent, mean over all usable lines, unscored ones count as 100 %),
        `error_rate_scored` (percent, mean over scored files only: the official scripts' number),
        `sim` (mean cosine similarity over files with a SIM score, 0..1), `rtf` (total generation seconds
        / total audio seconds when timings exist), `audio_seconds`, and the run's metadata.
    """
    recs = [asdict(r) if is_dataclass(r) else dict(r) for r in results]
    statuses: dict[str, int] = {}
    for r in recs:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    scored = [r for r in recs if r["status"] == "ok"]
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


def read_results(path: Path) -> list[dict[str, Any]]:
    """Records of a `results.jsonl` file.

    Raises:
        ReportError: on a malformed line (named by line number).
    """
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise ReportError(f"{path}:{i}: not valid JSON ({err.msg})") from err
        if not isinstance(rec, dict) or "status" not in rec or "wer" not in rec:
            raise ReportError(f"{path}:{i}: a result record needs at least 'status' and 'wer'")
        out.append(rec)
    return out


def _run_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent for p in sweep_dir.glob("*/results.jsonl"))


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown_table(summaries: Sequence[dict[str, Any]]) -> str:
    """One row per run (ground truth first, then by depth) with kbps, error rates, SIM, coverage and RTF."""
    if not summaries:
        raise ReportError("nothing to tabulate")
    metric = summaries[0]["metric"]
    head = (
        f"| run | depth K | kbps | {metric} % (all lines) | {metric} % (scored only) | SIM | scored / lines "
        f"| missing/failed | RTF |"
    )
    rows = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summaries:
        failed = s["n_items"] - s["n_scored"]
        name = "ground truth" if s["ground_truth"] else f"depth_{s['depth']}"
        rows.append(
            f"| {name} | {s['depth'] if s['depth'] is not None else '–'} | {_fmt(s['kbps'], 3)} "
            f"| {_fmt(s['error_rate'], 2)} | {_fmt(s['error_rate_scored'], 2)} | {_fmt(s['sim'], 3)} "
            f"| {s['n_scored']} / {s['n_items']} | {failed} | {_fmt(s['rtf'], 3)} |"
        )
    return "\n".join(rows) + "\n"


def _plot(summaries: Sequence[dict[str, Any]], key: str, ylabel: str, title: str, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'cat-tts[eval]'") from err

    runs = [s for s in summaries if not s["ground_truth"] and s.get(key) is not None]
    gt = [s for s in summaries if s["ground_truth"] and s.get(key) is not None]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if runs:
        xs = [s["kbps"] for s in runs]
        ys = [s[key] for s in runs]
        ax.plot(xs, ys, marker="o", label="CAT-TTS")
        for s, x, y in zip(runs, xs, ys, strict=True):
            ax.annotate(f"K={s['depth']}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{x:g}" for x in xs])
    for s in gt:
        ax.axhline(s[key], linestyle="--", color="gray", label="ground truth")
    ax.margins(x=0.12)
    ax.set_xlabel("bitrate (kbps)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if runs or gt:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def build_report(sweep_dir: str | Path) -> dict[str, Any]:
    """Recompute every run's `summary.json` and write the sweep summary, Markdown table and plots.

    Args:
        sweep_dir: directory holding `depth_<K>/` (and optionally `ground_truth/`) with `results.jsonl`.

    Returns:
        {"summaries": [...], "table": markdown, "files": [written paths]}.

    Raises:
        ReportError: when no run directory with `results.jsonl` exists or a file is malformed.
    """
    from eval.seedtts.score import RUN, SUMMARY, depth_from_dir

    sweep_dir = Path(sweep_dir)
    run_dirs = _run_dirs(sweep_dir)
    if not run_dirs:
        raise ReportError(f"no <run>/results.jsonl under {sweep_dir}; run `python -m eval.seedtts score` first")
    summaries = []
    for d in run_dirs:
        run_path = d / RUN
        run = json.loads(run_path.read_text(encoding="utf-8")) if run_path.is_file() else {}
        if "depth" not in run:
            run["depth"] = depth_from_dir(d)
        if d.name == GROUND_TRUTH_DIR:
            run["ground_truth"], run["depth"] = True, None
        summary = summarize(read_results(d / "results.jsonl"), run)
        (d / SUMMARY).write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
        summaries.append(summary)
    summaries.sort(key=lambda s: (not s["ground_truth"], s["depth"] if s["depth"] is not None else -1))

    table = markdown_table(summaries)
    metric = summaries[0]["metric"]
    names = {s["testset"] for s in summaries if s.get("testset")}
    title = ", ".join(sorted(names)) or sweep_dir.name
    md = [
        f"# Seed-TTS-Eval: {title}",
        "",
        f"{metric}: mean of per-utterance {metric} (official normalisation). 'all lines' counts missing or",
        "unreadable outputs as 100 %; 'scored only' is what the official scripts print. SIM: mean cosine",
        "similarity of WavLM-Large ECAPA-TDNN embeddings between each output and its prompt.",
        "",
        table,
    ]
    bad = {b["utt"]: b for s in summaries for b in s["bad_lines"]}
    if bad:
        md += [f"Unusable test lines ({len(bad)}, not generated or scored):", ""]
        md += [f"- `{b['utt']}` (line {b['line_no']}): {b['reason']}" for b in bad.values()]
        md.append("")
    files = [
        sweep_dir / "summary.json",
        sweep_dir / "report.md",
        sweep_dir / "error_rate_vs_kbps.png",
        sweep_dir / "sim_vs_kbps.png",
    ]
    files[0].write_text(json.dumps({"runs": summaries}, ensure_ascii=False, indent=1), encoding="utf-8")
    files[1].write_text("\n".join(md), encoding="utf-8")
    _plot(summaries, "error_rate", f"{metric} (%)", f"{metric} vs bitrate ({title})", files[2])
    _plot(summaries, "sim", "SIM (cosine)", f"Speaker similarity vs bitrate ({title})", files[3])
    return {"summaries": summaries, "table": table, "files": files}
