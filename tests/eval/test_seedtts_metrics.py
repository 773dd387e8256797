"""utterance_wer agrees with the official Seed-TTS-Eval scoring function on a table of cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.seedtts.metrics import mean, utterance_errors, utterance_wer
from eval.seedtts.normalize import PUNCTUATION, normalize_text

GOLDEN = json.loads((Path(__file__).parents[1] / "assets" / "eval" / "utterance_wer_golden.json").read_text("utf-8"))
CASES = GOLDEN["cases"]


def test_golden_table_covers_both_languages_and_the_tricky_cases():
    names = {c["name"] for c in CASES}
    assert {c["lang"] for c in CASES} == {"en", "zh"}
    for needle in ("apostrophe", "case", "double_spaces", "traditional", "digit", "empty_hypothesis"):
        assert any(needle in n for n in names), needle


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_utterance_wer_matches_official_scorer(case):
    if "error" in case:  # the official scorer raises (jiwer refuses an empty reference)
        with pytest.raises(ValueError, match="empty after normalisation"):
            utterance_wer(case["reference"], case["hypothesis"], case["lang"])
    else:
        assert utterance_wer(case["reference"], case["hypothesis"], case["lang"]) == pytest.approx(
            case["wer"], abs=1e-12
        )


def test_punctuation_set_is_zhon_plus_ascii():
    assert sorted(ord(c) for c in PUNCTUATION) == GOLDEN["punctuation_codepoints"]


def test_apostrophe_is_the_only_punctuation_kept():
    text = "".join(sorted(PUNCTUATION))
    assert normalize_text(text, "en") == "'"
    assert normalize_text(text, "zh") == "'"


def test_counts_are_consistent_with_the_rate():
    counts = utterance_errors("the cat sat on the mat", "a cat sat on the mat today", "en")
    assert (counts.substitutions, counts.deletions, counts.insertions, counts.reference_length) == (1, 0, 1, 6)
    assert counts.rate == pytest.approx(2 / 6)


def test_unknown_language_is_rejected():
    with pytest.raises(ValueError, match="lang must be one of"):
        utterance_wer("a", "a", "fr")


def test_mean_skips_missing_values():
    assert mean([1.0, None, 3.0, float("nan")]) == 2.0
    assert mean([]) is None
