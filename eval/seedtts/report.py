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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cat_tts.files import atomic_write
from eval.seedtts.results import (
    RESULTS,
    RUN,
    SUMMARY,
    ReportError,
    depth_from_dir,
    read_results,
    summarize,
    write_json,
)

logger = logging.getLogger(__name__)


GROUND_TRUTH_DIR = "ground_truth"


def _read_run(path: Path) -> dict[str, Any]:
    """A run's `run.json`.

    Raises:
        ReportError: the file is not a JSON object (named).
    """
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"{path}: not valid JSON ({err}); rerun `python -m eval.seedtts score` for it") from None
    if not isinstance(run, dict):
        raise ReportError(f"{path}: expected a JSON object, got {type(run).__name__}")
    return run


def _run_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent for p in sweep_dir.glob(f"*/{RESULTS}"))


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
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
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
    sweep_dir = Path(sweep_dir)
    run_dirs = _run_dirs(sweep_dir)
    if not run_dirs:
        raise ReportError(f"no <run>/results.jsonl under {sweep_dir}; run `python -m eval.seedtts score` first")
    summaries = []
    for d in run_dirs:
        run_path = d / RUN
        run = _read_run(run_path) if run_path.is_file() else {}
        if "depth" not in run:
            run["depth"] = depth_from_dir(d)
        if d.name == GROUND_TRUTH_DIR:
            run["ground_truth"], run["depth"] = True, None
        summary = summarize(read_results(d / RESULTS), run)
        write_json(d / SUMMARY, summary)
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
    write_json(files[0], {"runs": summaries})
    with atomic_write(files[1]) as tmp:
        tmp.write_text("\n".join(md), encoding="utf-8")
    _plot(summaries, "error_rate", f"{metric} (%)", f"{metric} vs bitrate ({title})", files[2])
    _plot(summaries, "sim", "SIM (cosine)", f"Speaker similarity vs bitrate ({title})", files[3])
    return {"summaries": summaries, "table": table, "files": files}
