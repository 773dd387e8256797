"""utterance_wer agrees with the official Seed-TTS-Eval scoring function on a table of cases."""

from __future__ import annotations

import json
import random
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


def _edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance between token lists, the textbook dynamic programme."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def _random_text(rng: random.Random, words: list[str], marks: str, sep: str) -> str:
    tokens = []
    for _ in range(rng.randint(1, 8)):
        tokens.append(rng.choice(words) + (rng.choice(marks) if rng.random() < 0.3 else ""))
        if rng.random() < 0.1:
            tokens.append(rng.choice(marks))  # punctuation standing alone
    return sep.join(tokens)


def test_english_wer_is_the_word_edit_distance_after_lowercasing_and_dropping_punctuation():
    rng = random.Random(0)
    words = ["The", "cat", "sat", "it's", "DOG'S", "on", "mat", "fifty", "50"]
    marks = ',.!?;:"-'
    for _ in range(300):
        ref, hyp = _random_text(rng, words, marks, " "), _random_text(rng, words, marks, rng.choice([" ", "  "]))

        def norm(text: str) -> list[str]:
            return "".join(c for c in text.lower() if c not in marks).split()

        assert utterance_wer(ref, hyp, "en") == pytest.approx(_edit_distance(norm(ref), norm(hyp)) / len(norm(ref)))


def test_chinese_cer_is_the_character_edit_distance_after_simplifying_the_transcript():
    rng = random.Random(1)
    simplified = "这是测试你好个"
    traditional = dict(zip("這是測試你好個", simplified, strict=True))
    marks = "，。！？、"
    for _ in range(300):
        ref = _random_text(rng, list(simplified), marks, rng.choice(["", " "]))
        hyp = _random_text(rng, list(traditional), marks, rng.choice(["", " "]))

        def chars(text: str) -> list[str]:
            return [traditional.get(c, c) for c in text if c not in marks and not c.isspace()]

        assert utterance_wer(ref, hyp, "zh") == pytest.approx(_edit_distance(chars(ref), chars(hyp)) / len(chars(ref)))
