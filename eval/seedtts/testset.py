"""Read a Seed-TTS-Eval test list (`en/meta.lst`, `zh/meta.lst`, `zh/hardcase.lst`).

One utterance per line, fields separated by `|`:

    utt|prompt_text|prompt_wav|target_text[|ground_truth_wav]

`prompt_wav` (and the optional 5th field) are relative to the directory of the list. The ground-truth
recording of a 4-field line is `<list dir>/wavs/<utt>.wav` when it exists (used by `--ground-truth`).

Lines that cannot be used are returned as `BadLine`s, named by utterance id (or line number when the
id itself is unreadable), so callers can report them; nothing is skipped silently. Blank lines are
ignored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from cat_tts.errors import UserError

logger = logging.getLogger(__name__)


class MetaError(UserError):
    """The test list itself cannot be read."""


@dataclass(frozen=True)
class TestItem:
    """One usable line of a test list."""

    __test__ = False  # not a pytest test class

    utt: str  # utterance id; the generated file is `<utt>.wav`
    prompt_text: str  # transcript of the prompt audio (given to the TTS model)
    prompt_wav: Path  # the cloning reference (also the SIM reference)
    target_text: str  # the sentence to synthesise and the WER/CER reference
    ground_truth_wav: Path | None  # real recording of target_text, if the test set ships it
    line_no: int  # 1-based line number in the list


@dataclass(frozen=True)
class BadLine:
    """A line that cannot be used, with the reason."""

    utt: str  # utterance id, or "line <n>" when the line has no usable id
    line_no: int  # 1-based line number in the list
    reason: str  # what is wrong, in words

    def describe(self) -> str:
        """One line for logs and CLIs."""
        return f"{self.utt} (line {self.line_no}): {self.reason}"


@dataclass
class TestSet:
    """A parsed test list: usable items in file order plus the lines that were rejected."""

    __test__ = False

    meta_path: Path  # the list file
    items: list[TestItem] = field(default_factory=list)
    bad_lines: list[BadLine] = field(default_factory=list)

    @property
    def name(self) -> str:
        """A short name such as "en/meta" or "zh/hardcase"."""
        return f"{self.meta_path.parent.name}/{self.meta_path.stem}"


def _audio_problem(path: Path) -> str | None:
    """Why `path` is not a usable audio file, or None when its header reads and it has samples."""
    if not path.is_file():
        return f"audio file not found: {path}"
    try:
        info = sf.info(str(path))
    except Exception as err:  # soundfile raises RuntimeError/LibsndfileError for unreadable files
        return f"audio file unreadable: {path} ({err.__class__.__name__})"
    if info.frames <= 0:
        return f"audio file is empty: {path}"
    return None


def read_testset(meta_path: str | Path, check_audio: bool = True, require_ground_truth: bool = False) -> TestSet:
    """Parse a Seed-TTS-Eval list.

    Args:
        meta_path: path of `meta.lst` / `hardcase.lst`.
        check_audio: check that each prompt wav exists and has a readable, non-empty header.
        require_ground_truth: reject lines whose ground-truth recording is missing or unreadable
            (for scoring the test set's own recordings).

    Returns:
        The usable items and the rejected lines.

    Raises:
        MetaError: when the list file is missing, unreadable or not UTF-8.
    """
    meta_path = Path(meta_path)
    try:
        text = meta_path.read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
    except FileNotFoundError as err:
        raise MetaError(f"test list not found: {meta_path}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise MetaError(f"cannot read test list {meta_path}: {err}") from err

    root = meta_path.parent
    out = TestSet(meta_path=meta_path)
    seen: set[str] = set()
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split("|")]
        utt = fields[0] or f"line {line_no}"
        if len(fields) not in (4, 5):
            out.bad_lines.append(
                BadLine(
                    utt,
                    line_no,
                    f"expected 4 or 5 '|'-separated fields "
                    f"(utt|prompt_text|prompt_wav|target_text[|gt_wav]), got {len(fields)}",
                )
            )
            continue
        _, prompt_text, prompt_rel, target_text = fields[:4]
        problem = None
        if not fields[0]:
            problem = "empty utterance id"
        elif "/" in utt or "\\" in utt or utt in (".", ".."):
            problem = f"utterance id {utt!r} cannot be a file name"
        elif utt in seen:
            problem = "duplicate utterance id"
        elif not target_text:
            problem = "empty target text"
        elif not prompt_rel:
            problem = "empty prompt audio path"
        prompt_wav = (root / prompt_rel).resolve() if prompt_rel else root
        if len(fields) == 5 and fields[4]:
            gt = (root / fields[4]).resolve()
        else:
            gt = root / "wavs" / f"{utt}.wav"
            gt = gt.resolve() if gt.is_file() else None
        if problem is None and check_audio:
            problem = _audio_problem(prompt_wav)
        if problem is None and require_ground_truth:
            problem = "no ground-truth recording" if gt is None else _audio_problem(gt)
        if problem is not None:
            out.bad_lines.append(BadLine(utt, line_no, problem))
            continue
        seen.add(utt)
        out.items.append(TestItem(utt, prompt_text, prompt_wav, target_text, gt, line_no))
    for bad in out.bad_lines:
        logger.warning("%s: unusable line %s", meta_path, bad.describe())
    return out
