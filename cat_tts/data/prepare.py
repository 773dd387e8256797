"""Codec pre-extraction: manifest -> Hugging Face `datasets` shards of CAT codes.

    python -m cat_tts.data.prepare MANIFEST.jsonl --codec PATH --out DIR [--batch-size N] [--num-workers N]

Each kept utterance is loaded, resampled to 24 kHz mono and loudness-normalised (`cat_tts.audio`), encoded
once with all 32 layers and stored as a row of a shard under `DIR/shards/`:

    id, text, speaker, language, fields (JSON of other prompt fields), manifest_index,
    codes int16 [32, T], num_frames, duration (s), ref_codes int16 [32, T'], ref_num_frames (T' = 0: no reference)

Rows whose audio (or explicit reference) is missing, unreadable, empty, silent or too long are skipped,
counted and listed in `DIR/prepare_report*.jsonl`. Under several processes (`torchrun`, the deepspeed
launcher, or `--rank/--world-size`) rank r takes manifest rows r, r+W, r+2W, ... and encodes on its own
GPU. A shard becomes visible only when complete, so a rerun continues with the first missing shard.
The run ends with a summary and exits 0; a user error (bad manifest or option, unwritable `--out`, no usable
utterance) is one line on stderr and exit code 2.

Shapes: B batch, S samples, K = 32 layers, T frames.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from cat_tts.audio import DEFAULT_SAMPLE_RATE, load_audio, loudness_normalize
from cat_tts.cli import check_writable_dir
from cat_tts.codec import CatCodec
from cat_tts.data.manifest import ManifestRow, read_manifest
from cat_tts.errors import USER_ERROR_EXIT_CODE, UserError
from cat_tts.files import atomic_write

logger = logging.getLogger(__name__)

# Skip reasons, in the order the summary prints them.
REASONS = ("missing", "unreadable", "empty", "silent", "too_long", "no_text")


@dataclass
class PrepareConfig:
    """Options of one `prepare` run."""

    manifest: str  # JSONL manifest (see cat_tts.data.manifest)
    codec: str  # CAT codec directory or hub id
    out: str  # output dataset directory
    batch_size: int = 8  # utterances encoded together
    num_workers: int = 2  # processes loading and resampling audio
    shard_size: int = 1000  # manifest rows per shard (the unit of resumption)
    max_seconds: float = 30.0  # longer utterances are skipped (reason too_long)
    rank: int = 0  # this process's rank among `world_size` preparing processes
    world_size: int = 1  # number of preparing processes
    device: str = "auto"  # "auto" = cuda:LOCAL_RANK when CUDA is available, else cpu

    def validate(self) -> PrepareConfig:
        """Checks every field; a `UserError` names the field and its option: `batch_size (--batch-size) = 0 ...`."""
        for name, ok, allowed in (
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("num_workers", self.num_workers >= 0, ">= 0"),
            ("shard_size", self.shard_size >= 1, ">= 1"),
            ("max_seconds", self.max_seconds > 0, "> 0"),
            ("world_size", self.world_size >= 1, ">= 1"),
        ):
            if not ok:
                raise UserError(f"{_label(name)} = {getattr(self, name)} is invalid; allowed: {allowed}")
        if not 0 <= self.rank < self.world_size:
            raise UserError(
                f"{_label('rank')} = {self.rank} is invalid for {_label('world_size')} = {self.world_size}; "
                "allowed: 0 .. world_size - 1 (the launcher's RANK and WORLD_SIZE are the defaults)"
            )
        return self


def _label(field: str) -> str:
    """A `PrepareConfig` field as messages name it: the field and its `python -m cat_tts.data.prepare` option."""
    return f"{field} (--{field.replace('_', '-')})"


@dataclass
class PrepareSummary:
    """What a run (all shards of this rank, including ones finished by earlier runs) produced."""

    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    hours: float = 0.0  # hours of kept audio
    shards: int = 0  # complete shards of this rank
    report: str = ""  # path of the skip report

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())


def classify_audio_error(err: Exception) -> str:
    """Maps an audio loading error onto one of REASONS (uses `err.reason` when the error carries one)."""
    reason = getattr(err, "reason", None)
    if isinstance(reason, str) and reason in REASONS:
        return reason
    msg = str(err).lower()
    if "not found" in msg or "no such file" in msg or "does not exist" in msg or "missing" in msg:
        return "missing"
    if "long" in msg:
        return "too_long"
    if "silent" in msg or "silence" in msg:
        return "silent"
    if "empty" in msg or "no samples" in msg or "too short" in msg:
        return "empty"
    return "unreadable"


def _load_one(path: str, max_seconds: float) -> tuple[np.ndarray | None, str | None, str]:
    """Loads + normalises one file; returns (wav [S] float32 | None, skip reason | None, message)."""
    if not os.path.exists(path):
        return None, "missing", f"file not found: {path}"
    try:
        wav = load_audio(path, sample_rate=DEFAULT_SAMPLE_RATE, max_seconds=max_seconds)
    except Exception as err:  # AudioError, or a decoder error on a corrupt file
        return None, classify_audio_error(err), f"{type(err).__name__}: {err}"
    return np.asarray(loudness_normalize(wav), dtype=np.float32), None, ""


class _AudioRows(torch.utils.data.Dataset):
    """Loads the target (and reference) audio of manifest rows, in DataLoader workers."""

    def __init__(self, rows: list[ManifestRow], max_seconds: float) -> None:
        self.rows = rows
        self.max_seconds = max_seconds

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        item: dict[str, Any] = {"row": row, "wav": None, "ref": None, "reason": None, "message": ""}
        if not row.text.strip():
            item.update(reason="no_text", message="empty transcript")
            return item
        wav, reason, message = _load_one(row.audio, self.max_seconds)
        if reason is None and row.ref_audio is not None:
            ref, ref_reason, ref_message = _load_one(row.ref_audio, self.max_seconds)
            if ref_reason is not None:
                reason, message = ref_reason, f"reference {row.ref_audio}: {ref_message}"
            item["ref"] = ref
        item.update(wav=wav, reason=reason, message=message)
        return item


def _encode(codec: Any, wavs: list[np.ndarray], device: torch.device) -> list[np.ndarray]:
    """Encodes float32 waveforms with all layers; returns int16 codes [K, T] per input."""
    if not wavs:
        return []
    lengths = torch.tensor([len(w) for w in wavs], dtype=torch.long)
    batch = torch.zeros(len(wavs), int(lengths.max()), dtype=torch.float32)  # [B, S]
    for b, w in enumerate(wavs):
        batch[b, : len(w)] = torch.from_numpy(w)
    with torch.inference_mode():
        out = codec.encode(batch.to(device), lengths=lengths.to(device))
    codes = out.codes.cpu()  # [B, K, T]
    frames = out.lengths.cpu().tolist() if out.lengths is not None else [len(w) // codec.frame_size for w in wavs]
    return [codes[b, :, : int(frames[b])].numpy().astype(np.int16) for b in range(len(wavs))]


def _features() -> Any:
    from datasets import Features, Sequence, Value

    return Features(
        {
            "id": Value("string"),
            "text": Value("string"),
            "speaker": Value("string"),
            "language": Value("string"),
            "fields": Value("string"),
            "manifest_index": Value("int64"),
            "codes": Sequence(Sequence(Value("int16"))),
            "num_frames": Value("int32"),
            "duration": Value("float32"),
            "ref_codes": Sequence(Sequence(Value("int16"))),
            "ref_num_frames": Value("int32"),
        }
    )


def _shard_name(rank: int, world: int, k: int) -> str:
    return f"rank{rank:05d}-of-{world:05d}-{k:05d}"


def write_shard(shard_dir: str | Path, name: str, records: dict[str, list[Any]], stats: dict[str, Any]) -> Path:
    """Writes one shard atomically: the data under a temporary name, renamed, then its stats file (the marker).

    Args:
        shard_dir: the `shards/` directory.
        name: shard name (`rank{r}-of-{W}-{k}`).
        records: column name -> values, with the columns of the prepared format (see the module docstring).
        stats: `{"rows", "kept", "seconds", "skipped": [...]}` for the summary and the report.

    Returns:
        The shard directory.
    """
    from datasets import Dataset

    shard_dir = Path(shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)
    final = shard_dir / name
    if final.exists():  # a previous run died between writing the data and its stats file
        shutil.rmtree(final)
    if records["id"]:
        with atomic_write(final) as tmp:
            Dataset.from_dict(records, features=_features()).save_to_disk(str(tmp))
    with atomic_write(shard_dir / f"{name}.json") as tmp:  # marks the shard complete
        tmp.write_text(json.dumps(stats, ensure_ascii=False), encoding="utf-8")
    return final


def prepare(cfg: PrepareConfig, progress: bool = True) -> PrepareSummary:
    """Runs codec pre-extraction for this rank (see the module docstring).

    Returns:
        The summary over all complete shards of this rank.

    Raises:
        ManifestError: for a missing or malformed manifest.
        UserError: for an unusable option or an output directory that cannot be written.
    """
    cfg.validate()
    out = check_writable_dir(cfg.out, "--out")
    rows = [r for r in read_manifest(cfg.manifest) if r.index % cfg.world_size == cfg.rank]
    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    chunks = [rows[i : i + cfg.shard_size] for i in range(0, len(rows), cfg.shard_size)]
    todo = [
        k for k in range(len(chunks)) if not (shard_dir / f"{_shard_name(cfg.rank, cfg.world_size, k)}.json").exists()
    ]
    if len(todo) < len(chunks):
        logger.info("resuming: %d of %d shards already complete", len(chunks) - len(todo), len(chunks))
    if cfg.device == "auto":
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    codec = CatCodec.from_pretrained(cfg.codec, device=device) if todo else None
    if codec is not None and getattr(codec, "num_layers", 32) != 32:
        logger.warning("the codec has %s layers; CAT-TTS expects 32", codec.num_layers)

    bar = tqdm(total=sum(len(chunks[k]) for k in todo), unit="utt", desc="prepare", disable=not progress)
    for k in todo:
        name = _shard_name(cfg.rank, cfg.world_size, k)
        loader = torch.utils.data.DataLoader(
            _AudioRows(chunks[k], cfg.max_seconds),
            batch_size=cfg.batch_size,
            num_workers=cfg.num_workers,
            collate_fn=list,
        )
        records: dict[str, list[Any]] = {column: [] for column in _features()}
        skipped: list[dict[str, Any]] = []
        for items in loader:
            good = [it for it in items if it["reason"] is None]
            for it in items:
                if it["reason"] is not None:
                    row = it["row"]
                    skipped.append(
                        {
                            "index": row.index,
                            "id": row.id,
                            "audio": row.audio,
                            "reason": it["reason"],
                            "message": it["message"],
                        }
                    )
            codes = _encode(codec, [it["wav"] for it in good], device)
            with_ref = [i for i, it in enumerate(good) if it["ref"] is not None]
            ref_codes = dict(zip(with_ref, _encode(codec, [good[i]["ref"] for i in with_ref], device), strict=True))
            for i, it in enumerate(good):
                row = it["row"]
                if codes[i].shape[1] == 0:
                    skipped.append(
                        {
                            "index": row.index,
                            "id": row.id,
                            "audio": row.audio,
                            "reason": "empty",
                            "message": "shorter than one codec frame (80 ms)",
                        }
                    )
                    continue
                ref = ref_codes.get(i, np.zeros((codes[i].shape[0], 0), dtype=np.int16))
                records["id"].append(row.id)
                records["text"].append(row.text)
                records["speaker"].append(row.speaker)
                records["language"].append(row.language)
                records["fields"].append(json.dumps(row.fields, ensure_ascii=False))
                records["manifest_index"].append(row.index)
                records["codes"].append(codes[i])
                records["num_frames"].append(codes[i].shape[1])
                records["duration"].append(len(it["wav"]) / DEFAULT_SAMPLE_RATE)
                records["ref_codes"].append(ref)
                records["ref_num_frames"].append(ref.shape[1])
            bar.update(len(items))
        stats = {
            "rows": len(chunks[k]),
            "kept": len(records["id"]),
            "seconds": float(sum(records["duration"])),
            "skipped": skipped,
        }
        write_shard(shard_dir, name, records, stats)
    bar.close()
    return summarize(out, cfg.rank, cfg.world_size)


def summarize(out: str | Path, rank: int = 0, world_size: int = 1) -> PrepareSummary:
    """Collects the stats of this rank's complete shards and (re)writes its skip report."""
    out = Path(out)
    summary = PrepareSummary()
    counts: Counter[str] = Counter()
    seconds = 0.0
    skipped: list[dict[str, Any]] = []
    for stats_file in sorted((out / "shards").glob(f"rank{rank:05d}-of-{world_size:05d}-*.json")):
        stats = json.loads(stats_file.read_text(encoding="utf-8"))
        summary.kept += stats["kept"]
        seconds += stats["seconds"]
        summary.shards += 1
        for s in stats["skipped"]:
            counts[s["reason"]] += 1
            skipped.append(s)
    summary.skipped = {r: counts[r] for r in REASONS if counts[r]}
    summary.hours = seconds / 3600.0
    suffix = "" if world_size == 1 else f".rank{rank:05d}-of-{world_size:05d}"
    report = out / f"prepare_report{suffix}.jsonl"
    with atomic_write(report) as tmp:
        tmp.write_text(
            "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in sorted(skipped, key=lambda s: s["index"])),
            encoding="utf-8",
        )
    summary.report = str(report)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cat_tts.data.prepare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("manifest", help="JSONL manifest: {audio, text, speaker?, ref_audio?, language?} per line")
    parser.add_argument("--codec", required=True, help="CAT codec directory or hub id")
    parser.add_argument("--out", required=True, help="output dataset directory (created; reruns resume)")
    parser.add_argument("--batch-size", type=int, default=8, help="utterances encoded together (default 8)")
    parser.add_argument("--num-workers", type=int, default=2, help="audio loading processes (default 2)")
    parser.add_argument("--shard-size", type=int, default=1000, help="manifest rows per shard (default 1000)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="skip longer utterances (default 30)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--rank", type=int, default=None, help="this process's rank (default: $RANK or 0)")
    parser.add_argument("--world-size", type=int, default=None, help="number of processes (default: $WORLD_SIZE or 1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        import datasets

        datasets.disable_progress_bars()  # one progress bar (ours), not one per shard write
    except ImportError:
        pass
    cfg = PrepareConfig(
        manifest=args.manifest,
        codec=args.codec,
        out=args.out,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        shard_size=args.shard_size,
        max_seconds=args.max_seconds,
        rank=args.rank if args.rank is not None else int(os.environ.get("RANK", 0)),
        world_size=args.world_size if args.world_size is not None else int(os.environ.get("WORLD_SIZE", 1)),
        device=args.device,
    )
    try:
        summary = prepare(cfg)
    except (UserError, OSError, ImportError) as err:
        print(f"prepare: error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    skipped = ", ".join(f"{r} {n}" for r, n in summary.skipped.items()) or "none"
    print(
        f"prepare: kept {summary.kept} utterances ({summary.hours:.3f} h) in {summary.shards} shard(s); "
        f"skipped {summary.total_skipped} ({skipped}); report: {summary.report}"
    )
    if summary.kept == 0:
        print("prepare: error: no usable utterance remains; see the report for the reasons", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    return 0


if __name__ == "__main__":
    sys.exit(main())
