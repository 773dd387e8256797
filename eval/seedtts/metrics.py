"""Per-utterance word/character error rate and the aggregates of the Seed-TTS-Eval protocol.

The reported WER (English) / CER (Chinese) is the unweighted mean of per-utterance error rates
(a macro average), not a corpus-level rate; a single utterance can score above 1.0 (insertions).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from eval.seedtts.normalize import check_language, normalize_text, to_simplified


@dataclass(frozen=True)
class ErrorCounts:
    """Alignment counts of one hypothesis against its reference (after normalisation)."""

    substitutions: int
    deletions: int
    insertions: int
    reference_length: int  # number of reference tokens (words for EN, characters for ZH)

    @property
    def rate(self) -> float:
        """(S + D + I) / N, not capped at 1."""
        return (self.substitutions + self.deletions + self.insertions) / self.reference_length


def _jiwer():
    try:
        import jiwer
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("WER scoring needs jiwer: pip install 'cat-tts[eval]'") from err
    return jiwer


def utterance_errors(reference: str, hypothesis: str, lang: str) -> ErrorCounts:
    """Align a transcript against its reference exactly as the official scorer does.

    Chinese hypotheses are first converted to simplified characters (the reference is not converted).
    Both sides are then normalised (`normalize.normalize_text`) and split on whitespace with jiwer's
    default word transform (collapse whitespace runs, strip, split on spaces).

    Args:
        reference: the target text of the test line (raw, with punctuation).
        hypothesis: the ASR transcript (raw).
        lang: "en" or "zh".

    Returns:
        The substitution/deletion/insertion counts and the reference length.

    Raises:
        ValueError: for an unknown language or a reference that is empty after normalisation.
    """
    check_language(lang)
    if lang == "zh":
        hypothesis = to_simplified(hypothesis)
    ref = normalize_text(reference, lang)
    hyp = normalize_text(hypothesis, lang)
    if not ref.split():
        raise ValueError(f"reference {reference!r} is empty after normalisation; it cannot be scored")
    out = _jiwer().process_words(ref, hyp)
    n = out.hits + out.substitutions + out.deletions
    return ErrorCounts(out.substitutions, out.deletions, out.insertions, n)


def utterance_wer(reference: str, hypothesis: str, lang: str) -> float:
    """Score one transcript as the official Seed-TTS-Eval scorer does (WER for "en", CER for "zh").

    EN: punctuation except the ASCII apostrophe is deleted and both sides are lower-cased.
    ZH: the hypothesis is converted to simplified Chinese, punctuation is deleted, and both sides are
    split into characters (no lower-casing). No number normalisation in either language.

    Args:
        reference: the target text (4th field of the meta line).
        hypothesis: the ASR transcript.
        lang: "en" or "zh".

    Returns:
        The error rate of this utterance as a fraction (1.0 for an empty hypothesis; may exceed 1.0).

    Raises:
        ValueError: for an unknown language or an empty reference.
    """
    return utterance_errors(reference, hypothesis, lang).rate


def mean(values: Iterable[float | None]) -> float | None:
    """Arithmetic mean of the values that are not None/NaN; None when there are none."""
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else None
