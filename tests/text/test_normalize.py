"""Text clean-up and sentence chunking."""

from __future__ import annotations

import re

import pytest

from cat_tts.text import clean_text, join_text, split_sentences


def test_clean_text_removes_control_characters_and_collapses_whitespace():
    raw = "Hello\x00\x07 world.\r\n  This\tis   fine!\u200b\n\n\n  Next  paragraph. "
    assert clean_text(raw) == "Hello world. This is fine!\n\nNext paragraph."


def test_clean_text_of_only_whitespace_is_empty():
    assert clean_text(" \n\t\x00 ") == ""


def test_split_keeps_decimals_and_abbreviations_with_no_space_after_the_dot():
    assert split_sentences("Pi is 3.14 today. Next one!", max_chars=20) == ["Pi is 3.14 today.", "Next one!"]


def test_split_packs_sentences_up_to_the_budget_and_breaks_at_paragraphs():
    text = clean_text("One two. Three four. Five six.\n\nSeven eight. Nine.")
    chunks = split_sentences(text, max_chars=20)
    assert chunks == ["One two. Three four.", "Five six.", "Seven eight. Nine."]


def test_split_cjk_sentences():
    assert split_sentences("你好。今天天气很好！我们走吧", max_chars=20) == ["你好。", "今天天气很好！", "我们走吧"]


@pytest.mark.parametrize("max_chars", [10, 25, 80, 300])
def test_long_multi_paragraph_text_is_split_and_nothing_is_lost(max_chars):
    sentence = "The quick brown fox, who was rather tired, jumps over the lazy dog again and again"
    text = clean_text("\n\n".join(". ".join([sentence] * 4) + "." for _ in range(3)))
    chunks = split_sentences(text, max_chars=max_chars)
    assert len(chunks) >= 3  # at least one chunk per paragraph
    for chunk in chunks:
        longest_word = max(len(w) for w in chunk.split())
        assert len(chunk) <= max(max_chars, longest_word)
    words = lambda s: re.findall(r"\S+", s)  # noqa: E731
    assert words(" ".join(chunks)) == words(text)


def test_join_text_adds_a_space_except_between_cjk():
    assert join_text("Hello.", "World") == "Hello. World"
    assert join_text("你好。", "今天") == "你好。今天"
    assert join_text("", "x") == "x"


def test_split_rejects_tiny_budget():
    with pytest.raises(ValueError, match="max_chars"):
        split_sentences("abc", max_chars=3)
