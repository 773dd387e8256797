"""Light text clean-up and sentence chunking for long inputs.

Clean-up only removes what a tokenizer should never see (control characters, odd whitespace); it does
not expand numbers or abbreviations (the model reads them as written). Chunking cuts long text into
sentence-sized pieces that are generated one after another with the same voice prompt.
"""

from __future__ import annotations

import re
import unicodedata

# One sentence: text up to Latin end punctuation followed by whitespace/end (so "3.14" stays whole), or up
# to CJK end punctuation, each with any closing quotes/brackets; or the rest of the paragraph.
_SENTENCE = re.compile(r"\s*(.+?(?:[.!?;…]+[\"'”’)\]]*(?=\s|$)|[。！？；]+[”’」』）》\"']*|$))", re.DOTALL)
# Places to cut an over-long sentence, best first.
_CLAUSE_END = re.compile(r"(?<=[,，、:：])\s*")
_SPACES = re.compile(r"[ \t\u00a0\u3000]+")


def clean_text(text: str) -> str:
    """Normalises whitespace and removes control characters.

    Keeps paragraph breaks (a blank line) as the only structure; single newlines become spaces.

    Args:
        text: raw user text.

    Returns:
        The cleaned text (may be empty).
    """
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # Drop control/format characters except newline and tab (zero-width joiners, BOM, escapes...).
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    paragraphs = [p for p in re.split(r"\n\s*\n", text)]
    paragraphs = [_SPACES.sub(" ", p.replace("\n", " ").replace("\t", " ")).strip() for p in paragraphs]
    return "\n\n".join(p for p in paragraphs if p)


def _is_cjk(ch: str) -> bool:
    return "\u3000" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff" or "\uff00" <= ch <= "\uffef"


def join_text(left: str, right: str) -> str:
    """Joins two pieces of text with a space, except between two CJK characters."""
    if not left or not right:
        return left + right
    return left + right if _is_cjk(left[-1]) and _is_cjk(right[0]) else f"{left} {right}"


def _text_len(text: str) -> int:
    """Length in 'characters' where a CJK ideograph counts about as much as a short word (3 chars)."""
    return sum(3 if "\u4e00" <= ch <= "\u9fff" or "\u3040" <= ch <= "\u30ff" else 1 for ch in text)


def _hard_split(sentence: str, max_chars: int) -> list[str]:
    """Cuts one over-long sentence at clause punctuation, then at spaces, then anywhere."""
    if _text_len(sentence) <= max_chars:
        return [sentence]
    for pattern in (_CLAUSE_END, re.compile(r"(?<=\s)")):
        parts = [p for p in pattern.split(sentence) if p.strip()]
        if len(parts) > 1:
            return _pack(parts, max_chars)
    # No break point at all (e.g. one long CJK run without punctuation): cut by length.
    step = max(1, max_chars // 3 if _text_len(sentence) > len(sentence) else max_chars)
    return [sentence[i : i + step] for i in range(0, len(sentence), step)]


def _pack(parts: list[str], max_chars: int) -> list[str]:
    chunks: list[str] = []
    current = ""
    for part in parts:
        for piece in _hard_split(part.strip(), max_chars):
            candidate = join_text(current, piece)
            if current and _text_len(candidate) > max_chars:
                chunks.append(current)
                current = piece
            else:
                current = candidate
    if current:
        chunks.append(current)
    return chunks


def split_sentences(text: str, max_chars: int = 300) -> list[str]:
    """Splits cleaned text into chunks of whole sentences, each at most about `max_chars` long.

    Sentences are packed greedily into chunks; a paragraph break always ends a chunk; a single sentence
    longer than `max_chars` is cut at commas, then spaces.

    Args:
        text: text (cleaned with `clean_text` first).
        max_chars: chunk budget (CJK characters count three).

    Returns:
        Non-empty chunks in order; `[]` for empty text.
    """
    if max_chars < 10:
        raise ValueError(f"max_chars must be >= 10, got {max_chars}")
    chunks: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        sentences = [s.strip() for s in _SENTENCE.findall(paragraph) if s.strip()]
        chunks += _pack(sentences, max_chars)
    return chunks
